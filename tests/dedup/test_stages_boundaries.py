"""The dedup stages at their edges, against the rules of docs/dedup.md worked by hand: copies of an earlier cluster's
representative counted once in ExactDedup (the larger of the copies' dup_count total and the representative's
cluster_size, not their sum), with in = kept + dropped by reason: each test kills a mutation of stages.py that the
rest of the suite let through."""
from __future__ import annotations

from gristmill.dedup.stages import ExactDedup
from gristmill.pipeline.document import Document


def balanced(stats) -> bool:
    return all(c["in"] == c["kept"] + sum(c.get("dropped", {}).values()) for c in stats["stages"].values())


def test_two_copies_of_an_earlier_representative_stand_for_its_cluster_once(run_dedup):
    """One record read from two copies of its WARC file, both the representative of an earlier cluster of 10:
    the cluster is max(1 + 1, 10) = 10 copies, not 10 + 10."""
    text = "the representative of ten near copies"
    docs = [Document(id="a", url="http://example.com/a", text=text, warc={"file": f"crawl-{k}.warc.gz"},
                     cluster_id="a", cluster_size=10) for k in (1, 0)]
    out, stats = run_dedup(docs, [ExactDedup()])
    assert [(d.id, d.dup_count, d.cluster_id, d.cluster_size) for d in out] == [("a", 2, "a", 10)]
    assert out[0].warc == {"file": "crawl-0.warc.gz"}  # the smaller serialization
    assert stats["stages"]["ExactDedup"]["dropped"] == {"exact_duplicate": 1} and balanced(stats)
