"""Trainer throughput against a plain PyTorch loop of the same model, measured side by side.

CPU (always): tokens/s of `gristmill.trainer.train` (single process) on a small preset, and of a bare loop
(forward, backward, clip, AdamW step) on the same model, batch and data; prints the ratio (target >= 0.9).
GPU (when present): MFU of the ~125M and ~350M presets in bf16 (target >= 40% for 350m on an H100), for the
trainer with eager blocks (our Triton kernels), with torch.compile'd blocks (`compile: true`), and the plain loop.

    .venv/bin/python bench/trainer.py                 # CPU comparison
    .venv/bin/python bench/trainer.py --gpu-only      # just the GPU MFU figures
    .venv/bin/python bench/trainer.py --gpu-only --no-compile   # skip the compiled rows (about a minute each)
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py would shadow the standard library's tokenize: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import statistics
import tempfile
import time

import torch

from gristmill.trainer.config import TrainConfig
from gristmill.trainer.data import SyntheticSource
from gristmill.trainer.model import Transformer, model_config
from gristmill.trainer.train import peak_flops, train


def plain_loop(preset: str, vocab: int, seq_len: int, batch: int, steps: int, device: torch.device,
               bf16: bool) -> list[float]:
    """Seconds per step of the textbook loop, on the same synthetic batches the trainer reads (on CUDA the
    caller reads the run's peak memory: max_memory_allocated since its reset)."""
    torch.manual_seed(0)
    model = Transformer(model_config(preset, vocab_size=vocab, max_seq_len=seq_len)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    src = SyntheticSource(vocab, seq_len, batch)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        x = src.next_batch().to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()  # the trainer reads the loss every step too
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times


def trainer_loop(preset: str, vocab: int, seq_len: int, batch: int, steps: int, bf16: bool,
                 compile: bool = False, peaks: list | None = None) -> list[float]:
    """Seconds per step of `train`; appends each step's peak GB to `peaks` (train resets the CUDA peak at each
    step's start, so the run's peak is their max, not max_memory_allocated at the end)."""
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model=preset, data={"synthetic": {"vocab_size": vocab, "seq_len": seq_len}}, steps=steps,
                          batch_size=batch, micro_batch_size=batch, precision="bf16" if bf16 else "fp32",
                          warmup_steps=1, out_dir=out, save_checkpoints=False, lr=3e-4, compile=compile)
        rows = train(cfg, verbose=False)  # no checkpoint: 350m's would be ~5 GB of writes on a timed GPU lease
        if peaks is not None:
            peaks += [r["peak_mem_gb"] for r in rows]
        return [r["step_time_s"] for r in rows]


def cpu_compare(args) -> None:
    tokens = args.batch * (args.seq_len - 1)
    plain, ours = [], []
    for _ in range(args.rounds):  # interleaved, so a noisy neighbour hits both sides alike
        plain += plain_loop(args.preset, args.vocab, args.seq_len, args.batch, args.steps, torch.device("cpu"),
                            False)[args.warmup:]
        ours += trainer_loop(args.preset, args.vocab, args.seq_len, args.batch, args.steps, False)[args.warmup:]
    p, o = tokens / statistics.median(plain), tokens / statistics.median(ours)
    cfg = model_config(args.preset, vocab_size=args.vocab)
    print(f"CPU ({torch.get_num_threads()} threads), preset {args.preset} ({cfg.num_params() / 1e6:.1f}M params, "
          f"vocab {args.vocab}), batch {args.batch} x seq {args.seq_len}, fp32, median of "
          f"{len(plain)} steps each")
    print(f"  plain PyTorch loop : {p:10,.0f} tokens/s")
    print(f"  gristmill trainer  : {o:10,.0f} tokens/s")
    print(f"  ratio              : {o / p:.3f}x  (target >= 0.9)")
    if args.cpu_compile:  # one run: its first steps compile (leave them out with --warmup)
        steps = max(args.steps, args.warmup + 3)
        comp = trainer_loop(args.preset, args.vocab, args.seq_len, args.batch, steps, False, compile=True)
        c = tokens / statistics.median(comp[args.warmup:])
        print(f"  compile: true      : {c:10,.0f} tokens/s  ({c / p:.3f}x the plain loop; first step "
              f"{comp[0]:.1f} s, with the compilation)")


def gpu_mfu(args) -> None:
    """350m first (the target), each run printed as soon as it ends, and a failed run reported and skipped, so
    a time limit or an error on a lent GPU still leaves the figures measured so far."""
    device = torch.device("cuda")
    peak = peak_flops(device)
    print(f"GPU: {torch.cuda.get_device_name(device)}, bf16 peak {peak / 1e12 if peak else float('nan'):.0f} TFLOP/s",
          flush=True)
    for preset, batch in (("350m", args.gpu_batch_350m), ("125m", args.gpu_batch_125m)):
        cfg = model_config(preset, vocab_size=args.gpu_vocab, max_seq_len=args.gpu_seq_len)
        tokens = batch * (args.gpu_seq_len - 1)
        flops = cfg.flops_per_token(args.gpu_seq_len - 1)
        peaks: list[float] = []  # GB per step, from the trainer's own rows
        runs = [("trainer", lambda: trainer_loop(preset, args.gpu_vocab, args.gpu_seq_len, batch, args.gpu_steps,
                                                 True, peaks=peaks)),
                ("plain loop", lambda: plain_loop(preset, args.gpu_vocab, args.gpu_seq_len, batch, args.gpu_steps,
                                                  device, True))]
        if not args.no_compile:  # the first steps hold the compilation; the median leaves them out
            runs.append(("compiled", lambda: trainer_loop(preset, args.gpu_vocab, args.gpu_seq_len, batch,
                                                          args.gpu_steps, True, compile=True, peaks=peaks)))
        for name, run in runs:
            label = f"  {preset} ({cfg.num_params() / 1e6:.0f}M params) {name:<10}"
            peaks.clear()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)  # also after a failed run, so no row carries its peak
            try:
                times = run()[3:]
            except Exception as e:  # e.g. out of memory, or a compiler error: report it, measure the rest
                print(f"{label}: failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}",
                      flush=True)
                continue
            tps = tokens / statistics.median(times)
            mfu = flops * tps / peak if peak else float("nan")
            gb = max(peaks) if peaks else torch.cuda.max_memory_allocated(device) / 1e9
            print(f"{label}: {tps:12,.0f} tokens/s  MFU {100 * mfu:5.1f}%  (batch {batch} x seq {args.gpu_seq_len}, "
                  f"peak {gb:.1f} GB)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="10m")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--seq-len", type=int, default=65)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice); 1 is steadier "
                    "on a shared machine")
    ap.add_argument("--gpu-only", action="store_true")
    ap.add_argument("--gpu-vocab", type=int, default=32768)
    ap.add_argument("--gpu-seq-len", type=int, default=2049)
    ap.add_argument("--gpu-batch-125m", type=int, default=16)
    ap.add_argument("--gpu-batch-350m", type=int, default=16)
    ap.add_argument("--gpu-steps", type=int, default=15)
    ap.add_argument("--no-compile", action="store_true", help="GPU: skip the trainer runs with compile: true")
    ap.add_argument("--cpu-compile", action="store_true", help="CPU: also time the trainer with compile: true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.gpu_only:
        cpu_compare(args)
    if torch.cuda.is_available():
        gpu_mfu(args)
    else:
        print("GPU: none present; MFU not measured")


if __name__ == "__main__":
    main()
