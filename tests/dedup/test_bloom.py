"""Bloom paragraph/line dedup: Dolma-style unit removal, the false-positive rate, saved filters and cross-run dedup."""
import math
import random

import pytest

from gristmill.dedup import bloom
from gristmill.dedup.stages import BloomDedup, _ShardDedupFn
from gristmill.errors import UserError

BOILER = "Share this page\nSubscribe to our newsletter"


def test_units_split_and_blank_units_have_no_key():
    assert bloom.split_units("a\nb\n\nc", "line") == (["a", "b", "", "c"], "\n")
    assert bloom.split_units("a\nb\n \nc", "paragraph") == (["a\nb", "c"], "\n\n")
    assert bloom.unit_key("  ") is None
    assert bloom.unit_key("Share  THIS") == bloom.unit_key("share this")


def test_false_positive_rate_holds_at_expected_count():
    # Fill one filter to its expected count, probe with keys never added: the measured rate stays near the
    # configured one (pybloom's sizing rule; 20000 probes at 1% give a standard error of 0.07%).
    rate, n = 0.01, 20000
    flt = bloom.new_filter(n, rate)
    for i in range(n):
        flt.add(f"in-{i}")
    fp = sum(f"out-{i}" in flt for i in range(20000)) / 20000
    assert fp <= rate + 4 * math.sqrt(rate * (1 - rate) / 20000)
    assert all(f"in-{i}" in flt for i in range(0, n, 97))


def test_dedup_shard_keeps_the_smallest_document_id():
    occ = [("k1", "d3", 0), ("k1", "d1", 2), ("k2", "d2", 0), ("k1", "d2", 5), ("k2", "d2", 1)]
    dups = bloom.dedup_shard(reversed(occ), None, bloom.new_filter(100, 1e-6))
    assert sorted(dups) == [("d2", 1, "this_run"), ("d2", 5, "this_run"), ("d3", 0, "this_run")]


def test_stage_removes_repeated_lines_and_drops_emptied_documents(run_dedup, make_docs):
    texts = [f"Article {i} has its own words\n{BOILER}" for i in range(6)] + [BOILER]
    docs = make_docs(texts)
    out, stats = run_dedup(docs, [BloomDedup(num_shards=4, expected_keys=1000, save_to=None)])
    first = min(docs, key=lambda d: d.id)
    by_id = {d.id: d.text for d in out}
    # The boilerplate survives only in the smallest id; documents made only of it are dropped.
    for d in docs:
        if d.id == first.id:
            assert by_id[d.id] == d.text
        elif d.text == BOILER:
            assert d.id not in by_id
        else:
            assert by_id[d.id] == d.text.split("\n")[0]
    s = stats["stages"]["BloomDedup"]
    lines_removed = 2 * (len(docs) - 1)
    assert s["units_removed"] == lines_removed
    assert s["units_in"] == sum(len([u for u in t.split("\n") if u.strip()]) for t in texts)  # the non-blank lines
    assert s["dropped"] == ({"empty_after_dedup": 1} if first.text != BOILER else {})
    assert s["in"] == s["kept"] + sum(s.get("dropped", {}).values())
    assert s["tokens_in"] - s["tokens_out"] == sum(len(t.split()) for t in texts) - sum(
        len(t.split()) for t in by_id.values())


def test_units_in_counts_only_the_units_dedup_can_remove(run_dedup, make_docs):
    # Blank lines have no key and are never removed, so units_removed / units_in is the duplicate rate:
    # here 3 non-blank lines (the blank and whitespace-only lines are not counted), one of them a copy.
    texts = ["First line\n\nShared line", "  \nShared line\n\t"]
    docs = make_docs(texts)
    _, stats = run_dedup(docs, [BloomDedup(num_shards=2, expected_keys=100, save_to=None)])
    s = stats["stages"]["BloomDedup"]
    assert (s["units_in"], s["units_removed"]) == (3, 1)


