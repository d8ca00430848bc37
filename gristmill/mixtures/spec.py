"""The mixture spec (YAML): sources (token-dataset manifests), token budget, seed and weighting method.

    sources:
      - {name: web,  manifest: tokens/web,  domain: web,  max_epochs: 2}
      - {name: wiki, manifest: tokens/wiki, domain: reference, max_tokens: 5000000}
    budget_tokens: 20M            # an integer, or a number with a K/M/B/T suffix
    seed: 0
    weighting: {method: explicit, proportions: {web: 0.8, wiki: 0.2}}
    validation: {max_sequences: 256}    # optional cap per domain

Relative manifest paths resolve against the spec file's folder.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gristmill.counts import human_count, is_number
from gristmill.errors import UserError, require_file
from gristmill.pipeline import fs

METHODS = ("explicit", "temperature", "unimax")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    manifest: Path | str  # absolute: the manifest.json file or its folder, or its URL (gs://, s3://)
    domain: str | None = None  # None: take the manifest's domain
    max_epochs: float | None = None  # None: the weighting's max_epochs, if any
    max_tokens: int | None = None


@dataclass(frozen=True)
class Weighting:
    method: str
    proportions: dict[str, float] = field(default_factory=dict)
    temperature: float | None = None
    max_epochs: float | None = None  # default epoch cap for every source
    normalize: bool = False


@dataclass(frozen=True)
class MixtureSpec:
    sources: tuple[SourceSpec, ...]
    budget_tokens: int
    seed: int
    weighting: Weighting
    validation_max_sequences: int | None = None
    path: Path | None = None
    sha256: str = ""


def parse_count(value: Any, what: str) -> int:
    """An integer count, also written as 1.4T, 20M, 500K or 1e9."""
    if isinstance(value, bool):
        raise UserError(f"{what} must be a whole number, not {value!r}")
    if isinstance(value, str):
        try:
            exact = human_count(value)
        except ValueError:
            raise UserError(f"{what} must be a whole number like 1000000 or 1.4T, not {value!r}") from None
        # The exact value in the message: as a float, 2.0000000000000000001 read "not 2.0" and 1e-400 "not 0.0".
        if exact != exact.to_integral_value():
            raise UserError(f"{what} must be a whole number, not {exact}")
        if not math.isfinite(float(exact)):
            raise UserError(f"{what} must be a whole number, not {float(exact)!r}")
        return int(exact)
    if isinstance(value, float):
        if not math.isfinite(value) or value != round(value):
            raise UserError(f"{what} must be a whole number, not {value!r}")
        value = int(round(value))
    if not isinstance(value, int):
        raise UserError(f"{what} must be a whole number, not {value!r}")
    return value


def _number(value: Any, what: str, *, positive: bool = True) -> float:
    if not is_number(value):
        raise UserError(f"{what} must be a number, not {value!r}")
    if positive and value <= 0:
        raise UserError(f"{what} must be > 0, not {value!r}")
    return float(value)


def _check_keys(d: Any, allowed: set[str], where: str) -> dict:
    if not isinstance(d, dict):
        raise UserError(f"{where} must be a mapping, not {'null' if d is None else type(d).__name__}")
    # key=str: YAML reads `on:` or `yes:` as a bool key, and sorting it with a text key was a TypeError
    extra = sorted(set(d) - allowed, key=str)
    if extra:
        raise UserError(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(allowed))})")
    return d


def spec_from_dict(raw: Any, base: Path, *, path: Path | None = None, sha256: str = "") -> MixtureSpec:
    """Validate a parsed spec; relative manifest paths resolve against `base`."""
    raw = _check_keys(raw, {"sources", "budget_tokens", "seed", "weighting", "validation"}, "spec")
    for key in ("sources", "budget_tokens", "weighting"):
        if key not in raw:
            raise UserError(f"spec: missing required key {key!r}")
    if not isinstance(raw["sources"], list) or not raw["sources"]:
        raise UserError("spec: sources must be a non-empty list")
    sources = []
    for k, s in enumerate(raw["sources"]):
        where = f"sources[{k}]"
        s = _check_keys(s, {"name", "manifest", "domain", "max_epochs", "max_tokens"}, where)
        if s.get("name") is None:
            raise UserError(f"{where}: needs a name")
        if not isinstance(s["name"], str) or not s["name"]:  # `name: 2024` had "needs a name": quote it
            raise UserError(f"{where}: name must be a non-empty string (quote it in YAML), not {s['name']!r}")
        if not isinstance(s.get("manifest"), str) or not s["manifest"]:
            raise UserError(f"{where} ({s['name']}): needs a manifest path")
        domain = s.get("domain")
        if domain is not None and (not isinstance(domain, str) or not domain):
            raise UserError(f"{where} ({s['name']}): domain must be a non-empty string")
        max_epochs = _number(s["max_epochs"], f"{where}.max_epochs") if s.get("max_epochs") is not None else None
        max_tokens = parse_count(s["max_tokens"], f"{where}.max_tokens") if s.get("max_tokens") is not None else None
        if max_tokens is not None and max_tokens <= 0:
            raise UserError(f"{where}.max_tokens must be > 0")
        sources.append(SourceSpec(s["name"], fs.resolve(base, s["manifest"]), domain, max_epochs, max_tokens))
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"spec: source name {dup[0]!r} is used twice")

    budget = parse_count(raw["budget_tokens"], "budget_tokens")
    if budget <= 0:
        raise UserError("budget_tokens must be > 0")
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"seed must be an integer >= 0, not {seed!r}")

    w = _check_keys(raw["weighting"], {"method", "proportions", "temperature", "max_epochs", "normalize"}, "weighting")
    method = w.get("method")
    if method not in METHODS:
        raise UserError(f"weighting.method must be one of {', '.join(METHODS)}, not {method!r}")
    proportions = w.get("proportions") or {}
    if not isinstance(proportions, dict):
        raise UserError("weighting.proportions must be a mapping of source name to proportion")
    if method == "explicit" and not proportions:
        raise UserError("weighting.method explicit needs weighting.proportions")
    if method != "explicit" and proportions:
        raise UserError(f"weighting.proportions is only used by method explicit, not {method}")
    temp = None
    if method == "temperature":
        if w.get("temperature") is None:
            raise UserError("weighting.method temperature needs weighting.temperature (e.g. 2.0)")
        temp = _number(w["temperature"], "weighting.temperature")
    elif w.get("temperature") is not None:
        raise UserError(f"weighting.temperature is only used by method temperature, not {method}")
    max_epochs = _number(w["max_epochs"], "weighting.max_epochs") if w.get("max_epochs") is not None else None
    normalize = w.get("normalize", False)
    if not isinstance(normalize, bool):
        raise UserError(f"weighting.normalize must be true or false, not {normalize!r}")
    weighting = Weighting(method, {str(k): v for k, v in proportions.items()}, temp, max_epochs, normalize)

    val_cap = None
    if raw.get("validation") is not None:
        v = _check_keys(raw["validation"], {"max_sequences"}, "validation")
        if v.get("max_sequences") is not None:
            val_cap = parse_count(v["max_sequences"], "validation.max_sequences")
            if val_cap <= 0:
                raise UserError("validation.max_sequences must be > 0")
    return MixtureSpec(tuple(sources), budget, seed, weighting, val_cap, path, sha256)


def load_spec(path: str | Path) -> MixtureSpec:
    p = Path(path)
    require_file(p, "spec file")
    data = p.read_bytes()
    try:
        raw = yaml.safe_load(data)
    except yaml.YAMLError as e:
        raise UserError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
    if raw is None:  # "spec must be a mapping, not NoneType" did not say the file was empty
        raise UserError(f"{p} is empty: a mixture spec needs sources, budget_tokens and weighting")
    if isinstance(raw, dict) and str(raw.get("format", "")).startswith("gristmill."):  # a manifest, given by mistake
        raise UserError(f"{p} is a {raw['format']} manifest, not a mixture spec (YAML with sources, budget_tokens and "
                        f"weighting; see `mix build --help`)")
    return spec_from_dict(raw, p.resolve().parent, path=p, sha256=hashlib.sha256(data).hexdigest())
