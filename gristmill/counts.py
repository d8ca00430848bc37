"""Counts as people write them: 7.5B, 125M, 20k, .5T, 1e9, 1.4e3K; read exactly, with no float rounding."""
from __future__ import annotations

import math
import re
from decimal import Decimal

# A decimal number (7, 7., 7.5, .5, 1e9, 1E+9, 2.5e-3) and an optional suffix, in any case; G is B (giga).
_COUNT = re.compile(r"\s*((?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?)\s*([KMBGT]?)\s*", re.IGNORECASE)
_POWER = {"": 0, "K": 3, "M": 6, "B": 9, "G": 9, "T": 12}


def human_count(text: str) -> Decimal:
    """The exact value of a count like '7.5B' (a decimal number and an optional K/M/B/G/T suffix); ValueError
    for anything else. Exact, so '2.01M' is the whole number 2010000 (2.01 * 1e6 in floats is not)."""
    m = _COUNT.fullmatch(text)
    if not m:
        raise ValueError(f"not a count: {text!r}")
    number = Decimal(m.group(1)).as_tuple()
    # Shifting the exponent scales by the suffix without rounding, at any size (Decimal arithmetic would round).
    return Decimal(number._replace(exponent=number.exponent + _POWER[m.group(2).upper()]))


def is_json_number(value) -> bool:
    """Whether a value read from JSON or YAML is a number: an int or a float (NaN and the infinities included),
    not a bool (Python's bool is an int) or text."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """Whether a value read from JSON or YAML is a finite number (an int or a float, not a bool or text)."""
    return is_json_number(value) and math.isfinite(value)


def is_count(value) -> bool:
    """Whether a value read from JSON is a count: an integer >= 0 (not a bool, a float or text)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


_CONTENT_LENGTH = re.compile(r"[0-9]+")  # RFC 9110 section 8.6: 1*DIGIT, ASCII digits only


def content_length(value: str | None) -> int | None:
    """An HTTP Content-Length header's value as a number, or None where there is none that is one (str.isdigit
    takes '²', which int() refuses, and int() takes other scripts' digits, which HTTP does not)."""
    value = value.strip() if value else ""
    return int(value) if _CONTENT_LENGTH.fullmatch(value) else None
