"""Dedup benchmark: MinHash signature throughput against a plain datasketch loop, near-duplicate precision/recall
per Jaccard band against exact Jaccard over all pairs, and end-to-end Beam dedup documents/s and peak memory.

Example:
    .venv/bin/python bench/dedup.py                      # 100k short documents, 20% planted near-duplicates
    .venv/bin/python bench/dedup.py --docs 20000 --plain-docs 2000
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py would shadow the standard library's tokenize: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import gzip
import json
import subprocess
import tempfile
import threading
import time

from datasketch import MinHash

from gristmill.dedup.minhash import HASHFUNC, SCHEME, MinHashConfig, near_duplicate_pairs, shingles, signatures
from gristmill.dedup.synthetic import exact_pairs, planted_corpus, quality
from gristmill.pipeline.document import Document


def bench_signatures(texts: list[str], plain_docs: int, cfg: MinHashConfig) -> None:
    t0 = time.perf_counter()
    sets = [shingles(t, cfg.ngram) for t in texts]
    t_shingle = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(sets), 256):  # the batch size MinHashDedup uses
        signatures(sets[i : i + 256], cfg)
    t_bulk = time.perf_counter() - t0

    subset = sets[:plain_docs]
    t0 = time.perf_counter()
    for ss in subset:  # what most scripts do: one MinHash per document, one update per shingle
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        for s in ss:
            m.update(s.encode("utf-8"))
    t_plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    for ss in subset:  # same loop with our pinned scheme and hash function: separates the two gains
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, scheme=SCHEME, hashfunc=HASHFUNC)
        for s in ss:
            m.update(s.encode("utf-8"))
    t_plain_pinned = time.perf_counter() - t0

    n, k = len(sets), len(subset)
    per_doc = sum(len(s) for s in sets) / n
    print(f"\n## MinHash signatures (num_perm={cfg.num_perm}, {per_doc:.0f} shingles/doc)")
    print(f"{'path':<48}{'docs':>9}{'signatures/s':>15}{'vs plain':>10}")
    plain_rate = k / t_plain
    rows = [
        ("gristmill bulk (MinHash.generator, xxh32)", n, n / t_bulk),
        ("gristmill bulk incl. shingling", n, n / (t_bulk + t_shingle)),
        ("plain loop, datasketch defaults (sha1)", k, plain_rate),
        ("plain loop, pinned scheme + xxh32", k, k / t_plain_pinned),
    ]
    for name, docs, rate in rows:
        print(f"{name:<48}{docs:>9}{rate:>15,.0f}{rate / plain_rate:>9.2f}x")
    print(f"target: bulk >= 2x plain loop -> {'met' if rows[0][2] >= 2 * plain_rate else 'NOT met'} "
          f"({rows[0][2] / plain_rate:.1f}x)")


def bench_quality(ids: list[str], texts: list[str], cfg: MinHashConfig) -> None:
    t0 = time.perf_counter()
    exact = exact_pairs(ids, texts, 0.5)
    t_exact = time.perf_counter() - t0
    found = set(near_duplicate_pairs(ids, texts, cfg))
    q = quality(found, exact, cfg.threshold)
    b, r = cfg.banding()
    print(f"\n## Near-duplicate quality (threshold {cfg.threshold}, {b} bands x {r} rows, "
          f"verify at est. J >= {cfg.verify_threshold():.3f}; exact J over all pairs in {t_exact:.1f} s)")
    print(f"{'exact Jaccard':<16}{'pairs':>8}{'found':>8}{'recall':>9}")
    for row in q["bands"]:
        print(f"{row['band']:<16}{row['pairs']:>8}{row['found']:>8}{row['recall']:>9.3f}")
    wrong = sum(row["reported"] for row in q["bands"][:4]) + q["reported_below_0.5"]
    print(f"reported pairs {q['reported']}, of which {wrong} have exact J < {cfg.threshold}: "
          f"precision {q['precision']:.3f} (target >= 0.95)")
    print(f"recall for J >= 0.9: {q['recall_j90']:.3f} (target >= 0.95)")


def _descendants(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += [int(child), *_descendants(int(child))]
    except OSError:  # a process that just exited
        pass
    return out


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class PeakMemory(threading.Thread):
    """Samples the resident memory of this process and its worker processes every 0.2 s.

    ru_maxrss is no use here: Linux carries it over fork and exec, so a child reports its parent's peak."""

    def __init__(self):
        super().__init__(daemon=True)
        self.total = self.worker = 0.0
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            workers = [_rss_mb(p) for p in _descendants(os.getpid())]
            self.worker = max([self.worker, *workers])
            self.total = max(self.total, _rss_mb(os.getpid()) + sum(workers))


