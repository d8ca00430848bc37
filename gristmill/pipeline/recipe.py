"""Loading a recipe file: a Python module with `PARAMS = {...}` and `def stages(p) -> list[Stage]`."""
from __future__ import annotations

import ast
import hashlib
import json
import math
import runpy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from gristmill.errors import UserError, require_file
from gristmill.pipeline.stages import Stage


@dataclass
class Recipe:
    name: str
    path: str
    params: dict[str, Any]
    build: Callable[[dict[str, Any]], list[Stage]]

    def stages(self) -> list[Stage]:
        try:
            stages = self.build(dict(self.params))
        except UserError:
            raise
        except Exception as e:  # a bad parameter value surfaces here, inside the recipe's own code
            raise UserError(f"recipe {self.path}: {type(e).__name__}: {e}") from None
        if not isinstance(stages, list) or not all(isinstance(s, Stage) for s in stages):
            raise UserError(f"recipe {self.path}: stages(p) must return a list of Stage objects")
        if not stages:
            raise UserError(f"recipe {self.path}: stages(p) returned no stages")
        return stages

    def sha256(self, stages: list[Stage]) -> str:
        """Hash of the stage graph and parameters: what the outputs depend on besides the input."""
        desc = {"params": self.params, "stages": [s.describe() for s in stages]}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=repr).encode()).hexdigest()


def load_recipe(path: str, overrides: list[str] | None = None) -> Recipe:
    p = Path(path)
    require_file(p, "recipe")
    try:
        ns = runpy.run_path(str(p), run_name="gristmill_recipe")
    except UserError:
        raise
    except SyntaxError as e:
        raise UserError(f"recipe {path} has a syntax error at line {e.lineno}: {e.msg}") from None
    except Exception as e:
        raise UserError(f"recipe {path} failed to load: {type(e).__name__}: {e}") from None
    build = ns.get("stages")
    if not callable(build):
        raise UserError(f"recipe {path} must define a function stages(p) returning a list of stages")
    params = dict(ns.get("PARAMS", {}))
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise UserError(f"parameter {item!r} must look like key=value")
        if key not in params:
            known = ", ".join(sorted(params)) or "none"
            raise UserError(f"recipe {p.name} has no parameter {key!r} (known: {known})")
        params[key] = _convert(raw, params[key], key)
    return Recipe(name=ns.get("NAME", p.stem), path=str(p), params=params, build=build)


def _convert(raw: str, default: Any, key: str) -> Any:
    """Parse `raw` as the type of the parameter's default (lists and dicts as Python literals)."""
    if isinstance(default, str) or default is None:
        return raw
    try:
        if isinstance(default, bool):
            low = raw.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            value = float(raw)
            if math.isnan(value):  # no parameter means anything by NaN; every comparison with it is False
                raise UserError(f"parameter {key}={raw!r}: expected a number, not NaN")
            return value
        if isinstance(default, list) and not raw.startswith("["):
            return [x.strip() for x in raw.split(",") if x.strip()]
        value = ast.literal_eval(raw)
        if not isinstance(value, type(default)):
            raise ValueError(raw)
        return value
    except (ValueError, SyntaxError):
        kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string", list: "a list",
                dict: "a mapping"}.get(type(default), f"a {type(default).__name__}")
        raise UserError(f"parameter {key}={raw!r}: expected {kind}") from None
