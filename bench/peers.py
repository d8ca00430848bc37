"""gristmill against HuggingFace datatrove, side by side in one process, on the same documents: the Gopher
quality, Gopher repetition, C4 and FineWeb filters one by one and as a chain (documents/s and the fraction of
documents given the same keep/drop decision), and MinHash signatures/s.

    PYTHONPATH=. .venv/bin/python bench/peers.py                 # 500 generated pages, 3 repeats (about 2 min)
    PYTHONPATH=. .venv/bin/python bench/peers.py --pages 4000 --repeats 5 --json peers.json
    PYTHONPATH=. .venv/bin/python bench/peers.py --only gopher_quality,minhash

Input: the generated sample crawl (gristmill.pipeline.sample, seed 1), read and extracted in this process (no
Beam), so both sides get the same Document texts. datatrove (0.10.1, with spacy and regex) is a test-only
dependency of gristmill; without it the script stops with one line.

What is timed (cores against cores, one process, no Beam or datatrove pipeline around them):
  gristmill  `check_batch` over batches of 256, as FilterStage calls it; verdicts collected, nothing counted.
  datatrove  `filter(doc)` per document, as its BaseFilter.run calls it (batch_size 1), without its stats.
  chain      gristmill: each batch of 256 through the four filters in turn, survivors only, C4's rewritten
             text applied; datatrove: each document through the four filters in turn until one drops it, as its
             generator pipeline passes documents (C4 rewrites doc.text in place).
  minhash    gristmill: `shingles` + `signatures` (datasketch bulk path) per batch of 256; datatrove:
             MinhashDedupSignature.get_shingles + get_signature per document (the body of its run() loop without
             the file writes), num_perm 128 (16 buckets x 8) and 5-grams on both sides.
Each figure is the median of --repeats timed runs after one untimed warm-up (models, spaCy, regex compilation);
within a repeat the two sides alternate which goes first. Before each timed run both sides' text memos are emptied
(gristmill's document and word token caches; datatrove's last-5-texts cache and spaCy's tokenizer, reloaded), so
a run never reuses tokens from an earlier one: memos help only within a run, as in a fresh process.
"""
from __future__ import annotations

import os
import sys

# Running a script puts its folder first on sys.path, and bench/tokenize.py would shadow the stdlib tokenize.
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

BATCH = 256
FILTERS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")
SECTIONS = (*FILTERS, "chain", "minhash")

def make_pair(name: str):
    """(gristmill filter, datatrove filter), both with their default (published) thresholds."""
    from datatrove.pipeline import filters as dt

    from gristmill.filters.c4 import C4QualityFilter
    from gristmill.filters.fineweb import FineWebQualityFilter
    from gristmill.filters.gopher import GopherQualityFilter, GopherRepetitionFilter

    pairs = {
        "gopher_quality": (GopherQualityFilter, dt.GopherQualityFilter),
        "gopher_repetition": (GopherRepetitionFilter, dt.GopherRepetitionFilter),
        "c4": (C4QualityFilter, dt.C4QualityFilter),
        "fineweb": (FineWebQualityFilter, dt.FineWebQualityFilter),
    }
    ours, theirs = pairs[name]
    flt = ours()
    flt.setup()
    return flt, theirs()


def load_documents(work: Path, pages: int) -> list:
    """The sample crawl's HTML pages as gristmill Documents, extracted here as ExtractText does."""
    from gristmill.pipeline.document import Document, stable_id
    from gristmill.pipeline.extract import ExtractText, PageDropped, page_text
    from gristmill.pipeline.sample import write_sample
    from gristmill.pipeline.warc import iter_warc

    extract = ExtractText()  # for its default bounds
    docs = []
    for path in write_sample(work / "crawl.warc.gz", pages=pages, seed=1, files=1):
        with open(path, "rb") as f:
            for outcome in iter_warc(f, os.path.basename(path)):
                page = outcome.page
                if page is None:
                    continue
                try:
                    text = page_text(page, extract.min_chars, extract.max_bad_char_ratio)[0]
                except PageDropped:
                    continue
                docs.append(Document(id=stable_id(page.record_id, page.url), url=page.url, text=text))
    return docs


def cold_caches() -> None:
    """Empty both sides' text memos, as in a fresh process: gristmill's token caches (documents, words,
    punctuation and symbol tests) and datatrove's (its lru_cache of the last 5 texts, and spaCy's tokenizer,
    reloaded, which drops spaCy's per-chunk cache). Called before every timed run of either side, outside the
    timing; compiled patterns and loaded models stay."""
    from datatrove.utils.text import split_into_parts
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    from gristmill.filters import text

    for fn in (text._text_tokens, text._chunk_tokens, text._is_punct, text.is_symbol_token):
        fn.cache_clear()
    split_into_parts.cache_clear()
    spacy_en = load_word_tokenizer("en")
    spacy_en._tokenizer = None
    spacy_en.tokenizer  # noqa: B018 - loads spacy.blank("en") again, before the clock starts