def test_cross_run_dedup_with_a_saved_filter(run_dedup, make_docs, tmp_path):
    saved = str(tmp_path / "filter")
    first = make_docs(["Line seen in run one\nunique A", "another old line"], prefix="run1")
    run_dedup(first, [BloomDedup(num_shards=3, expected_keys=500, save_to=saved)], name="r1")
    assert len(list((tmp_path / "filter").iterdir())) == 3
    second = make_docs(["line SEEN in run one\nunique B", "fresh line"], prefix="run2")
    out, stats = run_dedup(second, [BloomDedup(num_shards=3, load_from=saved, save_to=str(tmp_path / "f2"))],
                           name="r2")
    assert sorted(d.text for d in out) == ["fresh line", "unique B"]
    assert stats["stages"]["BloomDedup"]["units_removed_previous_run"] == 1
    # The saved filter of run 2 holds both runs' keys.
    merged = bloom.load_filter(bloom.shard_path(str(tmp_path / "f2"), 0, 3))
    for i in range(1, 3):
        merged = merged | bloom.load_filter(bloom.shard_path(str(tmp_path / "f2"), i, 3))
    for line in ["line seen in run one", "another old line", "unique b", "fresh line"]:
        assert bloom.unit_key(line) in merged


def _saved(tmp_path, run_dedup, make_docs):
    folder = tmp_path / "filter"
    run_dedup(make_docs(["x y z\nsome line"]), [BloomDedup(num_shards=2, expected_keys=100, save_to=str(folder))],
              name="save")
    return folder


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage", "bitflip", "shards"])
def test_missing_or_corrupt_filter_is_one_clear_line(tmp_path, run_dedup, make_docs, damage):
    folder = _saved(tmp_path, run_dedup, make_docs)
    path = folder / "bloom-00001-of-00002.bin"
    data = path.read_bytes()
    num_shards = 2
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(data[: len(data) - 10])
    elif damage == "garbage":
        path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(len(data))))
    elif damage == "bitflip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        num_shards = 3
    stage = BloomDedup(num_shards=num_shards, load_from=str(folder))
    with pytest.raises(UserError) as err:
        stage.validate(None)
    msg = str(err.value)
    assert "\n" not in msg and "bloom filter" in msg
    assert {"missing": "is missing", "truncated": "corrupt", "garbage": "corrupt", "bitflip": "checksum",
            "shards": "missing"}[damage] in msg


def test_load_from_accepts_an_earlier_runs_output_folder(run_dedup, make_docs, tmp_path):
    # Run 1 saves to its default <output>/bloom_filter; run 2 names run 1's output folder itself.
    run_dedup(make_docs(["old line\nunique A"], prefix="run1"), [BloomDedup(num_shards=2, expected_keys=100)],
              name="r1")
    stage = BloomDedup(num_shards=2, load_from=str(tmp_path / "r1"), save_to=None)
    out, stats = run_dedup(make_docs(["old line\nunique B"], prefix="run2"), [stage], name="r2")
    assert [d.text for d in out] == ["unique B"]
    assert stats["stages"]["BloomDedup"]["units_removed_previous_run"] == 1
    assert stage.config.load_from == str(tmp_path / "r1" / "bloom_filter")


def test_run_fails_before_any_work_when_the_filter_folder_is_absent(run_dedup, make_docs, tmp_path):
    with pytest.raises(UserError, match="is missing"):
        run_dedup(make_docs(["a b c"]), [BloomDedup(load_from=str(tmp_path / "nowhere"))])


def test_cross_run_works_when_the_filter_size_is_not_whole_bytes(run_dedup, make_docs, tmp_path):
    # expected_keys=1000 over 4 shards gives 6580-bit filters: pybloom pads a loaded one to 6584 bits, and
    # OR-ing it with a fresh 6580-bit filter raised "bitarrays of equal length expected".
    probe = bloom.new_filter(bloom.BloomConfig(expected_keys=1000, num_shards=4).shard_capacity(), 1e-4)
    probe.add("x")
    assert probe.filters[0].num_bits % 8
    first = make_docs([f"a line {i}\ncommon footer" for i in range(20)], prefix="r1")
    run_dedup(first, [BloomDedup(num_shards=4, expected_keys=1000, save_to=str(tmp_path / "f1"))], name="r1")
    second = make_docs([f"b line {i}\ncommon footer" for i in range(20)], prefix="r2")
    out, stats = run_dedup(second, [BloomDedup(num_shards=4, load_from=str(tmp_path / "f1"),
                                               save_to=str(tmp_path / "f2"))], name="r2")
    assert sorted(d.text for d in out) == sorted(f"b line {i}" for i in range(20))
    assert stats["stages"]["BloomDedup"]["units_removed_previous_run"] == 20
    keys = sum(json_header(tmp_path / "f2", s, 4)["keys"] for s in range(4))
    assert keys == 41  # 20 + 20 article lines and the footer


