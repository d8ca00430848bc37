"""The runner, recipe loader and `beam` CLI at their edges, in process, each against counts or rules written out
by hand: nested stats, paths inside an output folder, pipeline options, stage-order checks, parameter parsing,
the recipe hash, the summary table."""
from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.errors import UserError
from gristmill.filters.gopher import GopherQualityFilter
from gristmill.filters.url import URLFilter
from gristmill.pipeline.cli import main, print_summary
from gristmill.pipeline.extract import ExtractText
from gristmill.pipeline.recipe import load_recipe
from gristmill.pipeline.runner import _inside, nest_counters, pipeline_options, run_stages
from gristmill.pipeline.stages import FilterStage, RunContext
from gristmill.pipeline.warc import ReadWarc


def test_nest_counters_by_hand():
    flat = {"Read/in": 10, "Read/kept": 7, "Read/dropped/type:request": 2, "Read/dropped/bad:x": 1,
            "Read/type/response": 7, "Filter/in": 7, "Filter/kept": 5, "Filter/dropped/short": 1,
            "Write/in": 5, "Write/kept": 5, "Extra/seen": 3}
    s = nest_counters(flat, ["Read", "Filter", "Write"])
    assert list(s["stages"]) == ["Read", "Filter", "Write", "Extra"]  # recipe order, then unknown labels
    assert s["stages"]["Read"] == {"in": 10, "kept": 7, "dropped": {"bad:x": 1, "type:request": 2},
                                   "type": {"response": 7}, "dropped_total": 3}
    assert s["stages"]["Extra"] == {"seen": 3}
    assert s["documents_out"] == 5  # the last stage with a kept count, not the first
    assert s["unbalanced_stages"] == ["Filter"] and s["balanced"] is False  # 7 != 5 + 1
    flat["Filter/dropped/short"] = 2
    assert nest_counters(flat, ["Read", "Filter", "Write"])["balanced"] is True


def test_a_remote_path_is_inside_a_folder_only_below_a_slash(tmp_path):
    assert _inside("gs://b/out/documents/x.jsonl", "gs://b/out")
    assert _inside("gs://b/out/x", "gs://b/out/")
    assert not _inside("gs://b/out2/documents/x.jsonl", "gs://b/out")
    (tmp_path / "out").mkdir()
    assert _inside(str(tmp_path / "out" / "a"), str(tmp_path / "out"))
    assert not _inside(str(tmp_path / "out2" / "a"), str(tmp_path / "out"))


def test_pipeline_options_keep_what_the_user_gave():
    opts = pipeline_options(["--direct_num_workers=0"]).get_all_options()  # 0: one per core, allowed
    assert opts["direct_num_workers"] == 0
    opts = pipeline_options(["--runner=DirectRunner"], num_workers=3).get_all_options()
    assert opts["runner"] == "DirectRunner" and opts["direct_num_workers"] == 3
    opts = pipeline_options(["--runner=DataflowRunner"]).get_all_options()  # not local: no local defaults
    assert opts["runner"] == "DataflowRunner" and opts["direct_running_mode"] == "in_memory"
    with pytest.raises(UserError, match=r"^--direct_num_workers must be >= 0 \(0: one per core\), not -1$"):
        pipeline_options(["--direct_num_workers=-1"])


def test_stage_order_and_labels_are_checked_before_the_pipeline(tmp_path):
    ctx = RunContext(input=str(tmp_path / "x.warc.gz"), output=str(tmp_path / "o"))
    url = FilterStage("URL", URLFilter(extra_domains=("a.com",), use_integrated_lists=False))
    # A URL filter keeps pages pages: a text filter after it is still before extraction.
    with pytest.raises(UserError, match="stage Gopher: GopherQualityFilter reads the text, so it must come after"):
        run_stages([ReadWarc("Read"), url, FilterStage("Gopher", GopherQualityFilter()), ExtractText("Extract")], ctx)
    with pytest.raises(UserError, match=r"^stage labels must be unique; repeated: Read$"):
        run_stages([ReadWarc("Read"), ReadWarc("Read"), ExtractText("Extract")], ctx)
    with pytest.raises(UserError, match=r"^the recipe has no stages$"):
        run_stages([], ctx)
    assert not (tmp_path / "o").exists()


def _recipe(tmp_path, params: str, name: str = "r.py") -> str:
    path = tmp_path / name
    path.write_text(f"PARAMS = {params}\n\ndef stages(p):\n    from gristmill.pipeline.warc import ReadWarc\n"
                    f"    return [ReadWarc('Read')]\n")
    return str(path)


