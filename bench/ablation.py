"""Filters on vs filters off on a planted corpus, measured with `trainer ablate`, and the ablation's overhead.

Quality: `gristmill.trainer.ablate.planted_corpus` writes clean English prose (`filtered`) and the same prose plus
planted spam pages with site boilerplate and exact copies of three paragraphs (`raw`), sharing one tokenizer.
Both mixtures train the same proxy model on equal tokens with the same seeds; the reference is the raw mixture,
and the figure is bits per byte on held-out clean prose (paragraphs neither mixture contains).

Overhead: the ablation trains in segments (a checkpoint and an evaluation every --eval-every steps); the script
times one ablation run against one plain `trainer.train` call of the same steps, side by side.

    .venv/bin/python -P bench/ablation.py                      # about 3-5 minutes on 2 CPU cores
    .venv/bin/python -P bench/ablation.py --tokens 1M --seeds 5 --preset 10m --out out/bench-ablation
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py would shadow the standard library's tokenize: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import parse_count, spec_from_dict
from gristmill.trainer import ablate


def build_mixtures(root: Path, args) -> tuple[list[Path], dict[str, Path]]:
    ds = ablate.planted_corpus(root / "data", clean_docs=args.clean_docs, junk_fraction=args.junk, seq_len=args.seq_len,
                               vocab_size=args.vocab, seed=0)
    paths = []
    for name in ("filtered", "raw"):
        spec = {"sources": [{"name": name, "manifest": str(ds[name])}], "budget_tokens": 10**9, "seed": 0,
                "weighting": {"method": "explicit", "proportions": {name: 1.0}}}
        paths.append(root / f"{name}.json")
        mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, root), paths[-1]), paths[-1])
    return paths, ds


def _bounded(kind, what: str, low=None, high=None, above=None, below=None):
    """An argparse type: a finite number of `kind` with low <= x <= high and above < x < below (each bound
    optional), else one argparse error line. Without it a bad value shows only once the planted corpus is built,
    as a traceback."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}") from None
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high) \
                or (above is not None and value <= above) or (below is not None and value >= below):
            raise argparse.ArgumentTypeError(f"must be {what}, not {text}")
        return value
    return parse


