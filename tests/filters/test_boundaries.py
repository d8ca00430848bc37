"""The filters at their published boundaries, and on inputs the other filter tests do not reach: each test
kills a mutation (a `>` made `>=`, a phrase or an option dropped) that the rest of the suite let through.
Expected values are the published rules' arithmetic worked by hand; where datatrove is installed, it is also
asked and must agree. The KenLM, language-ID and classifier tests give the filter a stand-in model with one
fixed score, as its setup() would leave a real one, to put the score exactly on the threshold; the real models
are run in test_kenlm.py, test_langid.py and test_classifiers.py."""
from __future__ import annotations

import json

import pytest

from gristmill.filters.c4 import C4QualityFilter
from gristmill.filters.fineweb import FineWebQualityFilter
from gristmill.filters.gopher import GopherQualityFilter, GopherRepetitionFilter
from gristmill.filters.kenlm_filter import KenLMFilter, bucket_of
from gristmill.filters.text import count_sentences, split_words
from gristmill.pipeline.document import Document

PROSE = ("The river runs to the sea and the sea is wide. Boats that have sails move with the wind. "
         "Fishermen go out early in the morning and come back at night. ") * 3
LINE = "the river runs to the sea and the sea is wide today"  # 12 words, 40 letters: avg length 3.33


def doc(text: str) -> Document:
    return Document(id="x", url="u", text=text)


def _datatrove_keep(name: str, text: str, **kw):
    """datatrove's verdict (True, or its reason), or None when datatrove is not installed."""
    try:
        import datatrove.pipeline.filters as dt
        from datatrove.data import Document as DTDocument
    except ImportError:
        return None
    r = getattr(dt, name)(**kw).filter(DTDocument(text=text, id="x"))
    return True if r is True else r[1]


# ------------------------------------------------------------------ Gopher quality: "more than" at the threshold
def test_gopher_hash_ratio_at_exactly_the_threshold_is_kept():
    # Rae et al. A1: drop a document "with a symbol-to-word ratio greater than 0.1". 108 tokens of prose and 12
    # '#' tokens: 12 / 120 = 0.1 exactly, not greater. Kills `>=` for `>` (gopher.py:60).
    text = PROSE + "Five more words here now." + " #" * 12
    assert len(split_words(text)) == 120 and text.count("#") == 12
    v = GopherQualityFilter().check(doc(text))
    assert v.scores["gopher_quality.hash_ratio"] == 0.1
    assert v.keep, v.reason
    assert _datatrove_keep("GopherQualityFilter", text) in (True, None)
    # one '#' more: 13 / 121 > 0.1
    assert GopherQualityFilter().check(doc(text + " #")).reason == "gopher_quality:hash_ratio"


def test_gopher_bullet_lines_at_exactly_ninety_percent_are_kept():
    # "more than 90% of lines starting with a bullet point": 9 of 10 lines is 0.9, kept; 10 of 10 dropped.
    # Kills `>=` for `>` (gopher.py:64).
    text = "\n".join(["- " + LINE] * 9 + [LINE])
    v = GopherQualityFilter().check(doc(text))
    assert v.scores["gopher_quality.bullet_lines_ratio"] == 9 / 10
    assert v.keep, v.reason
    assert _datatrove_keep("GopherQualityFilter", text) in (True, None)
    assert GopherQualityFilter().check(doc("\n".join(["- " + LINE] * 10))).reason == \
        "gopher_quality:bullet_lines_ratio"


def test_gopher_ellipsis_lines_ignore_trailing_whitespace():
    # A line "ending with an ellipsis" counts with spaces after the ellipsis (datatrove: s.rstrip().endswith):
    # 4 of 10 lines = 0.4 > 0.3. Kills dropping the rstrip (gopher.py:51).
    text = "\n".join([LINE + "."] * 6 + [LINE + "...  "] * 4)
    v = GopherQualityFilter().check(doc(text))
    assert v.scores["gopher_quality.ellipsis_lines_ratio"] == 4 / 10
    assert v.reason == "gopher_quality:ellipsis_lines_ratio"
    assert _datatrove_keep("GopherQualityFilter", text) in ("gopher_too_many_end_ellipsis", None)


# ------------------------------------------------------------------ Gopher repetition
ONLY_COUNT_RULES = dict(dup_para_char_frac=None, dup_line_char_frac=None, top_n_grams=(), dup_n_grams=())


