"""beam select: the documents kept equal a plain Python evaluation of the same conditions; errors are one line."""
from __future__ import annotations

import gzip
import json
import random

import pytest

from gristmill.errors import UserError
from gristmill.pipeline.docio import read_documents
from gristmill.pipeline.document import Document
from gristmill.pipeline.select import Condition, SelectFilter

BEAM_ARGS = ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]


def _docs(n=300):
    rng = random.Random(0)
    out = []
    for i in range(n):
        d = Document(id=f"d{i:04d}", url=f"https://x.example/{i}", text="w " * rng.randint(1, 400),
                     language=rng.choice(["en", "fr", None]), language_score=rng.random())
        if rng.random() < 0.9:  # some documents were never scored by KenLM
            d.scores["kenlm.perplexity"] = rng.uniform(10, 2000)
        d.decisions = {"C4": rng.choice(["keep", "keep", "c4:min_num_sentences"]),
                       "FineWeb": rng.choice(["keep", "fineweb:char_dup_ratio"])}
        out.append(d)
    return out


def test_select_command_matches_a_plain_evaluation(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    docs = _docs()
    src = tmp_path / "run" / "documents"
    src.mkdir(parents=True)
    with gzip.open(src / "part-00000-of-00001.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(d.to_json() + "\n" for d in docs)
    argv = ["select", str(src / "*.jsonl.gz"), "--output", str(tmp_path / "picked"), "--shards", "2",
            "--where", "scores.kenlm.perplexity < 400", "--where", "language == en", "--where", "chars >= 100",
            "--all-decisions", "keep", *BEAM_ARGS]
    assert main(argv) == 0

    def passes(d):
        p = d.scores.get("kenlm.perplexity")
        return (p is not None and p < 400 and d.language == "en" and len(d.text) >= 100
                and all(v == "keep" for v in d.decisions.values()))

    got = sorted(read_documents(str(tmp_path / "picked" / "documents")), key=lambda d: d.id)
    assert got == [d for d in docs if passes(d)] and 0 < len(got) < len(docs) // 4
    err = capsys.readouterr().err
    assert f"documents in {len(docs)}, kept {len(got)}" in err and "select:missing:scores.kenlm.perplexity" in err


def test_conditions():
    doc = Document(id="a", url="u", text="hello", language="en", scores={"q.p": 0.25}, decisions={"C4": "keep"})
    flt = SelectFilter((Condition.parse("scores.q.p >= 0.25"), Condition.parse("decisions.C4 == 'keep'")))
    assert flt.check(doc).keep
    assert SelectFilter((Condition.parse("chars > 5"),)).check(doc).reason == "select:chars"
    assert SelectFilter((Condition.parse("language != en"),)).check(doc).reason == "select:language"
    assert SelectFilter((Condition.parse("language_score > 0"),)).check(doc).reason == "select:missing:language_score"
    assert SelectFilter(all_decisions="drop").check(doc).reason == "select:decisions.C4"


@pytest.mark.parametrize("text, message", [
    ("perplexity 400", "expected FIELD OP VALUE"),
    ("scores < 3", "name the score"),
    ("words > 3", "unknown field 'words'"),
    ("language < en", "< needs a number"),
    ("chars >=", "expected FIELD OP VALUE"),
])
def test_bad_conditions_are_one_line(text, message):
    with pytest.raises(UserError, match=message) as e:
        Condition.parse(text)
    assert "\n" not in str(e.value)


def test_command_needs_a_condition(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    assert main(["select", str(tmp_path / "*.jsonl.gz"), "--output", str(tmp_path / "o")]) == 2
    assert "give at least one --where" in capsys.readouterr().err


def test_all_decisions_drops_under_the_first_failing_stage_in_pipeline_order(tmp_path, capsys):
    import json

    from gristmill.pipeline.cli import main

    # LanguageID ran before C4 (and sorts after it): a document both failed is LanguageID's, as in drop mode.
    both = Document(id="a", url="u", text="x", decisions={"LanguageID": "language_id:threshold", "C4": "c4:x"})
    only_c4 = Document(id="b", url="u", text="x", decisions={"LanguageID": "keep", "C4": "c4:x"})
    kept = Document(id="c", url="u", text="x", decisions={"LanguageID": "keep", "C4": "keep"})
    order = ("Read", "Extract", "LanguageID", "C4")
    flt = SelectFilter(all_decisions="keep", decision_order=order)
    assert [flt.check(d).reason for d in (both, only_c4)] == ["select:decisions.LanguageID", "select:decisions.C4"]
    unordered = SelectFilter(all_decisions="keep").check(both)  # order unknown: each failing decision is counted
    assert unordered.reason == "select:decisions"
    assert unordered.counts == {"failed/decisions.C4": 1, "failed/decisions.LanguageID": 1}

    src = tmp_path / "annot" / "documents"
    src.mkdir(parents=True)
    (src / "part-00000-of-00001.jsonl").write_text("".join(d.to_json() + "\n" for d in (both, only_c4, kept)))
    (tmp_path / "annot" / "stats.json").write_text(json.dumps({"stages": {k: {} for k in order}}))
    for run, glob in (("picked", src / "*.jsonl"), ("again", tmp_path / "picked" / "documents" / "*.jsonl.gz")):
        assert main(["select", str(glob), "--output", str(tmp_path / run), "--all-decisions", "keep", *BEAM_ARGS]) == 0
        stats = json.loads((tmp_path / run / "stats.json").read_text())
        assert stats["decision_order"] == list(order)  # carried on, so a select of a select keeps it
    first = json.loads((tmp_path / "picked" / "stats.json").read_text())["stages"]["Select"]
    assert first["dropped"] == {"select:decisions.LanguageID": 1, "select:decisions.C4": 1}
    assert "warning" not in capsys.readouterr().err


def test_a_failing_decisions_label_names_its_counter_only_when_it_is_a_name():
    # With --all-decisions the failing stage's label, a key of the document's decisions, named the drop reason and
    # the failed/ counters: any key of the input (megabytes long, control characters) became a counter name.
    flt = SelectFilter(all_decisions="keep")
    for label in ("x" * 5000, "a\x1b[2Jb", "", "two words\n"):
        assert flt.check(Document(id="a", url="u", text="x", decisions={label: "drop"})).reason == \
            "select:decisions.malformed"
    several = flt.check(Document(id="a", url="u", text="x", decisions={"\n": "drop", "\t": "drop", "C4": "c4:x"}))
    assert several.reason == "select:decisions"
    assert several.counts == {"failed/decisions.malformed": 1, "failed/decisions.C4": 1}
    named = flt.check(Document(id="a", url="u", text="x", decisions={"Lang-ID_2:v1.0": "drop"}))
    assert named.reason == "select:decisions.Lang-ID_2:v1.0"
    spaced = flt.check(Document(id="a", url="u", text="x", decisions={"Gopher quality": "drop"}))  # a Beam label
    assert spaced.reason == "select:decisions.Gopher quality"


def test_values_not_of_their_kind_are_counted_not_fatal():
    where = SelectFilter((Condition.parse("scores.k < 3"),))
    assert where.check(Document(id="a", url="u", text="t", scores={"k": 2})).keep
    assert where.check(Document(id="a", url="u", text="t", scores={"k": "abc"})).reason == "select:bad_value:scores.k"
    assert where.check(Document(id="a", url="u", text="t", scores=[1, 2])).reason == "select:bad_value:scores.k"
    assert SelectFilter((Condition.parse("chars > 0"),)).check(
        Document(id="a", url="u", text=5)).reason == "select:bad_value:chars"
    assert SelectFilter(all_decisions="keep").check(
        Document(id="a", url="u", text="t", decisions=["keep"])).reason == "select:bad_value:decisions"


def test_a_field_no_document_has_is_an_error_naming_the_recorded_ones_before_anything_is_written(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    src = tmp_path / "run" / "documents"
    src.mkdir(parents=True)
    with gzip.open(src / "part-00000-of-00001.jsonl.gz", "wt", encoding="utf-8") as f:
        f.writelines(d.to_json() + "\n" for d in _docs(20))
    argv = ["select", str(src / "*.jsonl.gz"), "--where", "language == en", "--where", "scores.kenlm.perplexty < 400",
            *BEAM_ARGS]
    assert main([*argv, "--output", str(tmp_path / "picked")]) == 2
    msg = capsys.readouterr().err.strip().splitlines()
    assert len(msg) == 1 and msg[0].startswith("error: ") and "scores.kenlm.perplexty" in msg[0]
    assert "scores.kenlm.perplexity" in msg[0] and "decisions.C4" in msg[0] and "decisions.FineWeb" in msg[0]
    assert not (tmp_path / "picked").exists()  # no empty documents/, stats.json or run.json left behind

    # An earlier selection in --output is left exactly as it was, not replaced by an empty one.
    assert main(["select", str(src / "*.jsonl.gz"), "--output", str(tmp_path / "earlier"), "--where", "chars > 0",
                 *BEAM_ARGS]) == 0
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "earlier").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main([*argv, "--output", str(tmp_path / "earlier")]) == 2
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "earlier").rglob("*") if p.is_file()}
    assert after == before and len(read_documents(str(tmp_path / "earlier" / "documents"))) == 20


def test_a_field_only_the_last_document_has_is_no_error(tmp_path):
    from gristmill.pipeline.cli import main

    src = tmp_path / "run" / "documents"
    src.mkdir(parents=True)
    docs = [Document(id=f"d{i}", url="u", text="t") for i in range(30)]
    docs[-1].scores["rare"] = 1.0
    for i in range(3):  # the field check reads on, file after file, until it has seen the field
        (src / f"part-{i:05d}-of-00003.jsonl").write_text("".join(d.to_json() + "\n" for d in docs[i * 10:i * 10 + 10]))
    (src / "part-00003-of-00003.jsonl").write_text("")
    assert main(["select", str(src / "*.jsonl"), "--output", str(tmp_path / "o"), "--where", "scores.rare >= 1",
                 *BEAM_ARGS]) == 0
    assert [d.id for d in read_documents(str(tmp_path / "o" / "documents"))] == ["d29"]
    # An input without any document is no mistake either: it selects nothing.
    empty = tmp_path / "empty" / "documents"
    empty.mkdir(parents=True)
    (empty / "part-00000-of-00001.jsonl").write_text("")
    assert main(["select", str(empty / "*.jsonl"), "--output", str(tmp_path / "o2"), "--where", "scores.x < 1",
                 *BEAM_ARGS]) == 0


def test_a_stage_order_naming_none_of_the_decisions_is_ignored_with_a_warning(tmp_path, capsys):
    from gristmill.pipeline.cli import main

    both = Document(id="a", url="u", text="t", decisions={"LanguageID": "language_id:language", "C4": "c4:x"})
    src = tmp_path / "annot" / "documents"
    src.mkdir(parents=True)
    (src / "part-00000-of-00001.jsonl").write_text(both.to_json() + "\n")
    # The stats.json a `beam summarize --output annot` would have left: its stages are not the run's.
    (tmp_path / "annot" / "stats.json").write_text(json.dumps({"stages": {"ReadDocuments": {}, "Summarize": {}}}))
    assert main(["select", str(src / "*.jsonl"), "--output", str(tmp_path / "o"), "--all-decisions", "keep",
                 *BEAM_ARGS]) == 0
    assert "names none of the documents' decisions" in capsys.readouterr().err
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["stages"]["Select"]["dropped"] == {"select:decisions": 1} and "decision_order" not in stats
