"""Filters inside a Beam pipeline (FnApiRunner): counts add up per rule, drop vs annotate, C4 text rewriting."""
from __future__ import annotations

from gristmill.filters.c4 import C4QualityFilter
from gristmill.filters.gopher import GopherQualityFilter
from gristmill.filters.langid import LanguageIDFilter
from gristmill.pipeline.docio import CreateDocuments, WriteDocuments, read_documents
from gristmill.pipeline.runner import run_stages
from gristmill.pipeline.stages import FilterStage, RunContext

BEAM_ARGS = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]


def test_drop_and_annotate_modes(varied_docs, lid_model, tmp_path):
    docs = varied_docs[:120]
    expected = [GopherQualityFilter().check(d) for d in docs]
    dropped = {}
    for v in expected:
        if not v.keep:
            dropped[v.reason] = dropped.get(v.reason, 0) + 1

    stages = [CreateDocuments("Docs", docs),
              FilterStage("LanguageID", LanguageIDFilter(languages=None, threshold=0.0, model=str(lid_model))),
              FilterStage("Gopher", GopherQualityFilter(), mode="drop"),
              FilterStage("C4", C4QualityFilter(), mode="annotate"),
              WriteDocuments("Write", shards=2)]
    stats = run_stages(stages, RunContext(output=str(tmp_path / "drop")), BEAM_ARGS)
    g = stats["stages"]["Gopher"]
    assert g["in"] == 120 and g["kept"] == sum(v.keep for v in expected)
    assert g["dropped"] == dropped and g["in"] == g["kept"] + sum(g["dropped"].values())
    out = {d.id: d for d in read_documents(str(tmp_path / "drop" / "documents"))}
    assert len(out) == g["kept"]
    for d in docs:
        if d.id in out:
            o = out[d.id]
            assert o.language is not None and 0.0 <= o.language_score <= 1.0
            assert o.scores["gopher_quality.n_words"] == GopherQualityFilter().check(d).scores[
                "gopher_quality.n_words"]
            c4 = C4QualityFilter().check(d)
            # Annotate mode: decision recorded, nothing dropped, text left as it was.
            assert o.decisions["C4"] == ("keep" if c4.keep else c4.reason) and o.text == d.text
    c4_stats = stats["stages"]["C4"]
    assert c4_stats["kept"] == c4_stats["in"] == g["kept"] and "dropped" not in c4_stats

    # Drop mode applies C4's line removal to the kept pages.
    stats = run_stages([CreateDocuments("Docs", docs), FilterStage("C4", C4QualityFilter()),
                        WriteDocuments("Write", shards=1)], RunContext(output=str(tmp_path / "c4")), BEAM_ARGS)
    kept = read_documents(str(tmp_path / "c4" / "documents"))
    by_id = {d.id: d for d in docs}
    assert len(kept) == stats["stages"]["C4"]["kept"] > 0
    assert all(k.text == C4QualityFilter().check(by_id[k.id]).text for k in kept)
