"""Shared helpers for dedup tests: run stages on in-memory documents and read the result back."""
from __future__ import annotations

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
