"""gristmill.dedup.synthetic against hand computations: the vocabulary and text shapes its docstrings promise,
planted_corpus's size, ids, seeding and pairs, exact_pairs on hand-built shingle sets, and quality's bands."""
from __future__ import annotations

import math
import random

import pytest

from gristmill.dedup import synthetic as S
from gristmill.pipeline import textgen
from gristmill.pipeline.document import stable_id


def test_vocabulary_has_exactly_size_distinct_words_of_two_to_four_syllables():
    for size in (1, 37, 500):
        vocab = S.vocabulary(random.Random(size), size)
        assert len(vocab) == size == len(set(vocab)) and vocab == sorted(vocab)
        assert all(4 <= len(w) <= 8 for w in vocab)  # syllables are consonant + vowel, 2 characters
    lengths = {len(w) for w in S.vocabulary(random.Random(0), 500)}
    assert lengths == {4, 6, 8}
    assert len(S.vocabulary(random.Random(0))) == 20000  # the default size


def test_random_text_has_n_words_in_lines_of_8_to_20():
    vocab = S.vocabulary(random.Random(1), 300)
    counts = set()
    for n in (1, 8, 20, 21, 40, 333):
        text = S.random_text(random.Random(n), vocab, n)
        lines = text.split("\n")
        assert sum(len(line.split()) for line in lines) == n
        assert all(line.split() for line in lines)  # no empty line, no trailing newline
        assert all(8 <= len(line.split()) <= 20 for line in lines[:-1]) and len(lines[-1].split()) <= 20
    for k in range(30):
        lines = S.random_text(random.Random(k), vocab, 400).split("\n")
        assert all(line.split() for line in lines)  # also where the last line ends exactly at n_words
        counts |= {len(line.split()) for line in lines[:-1]}
    assert counts == set(range(8, 21))


def test_near_duplicate_at_target_one_is_the_text_itself():
    vocab = S.vocabulary(random.Random(2), 300)
    text = S.random_text(random.Random(3), vocab, 60)
    assert S.near_duplicate(text, 1.0, random.Random(4), vocab) == text


def test_near_duplicate_lands_on_both_sides_of_the_target():
    # "as close to the target as word edits allow": the closer of the two edit counts around the crossing,
    # which for short texts (big steps in J) is below the target about as often as above it
    vocab = S.vocabulary(random.Random(5), 300)
    below = above = 0
    for k in range(40):
        rng = random.Random(k)
        text = S.random_text(rng, vocab, 25)
        target = rng.uniform(0.3, 0.9)
        j = textgen.jaccard(textgen.shingles(text), textgen.shingles(S.near_duplicate(text, target, rng, vocab)))
        below += j < target
        above += j > target
        assert abs(j - target) < 0.2
    assert below >= 8 and above >= 8


def test_near_duplicate_measures_the_original_with_its_own_ngram():
    vocab = S.vocabulary(random.Random(6), 300)
    text = S.random_text(random.Random(7), vocab, 120)
    for n, target in ((3, 0.7), (8, 0.6)):
        variant = S.near_duplicate(text, target, random.Random(8), vocab, ngram=n)
        j = textgen.jaccard(textgen.shingles(text, n), textgen.shingles(variant, n))
        assert abs(j - target) < 0.05


def test_planted_corpus_size_ids_and_seed():
    corpus = S.planted_corpus(seed=7, n_docs=21, n_pairs=10, min_words=30, max_words=30)
    assert len(corpus) == 21
    assert [i for i, _ in corpus] == [stable_id("planted", "7", str(i)) for i in range(21)]
    assert S.planted_corpus(seed=7, n_docs=21, n_pairs=10, min_words=30, max_words=30) == corpus
    other = S.planted_corpus(seed=8, n_docs=21, n_pairs=10, min_words=30, max_words=30)
    assert {t for _, t in other}.isdisjoint(t for _, t in corpus)
    # the 11 originals have exactly 30 words; variants differ from 30 only by their edits
    assert sum(len(t.split()) == 30 for _, t in corpus) >= 11


def test_planted_corpus_word_counts_stay_in_range():
    corpus = S.planted_corpus(seed=1, n_docs=60, n_pairs=0, min_words=10, max_words=12)
    assert {len(t.split()) for _, t in corpus} == {10, 11, 12}


