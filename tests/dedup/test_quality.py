"""Near-duplicate quality on planted pairs, against exact Jaccard over all pairs (the issue's acceptance figures)."""
from gristmill.dedup.minhash import MinHashConfig, near_duplicate_pairs
from gristmill.dedup.synthetic import exact_pairs, planted_corpus, quality
from gristmill.pipeline import textgen


def test_planted_pairs_reach_their_target_jaccard():
    corpus = planted_corpus(seed=1, n_docs=40, n_pairs=20)
    texts = dict(corpus)
    pairs = exact_pairs(list(texts), list(texts.values()), 0.45)
    assert len(pairs) >= 18  # planted targets are >= 0.5; edits land within a few hundredths
    for (a, b), j in pairs.items():
        assert abs(j - textgen.jaccard(textgen.shingles(texts[a]), textgen.shingles(texts[b]))) < 1e-12


def test_default_threshold_meets_recall_and_precision_targets():
    corpus = planted_corpus(seed=0, n_docs=1600, n_pairs=600)
    ids, texts = [i for i, _ in corpus], [t for _, t in corpus]
    exact = exact_pairs(ids, texts, 0.5)
    assert sum(1 for j in exact.values() if j >= 0.9) >= 100
    cfg = MinHashConfig()
    assert cfg.threshold == 0.8
    q = quality(set(near_duplicate_pairs(ids, texts, cfg)), exact, cfg.threshold)
    assert q["recall_j90"] >= 0.95
    assert q["precision"] >= 0.95
    assert q["reported_below_0.5"] == 0