def test_parameters_parse_as_their_defaults_type(tmp_path):
    path = _recipe(tmp_path, "{'flag': False, 'langs': ['en'], 'weights': {'a': 1}, 'name': None, 'x': 0.5}")
    assert load_recipe(path, ["flag=on"]).params["flag"] is True
    assert load_recipe(path, ["flag=OFF"]).params["flag"] is False
    assert load_recipe(path, ["langs=fr, de,,"]).params["langs"] == ["fr", "de"]
    assert load_recipe(path, ["langs=['fr']"]).params["langs"] == ["fr"]
    assert load_recipe(path, ["weights={'b': 2}"]).params["weights"] == {"b": 2}
    assert load_recipe(path, ["name=anything"]).params["name"] == "anything"
    with pytest.raises(UserError, match=r"^parameter weights='\[1\]': expected a mapping$"):
        load_recipe(path, ["weights=[1]"])
    with pytest.raises(UserError, match=r"^parameter 'flag' must look like key=value$"):
        load_recipe(path, ["flag"])
    with pytest.raises(UserError, match=r"^recipe r\.py has no parameter 'y' \(known: flag, langs, name, weights, x\)$"):
        load_recipe(path, ["y=1"])
    with pytest.raises(UserError, match=r"has no parameter 'y' \(known: none\)$"):
        load_recipe(_recipe(tmp_path, "{}", "empty.py"), ["y=1"])
    assert load_recipe(path).name == "r"  # no NAME: the file's stem


def test_the_recipe_hash_follows_the_parameters(tmp_path):
    path = _recipe(tmp_path, "{'x': 0.5}")
    a, b = load_recipe(path), load_recipe(path, ["x=0.25"])
    assert a.sha256(a.stages()) == load_recipe(path).sha256(a.stages())
    assert a.sha256(a.stages()) != b.sha256(b.stages())


def test_summary_lists_the_three_largest_drop_reasons(capsys):
    stats = nest_counters({"Read/in": 20, "Read/kept": 7, "Read/dropped/a": 1, "Read/dropped/b": 5,
                           "Read/dropped/c": 3, "Read/dropped/d": 4, "Pass/seen": 1}, ["Read", "Pass"])
    print_summary(stats)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].split() == ["stage", "in", "kept", "dropped", "top", "drop", "reasons"]
    assert lines[1] == f"{'Read':<5} {20:>9} {7:>9} {13:>9}  b 5, d 4, c 3 ..." and len(lines) == 2
    stats["stages"]["Read"]["dropped"] = {"a": 1}
    stats["balanced"], stats["unbalanced_stages"] = False, ["Read"]
    print_summary(stats)
    lines = capsys.readouterr().err.splitlines()
    assert lines[1].endswith("  a 1") and lines[2] == "error: counts do not add up in Read"


def test_beam_with_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2
    assert "usage: beam" in capsys.readouterr().out


def test_a_probability_threshold_is_a_number_from_0_to_1_inclusive(tmp_path):
    from gristmill.filters.langid import LanguageIDFilter

    model = str(tmp_path / "lid.bin")  # not loaded when the stage is built
    for ok in (0, 0.0, 1, 1.0, 0.5):
        FilterStage("LanguageID", LanguageIDFilter(threshold=ok, model=model))
    for bad in (True, False, "0.5", -1e-9, 1.000001):  # a bool is an int to Python, not a probability
        with pytest.raises(UserError, match=r"^stage LanguageID: threshold is a probability, from 0 to 1, not "):
            FilterStage("LanguageID", LanguageIDFilter(threshold=bad, model=model))


class _OddIds:
    """Drops documents with an odd id and gives no reason, and counts a sub-key for every document."""

    name = "odd"
    needs_text = True

    def setup(self):
        pass

    def check_batch(self, docs):
        from gristmill.filters.base import Verdict

        return [Verdict(keep=int(d.id) % 2 == 0, counts={"looked": 1}) for d in docs]


@pytest.mark.parametrize("mode", ["drop", "annotate"])
def test_a_verdict_without_a_reason_is_counted_under_the_stage_label(tmp_path, mode):
    from gristmill.pipeline.docio import CreateDocuments, WriteDocuments, read_documents
    from gristmill.pipeline.document import Document

    docs = [Document(id=str(i), url=f"http://e.com/{i}", text=f"text {i}") for i in range(7)]
    stats = run_stages([CreateDocuments("Docs", docs), FilterStage("Odd", _OddIds(), mode=mode, batch_size=3),
                        WriteDocuments("Write", shards=1)], RunContext(output=str(tmp_path / mode)),
                       ["--direct_running_mode=in_memory", "--direct_num_workers=1"])
    odd = stats["stages"]["Odd"]
    assert stats["balanced"] and odd["in"] == 7 and odd["looked"] == 7  # ids 1, 3, 5 fail; 0, 2, 4, 6 pass
    out = {d.id: d for d in read_documents(str(tmp_path / mode / "documents"))}
    if mode == "drop":
        assert odd["kept"] == 4 and odd["dropped"] == {"Odd": 3} and sorted(out) == ["0", "2", "4", "6"]
    else:
        assert odd["kept"] == 7 and odd["would_drop"] == {"Odd": 3} and "dropped" not in odd
        assert {i: d.decisions["Odd"] for i, d in out.items()} == {str(i): "Odd" if i % 2 else "keep" for i in range(7)}


def test_a_mode_other_than_drop_or_annotate_is_refused():
    with pytest.raises(ValueError, match=r"^stage G: mode must be 'drop' or 'annotate', not 'anotate'$"):
        FilterStage("G", GopherQualityFilter(), mode="anotate")