def dt_keep(result) -> tuple[bool, str | None]:
    if isinstance(result, tuple):
        return bool(result[0]), result[1]
    return bool(result), None


# ------------------------------------------------------------------------------------------ one side, one run


def run_gristmill(filters: list, docs: list) -> tuple[float, list]:
    """Time the filters over `docs` (copies: C4 rewrites text in a chain). Returns (seconds, per-document
    (keep, reason, text))."""
    docs = [copy.copy(d) for d in docs]
    cold_caches()
    outcome = {}
    t0 = time.perf_counter()
    for i in range(0, len(docs), BATCH):
        batch = docs[i:i + BATCH]
        for flt in filters:
            survivors = []
            for d, v in zip(batch, flt.check_batch(batch)):
                if v.keep:
                    if v.text is not None:
                        d.text = v.text
                    survivors.append(d)
                else:
                    outcome[d.id] = (False, v.reason, None)
            batch = survivors
        for d in batch:
            outcome[d.id] = (True, None, d.text)
    seconds = time.perf_counter() - t0
    return seconds, [outcome[d.id] for d in docs]


def run_datatrove(filters: list, names: list[str], docs: list) -> tuple[float, list]:
    from datatrove.data import Document as DTDocument

    from gristmill.filters.datatrove_names import our_reason

    dt_docs = [DTDocument(text=d.text, id=d.id) for d in docs]  # fresh each run: C4 rewrites doc.text
    cold_caches()
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # np.mean of an empty list inside datatrove
        t0 = time.perf_counter()
        for doc in dt_docs:
            for name, flt in zip(names, filters):
                keep, reason = dt_keep(flt.filter(doc))
                if not keep:
                    out.append((False, f"{name}:{our_reason(name, reason)}" if reason else name, None))
                    break
            else:
                out.append((True, None, doc.text))
        seconds = time.perf_counter() - t0
    return seconds, out


def agreement(ours: list, theirs: list) -> dict:
    n = len(ours)
    same_keep = sum(a[0] == b[0] for a, b in zip(ours, theirs))
    same_reason = sum(a[:2] == b[:2] for a, b in zip(ours, theirs))
    same_text = sum(a[0] and b[0] and a[2] == b[2] for a, b in zip(ours, theirs))
    both_kept = sum(a[0] and b[0] for a, b in zip(ours, theirs))
    differ = Counter((a[1] or "keep", b[1] or "keep") for a, b in zip(ours, theirs) if a[0] != b[0])
    return {"same_keep": same_keep / n, "same_reason": same_reason / n,
            "kept_ours": sum(a[0] for a in ours), "kept_theirs": sum(b[0] for b in theirs),
            "same_text_of_kept": (same_text / both_kept) if both_kept else None,
            "differ": [f"{a} vs {b}: {c}" for (a, b), c in differ.most_common()]}


def bench_filters(names: list[str], docs: list, repeats: int) -> dict:
    pairs = [make_pair(n) for n in names]
    ours, theirs = [p[0] for p in pairs], [p[1] for p in pairs]
    warm = docs[:64]
    run_gristmill(ours, warm)
    run_datatrove(theirs, names, warm)
    t_ours, t_theirs = [], []
    for r in range(repeats):
        if r % 2 == 0:
            s, res_ours = run_gristmill(ours, docs)
            t_ours.append(s)
            s, res_theirs = run_datatrove(theirs, names, docs)
            t_theirs.append(s)
        else:
            s, res_theirs = run_datatrove(theirs, names, docs)
            t_theirs.append(s)
            s, res_ours = run_gristmill(ours, docs)
            t_ours.append(s)
    a = agreement(res_ours, res_theirs)
    return {"docs": len(docs), "gristmill_s": t_ours, "datatrove_s": t_theirs,
            "gristmill_docs_per_s": len(docs) / statistics.median(t_ours),
            "datatrove_docs_per_s": len(docs) / statistics.median(t_theirs), **a}


# ------------------------------------------------------------------------------------------------------ MinHash


