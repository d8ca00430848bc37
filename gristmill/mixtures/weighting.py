"""Mixture weighting methods: explicit proportions, temperature sampling, and UniMax.

Each function maps per-source quantities to sampling proportions (floats summing to 1, in the order
given). A source's epochs over the run are then proportion x budget / its tokens.
"""
from __future__ import annotations

import math
from typing import Sequence

from gristmill.counts import is_number
from gristmill.errors import UserError

# Proportions given by hand are accepted as summing to 1 if they are this close.
SUM_TOLERANCE = 1e-6


def explicit(
    names: Sequence[str], proportions: dict[str, float], *, normalize: bool = False
) -> list[float]:
    """The given proportions, in `names` order; every source needs one, and they must sum to 1
    unless `normalize` rescales them."""
    unknown = [k for k in proportions if k not in names]
    if unknown:
        raise UserError(
            f"weighting.proportions names unknown source {unknown[0]!r} (sources: {', '.join(names)})"
        )
    missing = [n for n in names if n not in proportions]
    if missing:
        raise UserError(f"weighting.proportions has no entry for source {missing[0]!r}")
    values = []
    for n in names:
        v = proportions[n]
        if not is_number(v) or v < 0:
            raise UserError(f"weighting.proportions.{n} must be a number >= 0, not {v!r}")
        values.append(float(v))
    total = math.fsum(values)
    if total <= 0:
        raise UserError("weighting.proportions are all zero")
    if not normalize and abs(total - 1.0) > SUM_TOLERANCE:
        raise UserError(
            f"weighting.proportions sum to {total:.6g}, not 1 (set weighting.normalize: true to rescale them)"
        )
    return [v / total for v in values]


def temperature(tokens: Sequence[int], temp: float) -> list[float]:
    """p_i proportional to n_i^(1/T): T=1 is the natural distribution, T->inf tends to uniform."""
    if not temp > 0 or not math.isfinite(temp):
        raise UserError(f"weighting.temperature must be a number > 0, not {temp!r}")
    # Scale by the largest count before the power so huge counts with large 1/T cannot overflow.
    top = max(tokens)
    scaled = [(n / top) ** (1.0 / temp) for n in tokens]
    total = math.fsum(scaled)
    return [s / total for s in scaled]


def unimax(names: Sequence[str], budget: int, caps: Sequence[float]) -> list[float]:
    """UniMax (Chung et al. 2023, Algorithm 1): share the budget uniformly, visiting sources from the
    smallest cap up; a source whose uniform share exceeds its cap (tokens) gets the cap, and the rest
    is shared among the larger ones. `caps` may hold math.inf for an uncapped source."""
    order = sorted(range(len(names)), key=lambda i: (caps[i], names[i]))
    alloc = [0.0] * len(names)
    left = float(budget)
    for k, i in enumerate(order):
        share = left / (len(order) - k)
        alloc[i] = min(share, caps[i])
        left -= alloc[i]
    # Tolerate float rounding when the caps add up to exactly the budget.
    if left > budget * 1e-9:
        capacity = math.fsum(c for c in caps)
        raise UserError(
            f"budget of {budget:,} tokens needs more epochs than the caps allow: every source is at its "
            f"cap ({', '.join(names[i] for i in order)}) and together they give only {capacity:,.0f} tokens"
        )
    total = math.fsum(alloc)
    return [a / total for a in alloc]
