"""`beam tokenize verify`: every byte of a token dataset against its manifest (sha256 per shard), which opening a
dataset does not read."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from gristmill.pipeline.cli import main
from gristmill.tokenize.encode import TokenizeConfig, tokenize_documents
from gristmill.tokenize.shards import NO_SHA256, TokenDataset, write_manifest

CONFIG = TokenizeConfig(seq_len=64, shard_bytes=64 * 4 * 120, validation_fraction=0.1)


@pytest.fixture
def dataset(docs, tokenizer_path, tmp_path):
    folder = tmp_path / "tokens"
    manifest, _ = tokenize_documents(docs, tokenizer_path, folder, CONFIG, seed=3, source="corpus")
    assert len(manifest["splits"]["train"]["shards"]) > 1 and manifest["splits"]["validation"]["shards"]
    return folder


def shard_paths(folder):
    m = json.loads((folder / "manifest.json").read_text())
    return [folder / e["path"] for s in m["splits"].values() for e in s["shards"]]


def verify(*argv) -> int:
    return main(["tokenize", "verify", *map(str, argv), "--quiet"])


def test_the_manifest_holds_each_shards_sha256(dataset):
    m = json.loads((dataset / "manifest.json").read_text())
    for split in m["splits"].values():
        for e in split["shards"]:
            assert e["sha256"] == hashlib.sha256((dataset / e["path"]).read_bytes()).hexdigest()


def test_a_good_dataset_passes(dataset, capsys):
    assert verify(dataset) == 0
    out = capsys.readouterr().out.splitlines()
    hashed = sum(p.stat().st_size for p in shard_paths(dataset)) + (dataset / "tokenizer.json").stat().st_size
    assert out == [f"{dataset}: {len(shard_paths(dataset))} shard(s) checked, {hashed:,} bytes hashed, 0 problem(s)"]


def test_progress_goes_to_stderr(dataset, capsys):
    assert main(["tokenize", "verify", str(dataset)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 1
    assert f"shards {len(shard_paths(dataset))}/{len(shard_paths(dataset))}" in captured.err


def _flip_a_bit_in_input_ids(shard):
    """Flip the low bit of an id of at least 4 in place: same size, still inside the (even) vocabulary, not a
    special, so the shard still opens and its token count is unchanged."""
    data = bytearray(shard.read_bytes())
    whole = pa.py_buffer(bytes(data))
    values = pa.ipc.open_file(whole).get_batch(0).column(0).values
    at = values.buffers()[1].address - whole.address
    j = int(np.flatnonzero(values.to_numpy() >= 4)[5])
    data[at + 4 * j] ^= 1
    shard.write_bytes(bytes(data))


def test_a_bit_flipped_in_input_ids_opens_but_fails_verify(dataset, capsys):
    shard = shard_paths(dataset)[1]
    size = shard.stat().st_size
    _flip_a_bit_in_input_ids(shard)
    assert shard.stat().st_size == size
    ds = TokenDataset(dataset)  # the reader's checks pass: they never read input_ids whole
    ds.verify()  # and the ids are all inside the vocabulary, with the same token count
    assert verify(dataset) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].startswith(f"shard {shard} is damaged: its sha256 is ")
    assert out[1].endswith(", 1 problem(s)")


def test_a_missing_shard_and_another_tokenizer_are_each_one_line(dataset, capsys):
    first, second = shard_paths(dataset)[:2]
    second.unlink()
    (dataset / "tokenizer.json").write_bytes((dataset / "tokenizer.json").read_bytes() + b" ")
    assert verify(dataset) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"tokenizer {dataset / 'tokenizer.json'} is not the one the manifest records")
    assert out[1] == f"shard {second} listed in the manifest does not exist"
    assert str(first) not in "\n".join(out)
    assert out[-1].endswith(", 2 problem(s)")


def test_a_manifest_written_before_shard_hashes_loads_and_verify_notes_it(dataset, capsys):
    m = json.loads((dataset / "manifest.json").read_text())
    for split in m["splits"].values():
        for e in split["shards"]:
            del e["sha256"]
    write_manifest(dataset, m)
    assert len(TokenDataset(dataset)) == m["splits"]["train"]["sequences"]
    assert verify(dataset) == 0
    out = capsys.readouterr().out.splitlines()
    n = len(shard_paths(dataset))
    assert out[:-1] == [f"shard {p}: {NO_SHA256}" for p in shard_paths(dataset)]
    assert out[-1].startswith(f"{dataset}: {n} shard(s) checked ({n} with no sha256 recorded), ")
    assert out[-1].endswith(" 0 problem(s)")


def test_mistakes_are_one_line_and_nothing_is_read(dataset, tmp_path, capsys):
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "manifest.json").write_text("[]")
    for argv, message in [
        ([tmp_path / "nowhere"], f"no token dataset at {tmp_path / 'nowhere'}"),
        ([dataset, tmp_path / "list"], "is not a token dataset manifest"),  # the first is not verified alone
    ]:
        assert verify(*argv) == 2
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        assert captured.out == ""
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_a_shards_token_count_is_checked_where_no_sha256_would_catch_it(dataset, capsys):
    # A manifest with no shard hashes (written before them), its per-shard `tokens` edited so the split's total
    # (which the manifest check and TokenDataset.verify read) is still their sum: each shard's own count says so.
    m = json.loads((dataset / "manifest.json").read_text())
    train = m["splits"]["train"]["shards"]
    for e in (s for split in m["splits"].values() for s in split["shards"]):
        del e["sha256"]
    train[0]["tokens"] += 5
    train[1]["tokens"] -= 5
    write_manifest(dataset, m)
    TokenDataset(dataset).verify()
    assert verify(dataset) == 1
    pad = m["tokenizer"]["pad_id"]
    problems = [line for line in capsys.readouterr().out.splitlines() if NO_SHA256 not in line]
    for e, line in zip(train[:2], problems):
        ids = pa.ipc.open_file(pa.memory_map(str(dataset / e["path"]))).read_all().column(0).combine_chunks().values
        have = int(np.count_nonzero(ids.to_numpy() != pad))
        assert have != e["tokens"]
        assert line == (f"shard {dataset / e['path']} holds {have:,} tokens (ids other than PAD), the manifest says "
                        f"{e['tokens']:,}: it was replaced or damaged; write the token dataset again")
    assert problems[2].endswith(", 2 problem(s)")
