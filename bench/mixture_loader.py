"""Throughput of MixtureLoader against sequential TokenDataset reads of the same shards, side by side.

    .venv/bin/python bench/mixture_loader.py [--rows 20000] [--seq-len 1024] [--batch 32]
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py would shadow the standard library's tokenize: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch  # imported before the timings: the loader yields torch tensors
import yaml

from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.loader import MixtureLoader
from gristmill.mixtures.spec import load_spec
from gristmill.tokenize.shards import ShardWriter, TokenDataset, build_manifest, shard_name, write_manifest


def make_source(folder: Path, name: str, rows: int, seq_len: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    shards = []
    per = rows // 2
    for k in range(2):
        w = ShardWriter(folder / shard_name("train", k), seq_len, 32000, pad_id=0)
        block = rng.integers(1, 32000, size=(per, seq_len), dtype=np.int32)
        for row in block:
            w.write_row(row, [0], 4 * seq_len)
        shards.append(w.close())
    tok = {"path": "tokenizer.json", "sha256": "ab" * 32, "vocab_size": 32000, "bos_id": 1, "eos_id": 2, "pad_id": 0}
    write_manifest(folder, build_manifest(source=name, domain=name, seq_len=seq_len, tokenizer=tok,
                                          recipe_sha256="0" * 64, seed=seed, splits={"train": shards}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=20000, help="rows per source (3 sources)")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i, name in enumerate(("web", "news", "wiki")):
            make_source(root / name, name, args.rows // (i + 1), args.seq_len, i)
        spec = {"sources": [{"name": n, "manifest": n} for n in ("web", "news", "wiki")],
                "budget_tokens": args.steps * args.batch * args.seq_len, "seed": 0,
                "weighting": {"method": "temperature", "temperature": 2.0}}
        (root / "spec.yaml").write_text(yaml.safe_dump(spec))
        out = root / "mix.json"
        t0 = time.perf_counter()
        mixbuild.write_mixture(mixbuild.build(load_spec(root / "spec.yaml"), out), out)
        t_build = time.perf_counter() - t0

        loader = MixtureLoader(out, args.batch)
        t0 = time.perf_counter()
        n = sum(b.shape[0] for b in loader)
        t_mix = time.perf_counter() - t0

        # reference: the same number of rows read in order from one dataset, stacked into int64 batches
        ds = TokenDataset(root / "web")
        t0 = time.perf_counter()
        for s in range(0, n, args.batch):
            torch.from_numpy(np.stack([ds[i % len(ds)] for i in range(s, s + args.batch)]).astype(np.int64))
        t_seq = time.perf_counter() - t0
    tok = n * args.seq_len
    print(f"build: {t_build * 1000:.0f} ms")
    print(f"MixtureLoader: {n} sequences in {t_mix:.3f} s = {n / t_mix:,.0f} seq/s, {tok / t_mix / 1e6:.1f} M tokens/s")
    print(f"sequential TokenDataset reads: {t_seq:.3f} s = {n / t_seq:,.0f} seq/s, {tok / t_seq / 1e6:.1f} M tokens/s")
    # a rate ratio, as bench/README.md reports it: below 1 means the loader delivers fewer sequences per second
    print(f"ratio (MixtureLoader seq/s / sequential seq/s): {t_seq / t_mix:.2f}x")


if __name__ == "__main__":
    main()