def test_gopher_duplicate_paragraph_and_line_fractions_at_exactly_the_threshold_are_kept():
    # 10 paragraphs (each one line), 3 of them repeat an earlier one: 3 / 10 = 0.3, not "more than 0.3".
    # Kills `>=` for `>` in dup_para_frac (gopher.py:209) and dup_line_frac (gopher.py:212).
    paras = [f"Paragraph number {w} is about something else entirely." for w in
             ("one", "two", "three", "four", "five", "six")] + ["Repeated."] * 4
    text = "\n\n".join(paras)
    flt = GopherRepetitionFilter(dup_para_frac=0.3, dup_line_frac=0.3, **ONLY_COUNT_RULES)
    v = flt.check(doc(text))
    assert v.scores["gopher_repetition.dup_para_frac"] == 0.3
    assert v.scores["gopher_repetition.dup_line_frac"] == 0.3
    assert v.keep, v.reason
    more = flt.check(doc(text + "\n\nRepeated."))  # 4 of 11
    assert more.reason == "gopher_repetition:dup_para_frac"


def test_gopher_paragraphs_of_the_stripped_text():
    # datatrove splits text.strip() into paragraphs: blank lines around the text make no empty paragraphs
    # (which would count as duplicates of each other). Kills dropping the strip (gopher.py:198).
    text = "\n\nFirst paragraph here.\n\nSecond paragraph here.\n\n"
    v = GopherRepetitionFilter().check(doc(text))
    assert v.scores["gopher_repetition.dup_para_frac"] == 0.0
    assert v.scores["gopher_repetition.dup_para_char_frac"] == 0.0
    only_para = GopherRepetitionFilter(dup_line_frac=None, **ONLY_COUNT_RULES)
    assert only_para.check(doc("\n\nOne paragraph only.\n\n")).keep
    assert _datatrove_keep("GopherRepetitionFilter", "\n\nOne paragraph only.\n\n", dup_line_frac=None,
                           dup_para_char_frac=None, dup_line_char_frac=None, top_n_grams=(),
                           dup_n_grams=()) in (True, None)


# ------------------------------------------------------------------ C4
def test_c4_every_published_policy_phrase_removes_its_line():
    # c4_utils' policy substrings: a line with any of them is removed (and counted as a policy line).
    # Kills dropping a phrase from POLICY_PHRASES (c4.py:16).
    sentences = "One is here. Two is here. Three is here. Four is here. Five is here."
    for phrase in ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                   "use cookies"):
        v = C4QualityFilter().check(doc(f"{sentences}\nThis site has a line with {phrase} in it."))
        assert v.keep and v.text == sentences, phrase
        assert v.counts == {"lines_removed/policy": 1}, phrase


def test_c4_kept_lines_fraction_score():
    # kept lines over all lines: 3 of the 8 lines below survive. Kills a wrong denominator (c4.py:78).
    text = "\n".join([
        "Home", "This line has no terminal punctuation",
        "We use cookies to make this site work.", "Please enable javascript to continue.",
        "One. Two sentences here.", "Three is here. And four. Five is last.", "Bad cite [1] ends well.",
        "Trailing ellipsis line goes on...",
    ])
    assert C4QualityFilter().check(doc(text)).scores["c4.kept_lines_frac"] == 3 / 8


# ------------------------------------------------------------------ FineWeb
def test_fineweb_char_dup_ratio_is_over_characters_without_newlines():
    # FineWeb: characters in duplicated lines over the document's characters, newlines not counted.
    # Kills counting the newlines in the denominator (fineweb.py:38).
    dup = "This is a long line that ends properly with a period."
    other = "Another long line that ends properly with a period."
    text = f"{dup}\n{dup}\n{other}"
    v = FineWebQualityFilter().check(doc(text))
    assert v.scores["fineweb.char_dup_ratio"] == len(dup) / (2 * len(dup) + len(other))


def test_fineweb_line_punct_exclude_zero():
    # line_punct_exclude_zero=True: a page with no line ending in punctuation at all is not dropped for it
    # (datatrove's option, used for languages without such punctuation); a page with some, but too few, still is.
    # Kills ignoring the option (fineweb.py:44).
    none = "no punct at all in this line here, none at all"
    assert FineWebQualityFilter().check(doc(none)).reason == "fineweb:line_punct_ratio"
    assert FineWebQualityFilter(line_punct_exclude_zero=True).check(doc(none)).keep
    few = "\n".join([none + f" {i}" for i in range(9)] + ["A line that does end with a full stop here."])
    assert FineWebQualityFilter(line_punct_exclude_zero=True).check(doc(few)).reason == "fineweb:line_punct_ratio"
    assert _datatrove_keep("FineWebQualityFilter", none, line_punct_exclude_zero=True) in (True, None)