def main() -> None:
    from gristmill.errors import UserError
    from gristmill.tokenize.train import MAX_VOCAB, SPECIAL_TOKENS
    from gristmill.trainer.model import PRESETS

    low_vocab = 256 + len(SPECIAL_TOKENS)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clean-docs", type=_bounded(int, "a whole number >= 1", low=1), default=600)
    ap.add_argument("--junk", type=_bounded(float, "a fraction from 0 to below 1", low=0.0, below=1.0),
                    default=0.5, help="share of the raw corpus's text that is planted junk")
    ap.add_argument("--seq-len", type=_bounded(int, "a whole number >= 2", low=2), default=64)
    vocab_range = f"a whole number from {low_vocab} (256 bytes + {len(SPECIAL_TOKENS)} specials) to {MAX_VOCAB:,}"
    ap.add_argument("--vocab", type=_bounded(int, vocab_range, low=low_vocab, high=MAX_VOCAB), default=1024)
    ap.add_argument("--preset", default="small", choices=[*ablate.ABLATE_PRESETS, *PRESETS])
    ap.add_argument("--tokens", default="200K", help="training tokens per run, e.g. 200K or 1M")
    ap.add_argument("--seeds", type=_bounded(int, "a whole number >= 1", low=1), default=3)
    ap.add_argument("--lr", default=2e-3, type=_bounded(float, "a number > 0", above=0.0))
    ap.add_argument("--threads", type=_bounded(int, "a whole number >= 1", low=1), default=1,
                    help="torch threads (default 1: steady timings on a shared machine)")
    ap.add_argument("--out", help="keep the ablation here (default: a temporary folder)")
    args = ap.parse_args()
    try:
        n_tokens = parse_count(args.tokens, "--tokens")
    except UserError:
        ap.error(f"argument --tokens: must be a whole number like 200K, 1M or 1e6, not {args.tokens!r}")
    if n_tokens < ablate.DEFAULT_BATCH_SIZE * args.seq_len:  # the script runs with `trainer ablate`'s default batch
        ap.error(f"argument --tokens: {n_tokens:,} is less than one step ({ablate.DEFAULT_BATCH_SIZE} sequences of "
                 f"{args.seq_len})")
    import torch

    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        t0 = time.perf_counter()
        mixtures, ds = build_mixtures(root, args)
        tokens = {k: json.loads((v / "manifest.json").read_text())["splits"] for k, v in ds.items()}
        print(f"planted corpus in {time.perf_counter() - t0:.1f} s: train tokens filtered "
              f"{tokens['filtered']['train']['tokens']:,}, raw {tokens['raw']['train']['tokens']:,} "
              f"({100 * args.junk:.0f}% of its text planted junk); held-out clean prose "
              f"{tokens['heldout']['validation']['tokens']:,} tokens")
        parser = argparse.ArgumentParser()
        ablate.add_arguments(parser)
        run_args = parser.parse_args([*map(str, mixtures), "--eval", f"clean={ds['heldout']}", "--rank-by", "clean",
                                      "--preset", args.preset, "--tokens", args.tokens, "--seeds", str(args.seeds),
                                      "--lr", str(args.lr), "-o", str(root / "ablation")])
        t0 = time.perf_counter()
        ablate.run(run_args)
        wall_s = time.perf_counter() - t0
        results = json.loads((root / "ablation" / "results.json").read_text())
        plan = json.loads((root / "ablation" / "ablation.json").read_text())

        print(f"\n{args.seeds} seed(s) each, {results['settings']['tokens']:,} tokens per run, preset {args.preset}, "
              f"{results['settings']['steps']} steps; ablation wall time {wall_s:.1f} s")
        print(f"{'mixture':<10}{'clean bpb (per seed)':<40}{'mean':>9}{'std':>9}{'web bpb':>10}")
        means = {}
        for mix in ("filtered", "raw"):
            runs = [r for r in results["runs"] if r["mixture"] == mix and r["status"] == "ok"]
            clean = [r["sets"]["clean"]["bits_per_byte"] for r in runs]
            web = statistics.mean(r["sets"]["web"]["bits_per_byte"] for r in runs)
            means[mix] = statistics.mean(clean)
            std = statistics.stdev(clean) if len(clean) > 1 else 0.0
            print(f"{mix:<10}{' '.join(f'{c:.4f}' for c in clean):<40}{means[mix]:>9.4f}{std:>9.4f}{web:>10.4f}")
        wins = sum(f["sets"]["clean"]["bits_per_byte"] < r["sets"]["clean"]["bits_per_byte"]
                   for f, r in zip((x for x in results["runs"] if x["mixture"] == "filtered"),
                                   (x for x in results["runs"] if x["mixture"] == "raw")))
        print(f"filtered vs raw (reference) on held-out clean prose: {means['filtered'] - means['raw']:+.4f} "
              f"bits/byte, "
              f"ratio {means['filtered'] / means['raw']:.3f}; filtered lower in {wins} of {args.seeds} seed(s)")

        # Overhead: one ablation run (segments, checkpoints, evaluations) against one plain train() call of the
        # same config, interleaved twice; the faster of each counts (the machine may be shared).
        from gristmill.trainer.train import train

        run = plan["runs"][0]
        settings = ablate.Settings(**plan["settings"])
        ablation_s, plain_s = [], []
        for rep in range(2):
            cfg = ablate._run_config(settings, plan["mixtures"][0], run["seed"], root / f"plain-{rep}")
            t0 = time.perf_counter()
            ablate.train_run(plan, run, root / f"overhead-{rep}")
            ablation_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            train(cfg, resume="never", verbose=False)
            plain_s.append(time.perf_counter() - t0)
        evals = len(ablate._read_jsonl(root / "overhead-0" / "runs" / run["name"] / "eval.jsonl"))
        print(f"one run: ablation {min(ablation_s):.1f} s ({evals} evaluations of {len(plan['eval_sets'])} sets, "
              f"{sum(sum(x['sequences'] for x in e['sources']) for e in plan['eval_sets'])} sequences each time) vs "
              f"plain trainer.train {min(plain_s):.1f} s: ratio {min(ablation_s) / min(plain_s):.2f}")
        print(f"report: {root / 'ablation' / 'report.md'}" if args.out else "")


if __name__ == "__main__":
    main()
