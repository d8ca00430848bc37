"""datatrove's names for the Gopher, C4 and FineWeb filters' drop reasons, mapped to this package's rule names.

For comparing the two side by side (bench/peers.py, tests/filters/test_heuristics_differential.py), or reading a
datatrove run's per-reason stats beside ours. FineWeb's reasons have the same names on both sides.
"""
from __future__ import annotations

import re

GOPHER_QUALITY_REASONS = {
    "gopher_short_doc": "min_doc_words", "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length", "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "hash_ratio", "gopher_too_many_ellipsis": "ellipsis_ratio",
    "gopher_too_many_bullets": "bullet_lines_ratio", "gopher_too_many_end_ellipsis": "ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "alpha_words_ratio", "gopher_enough_stop_words": "min_stop_words",
}
C4_REASONS = {"too_few_sentences": "min_num_sentences"}


def repetition_reason(reason: str) -> str:
    """datatrove's `top_3_gram` / `duplicated_5_n_grams` as `top_3_gram_frac` / `dup_5_gram_frac`; the line and
    paragraph reasons have the same names on both sides."""
    m = re.fullmatch(r"top_(\d+)_gram", reason) or re.fullmatch(r"duplicated_(\d+)_n_grams", reason)
    if m:
        return f"{'top' if reason.startswith('top') else 'dup'}_{m.group(1)}_gram_frac"
    return reason


def our_reason(filter_name: str, reason: str) -> str:
    """datatrove's reason for a drop by the filter `filter_name` (gopher_quality, gopher_repetition, c4, fineweb),
    under our rule's name; a reason with no mapping is returned as it is."""
    if filter_name == "gopher_quality":
        return GOPHER_QUALITY_REASONS.get(reason, reason)
    if filter_name == "gopher_repetition":
        return repetition_reason(reason)
    if filter_name == "c4":
        return C4_REASONS.get(reason, reason)
    return reason
