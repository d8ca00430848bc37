"""User text files for `beam model train-*` / `calibrate-*`: a bad line or an unreadable file is one line
naming the file (and the line)."""
from __future__ import annotations

import gzip

import pytest

from gristmill.errors import UserError
from gristmill.filters.corpora import read_texts


def test_texts_from_jsonl_and_plain_files(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two", "id": 3}\n')
    (tmp_path / "b.txt").write_text("three\n\nfour\n")
    assert list(read_texts([str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt")])) == ["one", "two", "three", "four"]


@pytest.mark.parametrize("name, content, message", [
    ("t.jsonl", b'{"text": "ok"}\n{"text": 5}\n', ':2: "text" is int, not a string'),
    ("t.jsonl", b'{"text": "ok"}\n[1, 2]\n', ':2: not a JSON object with a "text" field'),
    ("t.jsonl", b'{"text": "ok"}\n{nope\n', ":2: not JSON"),
    ("t.jsonl.gz", gzip.compress(b'{"text": "ok"}\n' * 200)[:-30], ": unreadable (EOFError"),
    ("t.jsonl.gz", b"not gzip at all", ": unreadable (BadGzipFile"),
    ("t.txt.gz", b"not gzip at all", ": unreadable (BadGzipFile"),
])
def test_a_bad_line_or_file_is_one_line_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as e:
        list(read_texts([str(path)]))
    assert str(e.value).startswith(str(path)) and message in str(e.value) and "\n" not in str(e.value)


def test_train_toxicity_needs_an_example(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    assert main(["model", "train-toxicity", "--examples", "0", "--out", str(tmp_path / "tox.ftz")]) == 2
    assert capsys.readouterr().err.strip() == "error: --examples must be >= 1, not 0"