def bench_minhash(texts: list[str], repeats: int, work: Path) -> dict:
    import numpy as np
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from gristmill.dedup.minhash import MinHashConfig, shingles, signatures

    cfg = MinHashConfig()  # num_perm 128, 5-grams, seed 1
    dt_sig = MinhashDedupSignature(output_folder=str(work / "dt-minhash"),
                                   config=MinhashConfig(n_grams=cfg.ngram, num_buckets=16, hashes_per_bucket=8,
                                                        seed=cfg.seed))
    assert dt_sig.num_hashes == cfg.num_perm
    # datatrove 0.10.1 hashes str n-grams with xxhash.xxh64_intdigest and declares xxhash<4; xxhash 4 (installed
    # here, for gristmill) refuses str. xxhash 3 encoded a str as UTF-8 first, so this is its exact behaviour.
    import xxhash

    dt_sig._hash_func = lambda s: xxhash.xxh64_intdigest(s.encode("utf-8"))

    def ours(batch_texts):
        cold_caches()
        t0 = time.perf_counter()
        sets = [shingles(t, cfg.ngram) for t in batch_texts]
        t1 = time.perf_counter()
        for i in range(0, len(sets), BATCH):  # MinHashDedup's batch size
            signatures(sets[i:i + BATCH], cfg)
        return t1 - t0, time.perf_counter() - t1

    def theirs(batch_texts):
        cold_caches()
        t_sh = t_sig = 0.0
        for t in batch_texts:  # MinhashDedupSignature.run's loop body, less the struct.pack and file writes
            t0 = time.perf_counter()
            sh = dt_sig.get_shingles(t)
            t1 = time.perf_counter()
            if sh.size != 0:
                dt_sig.get_signature(sh)
            t_sh += t1 - t0
            t_sig += time.perf_counter() - t1
        return t_sh, t_sig

    ours(texts[:64])
    theirs(texts[:64])
    o, th = [], []
    for r in range(repeats):
        for side in ((ours, o), (theirs, th)) if r % 2 == 0 else ((theirs, th), (ours, o)):
            side[1].append(side[0](texts))
    n = len(texts)
    med = lambda runs, k: statistics.median(x[k] if k is not None else sum(x) for x in runs)  # noqa: E731
    shingles_per_doc = {
        "gristmill": float(np.mean([len(shingles(t, cfg.ngram)) for t in texts])),
        "datatrove": float(np.mean([dt_sig.get_shingles(t).size for t in texts])),
        "datatrove_distinct": float(np.mean([len(np.unique(dt_sig.get_shingles(t))) for t in texts])),
    }
    return {"docs": n, "num_perm": cfg.num_perm, "ngram": cfg.ngram, "gristmill_runs": o, "datatrove_runs": th,
            "gristmill_sig_per_s": n / med(o, None), "datatrove_sig_per_s": n / med(th, None),
            "gristmill_shingle_s": med(o, 0), "gristmill_signature_s": med(o, 1),
            "datatrove_shingle_s": med(th, 0), "datatrove_signature_s": med(th, 1),
            "shingles_per_doc": shingles_per_doc}


# ----------------------------------------------------------------------------------------------------- printing


def print_filter_table(rows: dict[str, dict], repeats: int) -> None:
    print(f"\n## Heuristic filters (median of {repeats} runs each, one process)")
    print(f"{'filter':<20}{'docs':>6}{'gristmill docs/s':>18}{'datatrove docs/s':>18}{'ratio':>8}"
          f"{'same keep/drop':>16}{'same reason':>13}{'kept g/d':>12}")
    for name, r in rows.items():
        ratio = r["gristmill_docs_per_s"] / r["datatrove_docs_per_s"]
        print(f"{name:<20}{r['docs']:>6}{r['gristmill_docs_per_s']:>18,.0f}{r['datatrove_docs_per_s']:>18,.0f}"
              f"{ratio:>7.2f}x{r['same_keep']:>16.4f}{r['same_reason']:>13.4f}"
              f"{str(r['kept_ours']) + '/' + str(r['kept_theirs']):>12}")
    print("(ratio = gristmill docs/s / datatrove docs/s. 'same reason': the same decision and, for drops, the same"
          " rule, with datatrove's reason names mapped to ours.)")
    for name, r in rows.items():
        runs = lambda xs: "/".join(f"{x:.2f}" for x in xs)  # noqa: E731
        print(f"{name}: seconds per run, gristmill {runs(r['gristmill_s'])}, datatrove {runs(r['datatrove_s'])}")
    for name, r in rows.items():
        if r["same_text_of_kept"] is not None and name in ("c4", "chain"):
            print(f"{name}: the kept text (C4 line removal) is identical for {r['same_text_of_kept']:.4f} of the "
                  "documents both keep")
        for line in r["differ"]:
            print(f"{name}: decision differs (gristmill vs datatrove): {line}")
    print("Documented deliberate differences (docs/filters.md), which can move a document on a threshold:")
    for line in KNOWN_DIFFERENCES:
        print(f"  - {line}")


