"""`beam summarize` against numpy and collections: percentiles equal numpy's inverted_cdf while a field has
fewer values than the sketch's buffer, stay within the stated rank error beyond it; means, missing and
non-finite counts, and categorical counts are exact."""
from __future__ import annotations

import collections
import gzip
import json
import math
import random

import numpy as np
import pytest

from gristmill.pipeline.cli import main
from gristmill.pipeline.document import Document
from gristmill.pipeline.summarize import EPSILON, PERCENTILES


def _write(folder, docs, files=2):
    folder.mkdir(parents=True)
    for k in range(files):
        with gzip.open(folder / f"part-{k:05d}-of-{files:05d}.jsonl.gz", "wt", encoding="utf-8") as f:
            f.writelines(d.to_json() + "\n" for d in docs[k::files])


def _docs(n, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        d = Document(id=f"d{i:05d}", url=f"https://x.example/{i}", text="w " * rng.randint(1, 300),
                     language=rng.choice(["en", "en", "fr", None]), language_score=rng.random(),
                     dup_count=rng.choice([1, 1, 2, 5]))
        if rng.random() < 0.8:
            d.scores["kenlm.perplexity"] = rng.lognormvariate(6, 1)
        d.decisions = {"C4": rng.choice(["keep", "keep", "c4:min_num_sentences"])}
        out.append(d)
    out[3].scores["kenlm.perplexity"] = math.inf  # a broken score: counted, kept out of the figures
    return out


def _summary(tmp_path, docs, capsys, name="s"):
    _write(tmp_path / name / "documents", docs)
    assert main(["summarize", str(tmp_path / name / "documents" / "*.jsonl.gz"), "--output",
                 str(tmp_path / name / "out"), "--workers", "2"]) == 0
    printed = capsys.readouterr()
    return json.loads((tmp_path / name / "out" / "summary.json").read_text()), printed


def test_summary_matches_numpy_and_counter(tmp_path, capsys):
    docs = _docs(700)
    summary, printed = _summary(tmp_path, docs, capsys)
    assert summary["documents"] == 700
    ppl = [d.scores["kenlm.perplexity"] for d in docs if "kenlm.perplexity" in d.scores]
    fields = {"chars": [len(d.text) for d in docs], "language_score": [d.language_score for d in docs],
              "dup_count": [d.dup_count for d in docs], "scores.kenlm.perplexity": [v for v in ppl if math.isfinite(v)]}
    for name, values in fields.items():
        got = summary["numeric"][name]
        want = np.quantile(np.array(values, dtype=float), np.array(PERCENTILES) / 100, method="inverted_cdf")
        assert [got["percentiles"][str(p)] for p in PERCENTILES] == want.tolist(), name
        assert (got["min"], got["max"]) == (min(values), max(values))
        assert got["mean"] == pytest.approx(math.fsum(values) / len(values), rel=1e-12)
        assert got["count"] == len(values)
    kenlm = summary["numeric"]["scores.kenlm.perplexity"]
    assert kenlm["non_finite"] == 1 and kenlm["missing"] == 700 - len(ppl)
    assert summary["categorical"]["language"] == dict(collections.Counter(d.language or "(none)" for d in docs)
                                                      .most_common())
    assert summary["categorical"]["decisions.C4"] == dict(collections.Counter(d.decisions["C4"] for d in docs)
                                                          .most_common())
    assert printed.out.startswith("documents: 700\n") and "scores.kenlm.perplexity" in printed.out
    assert "documents in 700, kept 700, dropped: none" in printed.err
    assert not (tmp_path / "s" / "out" / "summary.parts.jsonl").exists()


def test_large_fields_stay_within_the_rank_error(tmp_path, capsys):
    docs = [Document(id=f"d{i}", url="", text="x", language_score=v)
            for i, v in enumerate(np.random.default_rng(1).normal(size=40_000).tolist())]
    summary, _ = _summary(tmp_path, docs, capsys)
    values = np.sort([d.language_score for d in docs])
    for p in PERCENTILES:
        q = summary["numeric"]["language_score"]["percentiles"][str(p)]
        rank = np.searchsorted(values, q)
        assert abs(rank - p / 100 * len(values)) <= EPSILON * len(values) + 1, (p, rank)


def test_no_documents_is_one_line(tmp_path, capsys):
    assert main(["summarize", str(tmp_path / "none" / "*.jsonl.gz"), "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: no document files match")


def test_a_document_with_a_score_that_is_not_a_number_is_counted_not_fatal(tmp_path):
    docs = _docs(20)
    docs[4].scores["kenlm.perplexity"] = "abc"
    docs[7].scores = [1, 2]  # (document.py may already refuse this one when reading: a bad_json line)
    _write(tmp_path / "s" / "documents", docs)
    assert main(["summarize", str(tmp_path / "s" / "documents" / "*.jsonl.gz"), "--output", str(tmp_path / "s" / "out"),
                 "--direct_running_mode=multi_threading", "--direct_num_workers=2"]) == 0
    summary = json.loads((tmp_path / "s" / "out" / "summary.json").read_text())
    stats = json.loads((tmp_path / "s" / "out" / "stats.json").read_text())
    assert stats["balanced"] and summary["documents"] == 18
    dropped = {**stats["stages"]["ReadDocuments"].get("dropped", {}), **stats["stages"]["Summarize"]["dropped"]}
    assert stats["stages"]["Summarize"]["dropped"]["bad_field:scores.kenlm.perplexity"] == 1
    assert sum(dropped.values()) == 2


def test_a_bad_fields_key_names_its_counter_only_when_it_is_a_name(tmp_path):
    # The key of a score that is not a number named the counter, bad_field:scores.<key>: any key of the input
    # (megabytes long, control characters, one per document) became a counter name of its own in stats.json.
    docs = _docs(20)
    odd = ["x" * 5000, "a\x1b[2Jb", "", " key", "line\nbreak", *(f"{'y' * 70}{i}" for i in range(8))]
    for d, key in zip(docs, odd):
        d.scores[key] = "abc"
    docs[15].scores["fine.name:1-2"] = "abc"  # names: kept as they are
    docs[14].scores["Sc\u00f6re (v2)"] = "abc"
    docs[16].decisions["\n"] = 3
    docs[17].decisions["Quality"] = 3
    _write(tmp_path / "s" / "documents", docs)
    assert main(["summarize", str(tmp_path / "s" / "documents" / "*.jsonl.gz"), "--output", str(tmp_path / "s" / "out"),
                 "--direct_running_mode=multi_threading", "--direct_num_workers=2"]) == 0
    stats = json.loads((tmp_path / "s" / "out" / "stats.json").read_text())
    assert stats["balanced"]
    assert stats["stages"]["Summarize"]["dropped"] == {
        "bad_field:scores.malformed": len(odd), "bad_field:scores.fine.name:1-2": 1,
        "bad_field:scores.Sc\u00f6re (v2)": 1,
        "bad_field:decisions.malformed": 1, "bad_field:decisions.Quality": 1}


def test_odd_keys_and_values_are_one_field_and_print_escaped(tmp_path, capsys):
    # A good document's own score keys and decision labels named its summary fields as they were (a 5,000-character
    # field set the table's column width; a terminal escape went to the terminal), and its decision values and
    # languages were printed raw: keys go through key_name, as the counters' do, and the table escapes values.
    docs = _docs(12)
    for d, key in zip(docs, ["x" * 5000, "a\x1b[2Jb", " key"]):
        d.scores[key] = 1.5
    docs[5].decisions["line\nbreak"] = "keep"
    docs[6].decisions["C4"] = "drop\x1b[2J"
    docs[7].language = "z" * 300
    summary, printed = _summary(tmp_path, docs, capsys)
    assert summary["numeric"]["scores.malformed"]["count"] == 3
    assert summary["categorical"]["decisions.malformed"] == {"keep": 1}
    assert summary["categorical"]["decisions.C4"]["drop\x1b[2J"] == 1  # summary.json keeps the value whole
    assert summary["categorical"]["language"]["z" * 300] == 1
    assert all(k.isprintable() and len(k) <= 80 for k in [*summary["numeric"], *summary["categorical"]])
    table = printed.out
    assert "\x1b" not in table and "'drop\\x1b[2J' 1 " in table
    assert max(map(len, table.splitlines())) < 200 and "z" * 37 + "..." in table


@pytest.mark.parametrize("held", ["documents", "stats", "run"])
def test_an_output_holding_another_run_is_refused(tmp_path, capsys, held):
    _write(tmp_path / "annot" / "documents", _docs(5), files=1)
    if held == "stats":
        (tmp_path / "annot" / "stats.json").write_text(json.dumps({"recipe": {"name": "cc_en"}, "stages": {}}))
    elif held == "run":
        (tmp_path / "annot" / "run.json").write_text("{}")
    out = tmp_path / "annot"
    before = sorted(p.name for p in out.iterdir())
    assert main(["summarize", str(tmp_path / "annot" / "documents" / "*.jsonl.gz"), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --output") and "holds another run" in err[0]
    assert sorted(p.name for p in out.iterdir()) == before


def test_an_earlier_summary_folder_may_be_written_again(tmp_path, capsys):
    _summary(tmp_path, _docs(30), capsys)
    assert main(["summarize", str(tmp_path / "s" / "documents" / "*.jsonl.gz"), "--output",
                 str(tmp_path / "s" / "out"), "--direct_running_mode=in_memory"]) == 0
