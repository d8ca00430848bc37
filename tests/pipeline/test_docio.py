"""ReadDocuments: every line of every file is a document, a counted bad line, or part of a counted unreadable rest."""
from __future__ import annotations

import gzip
import zlib

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


def test_shards_are_sorted_by_id_whatever_fields_sort_before_it(tmp_path):
    # Annotate mode without dedup: cluster_id is null and decisions vary, and both come before "id" in the JSON.
    docs = [Document(id=f"d{i:03d}", url=f"https://example.org/{i}", text=f"text {i}",
                     decisions={"C4": f"c4:rule_{19 - i:02d}"}) for i in range(20)]
    folder = _write_run(tmp_path, docs[::-1], shards=1)
    lines = gzip.decompress((folder / "part-00000-of-00001.jsonl.gz").read_bytes()).decode().splitlines()
    assert [Document.from_json(line) for line in lines] == docs


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


def _member(docs) -> bytes:
    return gzip.compress("".join(d.to_json() + "\n" for d in docs).encode(), mtime=0)


def _damaged(member: bytes, how: str) -> bytes:
    m = bytearray(member)
    if how == "crc":  # the CRC-32 of the member's trailer (RFC 1952)
        m[-8] ^= 0xFF
    else:  # its deflate data
        for i in range(len(m) // 2, len(m) // 2 + 6):
            m[i] ^= 0x55
    try:
        zlib.decompress(bytes(m), 16 + zlib.MAX_WBITS)
    except zlib.error:
        return bytes(m)
    raise AssertionError("the damage did not take")


def test_a_damaged_gzip_member_or_a_bad_line_mid_file_costs_only_itself(tmp_path):
    docs = [Document(id=f"d{i:03d}", url=f"https://example.org/{i}", text=f"text {i} " + "é" * (i * 37 % 300))
            for i in range(60)]
    src = tmp_path / "src"
    src.mkdir()
    # Shards of concatenated gzip members (`cat a.gz b.gz`): a damaged member in the middle, the others whole.
    (src / "a.jsonl.gz").write_bytes(_member(docs[:10]) + _damaged(_member(docs[10:20]), "deflate")
                                     + _member(docs[20:30]))
    (src / "b.jsonl.gz").write_bytes(_member(docs[30:40]) + _damaged(_member(docs[40:50]), "crc")
                                     + _member(docs[50:55]))
    # A line that is not a document between good ones: JSON nested past Python's recursion limit. And a document
    # with a lone UTF-16 surrogate: legal JSON, with no UTF-8 form; it is written back as the escape it was.
    lone = Document(id="d056x\ud800", url="u", text="lone \udc00 surrogate")
    lines = [docs[55].to_json(), "[" * 100_000, docs[56].to_json(),
             '{"id": "d056x\\ud800", "url": "u", "text": "lone \\udc00 surrogate"}',
             *(d.to_json() for d in docs[57:])]
    (src / "c.jsonl.gz").write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0))

    ctx = RunContext(input=str(src / "*.jsonl.gz"), output=str(tmp_path / "out"), seed=0, recipe_name="t")
    stats = run_stages([ReadDocuments("Read"), WriteDocuments("Write", shards=2)], ctx, BEAM_ARGS)
    read = stats["stages"]["Read"]
    expected = docs[:10] + docs[20:40] + docs[50:57] + [lone] + docs[57:]
    assert sorted(read_documents(str(tmp_path / "out" / "documents")), key=lambda d: d.id) == expected
    assert read["dropped"] == {"bad_gzip": 2, "bad_json:RecursionError": 1}
    assert read["kept"] == len(expected) and read["in"] == read["kept"] + 3 and stats["balanced"]


def test_document_lines_read_as_gzip_does(tmp_path):
    # The member reader against Python's gzip on a good multi-member file, NUL padding after it, and no newline
    # at the end; a file that is no gzip, and one cut short, raise as gzip does.
    from gristmill.pipeline.docio import document_lines

    data = gzip.compress(b"a\nbb\n", mtime=0) + gzip.compress(b"c" * 70_000 + b"\n\nlast", mtime=0)
    p = tmp_path / "x.jsonl.gz"
    p.write_bytes(data + b"\x00" * 512)
    assert list(document_lines(str(p))) == gzip.decompress(data).split(b"\n")
    p.write_bytes(b"not gzip at all")
    with pytest.raises(gzip.BadGzipFile):
        list(document_lines(str(p)))
    p.write_bytes(data[:-20])
    with pytest.raises(EOFError):
        list(document_lines(str(p)))


def test_an_empty_gzip_shard_is_cut_short_as_gzip_says_and_counted(tmp_path):
    # A 0-byte .jsonl.gz (a transfer cut to nothing) is no gzip file: `gzip -t` says "unexpected end of file",
    # though Python's gzip reads it as empty. An empty shard as WriteDocuments writes it (one empty member) is
    # 0 documents, nothing dropped.
    import shutil
    import subprocess

    src = tmp_path / "src"
    src.mkdir()
    (src / "cut.jsonl.gz").write_bytes(b"")
    (src / "empty.jsonl.gz").write_bytes(gzip.compress(b"", mtime=0))
    (src / "one.jsonl.gz").write_bytes(gzip.compress((Document(id="a", url="u", text="t").to_json() + "\n").encode()))
    if shutil.which("gzip"):
        assert subprocess.run(["gzip", "-t", str(src / "cut.jsonl.gz")], capture_output=True).returncode != 0
        assert subprocess.run(["gzip", "-t", str(src / "empty.jsonl.gz")], capture_output=True).returncode == 0
    ctx = RunContext(input=str(src / "*.jsonl.gz"), output=str(tmp_path / "out"), seed=0, recipe_name="t")
    read = run_stages([ReadDocuments("Read"), WriteDocuments("Write", shards=1)], ctx, BEAM_ARGS)["stages"]["Read"]
    assert read["kept"] == 1 and read["dropped"] == {"unreadable_file:EOFError": 1} and read["in"] == 2


