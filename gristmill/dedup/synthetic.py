"""A generated corpus with planted near-duplicate pairs at known Jaccard similarity, for dedup tests and benchmarks.

Words come from a random vocabulary of pseudo-words, so unrelated documents share almost no 5-word shingles;
each planted variant is edited (word substitutions, deletions, insertions) until its exact shingle Jaccard with
the original is as close to the target as word edits allow.
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np
from scipy import sparse

from gristmill.dedup.minhash import shingles
from gristmill.pipeline import textgen
from gristmill.pipeline.document import stable_id

_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def vocabulary(rng: random.Random, size: int = 20000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def random_text(rng: random.Random, vocab: list[str], n_words: int) -> str:
    """n_words words in lines of 8-20 words."""
    words = rng.choices(vocab, k=n_words)
    lines, i = [], 0
    while i < n_words:
        k = rng.randint(8, 20)
        lines.append(" ".join(words[i : i + k]))
        i += k
    return "\n".join(lines)


def near_duplicate(text: str, target: float, rng: random.Random, vocab: list[str], ngram: int = 5) -> str:
    """A variant of `text` whose exact shingle Jaccard with it is as close to `target` as word edits allow."""
    lines = [line.split() for line in text.split("\n")]
    positions = [(i, j) for i, line in enumerate(lines) for j in range(len(line))]
    rng.shuffle(positions)
    edits = [(rng.random(), rng.choice(vocab)) for _ in positions]
    original = shingles(text, ngram)

    def variant(k: int) -> str:
        out = [list(line) for line in lines]
        for (i, j), (r, filler) in zip(positions[:k], edits[:k]):
            if r < 0.7:
                out[i][j] = filler
            elif r < 0.85:
                out[i][j] = ""
            else:
                out[i][j] = out[i][j] + " " + filler
        return "\n".join(" ".join(w for w in line if w) for line in out)

    def score(k: int) -> float:
        return textgen.jaccard(original, shingles(variant(k), ngram))

    lo, hi = 0, len(positions)
    while hi - lo > 1:  # J falls as edits accumulate: bisect for the crossing
        mid = (lo + hi) // 2
        if score(mid) >= target:
            lo = mid
        else:
            hi = mid
    return variant(min((lo, hi), key=lambda k: abs(score(k) - target)))


def planted_corpus(
    seed: int, n_docs: int, n_pairs: int, min_words: int = 50, max_words: int = 150,
    jmin: float = 0.5, jmax: float = 1.0,
) -> list[tuple[str, str]]:
    """(id, text) for n_docs documents, of which n_pairs are near-duplicates of other documents, with target
    Jaccard uniform in [jmin, jmax]. Ids are stable hex ids of (seed, position); the order is shuffled."""
    if not 0 <= n_pairs <= n_docs // 2:
        raise ValueError(f"n_pairs must be between 0 and n_docs // 2, not {n_pairs}")
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    texts = [random_text(rng, vocab, rng.randint(min_words, max_words)) for _ in range(n_docs - n_pairs)]
    texts += [near_duplicate(texts[i], rng.uniform(jmin, jmax), rng, vocab) for i in range(n_pairs)]
    rng.shuffle(texts)
    return [(stable_id("planted", str(seed), str(i)), t) for i, t in enumerate(texts)]


def exact_pairs(
    ids: Sequence[str], texts: Sequence[str], min_jaccard: float, ngram: int = 5
) -> dict[tuple[str, str], float]:
    """Exact shingle Jaccard of every pair of documents with J >= min_jaccard (a < b).

    All n^2/2 pairs are covered: a sparse document x shingle product gives every pair's intersection, and pairs
    with no shared shingle have J = 0. Shingles are taken with textgen.shingles, an implementation independent
    of the one MinHash uses.
    """
    index: dict = {}
    rows, cols = [], []
    for r, text in enumerate(texts):
        for s in textgen.shingles(text, ngram):
            rows.append(r)
            cols.append(index.setdefault(s, len(index)))
    m = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(texts), len(index)))
    sizes = np.asarray(m.sum(axis=1)).ravel()
    inter = sparse.triu(m @ m.T, k=1).tocoo()
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    out = {}
    for i, j, v in zip(inter.row, inter.col, jac):
        if v >= min_jaccard:
            a, b = sorted((ids[i], ids[j]))
            out[(a, b)] = float(v)
    return out


BANDS = ((0.5, 0.6), (0.6, 0.7), (0.7, 0.75), (0.75, 0.8), (0.8, 0.85), (0.85, 0.9), (0.9, 0.95), (0.95, 1.01))


def quality(found: set[tuple[str, str]], exact: dict[tuple[str, str], float], threshold: float) -> dict:
    """Recall per exact-Jaccard band, recall for J >= 0.9, and precision of the reported pairs
    (a reported pair is right when its exact Jaccard is >= threshold; `exact` must hold all pairs >= 0.5)."""
    rows = []
    for lo, hi in BANDS:
        band = [p for p, j in exact.items() if lo <= j < hi]
        hit = sum(1 for p in band if p in found)
        reported = sum(1 for p in found if lo <= exact.get(p, 0.0) < hi)
        rows.append({"band": f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}", "pairs": len(band), "found": hit,
                     "recall": hit / len(band) if band else float("nan"), "reported": reported})
    high = [p for p, j in exact.items() if j >= 0.9]
    right = sum(1 for p in found if exact.get(p, 0.0) >= threshold)
    return {
        "bands": rows,
        "recall_j90": sum(1 for p in high if p in found) / len(high) if high else float("nan"),
        "precision": right / len(found) if found else float("nan"),
        "reported": len(found),
        "reported_below_0.5": sum(1 for p in found if exact.get(p, 0.0) < 0.5),
    }
