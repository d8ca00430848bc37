"""Tokenization throughput, end to end (document shards in, Arrow token shards out), against raw HF
`tokenizers` encode_batch on the same texts, measured side by side in one run.

    .venv/bin/python bench/tokenize.py                 # ~100 MB of mixed-language documents, 2 workers
    .venv/bin/python bench/tokenize.py --mb 20 --workers 1

Prints tokens/s for: raw encode_batch (the reference), the in-process driver, and the Beam pipeline
(`beam tokenize encode`: ReadDocuments | Tokenize on the local FnApiRunner), and each one's ratio to the
reference. Target: end to end at least 0.8x the raw tokenizer.
"""
from __future__ import annotations

import sys
from pathlib import Path

# This file's name shadows the standard library's `tokenize` (imported by pandas, linecache, ...), so its
# folder must leave the import path before anything else is imported.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import gzip
import json
import os
import random
import resource
import shutil
import tempfile
import time


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children (Beam's local workers), all threads."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def make_documents(total_mb: float, seed: int):
    """Documents assembled from a pool of generated paragraphs (80% English prose, 20% twelve other
    languages), so a large corpus costs seconds to build."""
    from gristmill.pipeline import textgen
    from gristmill.pipeline.document import Document

    rng = random.Random(seed)
    pool = [textgen.english_text(rng, rng.randint(40, 200)) for _ in range(1600)]
    others = [lang for lang in textgen.SUPPORTED_LANGUAGES if lang != "en"]
    pool += [textgen.language_text(rng.choice(others), rng, rng.randint(40, 200)) for _ in range(400)]
    docs, size, i = [], 0, 0
    while size < total_mb * 1e6:
        text = "\n\n".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        docs.append(Document(id=f"{i:08x}", url=f"https://example.org/{i}", text=text))
        size += len(text.encode("utf-8"))
        i += 1
    return docs, size


def write_shards(docs, folder: Path, n: int = 4) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        with gzip.open(folder / f"part-{k:05d}-of-{n:05d}.jsonl.gz", "wt", encoding="utf-8", compresslevel=1) as f:
            f.writelines(d.to_json() + "\n" for d in docs[k::n])
    return str(folder / "*.jsonl.gz")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=100.0, help="MB of document text (default 100)")
    ap.add_argument("--vocab-size", type=int, default=32000, help="tokenizer vocabulary (default 32000)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Beam local workers (default: cores)")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-beam", action="store_true", help="measure only the in-process driver")
    ap.add_argument("--keep", action="store_true", help="keep the temporary documents and shards")
    args = ap.parse_args()

    from tokenizers import Tokenizer

    from gristmill.pipeline.docio import ReadDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext
    from gristmill.tokenize.cli import iter_documents
    from gristmill.tokenize.encode import TokenizeConfig, tokenize_documents
    from gristmill.tokenize.stages import Tokenize
    from gristmill.tokenize.train import save_tokenizer, select_sample, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="bench_tokenize_"))
    t = time.perf_counter()
    docs, text_bytes = make_documents(args.mb, args.seed)
    glob = write_shards(docs, work / "documents")
    print(f"corpus: {len(docs)} documents, {text_bytes / 1e6:.1f} MB of text ({time.perf_counter() - t:.1f} s to build)")

    t = time.perf_counter()
    tok_path = work / "tokenizer.json"
    sample = select_sample(docs, 5000, args.seed)
    save_tokenizer(train_tokenizer(sample, args.vocab_size), tok_path)
    print(f"tokenizer: byte-level BPE, vocab {args.vocab_size}, trained on {len(sample)} documents in "
          f"{time.perf_counter() - t:.1f} s")
    texts = [d.text for d in docs]
    del docs

    # Reference: the plain library on the same texts, already in memory, ids fetched. Measured before and
    # after the pipeline runs, and averaged, so a change in machine load during the run biases neither side.
    # CPU seconds (all threads and worker processes) are printed too: on a shared machine they move less.
    raw_tok = Tokenizer.from_file(str(tok_path))
    rows = []  # (name, tokens, wall seconds, cpu seconds)

    def timed(name, fn):
        t, c = time.perf_counter(), cpu_seconds()
        tokens = fn()
        wall, cpu = time.perf_counter() - t, cpu_seconds() - c
        rows.append((name, tokens, wall, cpu))
        note = "" if tokens == rows[0][1] else f"  TOKEN COUNT DIFFERS from raw ({rows[0][1]:,})"
        print(f"{name:<34} {tokens:>11,} tokens  {wall:6.1f} s wall = {tokens / wall / 1e6:.3f} M tokens/s  "
              f"{cpu:6.1f} s cpu = {tokens / cpu / 1e6:.3f} M tokens/cpu-s{note}")

    def raw():
        return sum(len(e.ids) for lo in range(0, len(texts), 2048)
                   for e in raw_tok.encode_batch(texts[lo:lo + 2048], add_special_tokens=False))

    def text_tokens(manifest):
        # the EOS after each document is ours, not the text's: count text tokens, as the reference does
        splits = manifest["splits"].values()
        return sum(s["tokens"] for s in splits) - sum(s["documents"] for s in splits)

    config = TokenizeConfig(seq_len=args.seq_len, validation_fraction=0.01)
    timed("raw tokenizers encode_batch (1)", raw)
    timed("end to end, in-process driver", lambda: text_tokens(tokenize_documents(
        iter_documents(glob), str(tok_path), work / "local", config, seed=args.seed)[0]))
    if not args.skip_beam:
        out = work / "beam"
        stage = Tokenize("Tokenize", seq_len=args.seq_len, validation_fraction=0.01, tokenizer=str(tok_path),
                         subdir="")
        ctx = RunContext(input=glob, output=str(out), seed=args.seed, recipe_name="bench", num_workers=args.workers)

        def beam():
            run_stages([ReadDocuments("ReadDocuments", glob), stage], ctx, [])
            return text_tokens(json.loads((out / "manifest.json").read_text()))

        timed(f"end to end, Beam ({args.workers} workers)", beam)
        same = all((out / p.name).read_bytes() == p.read_bytes() for p in (work / "local").glob("*.arrow"))
        print(f"Beam shards byte-identical to the in-process driver's: {same}")
    timed("raw tokenizers encode_batch (2)", raw)

    raw_rows = [r for r in rows if r[0].startswith("raw")]
    ref_wall = sum(r[1] / r[2] for r in raw_rows) / len(raw_rows)
    ref_cpu = sum(r[1] / r[3] for r in raw_rows) / len(raw_rows)
    print(f"reference = mean of the two raw runs: {ref_wall / 1e6:.3f} M tokens/s, {ref_cpu / 1e6:.3f} M tokens/cpu-s")
    ratios = []
    for name, tokens, wall, cpu in rows:
        if not name.startswith("raw"):
            ratios.append(tokens / wall / ref_wall)
            print(f"  {name:<34} {ratios[-1]:.2f}x raw (wall)   {tokens / cpu / ref_cpu:.2f}x raw (cpu)")
    print(f"cpu cores: {os.cpu_count()}, load average at end: {os.getloadavg()[0]:.1f}")
    if args.keep:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work)
    print(f"target >= 0.80x raw (wall): {'met' if min(ratios) >= 0.8 else 'NOT met'} (lowest {min(ratios):.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