def test_select_counts_document_files_that_are_gone_or_a_fifo_and_reads_the_rest(tmp_path):
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    docs = [Document(id=f"d{i}", url=f"u{i}", text="t", scores={"s": float(i)}) for i in range(9)]
    src = tmp_path / "src"
    src.mkdir()
    for k in range(3):
        (src / f"part-{k}.jsonl.gz").write_bytes(_member(docs[3 * k: 3 * k + 3]))
    os.remove(src / "part-1.jsonl.gz")
    os.mkfifo(src / "part-1.jsonl.gz")  # listed by the glob; a reader that opens it waits for a writer forever
    out = tmp_path / "out"
    try:
        r = subprocess.run([str(Path(sys.executable).with_name("beam")), "select", str(src / "*.jsonl.gz"),
                            "--output", str(out), "--where", "scores.s >= 0", "--workers", "1"],
                           capture_output=True, text=True, timeout=120)
    finally:
        try:
            os.close(os.open(src / "part-1.jsonl.gz", os.O_WRONLY | os.O_NONBLOCK))  # free a blocked reader
        except OSError:
            pass
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "skipped while reading: unreadable_file:NotARegularFile 1" in r.stderr
    read = json.loads((out / "stats.json").read_text())["stages"]["ReadDocuments"]
    assert read == {"dropped": {"unreadable_file:NotARegularFile": 1}, "in": 7, "kept": 6, "dropped_total": 1}
    assert sorted(d.id for d in read_documents(str(out / "documents"))) == [d.id for d in docs[:3] + docs[6:]]


def test_random_damage_to_one_member_costs_only_that_member(tmp_path):
    # Against zlib on each member alone: every line of the whole members is read, in order; a damaged member in
    # the middle is one BAD_GZIP, and damage in the last one, which no member follows, raises (the file's rest).
    import random

    from gristmill.pipeline.docio import BAD_GZIP, document_lines

    rng = random.Random(7)
    path = tmp_path / "d.jsonl.gz"
    for _ in range(60):
        members = [[b"m%d-%d-" % (k, i) + rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b"") for i in
                    range(rng.randrange(1, 200))] for k in range(rng.randrange(2, 5))]
        blobs = [gzip.compress(b"".join(line + b"\n" for line in m), mtime=0, compresslevel=rng.choice([0, 6]))
                 for m in members]
        k = rng.randrange(len(blobs))
        damaged = bytearray(blobs[k])
        for _ in range(rng.randrange(1, 20)):
            damaged[rng.randrange(10, len(damaged))] = rng.randrange(256)
        try:
            zlib.decompress(bytes(damaged), 16 + zlib.MAX_WBITS)
            continue  # the damage did not take
        except zlib.error:
            pass
        path.write_bytes(b"".join(blobs[:k]) + bytes(damaged) + b"".join(blobs[k + 1:]))
        got = []
        try:
            got.extend(document_lines(str(path)))
        except (gzip.BadGzipFile, EOFError):
            got.append("raised")
        before, after = [x for m in members[:k] for x in m], [x for m in members[k + 1:] for x in m]
        assert got[:len(before)] == before
        if k == len(blobs) - 1:
            assert got[-1] == "raised" and "raised" not in got[:-1] and BAD_GZIP not in got
        else:
            assert got[len(got) - len(after):] == after
            middle = got[len(before):len(got) - len(after)]  # what came out of the damaged member, then its count
            assert middle[-1] == BAD_GZIP and middle.count(BAD_GZIP) == 1 and len(middle) <= len(members[k]) + 2


# The documents of the two damaged-deflate tests below.
MANY_DOCS = [Document(id=f"d{i:05d}", url=f"u{i}", text=f"text {i} " + "w" * (i % 50)) for i in range(5000)]


def _damaged_gzip(docs) -> bytes:
    """A gzip file of `docs` with bytes overwritten in its deflate data (not only its CRC): zlib itself refuses it."""
    import random

    data = bytearray(_member(docs))
    rng = random.Random(0)
    for _ in range(200):
        data[rng.randrange(len(data) // 2, len(data) - 100)] = rng.randrange(256)
    with pytest.raises(zlib.error):  # the peer: zlib's own decoder, outside gzip and gristmill
        zlib.decompressobj(31).decompress(bytes(data))
    return bytes(data)


def test_a_gzip_file_with_damaged_deflate_data_is_one_counted_record(tmp_path):
    # zlib.error is no OSError: it used to escape the reader and fail the whole run.
    docs = MANY_DOCS
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

    docs = MANY_DOCS
    (tmp_path / "a.jsonl.gz").write_bytes(_damaged_gzip(docs))
    assert main(["tokenize", "train", str(tmp_path / "a.jsonl.gz"), "--output", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: cannot read {tmp_path / 'a.jsonl.gz'}: damaged compressed data") and "\n" not in err
