"""Hand-computed cases for each heuristic rule, from the published definitions (Gopher, C4, FineWeb)."""
from __future__ import annotations

import pytest

from gristmill.filters.c4 import C4QualityFilter
from gristmill.filters.fineweb import FineWebQualityFilter
from gristmill.filters.gopher import (GopherQualityFilter, GopherRepetitionFilter, duplicate_ngram_chars,
                                      duplicates, repeated_ngrams, top_ngram_chars)
from gristmill.filters.text import count_sentences, split_words
from gristmill.pipeline.document import Document

PROSE = ("The river runs to the sea and the sea is wide. Boats that have sails move with the wind. "
         "Fishermen go out early in the morning and come back at night. ") * 3


def doc(text: str) -> Document:
    return Document(id="x", url="u", text=text)


def test_tokenizer_splits_like_spacy_english():
    assert split_words("Mr. Smith don't stop, it's well-known (e.g. U.S.) 3.14 end.") == [
        "Mr.", "Smith", "do", "n't", "stop", ",", "it", "'s", "well", "-", "known", "(", "e.g.", "U.S.", ")",
        "3.14", "end", "."]
    # spaCy's single-letter exceptions re-merge inside a chunk; a period after a lowercase letter splits off
    assert split_words("im. x/y. a.k.a. U.K. E.g. Ph.D.") == ["i", "m.", "x", "/", "y.", "a.k.a", ".", "U.K.", "E.g.",
                                                            "Ph.D."]
    assert GopherQualityFilter().check(doc("• " * 10 + PROSE)).scores["gopher_quality.n_words"] == 10 + 3 * 31
    assert count_sentences('He said "hi." Then left! Really?') == 3
    assert count_sentences("No terminal punctuation here") == 1


def test_gopher_quality_word_count_and_stop_words():
    ok = GopherQualityFilter().check(doc(PROSE))
    assert ok.keep and ok.scores["gopher_quality.n_words"] == 3 * (11 + 8 + 12)
    short = GopherQualityFilter().check(doc("the cat and the dog . " * 5))  # 25 words, 5 '.' are symbols
    assert short.reason == "gopher_quality:min_doc_words" and short.scores["gopher_quality.n_words"] == 25
    no_stop = GopherQualityFilter().check(doc("Boats move quickly across water. " * 20))
    assert no_stop.reason == "gopher_quality:min_stop_words"
    # Each rule can be switched off and the next one then decides.
    assert GopherQualityFilter(min_stop_words=None).check(doc("Boats move quickly across water. " * 20)).keep


@pytest.mark.parametrize("text,reason", [
    ("#tag " * 60 + PROSE, "hash_ratio"),  # 60 '#' over 60*2 + 120 tokens = 0.25 > 0.1
    ("\n".join(["- item line with the words of it"] * 20), "bullet_lines_ratio"),
    ("\n".join([PROSE, "and then...", "so...", "more..."]) + " word" * 5, "ellipsis_lines_ratio"),
    ("1234 5678 " * 40 + PROSE, "alpha_words_ratio"),
    ("a b c d e f g h i j " * 10 + " the and", "min_avg_word_length"),
])
def test_gopher_quality_rules(text, reason):
    assert GopherQualityFilter().check(doc(text)).reason == f"gopher_quality:{reason}"


def test_gopher_repetition_hand_computed():
    assert duplicates(["a", "b", "a", "a"]) == (2, 2)
    words = "x y x y x y".split()
    assert top_ngram_chars(words, 2) == 3 * 3  # "x y" (3 chars) occurs 3 times
    # 2-grams xy, yx, xy(dup: skip 2), xy(dup) -> 2 + 2 characters ("".join)
    assert duplicate_ngram_chars(words, 2) == 4
    text = "same line here\n" * 4 + "other line"
    v = GopherRepetitionFilter().check(doc(text))
    assert v.reason == "gopher_repetition:dup_line_frac" and v.scores["gopher_repetition.dup_line_frac"] == 3 / 5
    assert GopherRepetitionFilter().check(doc("")).reason == "gopher_repetition:empty"


