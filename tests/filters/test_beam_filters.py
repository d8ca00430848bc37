"""Filters inside a Beam pipeline (FnApiRunner): counts add up per rule, drop vs annotate, C4 text rewriting."""
from __future__ import annotations

import copy

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


def _all_filters(lid_model, tiny_kenlm, tiny_quality, tiny_toxicity, words):
    from gristmill.filters.fineweb import FineWebQualityFilter
    from gristmill.filters.gopher import GopherRepetitionFilter
    from gristmill.filters.kenlm_filter import KenLMFilter
    from gristmill.filters.quality import QualityFilter
    from gristmill.filters.toxicity import BadWordsFilter, ToxicityFilter

    return [("LanguageID", LanguageIDFilter(model=str(lid_model))), ("GopherRepetition", GopherRepetitionFilter()),
            ("GopherQuality", GopherQualityFilter()), ("C4", C4QualityFilter()), ("FineWeb", FineWebQualityFilter()),
            ("BadWords", BadWordsFilter(words=str(words))), ("Toxicity", ToxicityFilter(model=str(tiny_toxicity[0]))),
            ("KenLM", KenLMFilter(model=str(tiny_kenlm))), ("Quality", QualityFilter(model=str(tiny_quality)))]


def test_every_filter_in_both_modes_counts_each_rule(varied_docs, lid_model, tiny_kenlm, tiny_quality, tiny_toxicity,
                                                     tmp_path):
    """All nine filters chained, once in annotate mode and once in drop mode, against the same filters run in a
    plain loop: per-rule counts, decisions, scores, and (drop mode) which documents survive each stage."""
    from gristmill.filters.toxicity import write_badwords

    words = tmp_path / "words.txt"
    write_badwords(words)
    docs = varied_docs[:150] + offensive_docs(12)
    filters = _all_filters(lid_model, tiny_kenlm, tiny_quality, tiny_toxicity, words)

    # annotate: every stage sees every document, drops none, and records its decision and scores
    stats = run_stages([CreateDocuments("Docs", docs), *[FilterStage(label, f, mode="annotate") for label, f in filters],
                        WriteDocuments("Write", shards=1)], RunContext(output=str(tmp_path / "annotate")), BEAM_ARGS)
    out = {d.id: d for d in read_documents(str(tmp_path / "annotate" / "documents"))}
    assert set(out) == {d.id for d in docs}
    for label, flt in filters:
        verdicts = flt.check_batch(docs)
        s = stats["stages"][label]
        would = {}
        for d, v in zip(docs, verdicts):
            if not v.keep:
                would[v.reason] = would.get(v.reason, 0) + 1
            assert out[d.id].decisions[label] == ("keep" if v.keep else v.reason), (label, d.text[:60])
            assert set(v.scores) <= set(out[d.id].scores), label
            assert out[d.id].text == d.text
        assert s["in"] == s["kept"] == len(docs) and "dropped" not in s, label
        assert s.get("would_drop", {}) == would and would, label  # every filter would drop something here

    # drop: each stage sees what the previous ones kept (C4 rewrites kept pages), and counts drops by rule
    stats = run_stages([CreateDocuments("Docs", docs), *[FilterStage(label, f) for label, f in filters],
                        WriteDocuments("Write", shards=1)], RunContext(output=str(tmp_path / "drop")), BEAM_ARGS)
    survivors = [copy.deepcopy(d) for d in docs]
    for label, flt in filters:
        s = stats["stages"][label]
        verdicts = flt.check_batch(survivors)
        dropped, kept = {}, []
        for d, v in zip(survivors, verdicts):
            if v.keep:
                if v.text is not None:
                    d.text = v.text
                kept.append(d)
            else:
                dropped[v.reason] = dropped.get(v.reason, 0) + 1
        assert s["in"] == len(survivors) and s["kept"] == len(kept), label
        assert s.get("dropped", {}) == dropped and "would_drop" not in s, label
        survivors = kept
    assert sum(len(stats["stages"][label].get("dropped", {})) > 0 for label, _ in filters) >= 7
    final = {d.id: d.text for d in read_documents(str(tmp_path / "drop" / "documents"))}
    assert final == {d.id: d.text for d in survivors} and final


def offensive_docs(n):
    """Prose with words from alt-profanity-check's vocabulary inserted (no hand-written toxic text)."""
    import random

    from gristmill.pipeline import textgen
    from gristmill.pipeline.document import Document, stable_id

    rng = random.Random(8)
    texts = [textgen.offensive_text(rng) for _ in range(n)]
    return [Document(id=stable_id("offensive", str(i)), url=f"http://example.com/o{i}", text=t)
            for i, t in enumerate(texts)]
