"""Bloom paragraph/line dedup: Dolma-style unit removal, the false-positive rate, saved filters and cross-run dedup."""
import math
import random

import pytest

from gristmill.dedup import bloom
from gristmill.dedup.stages import BloomDedup
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
    assert s["dropped"] == ({"empty_after_dedup": 1} if first.text != BOILER else {})
    assert s["in"] == s["kept"] + sum(s.get("dropped", {}).values())
    assert s["tokens_in"] - s["tokens_out"] == sum(len(t.split()) for t in texts) - sum(
        len(t.split()) for t in by_id.values())


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


def test_run_fails_before_any_work_when_the_filter_folder_is_absent(run_dedup, make_docs, tmp_path):
    with pytest.raises(UserError, match="is missing"):
        run_dedup(make_docs(["a b c"]), [BloomDedup(load_from=str(tmp_path / "nowhere"))])
