"""`beam summarize`: the distribution of every recorded field over the documents of an earlier run (Dolma's
`analyze` step), so thresholds for `beam select` can be read off instead of guessed:

    beam summarize 'out/annot/documents/*.jsonl.gz' --output out/annot/summary

Numeric fields (`chars`, language_score, dup_count, cluster_size, weight, repeats and every `scores.<name>`)
get count, missing, mean, min, max and percentiles, from Beam's ApproximateQuantiles with epsilon 1e-3: exact
(numpy's `inverted_cdf`) while a field has under about 15,000 values, and within 0.1% of rank beyond. A
non-finite score is counted under `non_finite` and left out of the figures; a document with a score that is not a
number at all (or another field not of its kind) is counted as `bad_field:<field>` in stats.json
(`bad_field:scores.malformed` where the score's key is no name: see document.key_name) and left out. Categorical
fields (language, source and every `decisions.<stage label>`) get the count of each value. OUTPUT/summary.json
holds it all, OUTPUT/stats.json the read counts; the table goes to stdout. Below the exact range, percentiles can
differ in the last digits between worker counts (the sketch merges in whatever order bundles finish); counts never
do.
"""
from __future__ import annotations

import argparse
import json
import math

import apache_beam as beam
from apache_beam.transforms.stats import ApproximateQuantilesCombineFn

from gristmill.counts import is_json_number
from gristmill.errors import UserError
from gristmill.pipeline.document import Document, key_name
from gristmill.pipeline.stages import RunContext, Stage, StageCounters

NUMERIC = ("language_score", "dup_count", "cluster_size", "weight", "repeats")
PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
EPSILON = 1e-3
PARTS = "summary.parts.jsonl"


def bad_field(doc: Document) -> str | None:
    """The first field of `doc` that is not of its kind (a score that is not a number, `scores` or `decisions`
    that is not a mapping, a decision or language that is not a string), or None. Such a document is counted
    under `bad_field:<field>` and left out, rather than failing the run. A score's or decision's key that is no
    reasonable name is `scores.malformed` or `decisions.malformed` (see key_name)."""
    if not isinstance(doc.text, str):
        return "text"
    for name in NUMERIC:
        value = getattr(doc, name)
        if value is not None and not is_json_number(value):
            return name
    if not isinstance(doc.scores, dict):
        return "scores"
    for name, value in doc.scores.items():
        if not is_json_number(value):
            return key_name("scores", name)
    if not isinstance(doc.decisions, dict):
        return "decisions"
    for label, decision in doc.decisions.items():
        if not isinstance(decision, str):
            return key_name("decisions", label)
    for name in ("language", "source"):
        value = getattr(doc, name)
        if value is not None and not isinstance(value, str):
            return name
    return None


def numeric_fields(doc: Document):
    yield "chars", float(len(doc.text))
    for name in NUMERIC:
        value = getattr(doc, name)
        if value is not None:
            yield name, float(value)
    for name, value in doc.scores.items():
        yield key_name("scores", name), float(value)


def categorical_fields(doc: Document):
    yield "language", doc.language if doc.language is not None else "(none)"
    yield "source", doc.source or "(none)"
    for label, decision in doc.decisions.items():
        yield key_name("decisions", label), decision


class _Moments(beam.CombineFn):
    """(count, sum, non-finite count) of a field's values."""

    def create_accumulator(self):
        return 0, 0.0, 0

    def add_input(self, acc, value):
        n, s, bad = acc
        return (n + 1, s + value, bad) if math.isfinite(value) else (n, s, bad + 1)

    def merge_accumulators(self, accs):
        accs = list(accs)
        return sum(a[0] for a in accs), math.fsum(a[1] for a in accs), sum(a[2] for a in accs)

    def extract_output(self, acc):
        return acc


class _CountDocs(beam.DoFn):
    def __init__(self, label: str):
        self.label = label

    def setup(self):
        self.counters = StageCounters(self.label)

    def process(self, doc):
        self.counters.inc("in")
        bad = bad_field(doc)
        if bad is not None:
            self.counters.inc(f"dropped/bad_field:{bad}")
            return
        self.counters.inc("kept")
        yield doc