# docs/filters.md, "Deliberate differences": where a decision may differ from datatrove's by design
KNOWN_DIFFERENCES = (
    "tokenizer: gristmill's regex port of spaCy's blank English tokenizer; code-like text and a few listed cases "
    "split differently (99.6% of the sample crawl's pages tokenize identically)",
    "Gopher top n-gram: the characters its occurrences cover, each once; datatrove multiplies length by count, so "
    "overlapping occurrences ('ha ha ha ...') count characters twice",
    "Gopher repeated n-grams compared as word tuples; datatrove glues the words with no separator ('ab c' = 'a bc')",
    "C4 three-word minimum counts words after citation marks are removed (C4's own code); datatrove counts before",
    "empty or symbol-only documents are dropped with a reason; datatrove raises ZeroDivisionError on some when a "
    "rule is off, and keeps a page with no words when only the mean word length rule is on",
    "mean word length as sum/count against np.mean (last-bit difference, only at a threshold exactly)",
)


def print_minhash(m: dict, repeats: int) -> None:
    ratio = m["gristmill_sig_per_s"] / m["datatrove_sig_per_s"]
    print(f"\n## MinHash signatures ({m['docs']} documents, num_perm {m['num_perm']}, {m['ngram']}-word shingles; "
          f"median of {repeats} runs)")
    print(f"{'side':<12}{'signatures/s':>14}{'shingling s':>13}{'signature s':>13}{'shingles/doc':>14}")
    sp = m["shingles_per_doc"]
    print(f"{'gristmill':<12}{m['gristmill_sig_per_s']:>14,.0f}{m['gristmill_shingle_s']:>13.2f}"
          f"{m['gristmill_signature_s']:>13.2f}{sp['gristmill']:>14.0f}")
    print(f"{'datatrove':<12}{m['datatrove_sig_per_s']:>14,.0f}{m['datatrove_shingle_s']:>13.2f}"
          f"{m['datatrove_signature_s']:>13.2f}{sp['datatrove']:>14.0f}")
    print(f"ratio (gristmill / datatrove signatures/s): {ratio:.2f}x. gristmill: NFKC + lower-case, words = runs of "
          r"\w, a set of distinct 5-grams, each hashed with xxh32 and permuted by datasketch's affine32 scheme "
          "(uint32 values, numpy over a batch of 256). datatrove: simplify_text (lower-case, digits to 0, "
          "punctuation removed, diacritics stripped, whitespace folded), spaCy tokens, every 5-gram joined with "
          "spaces and hashed with xxhash64 (repeats kept: "
          f"{sp['datatrove_distinct']:.0f} distinct per document), permuted mod 2^61-1 in numpy per document "
          "(uint64 values); signature time includes building the numpy array of shingle hashes.")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=500, help="pages in the generated crawl (default 500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure, median reported (default 3)")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args()
    from gristmill.pipeline.sample import MIN_PAGES  # the sample crawl needs this many for every kind of page

    if args.pages < MIN_PAGES:
        ap.error(f"--pages must be at least {MIN_PAGES}, not {args.pages}")
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, not {args.repeats}")
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    try:
        import datatrove  # noqa: F401
        import regex  # noqa: F401
        import spacy  # noqa: F401
        from datatrove.pipeline import filters  # noqa: F401
    except ImportError as e:
        print(f"error: this compares against datatrove, which is not installed here with its filter dependencies "
              f"({e.name} is missing): pip install datatrove spacy regex", file=sys.stderr)
        return 2
    from importlib.metadata import version

    with tempfile.TemporaryDirectory(prefix="gm-bench-peers-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        docs = load_documents(work, args.pages)
        chars = sum(len(d.text) for d in docs)
        load = os.getloadavg()
        print(f"# gristmill vs datatrove {version('datatrove')} (spacy {version('spacy')}): {len(docs)} documents "
              f"from {args.pages} generated pages, {chars / len(docs):,.0f} characters each on average (extracted "
              f"in {time.perf_counter() - t0:.1f} s); {os.cpu_count()} cores, load average {load[0]:.1f} at start")
        results: dict = {"docs": len(docs), "pages": args.pages, "repeats": args.repeats,
                         "load_at_start": load[0], "filters": {}}
        for name in names:
            if name in FILTERS:
                results["filters"][name] = bench_filters([name], docs, args.repeats)
            elif name == "chain":
                results["filters"]["chain"] = bench_filters(list(FILTERS), docs, args.repeats)
            print(f"  {name} done", file=sys.stderr, flush=True)
        if results["filters"]:
            print_filter_table(results["filters"], args.repeats)
        if "minhash" in names:
            results["minhash"] = bench_minhash([d.text for d in docs], args.repeats, work)
            print_minhash(results["minhash"], args.repeats)
        results["load_at_end"] = os.getloadavg()[0]
        print(f"\n(load average {results['load_at_end']:.1f} at the end; both sides single-threaded, in this one "
              "process)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