def test_c4_line_rules_and_document_rules():
    text = "\n".join([
        "Home", "This line has no terminal punctuation",
        "We use cookies to make this site work.", "Please enable javascript to continue.",
        "One. Two sentences here.", "Three is here. And four. Five is last.", "Bad cite [1] ends well.",
        "Trailing ellipsis line goes on...",
    ])
    v = C4QualityFilter().check(doc(text))
    assert v.keep and v.scores["c4.sentences"] == 6
    assert v.text == "One. Two sentences here.\nThree is here. And four. Five is last.\nBad cite  ends well."
    # The five removed lines, each under its rule (Home, the unpunctuated line and the ellipsis; cookies; javascript)
    assert v.counts == {"lines_removed/no_terminal_punct": 3, "lines_removed/policy": 1, "lines_removed/javascript": 1}
    assert C4QualityFilter().check(doc(text.replace("Home", "Lorem ipsum dolor sit amet."))).reason == \
        "c4:lorem_ipsum"
    assert C4QualityFilter().check(doc(text + "\nCode { x } is here.")).reason == "c4:curly_bracket"
    assert C4QualityFilter().check(doc("Only one sentence here.")).reason == "c4:min_num_sentences"
    assert C4QualityFilter(min_num_sentences=1).check(doc("Only one sentence here.")).keep


def test_fineweb_rules():
    good = FineWebQualityFilter().check(doc("A long enough sentence that ends with a period, as it should.\n" * 1))
    assert good.keep
    assert FineWebQualityFilter().check(doc("no punct at all in this line here\n" * 1)).reason == \
        "fineweb:line_punct_ratio"
    assert FineWebQualityFilter().check(doc("Short one.\nShort two.\nShort three.\nThis is a much longer line of text here.")) \
        .reason == "fineweb:short_line_ratio"
    dup = "This is a long line that ends properly with a period.\n"
    v = FineWebQualityFilter().check(doc(dup * 2 + "Another long line that ends properly with a period."))
    assert v.reason == "fineweb:char_dup_ratio"
    assert FineWebQualityFilter().check(doc("")).reason == "fineweb:empty"


def test_fineweb_threshold_none_switches_its_rule_off():
    # short lines without terminal punctuation, twice: every FineWeb rule fails on this text
    text = doc("no punct\nno punct\nshort\n" * 2)
    reasons = []
    off: dict = {}
    for rule, field in [("line_punct_ratio", "line_punct_thr"), ("short_line_ratio", "short_line_thr"),
                        ("char_dup_ratio", "char_duplicates_ratio"), ("list_ratio", "new_line_ratio")]:
        reasons.append(FineWebQualityFilter(**off).check(text).reason)
        off[field] = None
    assert reasons == ["fineweb:line_punct_ratio", "fineweb:short_line_ratio", "fineweb:char_dup_ratio",
                       "fineweb:list_ratio"]
    assert FineWebQualityFilter(**off).check(text).keep


def _covered_chars_reference(words: list[str], gram: tuple[str, ...]) -> int:
    """The text laid out with one space between words; every character inside an occurrence of `gram`, once."""
    starts, pos = [], 0
    for w in words:
        starts.append(pos)
        pos += len(w) + 1
    n, covered = len(gram), set()
    for i in range(len(words) - n + 1):
        if tuple(words[i:i + n]) == gram:
            covered.update(range(starts[i], starts[i + n - 1] + len(words[i + n - 1])))
    return len(covered)


def test_top_ngram_fraction_counts_each_character_once():
    # Gopher (Rae et al. 2021, A1): "the fraction of characters contained within the most frequently-occurring
    # n-gram". Occurrences that overlap ("ha ha" at every word of a laugh) share their characters.
    import random
    from collections import Counter

    rng = random.Random(3)
    for _ in range(3000):
        words = [rng.choice(("ha", "a", "bcd")) for _ in range(rng.randint(2, 14))]
        n = rng.randint(2, 4)
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        if not grams:
            continue
        assert top_ngram_chars(words, n) == _covered_chars_reference(words, grams.most_common(1)[0][0]), (words, n)
    laugh = "ha " * 20
    v = GopherRepetitionFilter().check(doc(laugh.strip()))
    for n in (2, 3, 4):  # the whole text is the top n-gram: exactly 1, where counting overlaps gave 1.6, 2.4, 3.2
        assert v.scores[f"gopher_repetition.top_{n}_gram_frac"] == 1.0
    # a laugh in prose: 30 "ha" cover 89 of 542 characters (0.16 <= 0.2); the 29 overlapping "ha ha" counted
    # 5 characters each made 145 (0.27 > 0.2), and datatrove drops this page as top_2_gram
    text = PROSE.strip() + " " + "ha " * 29 + "ha"
    only_top2 = GopherRepetitionFilter(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None,
                                       dup_para_char_frac=None, top_n_grams=((2, 0.2),), dup_n_grams=())
    v = only_top2.check(doc(text))
    assert len(text) == 542 and v.keep and v.scores["gopher_repetition.top_2_gram_frac"] == 89 / 542