class Summarize(Stage):
    """Writes OUTPUT/summary.parts.jsonl: one record per (kind, field) with its moments, quantiles or counts;
    `assemble` turns it into the summary."""

    def __init__(self, label: str = "Summarize"):
        self.label = label

    def expand(self, docs, ctx: RunContext):
        docs = docs | f"{self.label}/Count" >> beam.ParDo(_CountDocs(self.label))
        values = docs | f"{self.label}/Numeric" >> beam.FlatMap(numeric_fields)
        finite = values | f"{self.label}/Finite" >> beam.Filter(lambda kv: math.isfinite(kv[1]))
        quantiles = (finite | f"{self.label}/Quantiles" >> beam.CombinePerKey(
            ApproximateQuantilesCombineFn.create(num_quantiles=101, epsilon=EPSILON))
            | f"{self.label}/QuantileRecords" >> beam.MapTuple(lambda k, q: {"kind": "quantiles", "field": k,
                                                                             "values": q}))
        moments = (values | f"{self.label}/Moments" >> beam.CombinePerKey(_Moments())
                   | f"{self.label}/MomentRecords" >> beam.MapTuple(
                       lambda k, m: {"kind": "moments", "field": k, "count": m[0], "sum": m[1], "non_finite": m[2]}))
        counts = (docs | f"{self.label}/Categorical" >> beam.FlatMap(categorical_fields)
                  | f"{self.label}/Pairs" >> beam.Map(lambda kv: (kv, 1))
                  | f"{self.label}/Tally" >> beam.CombinePerKey(sum)
                  | f"{self.label}/CountRecords" >> beam.MapTuple(
                      lambda kv, n: {"kind": "count", "field": kv[0], "value": kv[1], "n": n}))
        total = (docs | f"{self.label}/Total" >> beam.combiners.Count.Globally()
                 | f"{self.label}/TotalRecord" >> beam.Map(lambda n: {"kind": "documents", "n": n}))
        return ((quantiles, moments, counts, total) | f"{self.label}/Flatten" >> beam.Flatten()
                | f"{self.label}/Json" >> beam.Map(lambda r: json.dumps(r, sort_keys=True))
                | f"{self.label}/Write" >> beam.io.WriteToText(ctx.path(PARTS), shard_name_template="", num_shards=1))


def assemble(lines: list[str]) -> dict:
    """The summary from Summarize's records: documents, then numeric and categorical fields by name."""
    records = [json.loads(line) for line in lines if line.strip()]
    docs = sum(r["n"] for r in records if r["kind"] == "documents")
    numeric: dict[str, dict] = {}
    categorical: dict[str, dict[str, int]] = {}
    for r in records:
        if r["kind"] == "moments":
            n = r["count"]
            numeric.setdefault(r["field"], {}).update(
                count=n, missing=docs - n - r["non_finite"], non_finite=r["non_finite"],
                mean=r["sum"] / n if n else None)
        elif r["kind"] == "quantiles":
            q = r["values"]
            numeric.setdefault(r["field"], {}).update(
                min=q[0], max=q[-1], percentiles={str(p): q[p] for p in PERCENTILES})
        elif r["kind"] == "count":
            categorical.setdefault(r["field"], {})[r["value"]] = r["n"]
    for field in numeric.values():
        field.setdefault("min", None)
        field.setdefault("max", None)
        field.setdefault("percentiles", {str(p): None for p in PERCENTILES})
    ordered = {f: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for f, v in sorted(categorical.items())}
    return {"documents": docs, "numeric": dict(sorted(numeric.items())), "categorical": ordered,
            "percentiles": list(PERCENTILES), "epsilon": EPSILON}


def _num(x) -> str:
    if x is None:
        return "-"
    return f"{x:,.0f}" if float(x).is_integer() and abs(x) < 1e15 else f"{x:.4g}"


