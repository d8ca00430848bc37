"""The token dataset format: writer, manifest, memory-mapped reader, rank sharding, peer readers."""
from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pds
import pytest

from gristmill.errors import UserError
from gristmill.tokenize import shards

SEQ = 16
VOCAB = 500
TOK = {"path": "tokenizer.json", "sha256": "0" * 64, "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2, "pad_id": 0}


def random_rows(n, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=(n, SEQ)).astype(np.int32)
    ids[-1, SEQ // 2:] = 0  # a padded tail, as the packer writes
    starts = [np.sort(rng.choice(SEQ, size=rng.integers(0, 4), replace=False)).astype(np.int32) for _ in range(n)]
    n_bytes = rng.integers(0, 100, size=n)
    return ids, starts, n_bytes


def write_dataset(folder, sizes=(2500, 700), seed=0):
    """Shards of the given row counts; returns the rows written, in order."""
    entries, all_ids, all_starts, all_bytes = [], [], [], []
    for k, n in enumerate(sizes):
        ids, starts, nb = random_rows(n, seed + k)
        w = shards.ShardWriter(folder / shards.shard_name("train", k), SEQ, VOCAB, pad_id=0)
        w.write_rows(ids, starts, nb)
        entries.append(w.close())
        all_ids.append(ids)
        all_starts += starts
        all_bytes.append(nb)
    m = shards.build_manifest(source="test", domain="web", seq_len=SEQ, tokenizer=TOK, recipe_sha256="r", seed=0,
                              splits={"train": entries})
    shards.write_manifest(folder, m)
    return np.concatenate(all_ids), all_starts, np.concatenate(all_bytes)


def test_reader_gives_back_every_row_across_shards(tmp_path):
    ids, starts, nb = write_dataset(tmp_path)
    ds = shards.TokenDataset(tmp_path)
    assert len(ds) == len(ids) == 3200
    for i in [0, 1, 1023, 1024, 2499, 2500, 3199, -1]:
        assert np.array_equal(ds[i], ids[i])
        assert ds[i].dtype == np.int32
        assert np.array_equal(ds.doc_starts(i), starts[i])
        assert ds.n_bytes(i) == nb[i]
    assert np.array_equal(np.stack(list(ds)), ids)
    with pytest.raises(IndexError):
        ds[3200]
    ds2 = shards.TokenDataset(tmp_path / "manifest.json")
    assert np.array_equal(ds2[5], ids[5])


def test_rows_are_zero_copy_views_of_the_mapped_file(tmp_path):
    write_dataset(tmp_path)
    ds = shards.TokenDataset(tmp_path)
    row = ds[2700]  # second shard
    assert not row.flags.writeable
    mm = ds._maps[1]
    mm.seek(0)
    region = mm.read_buffer()  # zero-copy buffer over the whole mapping
    ptr = row.__array_interface__["data"][0]
    assert region.address <= ptr < region.address + region.size


def test_attention_segments_number_documents_within_a_row(tmp_path):
    w = shards.ShardWriter(tmp_path / shards.shard_name("train", 0), 8, VOCAB, 0)
    w.write_rows(np.full((3, 8), 5), [np.array([2, 5]), np.array([0]), np.array([], dtype=np.int32)], [0, 0, 0])
    m = shards.build_manifest(source="t", domain="web", seq_len=8, tokenizer=TOK, recipe_sha256="", seed=0,
                              splits={"train": [w.close()]})
    shards.write_manifest(tmp_path, m)
    ds = shards.TokenDataset(tmp_path)
    assert ds.attention_segments(0).tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert ds.attention_segments(1).tolist() == [1] * 8
    assert ds.attention_segments(2).tolist() == [0] * 8


def test_a_pickled_view_maps_the_files_again(tmp_path):
    ids, _, _ = write_dataset(tmp_path)
    part = pickle.loads(pickle.dumps(shards.TokenDataset(tmp_path).shard(1, 2)))
    assert len(part) == 1600
    assert np.array_equal(part[0], ids[1600])


def test_manifest_totals_equal_sums_over_shards(tmp_path):
    ids, _, nb = write_dataset(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    train = m["splits"]["train"]
    assert train["tokens"] == sum(s["tokens"] for s in train["shards"]) == int(np.count_nonzero(ids))
    assert train["sequences"] == sum(s["sequences"] for s in train["shards"]) == len(ids)
    assert train["bytes"] == int(nb.sum())
    for s in train["shards"]:
        assert s["bytes_on_disk"] == (tmp_path / s["path"]).stat().st_size
    assert m["splits"]["validation"] == {"sequences": 0, "tokens": 0, "documents": 0, "bytes": 0, "shards": []}
    shards.TokenDataset(tmp_path).verify()
    train["tokens"] += 1
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="token totals"):
        shards.TokenDataset(tmp_path).verify()


@pytest.mark.parametrize("world", [1, 2, 3, 7])
def test_rank_shards_are_disjoint_equal_and_cover_all_but_the_remainder(tmp_path, world):
    ids, _, _ = write_dataset(tmp_path)
    ds = shards.TokenDataset(tmp_path)
    parts = [ds.shard(r, world) for r in range(world)]
    assert {len(p) for p in parts} == {len(ds) // world}
    seen = np.concatenate([np.stack(list(p)) for p in parts])
    assert np.array_equal(seen, ids[: len(seen)])  # rank blocks in order, no overlap
    assert len(ds) - len(seen) < world
    assert np.array_equal(parts[-1].shard(0, 1)[0], parts[-1][0])
    with pytest.raises(ValueError):
        ds.shard(world, world)


def test_token_id_outside_vocabulary_is_an_error(tmp_path):
    w = shards.ShardWriter(tmp_path / "x.arrow", SEQ, VOCAB, pad_id=0)
    ok = np.arange(SEQ, dtype=np.int32)
    w.write_row(ok, [0], 3)
    for bad in (VOCAB, -1):
        row = ok.copy()
        row[3] = bad
        with pytest.raises(ValueError, match="outside the vocabulary"):
            w.write_row(row, [0], 3)
    with pytest.raises(ValueError, match="doc_starts"):
        w.write_row(ok, [SEQ], 3)
    assert w.close()["sequences"] == 1


def test_same_rows_give_byte_identical_files_however_they_are_fed(tmp_path):
    ids, starts, nb = random_rows(3000, 1)
    a = shards.ShardWriter(tmp_path / "a.arrow", SEQ, VOCAB, 0)
    a.write_rows(ids, starts, nb)
    a.close()
    b = shards.ShardWriter(tmp_path / "b.arrow", SEQ, VOCAB, 0)
    for lo in range(0, 3000, 777):
        b.write_rows(ids[lo:lo + 777], starts[lo:lo + 777], nb[lo:lo + 777])
    b.close()
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    assert digest(tmp_path / "a.arrow") == digest(tmp_path / "b.arrow")


def test_shards_open_with_pyarrow_dataset_and_hf_datasets(tmp_path):
    ids, starts, nb = write_dataset(tmp_path)
    files = sorted(str(p) for p in tmp_path.glob("train-*.arrow"))
    table = pds.dataset(files, format="arrow").to_table()
    assert table.num_rows == len(ids)
    assert np.array_equal(np.stack(table.column("input_ids").to_numpy(zero_copy_only=False)), ids)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32(), SEQ)

    datasets = pytest.importorskip("datasets")
    hf = datasets.load_dataset("arrow", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "hf"))
    assert hf.num_rows == len(ids)
    for i in (0, 2500, len(ids) - 1):
        assert hf[i]["input_ids"] == ids[i].tolist()
        assert hf[i]["doc_starts"] == starts[i].tolist()
        assert hf[i]["n_bytes"] == nb[i]


def test_reader_errors_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        shards.TokenDataset(tmp_path)
    write_dataset(tmp_path)
    with pytest.raises(UserError, match="no split"):
        shards.TokenDataset(tmp_path, split="test")
    (tmp_path / "train-00001.arrow").unlink()
    with pytest.raises(UserError, match="does not exist"):
        shards.TokenDataset(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(UserError, match="format"):
        shards.TokenDataset(tmp_path)


def test_a_damaged_shard_is_one_line(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "train-00000.arrow"
    data = shard.read_bytes()
    shard.write_bytes(data[:1000])  # cut short
    with pytest.raises(UserError, match="is 1,000 bytes, the manifest says"):
        shards.TokenDataset(tmp_path)
    shard.write_bytes(b"\0" * len(data))  # the right size, but not Arrow
    with pytest.raises(UserError, match="is not a readable Arrow file"):
        shards.TokenDataset(tmp_path)


def _body_offset(data: bytes, column: int, buffer: int) -> int:
    """Where buffer `buffer` of column `column` of the first record batch lies in the file (Arrow's own reader,
    on the bytes in memory: a zero-copy buffer's address minus the file's)."""
    whole = pa.py_buffer(data)
    batch = pa.ipc.open_file(whole).get_batch(0)
    return batch.column(column).buffers()[buffer].address - whole.address


def test_a_shard_damaged_in_place_is_one_line(tmp_path):
    # Bytes overwritten in place keep the size the manifest records, so only the batches themselves can tell.
    # Arrow raised OSError (damaged metadata), or the reader took the batch as it was: doc_starts past the row
    # (an IndexError from attention_segments) or list offsets going backwards, which crashed the process on
    # the first doc_starts(i). Each is now one line when the dataset is opened.
    import subprocess
    import sys

    write_dataset(tmp_path)
    shard = tmp_path / "train-00000.arrow"
    data = shard.read_bytes()
    first_batch = data.index(b"\xff\xff\xff\xff", 9)  # the schema message is first, at 8 after the magic
    starts_values = _body_offset(data, 1, 3)  # buffers: validity, offsets, then the child's validity, values
    starts_offsets = _body_offset(data, 1, 1)
    damaged = {
        "metadata": (first_batch + 8, b"\xff" * 16),
        "doc_starts value": (starts_values, np.int32(SEQ * 1000).tobytes()),
        "list offsets": (starts_offsets + 4 * 5, np.int32(-(10**9)).tobytes()),
    }
    for what, (at, patch) in damaged.items():
        shard.write_bytes(data[:at] + patch + data[at + len(patch):])
        probe = (f"from gristmill.errors import UserError\nfrom gristmill.tokenize.shards import TokenDataset\n"
                 f"try:\n    ds = TokenDataset({str(tmp_path)!r})\n"
                 f"    [(ds.doc_starts(i), ds.attention_segments(i)) for i in range(len(ds))]\n"
                 f"except UserError as e:\n    print('error:', e)\n")
        run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             cwd=Path(__file__).resolve().parents[2])  # this checkout's gristmill
        assert run.returncode == 0 and run.stdout.startswith(f"error: shard {shard} is damaged: record batch 0"), (
            what, run.returncode, run.stdout, run.stderr[-300:])
        assert run.stdout.count("\n") == 1
    shard.write_bytes(data)
    assert len(shards.TokenDataset(tmp_path)) == 3200



def test_a_shard_replaced_by_another_of_the_same_size_is_one_line(tmp_path):
    """Shards of one run are often the same size (full ones, or the last of each bucket): the size check passes,
    and the rows were read as the other shard's. Their documents and decoded bytes, summed at open, differ."""
    rng = np.random.default_rng(0)
    entries = []
    for k in range(2):
        w = shards.ShardWriter(tmp_path / shards.shard_name("train", k), SEQ, VOCAB, pad_id=0)
        w.write_rows(rng.integers(1, VOCAB, size=(300, SEQ)), [np.array([0], dtype=np.int32)] * 300,
                     rng.integers(1, 100, size=300))
        entries.append(w.close())
    shards.write_manifest(tmp_path, shards.build_manifest(source="s", domain="d", seq_len=SEQ, tokenizer=TOK,
                                                          recipe_sha256="0" * 64, seed=0, splits={"train": entries}))
    a, b = tmp_path / "train-00000.arrow", tmp_path / "train-00001.arrow"
    assert a.stat().st_size == b.stat().st_size
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)  # swapped
    with pytest.raises(UserError, match=r"train-00000.arrow holds [\d,]+ text_bytes, the manifest says"):
        shards.TokenDataset(tmp_path)
    a.write_bytes(data_a)
    b.write_bytes(data_b)
    assert len(shards.TokenDataset(tmp_path)) == 600


def test_each_shard_entry_holds_the_sha256_of_its_file(tmp_path):
    write_dataset(tmp_path)
    for e in json.loads((tmp_path / "manifest.json").read_text())["splits"]["train"]["shards"]:
        assert e["sha256"] == hashlib.sha256((tmp_path / e["path"]).read_bytes()).hexdigest()


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, None, 7, ["a" * 64]])
def test_a_malformed_shard_sha256_is_one_line_at_load(tmp_path, bad):
    write_dataset(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["splits"]["train"]["shards"][1]["sha256"] = bad
    shards.write_manifest(tmp_path, m)
    with pytest.raises(UserError) as e:
        shards.TokenDataset(tmp_path)
    assert str(e.value) == (f"{tmp_path / 'manifest.json'} is damaged: shard train-00001.arrow: sha256 is "
                            f"{bad!r:.80}, not 64 lower-case hex digits; write the token dataset again")


def test_file_sha256_covers_every_block(tmp_path):
    """Shards are hashed in 1 MiB blocks; the digest is the whole file's (hashlib over the bytes at once)."""
    data = np.random.default_rng(0).bytes((3 << 20) + 17)
    (tmp_path / "f").write_bytes(data)
    assert shards.file_sha256(tmp_path / "f") == hashlib.sha256(data).hexdigest()


def test_first_id_outside_counts_the_vocabulary_size_itself_as_outside():
    assert shards.first_id_outside(np.array([[1, 2], [3, VOCAB]], np.int32), VOCAB) == (1, VOCAB)
    assert shards.first_id_outside(np.array([[1, 2], [-1, 3]], np.int32), VOCAB) == (1, -1)
    assert shards.first_id_outside(np.array([[0, VOCAB - 1]], np.int32), VOCAB) is None


def _edit_manifest(folder, edit):
    m = json.loads((folder / "manifest.json").read_text())
    edit(m["splits"]["train"])
    (folder / "manifest.json").write_text(json.dumps(m))


def test_verify_counts_the_tokens_in_the_shards_not_the_manifests_own_sums(tmp_path):
    """A manifest edited consistently (a shard's tokens and the split's total alike) passes the load-time sums;
    only counting the shards' non-PAD ids tells."""
    write_dataset(tmp_path)

    def one_more_token(train):
        train["shards"][0]["tokens"] += 1
        train["tokens"] += 1
    _edit_manifest(tmp_path, one_more_token)
    ds = shards.TokenDataset(tmp_path)  # opens: the sums agree
    with pytest.raises(UserError, match=r"manifest token totals do not match the shards \(\d+ counted\)"):
        ds.verify()


def test_verify_finds_an_id_outside_the_vocabulary_written_in_place(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "train-00000.arrow"
    data = shard.read_bytes()
    at = _body_offset(data, 0, 2) + 4 * 37  # input_ids: validity, the child's validity, then its values
    shard.write_bytes(data[:at] + np.int32(VOCAB).tobytes() + data[at + 4:])
    ds = shards.TokenDataset(tmp_path)  # opens: sizes, documents and text bytes are unchanged
    assert ds[37 // SEQ][37 % SEQ] == VOCAB
    with pytest.raises(UserError, match=rf"token id outside the vocabulary \[0, {VOCAB}\)"):
        ds.verify()


def test_a_shard_with_fewer_rows_than_its_entry_says_is_one_line_at_open(tmp_path):
    write_dataset(tmp_path)

    def one_more_sequence(train):
        train["shards"][0]["sequences"] += 1
        train["sequences"] += 1
    _edit_manifest(tmp_path, one_more_sequence)
    with pytest.raises(UserError, match=r"train-00000.arrow: 2500 sequences, manifest says 2501$"):
        shards.TokenDataset(tmp_path)