@pytest.mark.parametrize("n_pairs", [-1, 12])
def test_planted_corpus_refuses_pairs_outside_zero_to_half(n_pairs):
    with pytest.raises(ValueError, match="n_pairs must be between 0 and n_docs // 2"):
        S.planted_corpus(seed=0, n_docs=22, n_pairs=n_pairs)
    assert len(S.planted_corpus(seed=0, n_docs=22, n_pairs=11, min_words=10, max_words=10)) == 22


def test_planted_pairs_are_disjoint_shuffled_and_within_their_jaccard_range():
    corpus = S.planted_corpus(seed=3, n_docs=40, n_pairs=20, jmin=0.6, jmax=0.7)
    ids, texts = [i for i, _ in corpus], [t for _, t in corpus]
    pairs = S.exact_pairs(ids, texts, 0.3)
    assert len(pairs) == 20
    assert len({d for p in pairs for d in p}) == 40  # each original has its own variant
    assert all(0.55 <= j <= 0.75 for j in pairs.values())
    assert max(pairs.values()) > 0.65  # jmax is used, not only jmin
    # shuffled: the variants are not simply the second half
    pos = {i: k for k, i in enumerate(ids)}
    assert any(max(pos[a], pos[b]) < 20 for a, b in pairs)


def test_exact_pairs_by_hand():
    # word sets chosen so the 2-shingle sets have known sizes: a has {ab, bc, cd}, b {ab, bc, ce}: J = 2/4
    texts = ["w1 w2 w3 w4", "w1 w2 w3 w5", "x1 x2 x3", "w1 w2 w3 w4"]
    ids = ["d", "c", "b", "a"]
    assert S.exact_pairs(ids, texts, 0.5, ngram=2) == {("c", "d"): 0.5, ("a", "c"): 0.5, ("a", "d"): 1.0}
    assert S.exact_pairs(ids, texts, 0.51, ngram=2) == {("a", "d"): 1.0}
    # the default n is 5: "q r s t u v" has 2 shingles, "q r s t u z" shares 1 of 3
    assert S.exact_pairs(["a", "b"], ["q r s t u v", "q r s t u z"], 0.0) == {("a", "b"): pytest.approx(1 / 3)}


def test_quality_bands_edges_and_rates_by_hand():
    exact = {("a", "b"): 0.6, ("a", "c"): 0.9, ("a", "d"): 0.8, ("a", "e"): 1.0, ("a", "f"): 0.5, ("a", "g"): 0.95}
    found = {("a", "b"), ("a", "c"), ("a", "d"), ("x", "y")}  # ("x", "y") has J < 0.5
    q = S.quality(found, exact, threshold=0.8)
    bands = {r["band"]: r for r in q["bands"]}
    assert list(bands) == ["[0.50, 0.60)", "[0.60, 0.70)", "[0.70, 0.75)", "[0.75, 0.80)", "[0.80, 0.85)",
                           "[0.85, 0.90)", "[0.90, 0.95)", "[0.95, 1.00]"]
    assert {k: (r["pairs"], r["found"], r["reported"]) for k, r in bands.items() if r["pairs"] or r["reported"]} == {
        "[0.50, 0.60)": (1, 0, 0), "[0.60, 0.70)": (1, 1, 1), "[0.80, 0.85)": (1, 1, 1),
        "[0.90, 0.95)": (1, 1, 1), "[0.95, 1.00]": (2, 0, 0)}
    assert bands["[0.60, 0.70)"]["recall"] == 1.0 and bands["[0.50, 0.60)"]["recall"] == 0.0
    assert math.isnan(bands["[0.70, 0.75)"]["recall"])
    assert q["recall_j90"] == 1 / 3  # 0.9, 0.95, 1.0 are >= 0.9; only 0.9 found
    assert q["precision"] == 2 / 4  # 0.8 and 0.9 reach the threshold
    assert q["reported"] == 4 and q["reported_below_0.5"] == 1
    q = S.quality({("a", "f")}, exact, threshold=0.8)
    assert q["reported_below_0.5"] == 0 and q["precision"] == 0.0
    assert math.isnan(S.quality(set(), {}, 0.8)["precision"]) and math.isnan(S.quality(set(), {}, 0.8)["recall_j90"])
