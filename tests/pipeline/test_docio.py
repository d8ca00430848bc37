"""ReadDocuments: every line of every file is a document, a counted bad line, or part of a counted unreadable rest."""
from __future__ import annotations

import gzip

import pytest

from gristmill.errors import UserError
from gristmill.pipeline.docio import ReadDocuments, WriteDocuments, read_documents
from gristmill.pipeline.document import Document
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import RunContext

BEAM_ARGS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def test_documents_round_trip_and_bad_records_are_counted(tmp_path):
    docs = [Document(id=f"d{i:03d}", url=f"https://example.org/{i}", text=f"text {i} ü") for i in range(30)]
    src = tmp_path / "src"
    src.mkdir()
    with gzip.open(src / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(d.to_json() + "\n" for d in docs[:10])
        f.write("{not json\n\n")  # one bad line, one blank line (not a record)
    (src / "b.jsonl").write_text("".join(d.to_json() + "\n" for d in docs[10:20]) + '{"id": 3}\n', encoding="utf-8")
    # a gzip file cut short in its second half: the lines before the cut are read, the rest is one bad record
    whole = gzip.compress("".join(d.to_json() + "\n" for d in docs[20:]).encode(), mtime=0)
    (src / "c.jsonl.gz").write_bytes(whole[: len(whole) - 10])

    ctx = RunContext(input=str(src / "*.jsonl*"), output=str(tmp_path / "out"), seed=0, recipe_name="t")
    stats = run_stages([ReadDocuments("Read"), WriteDocuments("Write", shards=2)], ctx, BEAM_ARGS)
    read = stats["stages"]["Read"]
    got = sorted(read_documents(str(tmp_path / "out" / "documents")), key=lambda d: d.id)
    assert got[:20] == docs[:20]
    salvaged = got[20:]
    assert 1 <= len(salvaged) < 10 and salvaged == docs[20 : 20 + len(salvaged)]  # a prefix of the cut file
    assert read["kept"] == len(got)
    assert read["dropped"] == {"bad_json:JSONDecodeError": 1, "bad_json:TypeError": 1, "unreadable_file:EOFError": 1}
    assert read["in"] == read["kept"] + 3


def test_no_matching_files_is_a_user_error(tmp_path):
    ctx = RunContext(input=str(tmp_path / "*.jsonl.gz"), output=str(tmp_path / "out"), seed=0, recipe_name="t")
    with pytest.raises(UserError, match="no document files match"):
        run_stages([ReadDocuments("Read")], ctx, BEAM_ARGS)


def _write_run(tmp_path, docs, shards):
    src = tmp_path / "src.jsonl"
    src.write_text("".join(d.to_json() + "\n" for d in docs), encoding="utf-8")
    ctx = RunContext(input=str(src), output=str(tmp_path / "run"), seed=0, recipe_name="t")
    run_stages([ReadDocuments("Read"), WriteDocuments("Write", shards=shards)], ctx, BEAM_ARGS)
    return tmp_path / "run" / "documents"


def test_a_run_that_would_read_its_own_output_folder_is_refused(tmp_path):
    docs = [Document(id=f"d{i}", url=f"u{i}", text="t") for i in range(6)]
    folder = _write_run(tmp_path, docs, shards=2)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    ctx = RunContext(input=str(folder / "*.jsonl.gz"), output=str(tmp_path / "run"), seed=0, recipe_name="t")
    with pytest.raises(UserError, match="the folder this run writes its documents to"):
        run_stages([ReadDocuments("Read"), WriteDocuments("Write", shards=2)], ctx, BEAM_ARGS)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


class _Boom:
    name, needs_text = "boom", True

    def setup(self):
        pass

    def check_batch(self, docs):
        raise RuntimeError("worker failure")


def test_a_failed_run_keeps_the_earlier_documents_and_a_good_one_replaces_them(tmp_path):
    from gristmill.pipeline.stages import FilterStage

    docs = [Document(id=f"d{i}", url=f"u{i}", text="t") for i in range(6)]
    folder = _write_run(tmp_path, docs, shards=3)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    ctx = RunContext(input=str(tmp_path / "src.jsonl"), output=str(tmp_path / "run"), seed=0, recipe_name="t")
    with pytest.raises(Exception, match="worker failure"):
        run_stages([ReadDocuments("Read"), FilterStage("Boom", _Boom()), WriteDocuments("Write", shards=1)], ctx,
                   BEAM_ARGS)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    _write_run(tmp_path, docs[:4], shards=1)  # fewer shards: the earlier run's extra shards go
    assert sorted(p.name for p in folder.iterdir()) == ["part-00000-of-00001.jsonl.gz"]
    assert sorted(d.id for d in read_documents(str(folder))) == [d.id for d in docs[:4]]


def _damaged_gzip(docs) -> bytes:
    """A gzip file of `docs` with bytes overwritten in its deflate data (not only its CRC): zlib itself refuses it."""
    import random
    import zlib

    data = bytearray(gzip.compress("".join(d.to_json() + "\n" for d in docs).encode(), mtime=0))
    rng = random.Random(0)
    for _ in range(200):
        data[rng.randrange(len(data) // 2, len(data) - 100)] = rng.randrange(256)
    with pytest.raises(zlib.error):  # the peer: zlib's own decoder, outside gzip and gristmill
        zlib.decompressobj(31).decompress(bytes(data))
    return bytes(data)


def test_a_gzip_file_with_damaged_deflate_data_is_one_counted_record(tmp_path):
    # zlib.error is no OSError: it used to escape the reader and fail the whole run.
    docs = [Document(id=f"d{i:05d}", url=f"u{i}", text=f"text {i} " + "w" * (i % 50)) for i in range(5000)]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl.gz").write_bytes(_damaged_gzip(docs))
    ctx = RunContext(input=str(src / "*.jsonl.gz"), output=str(tmp_path / "out"), seed=0, recipe_name="t")
    stats = run_stages([ReadDocuments("Read"), WriteDocuments("Write", shards=1)], ctx, BEAM_ARGS)
    read = stats["stages"]["Read"]
    got = read_documents(str(tmp_path / "out" / "documents"))
    # The lines before the damage are read (deflate has no checksum before the end: some near it are garbled)
    assert 0 < len(got) == read["kept"] < len(docs) and sum(d in docs for d in got) > len(got) // 2
    assert read["dropped"].get("unreadable_file:BadGzipFile") == 1
    assert read["in"] == read["kept"] + sum(read["dropped"].values())


def test_commands_that_read_documents_name_damaged_gzip_data_in_one_line(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    docs = [Document(id=f"d{i:05d}", url=f"u{i}", text=f"text {i} " + "w" * (i % 50)) for i in range(5000)]
    (tmp_path / "a.jsonl.gz").write_bytes(_damaged_gzip(docs))
    assert main(["tokenize", "train", str(tmp_path / "a.jsonl.gz"), "--output", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read {tmp_path / 'a.jsonl.gz'}: damaged compressed data") and "\n" not in err
