"""MinHashDedup and BloomDedup on Beam: results equal in-memory references, whatever the number of workers."""
import dataclasses
import math
import random
from collections import defaultdict

import pytest

from gristmill.dedup import bloom

from gristmill.dedup.clusters import star_components
from gristmill.dedup.minhash import MinHashConfig, near_duplicate_pairs
from gristmill.dedup.stages import BloomDedup, ExactDedup, LogCountResample, MinHashDedup
from gristmill.dedup.synthetic import planted_corpus


def corpus(make_docs):
    texts = [t for _, t in planted_corpus(seed=3, n_docs=300, n_pairs=120)]
    texts += texts[:10]  # exact copies too
    docs = make_docs(texts)
    chain = "w0 w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12 w13 w14 w15 w16 w17 w18 w19".split()
    for i in range(4):  # a chain a~b~c~d whose ends are not similar: clusters are transitive
        t = list(chain)
        t[i * 4 : i * 4 + 1] = ["x"]
        docs += make_docs([" ".join(t + chain[:30])], prefix=f"chain{i}")
    return docs


def expected_clusters(docs, cfg):
    pairs = near_duplicate_pairs([d.id for d in docs], [d.text for d in docs], cfg)
    comp = star_components(pairs)
    members = defaultdict(list)
    for d in docs:
        members[comp.get(d.id, d.id)].append(d.id)
    return {d.id: (comp.get(d.id, d.id), len(members[comp.get(d.id, d.id)])) for d in docs}


def expected_line_dedup(docs):
    """Plain-set version of BloomDedup: visit documents by id, drop every line whose key was seen before."""
    seen, out = set(), {}
    for d in sorted(docs, key=lambda d: d.id):
        kept = []
        for line in d.text.split("\n"):
            key = bloom.unit_key(line)
            if key is None or key not in seen:
                kept.append(line)
            seen.add(key)
        text = "\n".join(kept)
        if text.split():
            out[d.id] = text
    return out


def test_results_match_references_and_do_not_depend_on_workers(run_dedup, make_docs, tmp_path):
    docs = corpus(make_docs)
    cfg = MinHashConfig()
    expected = expected_clusters(docs, cfg)
    assert sum(1 for cid, size in expected.values() if size > 1) > 100
    expected_text = expected_line_dedup(docs)
    outputs, filters = [], []
    for workers in (1, 2):
        # Clusters come from the original texts; the Bloom stage then strips lines seen in smaller ids.
        # A tiny false-positive rate makes the filter behave like the exact set of the reference.
        saved = tmp_path / f"bloom{workers}"
        stages = [MinHashDedup(config=cfg, keep="all", rounds=2),
                  BloomDedup(num_shards=3, expected_keys=5000, false_positive_rate=1e-9, save_to=str(saved))]
        out, stats = run_dedup(docs, stages, workers=workers, name=f"w{workers}")
        assert {d.id: (d.cluster_id, d.cluster_size) for d in out} == {i: expected[i] for i in expected_text}
        assert {d.id: d.text for d in out} == expected_text
        assert stats["balanced"] and stats["stages"]["BloomDedup"]["units_removed"] > 100
        outputs.append([d.to_json() for d in out])
        filters.append(sorted((p.name, p.read_bytes()) for p in saved.iterdir()))
    assert outputs[0] == outputs[1]
    assert filters[0] == filters[1]


def test_full_chain_keeps_one_weighted_representative(run_dedup, make_docs):
    docs = corpus(make_docs)
    cfg = MinHashConfig()
    expected = expected_clusters(docs, cfg)
    out, stats = run_dedup(docs, [ExactDedup(), MinHashDedup(config=cfg), LogCountResample()], seed=1)
    reps = {cid for cid, _ in expected.values()}
    assert {d.id for d in out} == reps
    for d in out:
        assert d.cluster_size == expected[d.id][1]  # copies removed by ExactDedup still count, via dup_count
        assert d.repeats in (int(d.weight), int(d.weight) + 1)
    s = stats["stages"]
    assert s["MinHashDedup"]["dropped"]["near_duplicate"] == s["ExactDedup"]["kept"] - len(reps)
    assert s["LogCountResample"]["tokens_out"] == sum(len(d.text.split()) * d.repeats for d in out)
    assert s["ExactDedup"]["tokens_in"] >= s["MinHashDedup"]["tokens_in"] >= s["LogCountResample"]["tokens_in"]


