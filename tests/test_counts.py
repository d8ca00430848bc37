"""The one reader of written counts (7.5B, 125M, 1e9) behind `trainer plan --params` and the mixture spec's
budget_tokens, max_tokens and validation.max_sequences; and the one reader of HTTP Content-Length values (the
WARC reader, model downloads)."""
from __future__ import annotations

from decimal import Decimal

import pytest

from gristmill.counts import human_count, is_json_number, is_number
from gristmill.errors import UserError
from gristmill.mixtures.spec import parse_count
from gristmill.trainer.cli import _count


@pytest.mark.parametrize("text,exact", [
    ("7.5B", 7_500_000_000), ("125M", 125_000_000), ("1e9", 10**9), ("1E+9", 10**9), ("2.5e+9", 2_500_000_000),
    (".5T", 500_000_000_000), ("1.4T", 1_400_000_000_000), ("20k", 20_000), ("500K", 500_000), ("350m", 350_000_000),
    ("1G", 10**9), ("1g", 10**9), ("1.4e3K", 1_400_000), ("7.", 7), ("1.e9", 10**9), ("0", 0), ("007", 7),
    (" 20 M\t", 20_000_000), ("2.5e-3", Decimal("0.0025")), ("1.5", Decimal("1.5")),
    # Exact where floats are not: 2.01 * 1e6 == 2009999.9999999998, 1.07 * 1e9 == 1070000000.0000001.
    ("2.01M", 2_010_000), ("1.07B", 1_070_000_000), ("99999999999999999", 99_999_999_999_999_999),
])
def test_counts_read_exactly(text, exact):
    assert human_count(text) == exact


@pytest.mark.parametrize("text", ["", " ", "M", ".", "1.2.3", "-1", "+1", "1KB", "1 K B", "1e", "1e9e9", "e9", "7.5X",
                                  "inf", "nan", "1_000", "0x10", "1/2", "1,000", "\uff11", "1\u0663"])
def test_anything_else_is_a_value_error(text):
    with pytest.raises(ValueError):
        human_count(text)


def test_both_callers_read_the_union_of_their_old_forms_with_their_own_words():
    # plan --params gained G (the spec had it); the spec gained a trailing dot (plan had it).
    assert _count("7G") == 7e9 and parse_count("7.", "b") == 7 and parse_count("1.e9", "b") == 10**9
    assert _count("2.01M") == 2_010_000.0 and parse_count("2.01M", "b") == 2_010_000
    with pytest.raises(UserError, match=r"^--params: not a parameter count: '7\.5X' \(try 7\.5B, 125M or 1e9\)$"):
        _count("7.5X")
    with pytest.raises(UserError, match=r"^b must be a whole number like 1000000 or 1\.4T, not '7\.5X'$"):
        parse_count("7.5X", "b")
    with pytest.raises(UserError, match=r"^b must be a whole number, not 1\.5$"):
        parse_count("1.5", "b")
    with pytest.raises(UserError, match=r"^b must be a whole number, not inf$"):
        parse_count("1e400", "b")
    with pytest.raises(UserError, match="not a parameter count"):
        _count("1e400")


@pytest.mark.parametrize("value, expected", [
    ("13", 13), (" 13\t", 13), ("0", 0), ("007", 7),   # RFC 9110 8.6: 1*DIGIT (OWS around a field value)
    ("²", None), ("١٣", None), ("-1", None), ("+1", None), ("1e3", None), ("1.0", None), ("1 3", None),
    ("", None), (None, None),
])
def test_content_length_is_ascii_digits_only(value, expected):
    from gristmill.counts import content_length

    assert content_length(value) == expected


@pytest.mark.parametrize("value, json_number, finite", [
    (0, True, True), (-3, True, True), (2.5, True, True), (float("nan"), True, False), (float("inf"), True, False),
    (-float("inf"), True, False), (True, False, False), (False, False, False), ("1", False, False),
    (None, False, False), ([1], False, False)])
def test_json_numbers_and_finite_numbers(value, json_number, finite):
    # json.loads reads NaN and Infinity as floats and true as a bool, which Python's int includes
    assert is_json_number(value) is json_number and is_number(value) is finite
