"""Differential test: our Gopher/C4/FineWeb rules against datatrove's independent implementation, rule by rule."""
from __future__ import annotations

import re

import pytest

from gristmill.filters.c4 import C4QualityFilter
from gristmill.filters.fineweb import FineWebQualityFilter
from gristmill.filters.gopher import GopherQualityFilter, GopherRepetitionFilter

dt_filters = pytest.importorskip("datatrove.pipeline.filters")
from datatrove.data import Document as DTDocument  # noqa: E402

GOPHER_QUALITY_REASONS = {
    "gopher_short_doc": "min_doc_words", "gopher_long_doc": "max_doc_words",
    "gopher_below_avg_threshold": "min_avg_word_length", "gopher_above_avg_threshold": "max_avg_word_length",
    "gopher_too_many_hashes": "hash_ratio", "gopher_too_many_ellipsis": "ellipsis_ratio",
    "gopher_too_many_bullets": "bullet_lines_ratio", "gopher_too_many_end_ellipsis": "ellipsis_lines_ratio",
    "gopher_below_alpha_threshold": "alpha_words_ratio", "gopher_enough_stop_words": "min_stop_words",
}


def _repetition_reason(r: str) -> str:
    m = re.fullmatch(r"top_(\d+)_gram", r) or re.fullmatch(r"duplicated_(\d+)_n_grams", r)
    if m:
        return f"{'top' if r.startswith('top') else 'dup'}_{m.group(1)}_gram_frac"
    return r


CASES = [
    ("gopher_quality", lambda: dt_filters.GopherQualityFilter(), GopherQualityFilter,
     lambda r: GOPHER_QUALITY_REASONS[r]),
    ("gopher_repetition", lambda: dt_filters.GopherRepetitionFilter(), GopherRepetitionFilter, _repetition_reason),
    ("c4", lambda: dt_filters.C4QualityFilter(), C4QualityFilter,
     lambda r: {"too_few_sentences": "min_num_sentences"}.get(r, r)),
    ("fineweb", lambda: dt_filters.FineWebQualityFilter(), FineWebQualityFilter, lambda r: r),
]


@pytest.mark.parametrize("name,make_reference,ours,reason_map", CASES, ids=[c[0] for c in CASES])
def test_decisions_and_reasons_match_datatrove(varied_docs, name, make_reference, ours, reason_map):
    reference, flt = make_reference(), ours()
    mismatches, drops, keeps = [], 0, 0
    for doc in varied_docs:
        ref_doc = DTDocument(text=doc.text, id=doc.id)
        r = reference.filter(ref_doc)
        ref_keep = r is True or (isinstance(r, tuple) and r[0])
        expected = None if ref_keep else f"{name}:{reason_map(r[1])}"
        v = flt.check(doc)
        if (v.keep, v.reason) != (ref_keep, expected):
            mismatches.append((doc.id, expected, v.reason, doc.text[:80]))
        elif ref_keep and v.text is not None and v.text != ref_doc.text:  # C4 rewrites kept pages
            mismatches.append((doc.id, "text differs", "", doc.text[:80]))
        drops += not ref_keep
        keeps += ref_keep
    assert len(varied_docs) >= 300
    assert drops >= 30 and keeps >= 30, "the corpus must exercise both outcomes"
    assert not mismatches, f"{len(mismatches)} of {len(varied_docs)} differ, first: {mismatches[:3]}"


def test_tokenizer_matches_spacy_on_prose(varied_docs):
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from gristmill.filters.text import count_sentences, split_words

    spacy_en = load_word_tokenizer("en")
    english = [d.text for i, d in enumerate(varied_docs) if i % 6 in (0, 1)]  # prose, prose in site chrome
    same_words = sum(spacy_en.word_tokenize(t) == split_words(t) for t in english)
    lines = [ln for t in english for ln in t.splitlines() if ln.strip()][:300]
    same_sentences = sum(len(spacy_en.sent_tokenize(ln)) == count_sentences(ln) for ln in lines)
    assert same_words / len(english) >= 0.9, f"{same_words}/{len(english)} documents tokenized identically"
    assert same_sentences / len(lines) >= 0.97, f"{same_sentences}/{len(lines)} lines with the same sentence count"