def _duplicate_chars_reference(words: list[str], n: int) -> int:
    """datatrove's scan, plainly: every n-gram from the left; one seen before adds its characters and the scan
    jumps past it, one not seen is remembered."""
    seen, chars, i = set(), 0, 0
    while i + n <= len(words):
        gram = tuple(words[i:i + n])
        if gram in seen:
            chars += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


def test_duplicate_ngram_fraction_matches_the_plain_scan():
    # duplicate_ngram_chars visits only the positions whose n-gram repeats (repeated_ngrams); a jump can pass over
    # an n-gram's first occurrence, so that a later one is the first the scan remembers.
    import random
    from collections import Counter

    rng = random.Random(4)
    for _ in range(3000):
        words = [rng.choice(("ha", "a", "bcd")[:rng.randint(1, 3)]) for _ in range(rng.randint(0, 40))]
        levels = repeated_ngrams(words, 8)
        for n in range(1, 9):
            grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
            counts, first = Counter(grams), {}
            for i, g in enumerate(grams):
                first.setdefault(g, i)
            assert list(levels[n].items()) == [(i, first[g]) for i, g in enumerate(grams) if counts[g] > 1]
            assert duplicate_ngram_chars(words, n) == _duplicate_chars_reference(words, n), (words, n)


def test_c4_counts_words_of_the_line_without_its_citations():
    # C4's c4_utils.clean_page strips citation marks, then requires len(line.split()) >= 3 of what is left
    # (the paper: "only retained lines that contained at least 3 words").
    sentences = "One is here. Two is here. Three is here. Four is here. Five is here."
    v = C4QualityFilter().check(doc(sentences + "\nSee [1] here.\nHe [2] won it.\nBorn in 1950.[3]"))
    assert v.keep and v.text == sentences + "\nHe  won it.\nBorn in 1950."
    assert C4QualityFilter(remove_citations=False).check(doc(sentences + "\nSee [1] here.")).text == \
        sentences + "\nSee [1] here."


def test_gopher_repetition_n_gram_threshold_none_turns_that_rule_off():
    # As for every other Gopher threshold, None scores the rule and checks nothing; it raised TypeError (None > x).
    text = " ".join(["ha"] * 60)  # top 2-gram and duplicate 5-gram fractions near 1
    off = GopherRepetitionFilter(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None,
                                 dup_para_char_frac=None, top_n_grams=((2, None), (3, 0.18)),
                                 dup_n_grams=((5, None),))
    v = off.check(doc(text))
    assert not v.keep and v.reason == "gopher_repetition:top_3_gram_frac"
    assert v.scores["gopher_repetition.top_2_gram_frac"] > 0.9 and "gopher_repetition.dup_5_gram_frac" in v.scores
    all_off = GopherRepetitionFilter(top_n_grams=((2, None),), dup_n_grams=((5, None),))
    assert all_off.check(doc(text)).keep


@pytest.mark.parametrize("bad", [{"dup_n_grams": ((0, 0.1),)}, {"top_n_grams": ((-2, 0.2),)},
                                 {"dup_n_grams": ((2.5, 0.1),)}, {"top_n_grams": ((True, 0.2),)}])
def test_gopher_repetition_refuses_n_gram_sizes_below_one(bad):
    # An n of 0 or less has no n-grams to count; before, it was scored (and once, zeroed the larger n's scores).
    from gristmill.errors import UserError

    with pytest.raises(UserError, match="sizes must be whole numbers of at least 1"):
        GopherRepetitionFilter(**bad)
