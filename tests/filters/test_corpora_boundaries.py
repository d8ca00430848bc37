"""Boundaries of gristmill.filters.corpora.read_texts and the generated corpora that test_corpora.py leaves open:
no files, a missing file, .json.gz, paragraphs of several lines, bad UTF-8, a corrupt deflate stream."""
from __future__ import annotations

import gzip
import zlib

import pytest

from gristmill.errors import UserError
from gristmill.filters import corpora
from gristmill.filters.corpora import read_texts


def test_no_files_is_one_line():
    with pytest.raises(UserError, match="^no input files given$"):
        list(read_texts([]))


def test_a_missing_file_or_a_folder_is_named(tmp_path):
    with pytest.raises(UserError) as e:
        list(read_texts([str(tmp_path / "none.txt")]))
    assert str(e.value) == f"input file {tmp_path / 'none.txt'} does not exist"
    with pytest.raises(UserError) as e:
        list(read_texts([str(tmp_path)]))
    assert str(e.value) == f"input file {tmp_path} is a folder"


def test_json_gz_is_read_as_jsonl(tmp_path):
    (tmp_path / "a.json.gz").write_bytes(gzip.compress(b'{"text": "one"}\n{"text": "two"}\n'))
    assert list(read_texts([str(tmp_path / "a.json.gz")])) == ["one", "two"]


def test_an_object_without_text_is_named_with_its_line(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "ok"}\n{"id": 1}\n')
    with pytest.raises(UserError) as e:
        list(read_texts([str(tmp_path / "a.jsonl")]))
    assert str(e.value) == f'{tmp_path / "a.jsonl"}:2: not a JSON object with a "text" field'


def test_plain_text_documents_are_blank_line_separated_paragraphs(tmp_path):
    (tmp_path / "a.txt").write_text("first line\nsecond line\n\n  \n\n  third  \n\n\n\nfourth\n")
    assert list(read_texts([str(tmp_path / "a.txt")])) == ["first line\nsecond line", "third", "fourth"]


def test_bad_utf8_is_replaced_not_fatal(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"caf\xe9 au lait\n")
    (tmp_path / "b.jsonl").write_bytes(b'{"text": "na\xefve"}\n')
    assert list(read_texts([str(tmp_path / "a.txt"), str(tmp_path / "b.jsonl")])) == ["caf\ufffd au lait",
                                                                                        "na\ufffdve"]


def test_a_corrupt_deflate_stream_is_one_line(tmp_path):
    # A gzip header and then a deflate block of reserved type 3: zlib itself refuses it (zlib.error).
    data = gzip.compress(b'{"text": "ok"}\n')
    bad = data[:10] + b"\xff" * 8 + data[18:]
    with pytest.raises(zlib.error):
        gzip.decompress(bad)  # the peer: what Python's own gzip raises on these bytes
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(bad)
    with pytest.raises(UserError) as e:
        list(read_texts([str(path)]))
    assert str(e.value).startswith(f"{path}: unreadable (error: ") and "\n" not in str(e.value)


def test_generated_pages_are_the_same_for_a_seed():
    assert corpora.crawl_pages(12, seed=3) == corpora.crawl_pages(12, seed=3)
    assert corpora.english_pages(12, seed=3) == corpora.english_pages(12, seed=3)
    assert corpora.crawl_pages(12, seed=3) != corpora.crawl_pages(12, seed=4)