def test_fineweb_list_ratio_at_exactly_the_threshold_is_kept():
    # new lines per word "more than 0.3": 3 newlines over 10 words is 0.3, kept; 4 over 10 dropped.
    # Kills `>=` for `>` (fineweb.py:48).
    flt = FineWebQualityFilter(line_punct_thr=None, short_line_thr=None, char_duplicates_ratio=None)
    v = flt.check(doc("a b c\nd e f\ng h\ni j"))
    assert v.scores["fineweb.list_ratio"] == 0.3 and v.keep
    assert flt.check(doc("a b c\nd e f\ng h\ni\nj")).reason == "fineweb:list_ratio"


# ------------------------------------------------------------------ sentence splitting
def test_question_mark_ends_a_sentence():
    # spaCy's sentencizer (C4's sentence count) ends sentences at '?', as at '.' and '!'.
    # Kills dropping '?' from SENTENCE_TERMINALS (text.py:20).
    assert count_sentences("Why? Because. Fine!") == 3
    assert count_sentences("Is it? Yes it is? Sure") == 3


# ------------------------------------------------------------------ KenLM buckets and keep_buckets
def test_bucket_boundaries_by_hand():
    # CCNet: head below the 30th percentile, middle below the 60th, tail from there on.
    # Kills a moved middle/tail boundary (kenlm_filter.py:104).
    th = {"head_max": 100.0, "middle_max": 200.0}
    assert [bucket_of(x, th) for x in (99.9, 100.0, 199.9, 200.0, 250.0, float("inf"))] == \
        ["head", "middle", "middle", "tail", "tail", "tail"]


class _FixedPerplexity:
    """A KenLM model stand-in whose every token has log10 probability -2: perplexity exactly 100."""

    def score(self, line, bos=True, eos=True):
        return -2.0 * (len(line.split()) + 1)


@pytest.mark.parametrize("pp_thresholds,bucket", [({"head_max": 150.0, "middle_max": 300.0}, "head"),
                                                  ({"head_max": 50.0, "middle_max": 150.0}, "middle"),
                                                  ({"head_max": 20.0, "middle_max": 50.0}, "tail")])
def test_keep_buckets_and_bucket_score(pp_thresholds, bucket):
    # The bucket score is its index (head 0, middle 1, tail 2); keep_buckets keeps exactly the buckets named.
    # Kills a bucket score that confuses middle and tail (kenlm_filter.py:159) and a keep test that only
    # drops the tail (kenlm_filter.py:160).
    for keep in (("head",), ("middle",), ("tail",), ("head", "middle"), ("middle", "tail")):
        flt = KenLMFilter(keep_buckets=keep)
        flt._model, flt._thresholds = _FixedPerplexity(), pp_thresholds  # as setup() leaves them
        v = flt.check(doc("some words here"))
        assert v.scores["kenlm.perplexity"] == pytest.approx(100.0)
        assert v.scores["kenlm.bucket"] == float(("head", "middle", "tail").index(bucket))
        assert v.keep == (bucket in keep) and v.reason == (None if bucket in keep else f"kenlm:bucket_{bucket}")


# ------------------------------------------------------------------ URL filter
def test_url_subword_entry_of_punctuation_alone_matches_nothing():
    # A banned-subword entry that normalizes to "" (punctuation only) would match every URL; it is discarded.
    # Kills leaving subwords out of the discard loop (url.py:114).
    from gristmill.filters.url import URLFilter

    flt = URLFilter(use_integrated_lists=False, banned_subwords=["---", "viagra"], banned_words=["+"],
                    soft_banned_words=["..", "cheap"], soft_word_threshold=1)
    assert flt.reason("https://ok.example.org/plain-page") is None
    assert flt.reason("https://ok.example.org/buy-VIAGRA") == "blacklisted_subword"


# ------------------------------------------------------------------ language ID reasons
class _FixedLID:
    """fastText's batch predict, one fixed (label, probability) for every text."""

    def __init__(self, label, p):
        self.label, self.p = label, p

    def predict(self, texts, k=1):
        return [[f"__label__{self.label}"] for _ in texts], [[self.p] for _ in texts]


@pytest.mark.parametrize("label,p,reason", [("fr", 0.3, "language_id:language"), ("fr", 0.9, "language_id:language"),
                                            ("en", 0.3, "language_id:threshold"), ("en", 0.65, None)])
