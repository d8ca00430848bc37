"""Exact dedup: normalization, and dup_count against a brute-force count of normalized copies."""
from collections import Counter


from gristmill.dedup.exact import normalize_text, text_key
from gristmill.dedup.stages import ExactDedup


def test_normalization_joins_layout_and_case_variants():
    assert normalize_text("  Hello\n\tWORLD  ") == "hello world"
    assert text_key("Ｈｅｌｌｏ world") == text_key("hello   WORLD")  # NFKC folds full-width letters
    assert text_key("hello world") != text_key("hello world!")


def test_exact_dedup_counts_every_copy(run_dedup, make_docs):
    texts = ["alpha beta", "Alpha  beta", "ALPHA BETA\n", "gamma", "delta epsilon", "delta epsilon", "zeta"]
    docs = make_docs(texts)
    out, stats = run_dedup(docs, [ExactDedup()])
    groups: dict[str, list] = {}
    for d in docs:
        groups.setdefault(" ".join(d.text.lower().split()), []).append(d.id)
    expected = {min(ids): len(ids) for ids in groups.values()}
    assert {d.id: d.dup_count for d in out} == expected
    s = stats["stages"]["ExactDedup"]
    assert s["in"] == 7 and s["kept"] == 4 and s["dropped"] == {"exact_duplicate": 3}
    assert s["tokens_in"] == sum(len(t.split()) for t in texts)
    assert s["tokens_out"] == sum(len(d.text.split()) for d in out)
    assert stats["balanced"]


def test_exact_dedup_adds_counts_of_earlier_runs(run_dedup, make_docs):
    docs = make_docs(["same text"] * 3)
    docs[0].dup_count = 5  # already the survivor of 5 copies in an earlier pass
    out, _ = run_dedup(docs, [ExactDedup()])
    assert [d.dup_count for d in out] == [7]
    assert Counter(d.id for d in out) == Counter([min(d.id for d in docs)])


def test_copies_sharing_an_id_keep_the_same_one_whatever_the_order(run_dedup):
    from gristmill.pipeline.document import Document

    # Copies under one id (a WARC that reuses a record id) that differ in case or layout: the one kept must not
    # be whichever came first, or the output would change with bundle order. The rule extends "smallest id":
    # smallest (id, text), here the capitalised one ("H" < "h").
    docs = [Document(id="same", url="u", text=t) for t in ("hello   world", "Hello world", "hello\nWORLD")]
    outs = [run_dedup(order, [ExactDedup()], name=f"o{k}")[0]
            for k, order in enumerate((docs, docs[::-1], docs[1:] + docs[:1]))]
    assert [[(d.text, d.dup_count) for d in out] for out in outs] == [[("Hello world", 3)]] * 3


def test_copies_of_one_record_keep_the_same_one_whatever_the_order(run_dedup):
    from gristmill.pipeline.document import Document

    # One record read twice (its WARC file copied under another name): one id and one text, another `warc`. The
    # one kept is the smallest serialization, not whichever came first.
    docs = [Document(id="same", url="u", text="hello world", warc={"file": f"crawl-{k}.warc.gz"}) for k in range(3)]
    outs = [run_dedup(order, [ExactDedup()], name=f"o{k}")[0]
            for k, order in enumerate((docs, docs[::-1], docs[1:] + docs[:1]))]
    assert [[(d.warc["file"], d.dup_count) for d in out] for out in outs] == [[("crawl-0.warc.gz", 3)]] * 3


def test_text_key_is_the_128_bit_blake2b_of_the_normalized_text():
    """16 bytes: a 32-bit key would merge two different texts by chance after about 77k documents."""
    import hashlib

    assert text_key("  Hello  World ") == hashlib.blake2b(b"hello world", digest_size=16).hexdigest()
