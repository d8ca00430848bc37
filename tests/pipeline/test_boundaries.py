"""select, summarize, Document and docio at their boundaries: each test kills a mutation (an operator at its edge,
a count for the first field only, a default, a sort order) that the rest of the suite let through. Expected
values are worked by hand or come from the json module."""
from __future__ import annotations

import gzip
import json

from gristmill.pipeline.document import KEY_NAME_MAX, Document, key_name


def test_each_operator_at_its_boundary():
    """Kills `<=` -> operator.lt (and its mirror images): the boundary value itself decides."""
    from gristmill.pipeline.select import Condition
    doc = Document(id="a", url="u", text="x" * 5)
    expected = {"<": False, "<=": True, ">": False, ">=": True, "==": True, "!=": False}
    for op, want in expected.items():
        c = Condition.parse(f"chars {op} 5")
        assert c.holds(c.lookup(doc)) is want, op


def test_every_missing_field_is_counted_not_only_the_first():
    """Kills counting missing/<field> only for the first condition."""
    from gristmill.pipeline.select import Condition, SelectFilter
    f = SelectFilter((Condition.parse("scores.a < 1"), Condition.parse("scores.b < 1"),
                      Condition.parse("chars > 0")))
    v = f.check(Document(id="a", url="u", text="x"))
    assert (v.keep, v.reason) == (False, "select:missing:scores.a")
    assert v.counts == {"missing/scores.a": 1, "missing/scores.b": 1}


def test_a_missing_optional_number_is_no_value():
    """Kills numeric_fields yielding a missing language_score as 0.0."""
    from gristmill.pipeline.summarize import numeric_fields
    fields = dict(numeric_fields(Document(id="a", url="u", text="abc", language_score=None)))
    assert "language_score" not in fields
    assert fields["chars"] == 3.0


def test_an_empty_language_is_its_own_value_not_none():
    """Kills `doc.language or "(none)"`: "" is a recorded value, None is none."""
    from gristmill.pipeline.summarize import categorical_fields
    assert dict(categorical_fields(Document(id="a", url="u", text="x", language="")))["language"] == ""
    assert dict(categorical_fields(Document(id="a", url="u", text="x", language=None)))["language"] == "(none)"


def test_categorical_values_are_ordered_most_common_first_and_the_table_shows_those():
    """Kills the reversed sort of categorical counts (summary.json order and the table's top N)."""
    from gristmill.pipeline.summarize import assemble, format_table
    lines = [json.dumps({"kind": "documents", "n": 10})] + [
        json.dumps({"kind": "count", "field": "language", "value": v, "n": n})
        for v, n in [("fr", 1), ("en", 6), ("de", 3)]]
    summary = assemble(lines)
    assert list(summary["categorical"]["language"]) == ["en", "de", "fr"]
    table = format_table(summary, top=1)
    assert "language: en 6 (60.0%), ... 2 more" in table


def test_fields_left_out_of_the_json_take_their_defaults():
    """Kills a changed default (repeats=0, cluster_size=0, ...): a document written before a stage existed."""
    d = Document.from_json('{"id": "a", "url": "u", "text": "t"}')
    assert (d.dup_count, d.cluster_size, d.repeats, d.weight) == (1, 1, 1, 1.0)
    assert (d.language, d.language_score, d.cluster_id, d.source) == (None, None, None, "")
    assert (d.scores, d.decisions, d.warc, d.meta, d.same_id_member) == ({}, {}, {}, {}, False)


def test_to_json_bytes_do_not_depend_on_key_insertion_order():
    """Kills sort_keys=False: equal documents serialise to equal bytes, keys sorted at every level."""
    a = Document(id="a", url="u", text="t", scores={"b": 1.0, "a": 2.0}, decisions={"Z": "keep", "A": "x"})
    b = Document(id="a", url="u", text="t", scores={"a": 2.0, "b": 1.0}, decisions={"A": "x", "Z": "keep"})
    assert a.to_json() == b.to_json()
    assert list(json.loads(a.to_json())) == sorted(json.loads(a.to_json()))
    assert a.to_json().index('"a":2.0') < a.to_json().index('"b":1.0')


def test_key_name_at_its_length_limit():
    """Kills `len(key) < KEY_NAME_MAX`: a key of exactly KEY_NAME_MAX characters is still a name."""
    assert key_name("scores", "k" * KEY_NAME_MAX) == "scores." + "k" * KEY_NAME_MAX
    assert key_name("scores", "k" * (KEY_NAME_MAX + 1)) == "scores.malformed"


def test_a_whitespace_only_line_is_blank_not_bad_json(tmp_path):
    """Kills `if not line:` (only empty lines skipped): a line of spaces is passed over, not counted bad."""
    from gristmill.pipeline.docio import parse_document_file
    p = tmp_path / "d.jsonl"
    p.write_bytes(Document(id="a", url="u", text="t").to_json().encode() + b"\n   \n\t\n")
    items = list(parse_document_file(str(p)))
    assert [type(i) for i in items] == [Document]


def test_a_shard_sorts_copies_under_one_id_by_their_whole_line(tmp_path):
    """Kills sorting a shard by id alone: two documents with one id give the same bytes in either order."""
    from gristmill.pipeline.docio import _WriteShardFn
    x = Document(id="same", url="u1", text="one")
    y = Document(id="same", url="u2", text="two")
    out = []
    for k, docs in enumerate(([x, y], [y, x])):
        fn = _WriteShardFn("W", str(tmp_path / str(k)), 1)
        fn.setup()
        (tmp_path / str(k)).mkdir()
        assert list(fn.process((0, docs))) == ["part-00000-of-00001.jsonl.gz"]
        out.append(gzip.decompress((tmp_path / str(k) / "part-00000-of-00001.jsonl.gz").read_bytes()))
    assert out[0] == out[1]
    assert out[0].splitlines() == sorted([x.to_json().encode(), y.to_json().encode()])


def test_a_boolean_score_is_a_bad_value_not_a_number():
    """Kills lookup taking isinstance(int, float) for a number: JSON true is no score (True < 1 is False in
    Python, True <= 1 is True)."""
    from gristmill.pipeline.select import Condition, SelectFilter
    v = SelectFilter((Condition.parse("scores.k <= 1"),)).check(Document(id="a", url="u", text="x", scores={"k": True}))
    assert (v.keep, v.reason) == (False, "select:bad_value:scores.k")


def test_runs_that_disagree_on_the_stage_order_give_no_order(tmp_path):
    """Kills decision_order picking one of several differing orders."""
    from gristmill.pipeline.select import decision_order
    files = []
    for run, stages in (("r1", ["A", "B"]), ("r2", ["B", "A"])):
        (tmp_path / run / "documents").mkdir(parents=True)
        (tmp_path / run / "stats.json").write_text(json.dumps({"stages": {s: {} for s in stages}}))
        files.append(str(tmp_path / run / "documents" / "part-00000-of-00001.jsonl.gz"))
    assert decision_order(files[:1]) == ("A", "B")
    assert decision_order(files) is None


def test_an_empty_source_is_counted_as_none():
    """Kills `yield "source", doc.source` (an empty source shown as "" rather than "(none)")."""
    from gristmill.pipeline.summarize import categorical_fields
    assert dict(categorical_fields(Document(id="a", url="u", text="x", source="")))["source"] == "(none)"
    assert dict(categorical_fields(Document(id="a", url="u", text="x", source="web")))["source"] == "web"
