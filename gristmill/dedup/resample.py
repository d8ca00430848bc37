"""Log-count resampling: a duplicate cluster of c copies becomes one document repeated about 1 + log_b(c) times.

Copies are a weak signal that text is worth reading (it was worth copying), but repeating it c times wastes
tokens and encourages memorisation. The default, form "log" with base 10, keeps 1 copy of a unique document,
~1.3 of a pair, 2 of ten copies and 3 of a hundred. Fractional weights become whole repeats by stochastic
rounding seeded from (run seed, document id), so expected repeats equal the weight and no result depends on
bundle order or worker count.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from gristmill.errors import UserError

FORMS = ("log", "sqrt", "one", "count")


@dataclass(frozen=True)
class ResampleConfig:
    """form: "log" w = 1 + log_base(c); "sqrt" w = sqrt(c); "one" w = 1 (plain dedup); "count" w = c (undo dedup).
    max_weight caps w (None = no cap)."""

    form: str = "log"
    base: float = 10.0
    max_weight: float | None = None

    def __post_init__(self):
        if self.form not in FORMS:
            raise UserError(f"resample: form must be one of {', '.join(FORMS)}, not {self.form!r}")
        if self.form == "log" and not (self.base > 1.0):
            raise UserError(f"resample: base must be > 1, not {self.base}")
        if self.max_weight is not None and self.max_weight < 1.0:
            raise UserError(f"resample: max_weight must be >= 1, not {self.max_weight}")


def cluster_weight(count: int, cfg: ResampleConfig) -> float:
    """Weight of the one representative kept for a cluster of `count` copies (count >= 1)."""
    c = max(int(count), 1)
    if cfg.form == "log":
        w = 1.0 + _log(c, cfg.base)
    elif cfg.form == "sqrt":
        w = math.sqrt(c)
    elif cfg.form == "one":
        w = 1.0
    else:
        w = float(c)
    return min(w, cfg.max_weight) if cfg.max_weight is not None else w


def _log(c: int, base: float) -> float:
    """log_base(c), exact when c is a power of the base: math.log(1000, 10) is 2.9999999999999996, which gave
    a cluster of 1000 copies weight 3.9999999999999996 (so sometimes 3 repeats, not always 4). Other counts
    keep math.log's value bit for bit (math.log10 differs from it in the last digit for most of them), so
    weights written before stay the same."""
    x = math.log(c, base)
    k = round(x)
    return float(k) if base**k == c else x


def unit_uniform(seed: int, key: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, key)."""
    h = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


def stochastic_round(weight: float, seed: int, key: str) -> int:
    """floor(w) plus one with probability frac(w): unbiased, so E[repeats] = w."""
    whole = math.floor(weight)
    return int(whole) + (1 if unit_uniform(seed, key) < weight - whole else 0)
