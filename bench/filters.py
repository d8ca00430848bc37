"""Filter throughput: documents/s per filter and for the whole chain, on the local Beam runner (FnApiRunner,
N worker processes) against a plain single-process Python loop doing the same work (parse the same document
shards, run the same filters in batches of 256) in the same run.

    .venv/bin/python bench/filters.py [--pages 4000] [--workers 2] [--only gopher_quality,c4]

Input: the generated sample crawl (gristmill.pipeline.sample), read and extracted once by Beam into document
shards. Models: the provisioned defaults (`beam model provision`).
"""
from __future__ import annotations

import os
import sys

# Running a script puts its folder first on sys.path, and bench/tokenize.py would shadow the stdlib tokenize.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

BATCH = 256


def make_filters() -> dict[str, list]:
    from gristmill.filters.c4 import C4QualityFilter
    from gristmill.filters.fineweb import FineWebQualityFilter
    from gristmill.filters.gopher import GopherQualityFilter, GopherRepetitionFilter
    from gristmill.filters.kenlm_filter import KenLMFilter
    from gristmill.filters.langid import LanguageIDFilter
    from gristmill.filters.quality import QualityFilter
    from gristmill.filters.toxicity import BadWordsFilter, ToxicityFilter
    from gristmill.filters.url import URLFilter

    single = {
        "url": URLFilter(),
        "language_id": LanguageIDFilter(),
        "gopher_quality": GopherQualityFilter(),
        "gopher_repetition": GopherRepetitionFilter(),
        "c4": C4QualityFilter(),
        "fineweb": FineWebQualityFilter(),
        "kenlm": KenLMFilter(),
        "quality": QualityFilter(),
        "toxicity": ToxicityFilter(),
        "badwords": BadWordsFilter(),
    }
    out = {name: [(name, f)] for name, f in single.items()}
    out["chain"] = list(single.items())
    return out


def read_docs(paths: list[str]):
    from gristmill.pipeline.document import Document

    for p in paths:
        with gzip.open(p, "rt", encoding="utf-8") as f:
            for line in f:
                yield Document.from_json(line)


def plain_loop(paths: list[str], filters: list) -> tuple[int, int, float]:
    """Same work as the Beam stages: parse documents, pass each batch through the filters in order (drop mode)."""
    t0 = time.perf_counter()
    for _, f in filters:
        f.setup()
    n_in = kept = 0
    batch = []

    def flush(docs):
        for _, f in filters:
            verdicts = f.check_batch(docs)
            survivors = []
            for d, v in zip(docs, verdicts):
                d.scores.update(v.scores)
                if v.language is not None:
                    d.language, d.language_score = v.language, v.language_score
                if v.keep:
                    if v.text is not None:
                        d.text = v.text
                    survivors.append(d)
            docs = survivors
            if not docs:
                break
        return len(docs)

    for d in read_docs(paths):
        n_in += 1
        batch.append(d)
        if len(batch) == BATCH:
            kept += flush(batch)
            batch = []
    if batch:
        kept += flush(batch)
    return n_in, kept, time.perf_counter() - t0


def beam_run(glob: str, out: str, filters: list, workers: int) -> tuple[int, int, float]:
    from gristmill.pipeline.docio import ReadDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import FilterStage, RunContext

    stages = [ReadDocuments("Read", glob)] + [FilterStage(name, f, mode="drop", batch_size=BATCH) for name, f in filters]
    ctx = RunContext(input=glob, output=out, recipe_name="bench_filters", num_workers=workers)
    t0 = time.perf_counter()
    stats = run_stages(stages, ctx, [f"--direct_num_workers={workers}"])
    elapsed = time.perf_counter() - t0
    last = stats["stages"][filters[-1][0] if filters else "Read"]  # no filters: the read-only baseline
    return stats["stages"]["Read"]["kept"], last["kept"], elapsed


