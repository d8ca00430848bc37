"""MinHash core against datasketch itself: banding parameters, signatures, and the Jaccard estimate."""
import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from gristmill.dedup.minhash import (
    HASHFUNC, SCHEME, MinHashConfig, band_keys, bucket_pairs, candidate_probability, estimated_jaccard, lsh_params,
    near_duplicate_pairs, shingles, signatures,
)
from gristmill.errors import UserError
from gristmill.pipeline import textgen


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.3, 0.7)])
def test_banding_matches_datasketch_optimum(threshold, weights):
    assert lsh_params(threshold, 128, *weights) == _optimal_param(threshold, 128, *weights)


def test_default_banding_keeps_high_similarity_pairs():
    b, r = MinHashConfig().banding()
    assert b * r <= 128
    assert candidate_probability(0.9, b, r) > 0.98  # what the recall target for J >= 0.9 rests on


def test_explicit_banding_and_bad_values():
    assert MinHashConfig(bands=16, rows=8).banding() == (16, 8)
    with pytest.raises(UserError, match="fit num_perm"):
        MinHashConfig(bands=20, rows=8)
    with pytest.raises(UserError, match="both bands and rows"):
        MinHashConfig(bands=20)
    with pytest.raises(UserError, match="threshold"):
        MinHashConfig(threshold=1.5)


def test_shingles_are_word_ngrams_like_textgen():
    text = "The quick, brown fox -- jumps over the lazy dog. The End"
    assert shingles(text, 3) == {" ".join(s) for s in textgen.shingles(text, 3)}
    assert shingles("two words", 5) == {"two words"}
    assert shingles(" ... ", 5) == set()


def test_bulk_signatures_equal_one_by_one_datasketch():
    texts = ["a b c d e f g h i j k", "a b c d e f g h i j x", "completely different words here and there ok"]
    cfg = MinHashConfig(num_perm=64, seed=3)
    sigs = signatures([shingles(t, cfg.ngram) for t in texts], cfg)
    for t, sig in zip(texts, sigs):
        m = MinHash(num_perm=64, seed=3, scheme=SCHEME, hashfunc=HASHFUNC)
        for s in shingles(t, cfg.ngram):
            m.update(s.encode())
        assert np.array_equal(sig, m.hashvalues.astype(np.uint32))
    assert sigs.dtype == np.uint32 and sigs.shape == (3, 64)


def test_estimate_tracks_exact_jaccard():
    words = [f"w{i}" for i in range(400)]
    a = " ".join(words)
    b = " ".join(words[:300] + [f"x{i}" for i in range(100)])
    sa, sb = shingles(a), shingles(b)
    exact = len(sa & sb) / len(sa | sb)
    cfg = MinHashConfig(num_perm=512)
    sig = signatures([sa, sb], cfg)
    # standard error sqrt(J(1-J)/512) ~ 0.021; allow 4 of them
    assert abs(estimated_jaccard(sig[0], sig[1]) - exact) < 4 * np.sqrt(exact * (1 - exact) / 512)


def test_band_keys_and_buckets():
    sig = np.arange(128, dtype=np.uint32)
    keys = band_keys(sig, 11, 11)
    assert len(set(keys)) == 11 and keys == band_keys(sig.copy(), 11, 11)
    other = sig.copy()
    other[0] += 1  # only band 0 changes
    assert [k1 == k2 for k1, k2 in zip(keys, band_keys(other, 11, 11))] == [False] + [True] * 10
    assert bucket_pairs(["c", "a", "b"], 10) == ([("a", "b"), ("a", "c"), ("b", "c")], False)
    assert bucket_pairs(["c", "a", "b"], 2) == ([("a", "b"), ("a", "c")], True)


def test_pairs_of_pages_sharing_an_id_match_datasketch_lsh(pages_sharing_ids):
    from datasketch import MinHashLSH

    from gristmill.dedup.stages import doc_key
    from gristmill.pipeline.document import Document

    docs = [Document(id=i, url="u", text=t) for i, ps in pages_sharing_ids.items() for t, _ in ps]
    cfg = MinHashConfig()
    # By id, b's second page replaced its first one's signature and the pair a~b was lost without a word.
    with pytest.raises(ValueError, match="two different texts"):
        near_duplicate_pairs([d.id for d in docs], [d.text for d in docs], cfg)
    nodes = [doc_key(d) for d in docs]
    sets = [shingles(d.text, cfg.ngram) for d in docs]
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(0.3, 0.7))
    minhashes = {}
    for node, ss in zip(nodes, sets):
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=SCHEME, hashfunc=HASHFUNC)
        m.update_batch([s.encode() for s in ss])
        if node not in minhashes:
            minhashes[node] = m
            lsh.insert(node, m)
    expected = {tuple(sorted((a, b))): minhashes[a].jaccard(minhashes[b])
                for a, m in minhashes.items() for b in lsh.query(m) if a != b}
    expected = {p: j for p, j in expected.items() if j >= cfg.verify_threshold()}
    assert near_duplicate_pairs(nodes, [d.text for d in docs], cfg) == pytest.approx(expected)
    assert {(a[0], b[0]) for a, b in expected} == {("a", "b"), ("b", "c"), ("d", "d")}


def test_each_band_key_covers_its_rows_and_its_band():
    """Band b hashes rows b*r .. b*r + r - 1 and its own index: a change in a band's last row changes that
    band's key only, and equal rows in different bands give different keys (no cross-band collisions)."""
    sig = np.arange(128, dtype=np.uint32)
    keys = band_keys(sig, 11, 11)
    for row, band in ((0, 0), (10, 0), (11, 1), (120, 10)):
        other = sig.copy()
        other[row] += 1000
        assert [a != b for a, b in zip(keys, band_keys(other, 11, 11))] == [k == band for k in range(11)]
    assert len(set(band_keys(np.zeros(128, dtype=np.uint32), 16, 8))) == 16


def test_a_bucket_at_its_size_limit_still_gives_its_pairs():
    assert bucket_pairs(["c", "a", "b"], 3) == ([("a", "b"), ("a", "c"), ("b", "c")], False)


def test_verification_keeps_a_pair_exactly_at_the_cut(pair_at_the_cut):
    """Pairs are kept when their estimated Jaccard is at least the verify threshold."""
    a, b, est, cfg = pair_at_the_cut
    assert near_duplicate_pairs(["a", "b"], [a, b], cfg) == {("a", "b"): est}


def test_the_default_verify_margin_is_one_standard_error():
    """threshold + sqrt(t(1 - t) / num_perm): the standard error of the estimate at the threshold."""
    import math

    assert MinHashConfig().verify_threshold() == pytest.approx(0.8 + math.sqrt(0.8 * 0.2 / 128), rel=1e-12)
    assert MinHashConfig(verify_margin=0.0).verify_threshold() == 0.8