def test_unverified_candidates_give_the_core_clusters(run_dedup, make_docs):
    docs = corpus(make_docs)[:150]
    cfg = MinHashConfig(verify=False, bands=16, rows=8)
    out, stats = run_dedup(docs, [MinHashDedup(config=cfg, keep="all")])
    assert {d.id: (d.cluster_id, d.cluster_size) for d in out} == expected_clusters(docs, cfg)
    assert stats["stages"]["MinHashDedup"]["candidate_pairs"] > 0


def near_copies(make_docs):
    """10 near copies of one page (one word changed in each) and 5 unrelated pages."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    base = rng.choices(words, k=300)
    texts = []
    for k in range(10):
        t = list(base)
        t[rng.randrange(300)] = f"edit{k}"
        texts.append(" ".join(t))
    return make_docs(texts + [" ".join(rng.choices(words, k=300)) for _ in range(5)])


def sizes(docs):
    return sorted((d.cluster_size, round(d.weight, 3)) for d in docs)


@pytest.mark.parametrize("keep", ["representative", "all"])
def test_dedup_run_again_over_its_output_keeps_the_cluster_sizes(run_dedup, make_docs, keep):
    # Run again over run 1's output, the representative of the 10 near copies came back as a cluster of 1
    # (weight 1); with keep="all" the members it already stands for must not be counted twice either.
    once = [(1, 1.0)] * 5 + [(10, 2.0)]  # what one pass of ExactDedup, MinHashDedup, LogCountResample gives
    first, _ = run_dedup(near_copies(make_docs), [ExactDedup(), MinHashDedup(keep=keep)], name="first")
    again, _ = run_dedup(first, [ExactDedup(), MinHashDedup(), LogCountResample()], name="again")
    assert sizes(again) == once
    again, _ = run_dedup(first, [MinHashDedup(), LogCountResample()], name="minhash-alone")
    assert sizes(again) == once


def test_representatives_of_two_runs_add_up(run_dedup, make_docs):
    # Run 1 saw the 10 near copies; run 2 saw 4 exact copies of the page run 1 kept, and kept one of them
    # (dup_count 4, its own cluster of 4). Deduplicating the two outputs together gives one document standing
    # for all 14, whichever of the two ids is kept.
    docs = near_copies(make_docs)
    run1, _ = run_dedup(docs[:10], [ExactDedup(), MinHashDedup()], name="run1")
    (kept,) = run1
    for prefix in ("!", "~"):  # ids sorting before and after run 1's
        other = prefix + kept.id
        run2 = [dataclasses.replace(kept, id=other, dup_count=4, cluster_id=other, cluster_size=4)]
        both, _ = run_dedup(run1 + run2, [ExactDedup(), MinHashDedup(), LogCountResample()], name=f"both{ord(prefix)}")
        assert [(d.dup_count, d.cluster_size) for d in both] == [(5, 14)]
        assert both[0].weight == pytest.approx(1 + math.log10(14))


def test_pages_sharing_an_id_are_clustered_only_with_their_near_copies(run_dedup, pages_sharing_ids):
    from gristmill.dedup.stages import doc_key
    from gristmill.pipeline.document import Document

    # Keyed by id, b's two pages were one node: b's second page was dropped as a near copy of a (it is not),
    # and a's cluster counted 3 copies. Each page is its own node, (id, text hash); copies of one page under
    # one id are one node, of which the first serialization is kept.
    pages = pages_sharing_ids
    docs = [Document(id=i, url=f"http://example.com/{i}", text=t, warc=w) for i, ps in pages.items() for t, w in ps]
    text = {i: [t for t, _ in ps] for i, ps in pages.items()}
    d_first = min((d for d in docs if d.id == "d"), key=doc_key).text  # d's two versions: the smaller text hash is the cluster's node
    expected_all = sorted([
        ("a", text["a"][0], "a", 2), ("b", text["b"][0], "a", 2), ("b", text["b"][1], "b", 2),
        ("c", text["c"][0], "b", 2), ("d", text["d"][0], "d", 2), ("d", text["d"][1], "d", 2),
        ("e", text["e"][0], "e", 2), ("e", text["e"][1], "e", 2), ("f", text["f"][0], "f", 1),
    ])
    expected_kept = [("a", text["a"][0], 2), ("b", text["b"][1], 2), ("d", d_first, 2), ("e", text["e"][0], 2),
                     ("f", text["f"][0], 1)]
    # The in-memory reference agrees: pairs between (id, text hash) nodes, and the same clusters.
    comp = star_components(near_duplicate_pairs([doc_key(d) for d in docs], [d.text for d in docs], MinHashConfig()))
    assert sorted((d.id, d.text, comp.get(doc_key(d), doc_key(d))[0]) for d in docs) == [e[:3] for e in expected_all]

    runs = []
    for k, (order, workers) in enumerate(((docs, 1), (docs[::-1], 1), (docs[3:] + docs[:3], 2))):
        out, stats = run_dedup(order, [MinHashDedup(keep="all")], workers=workers, name=f"all{k}")
        assert sorted((d.id, d.text, d.cluster_id, d.cluster_size) for d in out) == expected_all
        kept, stats = run_dedup(order, [MinHashDedup(), LogCountResample()], workers=workers, name=f"kept{k}")
        assert [(d.id, d.text, d.cluster_size) for d in kept] == expected_kept
        assert [d.weight for d in kept] == [1 + math.log10(2)] * 4 + [1.0]
        assert kept[3].warc == {"file": "crawl-0.warc.gz"}  # the first serialization of e's two copies
        s = stats["stages"]["MinHashDedup"]
        assert (s["in"], s["kept"], s["dropped"]) == (9, 5, {"near_duplicate": 4})
        assert s["verified_pairs"] == 3  # a~b, b~c, d~d: e's copies are one node, not a pair
        runs.append((sorted(d.to_json() for d in out), [d.to_json() for d in kept]))
    assert runs[0] == runs[1] == runs[2]


def test_keep_all_marks_the_members_under_the_representatives_id(run_dedup, pages_sharing_ids):
    from gristmill.dedup.stages import doc_key
    from gristmill.pipeline.document import Document

    # With keep="all", d's second version and e's second copy got cluster_id "d" and "e", their own ids, like
    # the representatives: LogCountResample kept them too, and d's cluster of 3 counted twice. They are marked
    # same_id_member, and the chain keeps what keep="representative" keeps, byte for byte.
    pages = {**pages_sharing_ids}
    d0 = pages["d"][0][0].split()
    d0[120] = "edit9"
    pages["g"] = [(" ".join(d0), {})]  # a near copy of d's first version, under a larger id
    docs = [Document(id=i, url=f"http://example.com/{i}", text=t, warc=w) for i, ps in pages.items() for t, w in ps]
    text = {i: [t for t, _ in ps] for i, ps in pages.items()}
    d_first, d_other = sorted(text["d"], key=lambda t: doc_key(Document(id="d", url="", text=t)))
    expected_all = sorted([
        ("a", text["a"][0], "a", 2, False), ("b", text["b"][0], "a", 2, False), ("b", text["b"][1], "b", 2, False),
        ("c", text["c"][0], "b", 2, False), ("d", d_first, "d", 3, False), ("d", d_other, "d", 3, True),
        ("g", text["g"][0], "d", 3, False), ("e", text["e"][0], "e", 2, False), ("e", text["e"][0], "e", 2, True),
        ("f", text["f"][0], "f", 1, False),
    ])
    expected_kept = [("a", text["a"][0], 2), ("b", text["b"][1], 2), ("d", d_first, 3), ("e", text["e"][0], 2),
                     ("f", text["f"][0], 1)]
    log2, log3 = 1 + math.log10(2), 1 + math.log10(3)

    runs = []
    for k, (order, workers) in enumerate(((docs, 1), (docs[::-1], 1), (docs[3:] + docs[:3], 2))):
        out, _ = run_dedup(order, [MinHashDedup(keep="all")], workers=workers, name=f"all{k}")
        kept, stats = run_dedup(out, [LogCountResample()], workers=workers, name=f"resample{k}")
        assert [(d.id, d.text, d.cluster_size) for d in kept] == expected_kept
        assert [d.weight for d in kept] == pytest.approx([log2, log2, log3, log2, 1.0])
        s = stats["stages"]["LogCountResample"]
        assert (s["in"], s["kept"], s["dropped"]) == (10, 5, {"near_duplicate": 5})
        assert s["tokens_out"] == sum(len(d.text.split()) * d.repeats for d in kept)

        assert sorted((d.id, d.text, d.cluster_id, d.cluster_size, d.same_id_member) for d in out) == expected_all
        e_copies = sorted((d.same_id_member, d.warc["file"]) for d in out if d.id == "e")
        assert e_copies == [(False, "crawl-0.warc.gz"), (True, "crawl-1.warc.gz")]  # the first serialization
        assert sum('"same_id_member":true' in d.to_json() for d in out) == 2
        assert sum("same_id_member" in d.to_json() for d in out) == 2  # written only where it is true

        reference, _ = run_dedup(order, [MinHashDedup(), LogCountResample()], workers=workers, name=f"rep{k}")
        assert [d.to_json() for d in kept] == [d.to_json() for d in reference]
        # A second dedup over the keep="all" output takes the marked members for members too.
        again, stats = run_dedup(out, [MinHashDedup(), LogCountResample()], workers=workers, name=f"again{k}")
        assert [d.to_json() for d in again] == [d.to_json() for d in reference]
        for s in stats["stages"].values():
            assert s["in"] == s["kept"] + sum(s.get("dropped", {}).values())
        runs.append((sorted(d.to_json() for d in out), [d.to_json() for d in kept]))
    assert runs[0] == runs[1] == runs[2]


STAGE_ORDERS = {  # each followed by LogCountResample
    "exact-minhash": lambda: [ExactDedup(), MinHashDedup()],
    "minhash_all-exact": lambda: [MinHashDedup(keep="all"), ExactDedup()],
    "exact-minhash_all-exact": lambda: [ExactDedup("Exact1"), MinHashDedup(keep="all"), ExactDedup("Exact2")],
    "minhash_all-minhash": lambda: [MinHashDedup("MinHash1", keep="all"), MinHashDedup("MinHash2")],
    "minhash_all-exact-minhash": lambda: [MinHashDedup("MinHash1", keep="all"), ExactDedup(),
                                            MinHashDedup("MinHash2")],
}


@pytest.mark.parametrize("order", STAGE_ORDERS)
def test_sizes_and_weights_do_not_depend_on_the_order_of_dedup_stages(run_dedup, order):
    from gristmill.pipeline.document import Document

    # ExactDedup over keep="all" output counted a representative's exact copy twice: the representative's
    # cluster_size counts it, and the copy added its own dup_count (a's cluster of 3 became 4, p's of 5 became 7,
    # e's of 3 became 4). It counts copies per earlier cluster now, as MinHashDedup does.
    rng = random.Random(2)
    words = [f"w{i}" for i in range(5000)]

    def pages(k):
        base = rng.choices(words, k=200)
        near = [list(base) for _ in range(k)]
        for i, n in enumerate(near):
            n[40 + 30 * i] = f"edit{i}"
        return " ".join(base), [" ".join(n) for n in near]

    (a, (a_near,)), (p, (p_near1, p_near2)), (e, (e_near,)), (f, _) = pages(1), pages(2), pages(1), pages(0)
    docs = [Document(id=i, url=f"http://example.com/{i}", text=t, warc=w) for i, t, w in [
        ("a", a, {}), ("b", a.upper(), {}), ("c", a_near, {}),  # a, an exact copy, a near copy: 3 copies
        ("p", p, {}), ("q", p.replace(" ", "\n"), {}), ("r", p, {}), ("s", p_near1, {}), ("t", p_near2, {}),  # 5
        ("e", e, {"file": "crawl-1.warc.gz"}), ("e", e, {"file": "crawl-0.warc.gz"}), ("h", e_near, {}),  # 3
        ("f", f, {}),
    ]]
    log3, log5 = 1 + math.log10(3), 1 + math.log10(5)
    expected = [("a", a, 3, log3), ("e", e, 3, log3), ("f", f, 1, 1.0), ("p", p, 5, log5)]

    runs = []
    for k, (inputs, workers) in enumerate(((docs, 1), (docs[::-1], 1), (docs[5:] + docs[:5], 2))):
        out, stats = run_dedup(inputs, [*STAGE_ORDERS[order](), LogCountResample()], workers=workers, seed=3,
                               name=f"run{k}")
        assert [(d.id, d.text, d.cluster_size) for d in out] == [x[:3] for x in expected]
        assert [d.weight for d in out] == pytest.approx([x[3] for x in expected])
        assert [d.warc for d in out if d.id == "e"] == [{"file": "crawl-0.warc.gz"}]
        s = stats["stages"]
        assert all(c["in"] == c["kept"] + sum(c.get("dropped", {}).values()) for c in s.values())
        assert stats["balanced"] and s["LogCountResample"]["kept"] == 4
        runs.append([d.to_json() for d in out])
    assert runs[0] == runs[1] == runs[2]


def test_the_stage_keeps_a_pair_exactly_at_the_cut(run_dedup, make_docs, pair_at_the_cut):
    """As near_duplicate_pairs: a pair whose estimated Jaccard equals the verify threshold is a duplicate."""
    a, b, _, cfg = pair_at_the_cut
    out, stats = run_dedup(make_docs([a, b]), [MinHashDedup(config=cfg, keep="all")])
    assert [d.cluster_size for d in out] == [2, 2]
    assert stats["stages"]["MinHashDedup"]["verified_pairs"] == 1


def test_the_stage_counts_unshingled_documents_oversized_buckets_and_cluster_members(run_dedup, make_docs):
    rng = random.Random(2)
    words = [f"w{i}" for i in range(5000)]
    page = rng.choices(words, k=200)
    copies = []
    for k in range(4):  # four near copies: one word each edited, every pair about 0.95 alike
        p = list(page)
        p[40 * k + 10] = f"edit{k}"
        copies.append(" ".join(p))
    docs = make_docs(copies + ["", " ".join(rng.choices(words, k=200))])
    for size, oversized in ((2, True), (50, False)):
        cfg = MinHashConfig(max_bucket_size=size)
        out, stats = run_dedup(docs, [MinHashDedup(config=cfg, keep="all")], name=f"b{size}")
        s = stats["stages"]["MinHashDedup"]
        assert s["no_shingles"] == 1  # the empty text: kept, in no bucket
        assert s["in_clusters"] == 4 and sorted(d.cluster_size for d in out) == [1, 1, 4, 4, 4, 4]
        assert (s.get("oversized_buckets", 0) > 0) is oversized  # buckets holding 3 or 4 of the copies