def json_header(folder, shard, num_shards):
    with open(bloom.shard_path(str(folder), shard, num_shards), "rb") as f:
        return bloom._read_header(f, "test")[0]


def _shard_run(tmp_path, run, prefix, n, rate, expected_keys):
    """One run's shard-0 dedup of n new keys (a one-shard stage), loading the previous run's filter."""
    load = str(tmp_path / f"r{run - 1}") if run > 1 else None
    cfg = bloom.BloomConfig(num_shards=1, expected_keys=expected_keys, false_positive_rate=rate, load_from=load)
    header = bloom.check_saved_filter(load, 1, "line") if load else None
    capacity = header["initial_capacity"] if header else cfg.shard_capacity()
    rate = header["false_positive_rate"] if header else rate
    fn = _ShardDedupFn("B", cfg, capacity, rate, str(tmp_path / f"r{run}"))
    items = [[(bloom.unit_key(f"{prefix} {i}"), f"doc{i:06d}", 0) for i in range(n)]]
    return [where for _, (_, where) in fn.process((0, items))]


def test_chained_runs_keep_the_rate_and_the_key_count(tmp_path):
    # Each run adds n new keys to a filter sized for one run. The saved filter must grow levels as it fills
    # (OR-ing a fresh filter into the loaded one kept one level: FP 4% after 4 runs at a configured 1%... and
    # 11% at 0.1%) and its header must count every key (pybloom's `|` reset it to 0).
    rate, n, probes = 0.01, 3000, 20000
    stored = 0
    for run in range(1, 6):
        removed = _shard_run(tmp_path, run, f"run-{run}", n, rate, expected_keys=n)
        assert len(removed) < 3 * rate * n  # every key is new: what is removed is false positives
        stored += n - len(removed)
        flt = bloom.load_filter(bloom.shard_path(str(tmp_path / f"r{run}"), 0, 1))
        assert json_header(tmp_path / f"r{run}", 0, 1)["keys"] == len(flt) == stored
        fp = sum(bloom.unit_key(f"never {i}") in flt for i in range(probes)) / probes
        bound = sum(level.error_rate for level in flt.filters)  # pybloom's bound: 0.9 r + 0.81 r + ...
        assert fp <= bound + 4 * math.sqrt(bound / probes) and fp < 2 * rate, (run, fp, len(flt.filters))
    assert len(flt.filters) > 1
    # A key of an earlier run is still found; this run's own repeats are this-run duplicates.
    again = _shard_run(tmp_path, 6, "run-2", 10, rate, expected_keys=n)
    assert again == ["previous_run"] * 10
    fn = _ShardDedupFn("B", bloom.BloomConfig(num_shards=1, load_from=str(tmp_path / "r5")), 100, rate, None)
    key = bloom.unit_key("brand new")
    assert list(fn.process((0, [[(key, "a", 0), (key, "b", 0)]]))) == [("b", (0, "this_run"))]


def test_a_filter_saved_with_a_reset_key_count_gets_it_back(tmp_path):
    # Earlier versions saved cross-run filters with every level's count reset to 0; loading restores it
    # from the bits set, so the filter adds a level when full instead of overfilling.
    flt = bloom.new_filter(4000, 0.01)
    for i in range(3000):
        flt.add(f"k{i}")
    flt.filters[0].count = 0
    path = str(tmp_path / "legacy.bin")
    bloom.save_filter(path, flt, 0, 1, "line")
    assert abs(len(bloom.load_filter(path)) - 3000) < 60


def _sequential_line_dedup(docs):
    """The rule, done plainly: visit documents in id order and drop every non-blank line seen before; a document
    left with no words is dropped. Returns the sorted list of kept texts."""
    seen, kept = set(), []
    for d in sorted(docs, key=lambda d: (d.id, d.text)):
        lines = []
        for line in d.text.split("\n"):
            key = " ".join(line.lower().split())
            if key and key in seen:
                continue
            seen.add(key)
            lines.append(line)
        text = "\n".join(lines)
        if text.split():
            kept.append(text)
    return sorted(kept)


