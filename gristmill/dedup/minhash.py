"""MinHash-LSH core: word n-gram shingles, bulk datasketch signatures, LSH band keys and pair verification.

Signatures are pinned so they are comparable across runs and datasketch versions: scheme "affine32",
hash function xxh32 (xxhash), seed and num_perm from the config. No Beam in here.
"""
from __future__ import annotations

import math
import re
import struct
import unicodedata
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np
import xxhash
from datasketch import MinHash

from gristmill.errors import UserError

SCHEME = "affine32"
HASHFUNC = xxhash.xxh32_intdigest
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class MinHashConfig:
    """Near-duplicate parameters. `bands` x `rows` come from `threshold` unless both are given.

    The derived banding weights false negatives above false positives (0.7 / 0.3) because candidate pairs
    are verified afterwards: a false positive costs one signature comparison, a false negative is lost.
    Verification reports a pair when its estimated Jaccard is at least threshold + verify_margin. The default
    margin (None) is one standard error of the estimate at the threshold, sqrt(t (1 - t) / num_perm), 0.035 for
    t = 0.8 and 128 permutations: pairs just below the threshold then rarely pass on estimation noise alone
    (measured, docs/dedup.md: precision 0.91-0.97 with margin 0, 0.97-1.0 with the default; recall for J >= 0.9
    stays above 0.98 in both).
    """

    ngram: int = 5
    num_perm: int = 128
    threshold: float = 0.8
    bands: int | None = None
    rows: int | None = None
    seed: int = 1
    verify: bool = True
    verify_margin: float | None = None
    max_bucket_size: int = 100
    false_positive_weight: float = 0.3
    false_negative_weight: float = 0.7

    def __post_init__(self):
        if self.ngram < 1:
            raise UserError(f"minhash: ngram must be >= 1, not {self.ngram}")
        if self.num_perm < 2:
            raise UserError(f"minhash: num_perm must be >= 2, not {self.num_perm}")
        if not 0.0 < self.threshold < 1.0:
            raise UserError(f"minhash: threshold must be between 0 and 1, not {self.threshold}")
        if (self.bands is None) != (self.rows is None):
            raise UserError("minhash: give both bands and rows, or neither (then they are derived from threshold)")
        if self.bands is not None and (self.bands < 1 or self.rows < 1 or self.bands * self.rows > self.num_perm):
            raise UserError(
                f"minhash: bands x rows = {self.bands} x {self.rows} must be positive and fit num_perm={self.num_perm}"
            )
        if self.verify_margin is not None and not 0.0 <= self.verify_margin < 1.0:
            raise UserError(f"minhash: verify_margin must be in [0, 1), not {self.verify_margin}")
        if self.max_bucket_size < 2:
            raise UserError(f"minhash: max_bucket_size must be >= 2, not {self.max_bucket_size}")

    def verify_threshold(self) -> float:
        margin = self.verify_margin
        if margin is None:
            margin = math.sqrt(self.threshold * (1 - self.threshold) / self.num_perm)
        return min(self.threshold + margin, 1.0)

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        return lsh_params(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)


def candidate_probability(jaccard, bands: int, rows: int):
    """Probability that two sets with this Jaccard similarity share at least one LSH band."""
    return 1.0 - (1.0 - np.asarray(jaccard, dtype=np.float64) ** rows) ** bands


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing fp_weight * FP area + fn_weight * FN area of the S-curve (MMDS ch. 3)."""
    below = np.linspace(0.0, threshold, 401)
    above = np.linspace(threshold, 1.0, 401)

    def area(y, x):  # trapezoid rule (np.trapezoid is numpy >= 2 only)
        return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2)

    best, best_err = (1, 1), float("inf")
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            fp = area(candidate_probability(below, b, r), below)
            fn = area(1.0 - candidate_probability(above, b, r), above)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err:
                best, best_err = (b, r), err
    return best


def shingles(text: str, n: int = 5) -> set[str]:
    """Word n-grams of the lower-cased NFKC text (words = runs of \\w). Texts shorter than n give one shingle."""
    words = _WORD.findall(unicodedata.normalize("NFKC", text).lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def signatures(shingle_sets: Sequence[Iterable[str]], cfg: MinHashConfig) -> np.ndarray:
    """uint32 signatures, one row per set, via datasketch's bulk path (MinHash.generator + update_batch).

    Rows of empty sets are all 0xFFFFFFFF; callers skip them (they would all collide).
    """
    encoded = [[s.encode("utf-8", "surrogatepass") for s in ss] for ss in shingle_sets]
    out = np.empty((len(encoded), cfg.num_perm), dtype=np.uint32)
    gen = MinHash.generator(encoded, num_perm=cfg.num_perm, seed=cfg.seed, scheme=SCHEME, hashfunc=HASHFUNC)
    for i, m in enumerate(gen):
        out[i] = m.hashvalues
    return out


def band_keys(signature: np.ndarray, bands: int, rows: int) -> list[bytes]:
    """One bucket key per band: band index + 64-bit hash of that band's rows."""
    return [
        struct.pack(">H", i) + xxhash.xxh3_64_digest(signature[i * rows : (i + 1) * rows].tobytes())
        for i in range(bands)
    ]


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / len(a)


def bucket_pairs(nodes: Iterable[Hashable], max_bucket_size: int) -> tuple[list[tuple], bool]:
    """Candidate pairs (a < b) of the nodes (document ids, or doc_keys) in one LSH bucket, and whether the
    bucket was oversized.

    An oversized bucket (typically a template repeated thousands of times) would give a quadratic number of
    pairs; it gives a star from its smallest node instead, which keeps the bucket connected in one cluster.
    """
    nodes = sorted(set(nodes))
    if len(nodes) <= max_bucket_size:
        return [(nodes[i], nodes[j]) for i in range(len(nodes)) for j in range(i + 1, len(nodes))], False
    return [(nodes[0], x) for x in nodes[1:]], True


def near_duplicate_pairs(nodes: Sequence[Hashable], texts: Sequence[str], cfg: MinHashConfig) -> dict[tuple, float]:
    """In-memory version of what MinHashDedup does in Beam: (a, b) -> estimated Jaccard for every reported pair.

    `nodes` name the texts: document ids when they are unique, else (id, text hash) as MinHashDedup keys them
    (stages.doc_key). A node given twice is one text (its copies); one given with two texts is an error, not
    one signature silently replacing the other. For tests, benchmarks and corpora that fit one machine.
    """
    bands, rows = cfg.banding()
    sets = [shingles(t, cfg.ngram) for t in texts]
    sigs = signatures(sets, cfg)
    buckets: dict[bytes, list] = {}
    index, text_of = {}, {}
    for node, text, ss, sig in zip(nodes, texts, sets, sigs):
        if text_of.setdefault(node, text) != text:
            raise ValueError(f"near_duplicate_pairs: node {node!r} is given two different texts; "
                             "name documents that share an id by (id, text hash)")
        if not ss or node in index:
            continue
        index[node] = sig
        for key in band_keys(sig, bands, rows):
            buckets.setdefault(key, []).append(node)
    pairs: dict[tuple, float] = {}
    for members in buckets.values():
        if len(members) > 1:
            for a, b in bucket_pairs(members, cfg.max_bucket_size)[0]:
                if (a, b) not in pairs:
                    pairs[(a, b)] = estimated_jaccard(index[a], index[b])
    if cfg.verify:
        cut = cfg.verify_threshold()
        pairs = {p: j for p, j in pairs.items() if j >= cut}
    return pairs