def test_language_id_reason_is_language_before_threshold(label, p, reason):
    # Another language is dropped as `language` whatever its score; English below 0.65 as `threshold`; 0.65 kept
    # (FineWeb keeps score >= 0.65). Kills a low-scoring other language reported as `threshold` (langid.py:54).
    from gristmill.filters.langid import LanguageIDFilter

    flt = LanguageIDFilter()
    flt._model = _FixedLID(label, p)  # as setup() leaves it
    v = flt.check(doc("whatever"))
    assert (v.keep, v.reason, v.language, v.language_score) == (reason is None, reason, label, p)


# ------------------------------------------------------------------ fastText classifiers at the threshold
class _FixedClassifier:
    def __init__(self, probs):
        self.probs = probs

    def predict(self, texts, k=-1):
        return [["__label__hq", "__label__cc"] for _ in texts], [[p, 1 - p] for p in self.probs[:len(texts)]]


def test_classifier_threshold_is_inclusive_both_ways():
    # QualityFilter keeps score >= threshold; ToxicityFilter drops score >= threshold (their docstrings); the
    # score written is P(label) as fastText gives it. Kills `>` for `>=` (classifier.py:149, keep side), `<=` for
    # `<` (drop side) and a rounded score annotation (classifier.py:150).
    from gristmill.filters.quality import QualityFilter
    from gristmill.filters.toxicity import ToxicityFilter

    probs = [0.25, 0.5, 0.5000001, 0.123456789]
    q = QualityFilter(threshold=0.5)
    q._model = _FixedClassifier(probs)
    vs = q.check_batch([doc(str(i)) for i in range(4)])
    assert [v.keep for v in vs] == [False, True, True, False]
    assert [v.scores["quality.score"] for v in vs] == probs
    assert vs[0].reason == "quality:threshold"
    t = ToxicityFilter(label="hq", threshold=0.5)
    t._model = _FixedClassifier(probs)
    assert [v.keep for v in t.check_batch([doc(str(i)) for i in range(4)])] == [True, False, False, True]


def test_precision_recall_counts_a_score_at_the_threshold_once():
    # p == threshold is a positive prediction: a true positive, never also a false negative.
    # Kills `<=` for `<` in the false negatives (toxicity.py:132).
    from gristmill.filters.toxicity import precision_recall

    class Fixed:
        def predict(self, texts, k=-1):
            ps = {"a": 0.5, "b": 0.5, "c": 0.2, "d": 0.9}
            return [["__label__toxic", "__label__ok"] for _ in texts], [[ps[t], 1 - ps[t]] for t in texts]

    m = precision_recall(Fixed(), [("toxic", "a"), ("ok", "b"), ("toxic", "c"), ("toxic", "d")], threshold=0.5)
    # tp: a, d; fp: b; fn: c
    assert (m["precision"], m["recall"], m["held_out_toxic"]) == (2 / 3, 2 / 3, 3)


def test_jigsaw_fractional_label_of_one_half_is_toxic(tmp_path):
    # Civil Comments / Jigsaw with rater fractions: a label column >= 0.5 marks the comment toxic.
    # Kills `>` for `>=` (toxicity.py:121).
    from gristmill.filters.toxicity import read_jigsaw

    path = tmp_path / "fractional.csv"
    path.write_text("comment_text,toxic,obscene\nhalf,0.5,0\nless,0.49,0.2\nnone,,\n", encoding="utf-8")
    assert read_jigsaw(path) == [("toxic", "half"), ("ok", "less"), ("ok", "none")]


def test_badwords_whole_words_case_insensitive_both_sides(tmp_path):
    # C4's bad-words rule matches whole words, ignoring case in the list as in the text.
    # Kills dropping the trailing word boundary (toxicity.py:67) and the list's lowercasing (toxicity.py:59).
    from gristmill.filters.toxicity import BadWordsFilter

    words = tmp_path / "words.txt"
    words.write_text("Zorbl\nfoo bar\n", encoding="utf-8")
    flt = BadWordsFilter(words=str(words))
    texts = ["a zorbl here", "ZORBL.", "zorbly is fine", "xzorbl too", "foo bar!", "foo barn", "foo"]
    assert [flt.check(doc(t)).keep for t in texts] == [False, False, True, True, False, True, True]


def test_max_perplexity_is_inclusive():
    # KenLMFilter keeps perplexity <= max_perplexity (its docstring). Kills `>=` for `>` (kenlm_filter.py:162).
    flt = KenLMFilter(keep_buckets=None, max_perplexity=100.0)
    flt._model = _FixedPerplexity()
    assert flt.check(doc("three words here")).scores["kenlm.perplexity"] == 100.0
    assert flt.check(doc("three words here")).keep
    flt.max_perplexity = 99.0
    assert flt.check(doc("three words here")).reason == "kenlm:max_perplexity"