def test_documents_sharing_an_id_are_deduplicated_as_separate_documents(run_dedup):
    from gristmill.pipeline.document import Document

    # A WARC that reuses a record id (or two records with none, fetched from one URL) gives documents with one
    # id. Each is still a document of its own: a line they share stays in one of them, not in none, and their
    # own lines stay in each; an identical second copy (no ExactDedup before) is emptied, not both copies.
    docs = [Document(id="same", url="u", text=f"{BOILER}\nversion {k} has its own words") for k in range(3)]
    docs += [Document(id="twin", url="v", text="a twin page\nwith two lines") for _ in range(2)]
    docs += [Document(id="other", url="w", text=f"{BOILER}\nan unrelated page")]
    for workers in (1, 2):
        out, stats = run_dedup(docs, [BloomDedup(num_shards=4, expected_keys=1000, save_to=None)], workers=workers,
                               name=f"w{workers}")
        assert sorted(d.text for d in out) == _sequential_line_dedup(docs)
        s = stats["stages"]["BloomDedup"]
        assert s["in"] == 6 and s["kept"] == 5 and s["dropped"] == {"empty_after_dedup": 1}
        assert s["units_removed"] == 2 * 3 + 2  # BOILER's two lines in three of four documents, one twin


def test_copies_of_one_record_keep_the_same_one_whatever_the_order(run_dedup):
    from gristmill.pipeline.document import Document

    # One record read twice (its WARC file copied under another name): one id, one text, another `warc`. The
    # copy that keeps the lines must not be whichever the join gives last, or the output bytes would change with
    # bundle order and worker count. The rule: copies in the order of their serialization, the first keeps them.
    docs = [Document(id="same", url="u", text="line one\nline two", warc={"file": f"crawl-{k}.warc.gz", "offset": k})
            for k in range(3)]
    expected = min(docs, key=lambda d: d.to_json())
    for k, (order, workers) in enumerate(((docs, 1), (docs[::-1], 1), (docs[1:] + docs[:1], 2))):
        out, stats = run_dedup(order, [BloomDedup(num_shards=2, expected_keys=100, save_to=None)], workers=workers,
                               name=f"o{k}")
        assert [d.to_json() for d in out] == [expected.to_json()], k
        s = stats["stages"]["BloomDedup"]
        assert s["units_removed"] == 2 * 2 and s["dropped"] == {"empty_after_dedup": 2}


def _two_saved_shards(folder):
    folder.mkdir()
    for s in range(2):
        f = bloom.new_filter(100, 1e-4)
        f.add(f"k{s}")
        bloom.save_filter(bloom.shard_path(str(folder), s, 2), f, s, 2, "line")


def test_a_saved_filter_in_the_wrong_place_or_of_another_unit_is_refused(tmp_path):
    folder = tmp_path / "f"
    _two_saved_shards(folder)
    bloom.check_saved_filter(str(folder), 2, "line")
    with pytest.raises(UserError, match="unit='line'"):
        bloom.check_saved_filter(str(folder), 2, "paragraph")
    p0, p1 = folder / "bloom-00000-of-00002.bin", folder / "bloom-00001-of-00002.bin"
    b0, b1 = p0.read_bytes(), p1.read_bytes()
    p0.write_bytes(b1)
    p1.write_bytes(b0)  # each shard's keys are those hashed to it: swapped files would miss every duplicate
    with pytest.raises(UserError, match="was saved with"):
        bloom.check_saved_filter(str(folder), 2, "line")


def test_min_words_drops_a_document_left_shorter(run_dedup, make_docs):
    docs = make_docs(["hello", "common line\nxx yy", "common line\nzz"])
    out, _ = run_dedup(docs, [BloomDedup(num_shards=2, expected_keys=100, save_to=None)])
    assert "hello" in [d.text for d in out]  # one word is enough by default
    out, stats = run_dedup(docs, [BloomDedup(num_shards=2, expected_keys=100, save_to=None, min_words=2)], name="m2")
    assert "hello" not in [d.text for d in out]
    assert stats["stages"]["BloomDedup"]["dropped"]["too_short_after_dedup"] >= 1