def format_table(summary: dict, top: int = 8) -> str:
    cols = ["min", *(f"p{p}" for p in summary["percentiles"]), "max"]
    w = max([len("field"), *map(len, summary["numeric"])]) + 2
    lines = [f"documents: {summary['documents']:,}", "",
             f"{'field':<{w}}{'count':>10}{'missing':>9}{'mean':>10}" + "".join(f"{c:>10}" for c in cols)]
    for name, f in summary["numeric"].items():
        row = [f["min"], *(f["percentiles"][str(p)] for p in summary["percentiles"]), f["max"]]
        lines.append(f"{name:<{w}}{f['count']:>10,}{f['missing']:>9,}{_num(f['mean']):>10}"
                     + "".join(f"{_num(v):>10}" for v in row))
    lines.append("")
    for name, values in summary["categorical"].items():
        total = sum(values.values())
        shown = ", ".join(f"{_shown(v)} {n:,} ({100 * n / total:.1f}%)" for v, n in list(values.items())[:top])
        more = f", ... {len(values) - top} more" if len(values) > top else ""
        lines.append(f"{name}: {shown}{more}")
    return "\n".join(lines)


def _shown(value: str, most: int = 40) -> str:
    """A categorical value as the table prints it: the documents' own string (summary.json keeps it whole), so
    one with a control character (a terminal escape, a line break) is shown escaped, and a long one cut."""
    text = value if value.isprintable() else ascii(value)
    return text if len(text) <= most else text[:most - 3] + "..."


EPILOG = """examples:
  beam summarize 'out/annot/documents/*.jsonl.gz' --output out/annot/summary
  beam select 'out/annot/documents/*.jsonl.gz' --output out/picked --where 'scores.kenlm.perplexity < 400'
"""


def check_summary_output(output: str) -> None:
    """One line when --output is another run's folder (`beam run`, `beam select`): summarize writes its own
    stats.json and run.json there, which would replace that run's (and the stage order `beam select
    --all-decisions` reads from them). A folder an earlier summarize wrote may be written again."""
    from gristmill.pipeline import fs

    stats_path = fs.join(output, "stats.json")
    recipe = None
    if fs.is_file(stats_path):
        try:
            recipe = (json.loads(fs.read_bytes(stats_path)).get("recipe") or {}).get("name")
        except (OSError, ValueError, AttributeError):
            recipe = "?"
        if recipe == "summarize":
            return
    if recipe is not None or fs.matching(fs.join(output, "documents", "*")) or fs.is_file(fs.join(output, "run.json")):
        raise UserError(f"--output {output} holds another run (its stats.json, run.json or documents/), which "
                        f"summarize would overwrite: give a folder of its own, e.g. {fs.join(output, 'summary')}")


def _cmd_summarize(args: argparse.Namespace, beam_args: list[str]) -> int:
    from gristmill.pipeline import fs
    from gristmill.pipeline.docio import run_on_documents

    check_summary_output(args.output)
    stats, ctx = run_on_documents("summarize", args, [Summarize("Summarize")], "Summarize", beam_args)
    parts = ctx.path(PARTS)
    summary = assemble(fs.read_bytes(parts).decode("utf-8").splitlines())
    fs.write_bytes(ctx.path("summary.json"), (json.dumps(summary, indent=2) + "\n").encode(),
                   mime_type="application/json")
    fs.delete([parts])
    print(format_table(summary, args.top))
    return 0 if stats.get("balanced", True) else 1


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "summarize", help="distributions of the scores, decisions and fields of an earlier run's documents",
        description="Percentiles of every numeric field (chars, language_score, dup_count, cluster_size, weight, "
                    "repeats, scores.<name>) and counts of every categorical one (language, source, "
                    "decisions.<stage label>) over the documents of an earlier run, to choose `beam select` "
                    "thresholds. Writes OUTPUT/summary.json and prints a table.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="document files of an earlier run, e.g. 'out/annot/documents/*.jsonl.gz'")
    p.add_argument("--output", required=True, help="folder to write summary.json and stats.json into (not a "
                                                   "run's own folder, e.g. out/annot/summary)")
    p.add_argument("--top", type=int, default=8, help="values shown per categorical field (default 8; all are in "
                                                      "summary.json)")
    p.add_argument("--workers", type=int, default=0, help="local workers (default: one per core)")
    p.set_defaults(func=_cmd_summarize, takes_beam_args=True)