def run_e2e(input_glob: str, output: str, workers: int, chain: str) -> None:
    """Child process: the dedup chain (or, for chain "floor", only Read -> Write) on Beam; prints one JSON line
    with timing, counters and peak memory."""
    from gristmill.dedup.stages import BloomDedup, ExactDedup, LogCountResample, MinHashDedup
    from gristmill.pipeline.docio import ReadDocuments, WriteDocuments
    from gristmill.pipeline.runner import run_stages
    from gristmill.pipeline.stages import RunContext

    dedup = [ExactDedup(), MinHashDedup(), LogCountResample(), BloomDedup(unit="line", expected_keys=2_000_000)]
    stages = [ReadDocuments("Read"), *(dedup if chain == "dedup" else []), WriteDocuments()]
    peak = PeakMemory()
    peak.start()
    t0 = time.perf_counter()
    stats = run_stages(stages, RunContext(input=input_glob, output=output, seed=0), [f"--direct_num_workers={workers}"])
    seconds = time.perf_counter() - t0
    peak.done.set()
    peak.join()
    print(json.dumps({
        "seconds": seconds, "stages": stats["stages"], "peak_main_mb": _rss_mb(os.getpid(), "VmHWM"),
        "peak_worker_mb": peak.worker, "peak_total_mb": peak.total,
    }))


def bench_e2e(ids: list[str], texts: list[str], workers: int) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "docs.jsonl.gz")
        with gzip.open(path, "wt", encoding="utf-8") as f:
            for i, t in zip(ids, texts):
                f.write(Document(id=i, url=f"http://example.com/{i}", text=t).to_json() + "\n")
        for chain in ("floor", "dedup"):  # each in a fresh process, so peak memory is the run's own
            proc = subprocess.run(
                [sys.executable, __file__, "--e2e", path, os.path.join(tmp, chain), str(workers), chain],
                capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"end-to-end run failed:\n{proc.stderr[-3000:]}")
            results[chain] = json.loads(proc.stdout.strip().splitlines()[-1])
    res, floor = results["dedup"], results["floor"]
    s = res["stages"]
    n = len(ids)
    print(f"\n## End to end on Beam FnApiRunner ({workers} workers): "
          "Read -> ExactDedup -> MinHashDedup -> LogCountResample -> BloomDedup(line) -> Write")
    print(f"{n} documents in {res['seconds']:.1f} s: {n / res['seconds']:,.0f} documents/s "
          f"(Read -> Write alone, same run: {floor['seconds']:.1f} s, {n / floor['seconds']:,.0f} documents/s)")
    print(f"peak RSS: runner process {res['peak_main_mb']:.0f} MB, largest worker {res['peak_worker_mb']:.0f} MB, "
          f"all processes together {res['peak_total_mb']:.0f} MB (Read -> Write alone: {floor['peak_main_mb']:.0f}, "
          f"{floor['peak_worker_mb']:.0f}, {floor['peak_total_mb']:.0f} MB)")
    print(f"{'stage':<18}{'in':>9}{'kept':>9}{'tokens_in':>12}{'tokens_out':>12}")
    for label in ("ExactDedup", "MinHashDedup", "LogCountResample", "BloomDedup"):
        st = s[label]
        print(f"{label:<18}{st['in']:>9}{st['kept']:>9}{st['tokens_in']:>12,}{st['tokens_out']:>12,}")
    print("tokens (whitespace words): before dedup {:,}, after dedup {:,}, after resampling {:,}".format(
        s["ExactDedup"]["tokens_in"], s["MinHashDedup"]["tokens_out"], s["LogCountResample"]["tokens_out"]))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--e2e":
        run_e2e(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=100_000, help="documents in the corpus (default 100000)")
    ap.add_argument("--pairs", type=float, default=0.2, help="fraction of documents that are planted variants")
    ap.add_argument("--plain-docs", type=int, default=5000, help="documents timed with the plain loop (default 5000)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="Beam workers for the end-to-end run")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    t0 = time.perf_counter()
    corpus = planted_corpus(args.seed, args.docs, int(args.docs * args.pairs))
    ids, texts = [i for i, _ in corpus], [t for _, t in corpus]
    words = sum(len(t.split()) for t in texts)
    print(f"# gristmill dedup benchmark: {args.docs} documents ({words / args.docs:.0f} words each on average), "
          f"{int(args.docs * args.pairs)} planted near-duplicates, J uniform in [0.5, 1.0]; "
          f"generated in {time.perf_counter() - t0:.1f} s on {os.cpu_count()} cores")
    cfg = MinHashConfig()
    bench_signatures(texts, min(args.plain_docs, len(texts)), cfg)
    bench_quality(ids, texts, cfg)
    bench_e2e(ids, texts, args.workers)


if __name__ == "__main__":
    main()
