"""Typed checks for config fields: each field's kind and range in one table, one error line per mistake.

    STEPS = Int(lo=1); STEPS.check("config: ", "steps", value)   # UserError "config: steps must be an integer >= 1, not 0"

YAML reads `3e-4` (no dot) as text; the error for a number field given such text says to write 3.0e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

from gristmill.counts import is_number
from gristmill.errors import UserError


def _bound(x) -> str:
    # an integer bound in full: :g would print 2**64 - 1 as 1.84467e+19, a limit the reader cannot check against
    return str(x) if x is None or is_int(x) else f"{x:g}"


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Check:
    kind: str                  # int | number | bool | str | choice
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False      # lo itself is outside the range
    hi_open: bool = False
    choices: tuple = ()
    nonempty: bool = False     # str: "" is refused

    def _range(self) -> str:
        lo, hi = _bound(self.lo), _bound(self.hi)
        if self.lo is not None and self.hi is not None:
            return f" in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f" {'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f" {'<' if self.hi_open else '<='} {hi}"
        return ""

    def _in_range(self, value) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        return self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)

    def problem(self, value) -> str | None:
        """What is wrong with `value` ("must be ..., not ..."), or None."""
        if self.kind == "choice":
            return None if value in self.choices else f"must be one of {', '.join(self.choices)}, not {value!r}"
        if self.kind == "bool":
            return None if isinstance(value, bool) else f"must be true or false, not {value!r}"
        if self.kind == "str":
            if isinstance(value, str) and (value or not self.nonempty):
                return None
            return f"must be a{' non-empty' if self.nonempty else ''} string (a path), not {value!r}"
        ok_type = is_int(value) if self.kind == "int" else is_number(value)
        if ok_type and self._in_range(value):
            return None
        wanted = f"{'an integer' if self.kind == 'int' else 'a number'}{self._range()}"
        hint = ""
        if isinstance(value, str) and self.kind == "number":
            try:
                float(value)
                hint = " (YAML reads a number without a dot, such as 3e-4, as text: write 3.0e-4)"
            except ValueError:
                pass
        return f"must be {wanted}, not {value!r}{hint}"

    def check(self, where: str, name: str, value) -> None:
        problem = self.problem(value)
        if problem:
            raise UserError(f"{where}{name} {problem}")


def Int(lo: int | None = None, hi: int | None = None) -> Check:
    return Check("int", lo, hi)


def Number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    return Check("number", lo, hi, lo_open, hi_open)


def OneOf(*choices: str) -> Check:
    return Check("choice", choices=choices)


BOOL = Check("bool")
STR = Check("str")
PATH = Check("str", nonempty=True)


def check_mapping(where: str, name: str, value, checks: dict[str, Check]) -> None:
    """`value` must be a mapping whose keys are among `checks`, each value passing its check."""
    if not isinstance(value, dict):
        raise UserError(f"{where}{name} must be a mapping (of {', '.join(checks)}), not {value!r}")
    unknown = sorted(map(str, set(value) - set(checks)))
    if unknown:
        raise UserError(f"{where}{name}: unknown key(s) {', '.join(unknown)}; known: {', '.join(checks)}")
    for key, v in value.items():
        checks[key].check(f"{where}{name}: ", key, v)
