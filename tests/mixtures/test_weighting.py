"""Each weighting method against values computed by hand."""
from __future__ import annotations

import math

import pytest

from gristmill.errors import UserError
from gristmill.mixtures import weighting


def test_explicit_returns_given_proportions_in_source_order():
    assert weighting.explicit(["a", "b", "c"], {"c": 0.25, "a": 0.5, "b": 0.25}) == [0.5, 0.25, 0.25]


def test_explicit_normalize_rescales():
    assert weighting.explicit(["a", "b"], {"a": 3, "b": 1}, normalize=True) == [0.75, 0.25]


@pytest.mark.parametrize(
    "props, message",
    [
        ({"a": 0.5, "b": 0.4}, "sum to 0.9, not 1"),
        ({"a": 0.5, "b": 0.5, "zzz": 0.0}, "unknown source 'zzz'"),
        ({"a": 1.0}, "no entry for source 'b'"),
        ({"a": 1.5, "b": -0.5}, "must be a number >= 0"),
        ({"a": 0, "b": 0}, "all zero"),
    ],
)
def test_explicit_errors(props, message):
    with pytest.raises(UserError, match=message):
        weighting.explicit(["a", "b"], props)


def test_temperature_by_hand():
    # n^(1/2) = 10, 20, 30 -> 1/6, 2/6, 3/6
    assert weighting.temperature([100, 400, 900], 2.0) == pytest.approx([1 / 6, 2 / 6, 3 / 6], rel=1e-12)
    # T = 1 is the natural distribution
    assert weighting.temperature([1, 3], 1.0) == pytest.approx([0.25, 0.75], rel=1e-12)
    # T = 0.5 squares: 1, 9 -> 0.1, 0.9
    assert weighting.temperature([1, 3], 0.5) == pytest.approx([0.1, 0.9], rel=1e-12)
    # large T tends to uniform
    assert weighting.temperature([1, 10**6], 1e6) == pytest.approx([0.5, 0.5], abs=1e-5)


def test_temperature_huge_counts_do_not_overflow():
    p = weighting.temperature([10**15, 4 * 10**15], 0.01)  # 1/T = 100: 4^100 relative weight
    assert p[0] == pytest.approx(4.0**-100, rel=1e-9) and p[1] == pytest.approx(1.0)


def test_temperature_rejects_non_positive():
    with pytest.raises(UserError, match="temperature"):
        weighting.temperature([1, 2], 0)


def test_unimax_by_hand():
    # tokens 10, 100, 1000; max 2 epochs -> caps 20, 200, 2000; budget 600.
    # Uniform share 200: 'small' capped at 20; 580 left over two -> 290 each: 'mid' capped at 200;
    # 'big' takes the remaining 380.
    p = weighting.unimax(["big", "small", "mid"], 600, [2000, 20, 200])
    assert p == pytest.approx([380 / 600, 20 / 600, 200 / 600], rel=1e-12)


def test_unimax_uncapped_is_uniform():
    assert weighting.unimax(["a", "b", "c"], 999, [math.inf] * 3) == pytest.approx([1 / 3] * 3)


def test_unimax_budget_exactly_at_caps():
    assert weighting.unimax(["a", "b"], 30, [10, 20]) == pytest.approx([1 / 3, 2 / 3])


def test_unimax_infeasible_names_sources():
    with pytest.raises(UserError, match=r"needs more epochs than the caps allow.*a, b.*30 tokens"):
        weighting.unimax(["a", "b"], 31, [10, 20])
    with pytest.raises(UserError, match="needs more epochs"):  # 0.1% over the caps is over them
        weighting.unimax(["a", "b"], 1001, [500, 500])
