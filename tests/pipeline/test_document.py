"""Document.from_dict: a field of the wrong type is a bad record (counted by readers), not a crash later."""
from __future__ import annotations

import json

import pytest

from gristmill.pipeline.docio import parse_document_file
from gristmill.pipeline.document import Document

GOOD = {"id": "d1", "url": "https://example.org/", "text": "some text"}


def test_every_field_round_trips():
    doc = Document(id="d", url="u", text="t", warc={"status": 200}, language="en", language_score=0.5,
                   scores={"f.score": 1.0}, decisions={"f": "keep"}, dup_count=3, cluster_id="c", cluster_size=4,
                   weight=1.5, repeats=2, source="s", meta={"k": [1]})
    assert Document.from_json(doc.to_json()) == doc
    marked = Document(id="d", url="u", text="t", cluster_id="d", same_id_member=True)
    assert Document.from_json(marked.to_json()) == marked
    # Written only where it is true: every other document keeps the JSON it had before the field existed.
    assert "same_id_member" not in doc.to_json() and '"same_id_member":true' in marked.to_json()
    assert Document.from_dict({**GOOD, "language": None, "cluster_id": None, "language_score": None, "weight": 2,
                               "repeats": 0, "unknown": object()}).weight == 2


@pytest.mark.parametrize("field, value, error", [
    ("text", None, TypeError), ("id", 3, TypeError), ("url", ["u"], TypeError),
    ("repeats", "2", TypeError), ("repeats", 2.5, TypeError), ("repeats", True, TypeError),
    ("repeats", -1, ValueError), ("dup_count", 2.0, TypeError), ("cluster_size", None, TypeError),
    ("weight", "1", TypeError), ("weight", False, TypeError), ("language_score", "high", TypeError),
    ("language", 1, TypeError), ("cluster_id", 7, TypeError), ("source", None, TypeError),
    ("scores", [], TypeError), ("warc", "x", TypeError), ("decisions", None, TypeError), ("meta", 1, TypeError),
    ("same_id_member", 1, TypeError), ("same_id_member", None, TypeError),
])
def test_a_field_of_the_wrong_type_is_refused(field, value, error):
    with pytest.raises(error, match=field):
        Document.from_dict({**GOOD, field: value})


def test_a_missing_field_or_a_non_object_is_refused():
    with pytest.raises(TypeError):
        Document.from_dict({"id": "d1", "url": "u"})
    for line in ("[1, 2]", '"id"', "3"):
        with pytest.raises(TypeError):
            Document.from_json(line)


def test_readers_count_bad_lines_and_keep_the_rest(tmp_path):
    good = [Document(id=f"d{i}", url="u", text=f"text {i}") for i in range(3)]
    bad = [{**GOOD, "text": None}, {**GOOD, "repeats": "2"}, {**GOOD, "repeats": 2.5}, {**GOOD, "dup_count": -4}]
    lines = [good[0].to_json(), *map(json.dumps, bad[:2]), good[1].to_json(), *map(json.dumps, bad[2:]),
             good[2].to_json()]
    (tmp_path / "d.jsonl").write_text("\n".join(lines) + "\n")
    items = list(parse_document_file(str(tmp_path / "d.jsonl")))
    assert [x for x in items if isinstance(x, Document)] == good
    assert sorted(x for x in items if isinstance(x, str)) == ["bad_json:TypeError"] * 3 + ["bad_json:ValueError"]