def extract_documents(work: Path, pages: int, workers: int) -> list[str]:
    from gristmill.pipeline.docio import WriteDocuments
    from gristmill.pipeline.extract import ExtractText
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.sample import write_sample
    from gristmill.pipeline.stages import RunContext
    from gristmill.pipeline.warc import ReadWarc

    shards = sorted(str(p) for p in (work / "docs" / "documents").glob("part-*.jsonl.gz"))
    if shards:
        return shards
    warcs = write_sample(work / "crawl.warc.gz", pages=pages, seed=1, files=max(1, workers))
    pattern = str(work / "crawl*.warc.gz")
    ctx = RunContext(input=pattern, output=str(work / "docs"), recipe_name="bench_filters_extract", num_workers=workers)
    run_stages([ReadWarc("Read"), ExtractText("Extract"), WriteDocuments("Write", shards=max(2, workers))], ctx,
               [f"--direct_num_workers={workers}"])
    mb = sum(os.path.getsize(p) for p in warcs) / 1e6
    print(f"generated {len(warcs)} WARC file(s), {mb:.1f} MB, {pages} pages", file=sys.stderr)
    return sorted(str(p) for p in (work / "docs" / "documents").glob("part-*.jsonl.gz"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=4000, help="pages in the generated crawl (default 4000)")
    ap.add_argument("--workers", type=int, default=2, help="Beam worker processes (default 2)")
    ap.add_argument("--only", help="comma-separated subset of filters (names as printed; 'chain' = all in order)")
    ap.add_argument("--workdir", help="reuse a folder across runs (the extracted documents are kept there)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="gm-bench-filters-"))
    work.mkdir(parents=True, exist_ok=True)
    shards = extract_documents(work, args.pages, args.workers)
    glob = str(work / "docs" / "documents" / "part-*.jsonl.gz")
    configs = make_filters()
    names = args.only.split(",") if args.only else list(configs)
    unknown = [n for n in names if n not in configs]
    if unknown:
        print(f"error: unknown filter(s) {', '.join(unknown)}; choose from {', '.join(configs)}", file=sys.stderr)
        return 2

    # Parsing alone, measured first: subtracting it gives each filter's own cost, without Beam's start-up.
    base_b = beam_run(glob, str(work / "beam-read_only"), [], args.workers)[2]
    base_l = plain_loop(shards, [])[2]
    print(f"{'filter':<18} {'docs':>6} {'kept':>6} {'beam docs/s':>12} {'loop docs/s':>12} {'beam/loop':>9}"
          f" {'net beam':>9} {'net loop':>9} {'net ratio':>9}")
    rows = []
    for name in names:
        b_in, b_kept, b_s = beam_run(glob, str(work / f"beam-{name}"), make_filters()[name], args.workers)
        l_in, l_kept, l_s = plain_loop(shards, make_filters()[name])
        assert (b_in, b_kept) == (l_in, l_kept), f"{name}: Beam kept {b_kept}/{b_in}, loop kept {l_kept}/{l_in}"
        net_b, net_l = b_s - base_b, l_s - base_l
        row = {"filter": name, "docs": b_in, "kept": b_kept, "beam_s": b_s, "loop_s": l_s,
               "beam_docs_per_s": b_in / b_s, "loop_docs_per_s": l_in / l_s, "ratio": l_s / b_s,
               "net_beam_docs_per_s": b_in / net_b if net_b > 0 else None,
               "net_loop_docs_per_s": l_in / net_l if net_l > 0 else None}
        row["net_ratio"] = net_l / net_b if net_b > 0 and net_l > 0 else None
        rows.append(row)
        fmt = lambda x, spec: format(x, spec) if x is not None else "-"  # noqa: E731
        print(f"{name:<18} {b_in:>6} {b_kept:>6} {row['beam_docs_per_s']:>12.0f} {row['loop_docs_per_s']:>12.0f} "
              f"{row['ratio']:>8.2f}x {fmt(row['net_beam_docs_per_s'], '>9.0f')} "
              f"{fmt(row['net_loop_docs_per_s'], '>9.0f')} {fmt(row['net_ratio'], '>8.2f')}x", flush=True)
    print(f"(Beam: FnApiRunner, {args.workers} worker processes; loop: one process; {os.cpu_count()} cores. "
          f"'net' columns subtract the read_only time of each side: Beam start-up {base_b:.1f} s + parsing, "
          f"loop parsing {base_l:.1f} s.)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
