"""Shared helpers for dedup tests: run stages on in-memory documents and read the result back."""
from __future__ import annotations

import random

import pytest

from gristmill.pipeline.docio import CreateDocuments, WriteDocuments, read_documents
from gristmill.pipeline.document import Document, stable_id
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext


def _make_docs(texts, prefix="doc"):
    return [Document(id=stable_id(prefix, str(i)), url=f"http://example.com/{i}", text=t) for i, t in enumerate(texts)]


@pytest.fixture
def make_docs():
    """make_docs(texts, prefix="doc") -> Documents with stable hex ids."""
    return _make_docs


@pytest.fixture
def run_dedup(tmp_path):
    """run_dedup(docs, stages, workers=1, seed=0, name="run") -> (documents sorted by id, stats)."""

    def run(docs, stages, workers=1, seed=0, name="run"):
        out = tmp_path / name
        ctx = RunContext(output=str(out), seed=seed)
        args = [f"--direct_num_workers={workers}"]
        if workers == 1:
            args.append("--direct_running_mode=in_memory")
        stats = run_stages([CreateDocuments("Create", docs), *stages, WriteDocuments(shards=2)], ctx, args)
        return sorted(read_documents(str(out / "documents")), key=lambda d: d.id), stats

    return run


@pytest.fixture
def pages_sharing_ids():
    """Pages that share ids, {id: [(text, warc), ...]}, whose clusters are clear enough to work out by hand.

    Each page is 200 random words; a near copy changes one word (Jaccard of 5-gram shingles about 0.95), and
    unrelated pages share no shingle, so every pair is far from the threshold on either side."""
    rng = random.Random(1)
    words = [f"w{i}" for i in range(5000)]

    def page():
        return rng.choices(words, k=200)

    def edit(p, k):
        p = list(p)
        p[50 + k] = f"edit{k}"
        return " ".join(p)

    p1, p2, p3, p4, p5 = page(), page(), page(), page(), page()
    return {
        "b": [(" ".join(p1), {}), (" ".join(p2), {})],  # two different pages under one id
        "a": [(edit(p1, 1), {})],  # a near copy of b's first page, with a smaller id
        "c": [(edit(p2, 2), {})],  # a near copy of b's second page, with a larger id
        "d": [(" ".join(p3), {}), (edit(p3, 3), {})],  # one page fetched twice under one id: near copies
        "e": [(" ".join(p4), {"file": f"crawl-{k}.warc.gz"}) for k in (1, 0)],  # one record read twice
        "f": [(" ".join(p5), {})],
    }


@pytest.fixture
def pair_at_the_cut():
    """(text a, text b, their estimated Jaccard, a MinHashConfig whose verify threshold is exactly that estimate,
    with one band per row so the pair is a candidate): two 200-word pages one word apart."""
    from gristmill.dedup.minhash import MinHashConfig, estimated_jaccard, shingles, signatures

    rng = random.Random(1)
    words = [f"w{i}" for i in range(5000)]
    p = rng.choices(words, k=200)
    q = list(p)
    q[100] = "edit"
    a, b = " ".join(p), " ".join(q)
    sig = signatures([shingles(a), shingles(b)], MinHashConfig())
    est = estimated_jaccard(sig[0], sig[1])
    return a, b, est, MinHashConfig(threshold=est, verify_margin=0.0, bands=128, rows=1)
