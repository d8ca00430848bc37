"""The dedup stages at their edges, against the rules of docs/dedup.md worked by hand: copies of an earlier cluster's
representative counted once in ExactDedup (the larger of the copies' dup_count total and the representative's
cluster_size, not their sum), cluster fields left alone on copies in no cluster, a kept member under the
representative's id unmarked so resampling keeps it, an unknown keep refused, with in = kept + dropped by reason
throughout: each test kills a mutation of stages.py that the rest of the suite let through."""
from __future__ import annotations

import math

import pytest

from gristmill.dedup.stages import ExactDedup, LogCountResample, MinHashDedup
from gristmill.errors import UserError
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


def test_an_unknown_keep_is_one_user_error_naming_the_stage():
    """Anything but "all" would otherwise keep representatives only, silently: keep="first" is a typo, not a mode."""
    with pytest.raises(UserError, match=r"^stage Near: keep must be 'representative' or 'all', not 'first'$"):
        MinHashDedup("Near", keep="first")
    assert MinHashDedup(keep="all").keep == "all"


def test_exact_dedup_of_documents_in_no_cluster_sets_only_dup_count(run_dedup, make_docs):
    """docs/dedup.md: ExactDedup sets dup_count; cluster fields are set only when a copy is an earlier cluster's
    representative, so a plain exact pass leaves no cluster for a later stage to mistake for an earlier run's."""
    docs = make_docs(["one two", "One  two", "three"])
    out, stats = run_dedup(docs, [ExactDedup()])
    assert sorted((d.dup_count, d.cluster_id, d.same_id_member) for d in out) == [(1, None, False), (2, None, False)]
    fresh = Document(id="x", url="u", text="t")
    assert all(d.cluster_size == fresh.cluster_size for d in out) and balanced(stats)


def test_a_kept_member_under_the_representative_s_id_becomes_the_representative(run_dedup):
    """An earlier keep="all" run left, under id "a", its representative and a member marked same_id_member whose text
    differs only in case: ExactDedup joins them and keeps the smaller text, the member's. It stands for the cluster
    (2 copies) and is no longer marked, so LogCountResample keeps it with weight 1 + log10 2 instead of dropping the
    cluster's only document as a near_duplicate."""
    rep = Document(id="a", url="http://example.com/a", text="hello world again", cluster_id="a", cluster_size=2)
    member = Document(id="a", url="http://example.com/a", text="Hello world again", cluster_id="a", cluster_size=2,
                      same_id_member=True)
    for order in ([rep, member], [member, rep]):
        out, stats = run_dedup(order, [ExactDedup(), LogCountResample()], name=f"run{order[0].text[0]}")
        assert [(d.text, d.cluster_id, d.cluster_size, d.dup_count, d.same_id_member) for d in out] == [
            ("Hello world again", "a", 2, 2, False)]
        assert out[0].weight == pytest.approx(1 + math.log10(2))
        s = stats["stages"]
        assert s["LogCountResample"]["kept"] == 1 and "dropped" not in s["LogCountResample"] and balanced(stats)
