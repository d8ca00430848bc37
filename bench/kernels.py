"""Forward+backward time and peak memory of each kernel against PyTorch eager, torch.compile and Liger-Kernel.

On a CUDA GPU this measures LLaMA-3-8B-sized shapes in bf16 and checks the targets (every kernel at least as fast
as eager; RMSNorm and SwiGLU at least 1.5x; fused linear cross-entropy at vocab 128k within 1/4 of eager's peak
memory). With --smoke it runs small shapes instead, on the GPU when there is one. Without a GPU it runs those small
shapes in fp32 on the CPU: eager, torch.compile, and the Triton path under Triton's interpreter (timed once: it
takes seconds). Smoke figures only show that the script and every path run; they say nothing about GPU speed at
scale. The output is a Markdown table for bench/README.md.
"""
from __future__ import annotations

import os
import sys

# bench/tokenize.py would shadow the standard library's tokenize: keep this folder off the import path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import argparse
import datetime
import gc
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

OPS = ("rms_norm", "swiglu", "rope", "fused_linear_ce")
BLOCK_MS = 5.0  # GPU timing: calls run back to back per pair of CUDA events fill about this long
EPILOG = """examples:
  python bench/kernels.py                      # GPU: full shapes, bf16; CPU: smoke mode
  python bench/kernels.py --ops rms_norm,swiglu --repeat 50
  python bench/kernels.py --smoke --no-compile # quick check that every path runs
"""


@dataclass
class Case:
    """One kernel at one shape: inputs that need grads, and the implementations to compare (eager first)."""

    op: str
    shape: str
    make_inputs: Callable[[], list[torch.Tensor]]
    impls: dict[str, Callable] = field(default_factory=dict)


@dataclass
class Row:
    op: str
    shape: str
    dtype: str
    impl: str
    ms: float | None
    peak_mib: float | None
    note: str = ""


def _randn(*shape, dtype, device, scale=1.0):
    return (torch.randn(*shape, device=device, dtype=torch.float32) * scale).to(dtype).requires_grad_()


def build_cases(device: str, dtype: torch.dtype, smoke: bool) -> list[Case]:
    from gristmill.kernels import apply_rope, fused_linear_cross_entropy, rms_norm, rope_cache, swiglu
    from gristmill.kernels import use_backend
    from gristmill.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy_reference
    from gristmill.kernels.rms_norm import rms_norm_reference
    from gristmill.kernels.rope import apply_rope_reference
    from gristmill.kernels.swiglu import swiglu_reference

    def forced(fn):
        def run(*args):
            with use_backend("triton"):
                return fn(*args)
        return run

    triton_name = "triton" if device == "cuda" else "triton (interpreter)"
    liger = _liger()
    cases = []

    rms_shapes = [(256, 1024)] if smoke else [(8192, 4096), (8192, 8192)]
    for rows, hidden in rms_shapes:
        case = Case("rms_norm", f"{rows}x{hidden}", lambda r=rows, h=hidden: [
            _randn(r, h, dtype=dtype, device=device), _randn(h, dtype=dtype, device=device, scale=0.1) + 1])
        case.impls = {"eager": lambda x, w: rms_norm_reference(x, w, 1e-6),
                      triton_name: forced(lambda x, w: rms_norm(x, w, 1e-6))}
        if liger:
            case.impls["liger"] = lambda x, w: liger.liger_rms_norm(x, w, 1e-6)
        cases.append(case)

    swiglu_shapes = [(256, 1024)] if smoke else [(8192, 14336)]
    for rows, inter in swiglu_shapes:
        case = Case("swiglu", f"{rows}x{inter}", lambda r=rows, n=inter: [
            _randn(r, n, dtype=dtype, device=device), _randn(r, n, dtype=dtype, device=device)])
        case.impls = {"eager": swiglu_reference, triton_name: forced(swiglu)}
        if liger:
            case.impls["liger"] = liger.liger_swiglu
        cases.append(case)

    rope_shapes = [(1, 64, 4, 2, 32)] if smoke else [(4, 2048, 32, 8, 128)]
    for batch, seq, q_heads, k_heads, head_dim in rope_shapes:
        cos, sin = rope_cache(seq, head_dim, base=500000.0, device=device, dtype=dtype)
        case = Case("rope", f"q {batch}x{seq}x{q_heads}x{head_dim}, k {k_heads} heads",
                    lambda b=batch, s=seq, hq=q_heads, hk=k_heads, d=head_dim: [
                        _randn(b, s, hq, d, dtype=dtype, device=device),
                        _randn(b, s, hk, d, dtype=dtype, device=device)])
        case.impls = {"eager": lambda q, k, c=cos, s=sin: apply_rope_reference(q, k, c, s),
                      triton_name: forced(lambda q, k, c=cos, s=sin: apply_rope(q, k, c, s))}
        if liger:
            # Liger's layout is (batch, heads, seq, head_dim) with cos/sin (1, seq, head_dim).
            case.impls["liger"] = lambda q, k, c=cos, s=sin: tuple(t.transpose(1, 2) for t in liger.liger_rope(
                q.transpose(1, 2), k.transpose(1, 2), c[None], s[None]))
        cases.append(case)

    flce_shapes = [(512, 64, 4096)] if smoke else [(4096, 4096, 128256), (8192, 4096, 128256)]
    for tokens, hidden, vocab in flce_shapes:
        targets = torch.randint(0, vocab, (tokens,), device=device)
        targets[::17] = -100
        case = Case("fused_linear_ce", f"{tokens} tok, H {hidden}, V {vocab}",
                    lambda t=tokens, h=hidden, v=vocab: [
                        _randn(t, h, dtype=dtype, device=device),
                        _randn(v, h, dtype=dtype, device=device, scale=h ** -0.5)])
        case.impls = {"eager": lambda x, w, y=targets: fused_linear_cross_entropy_reference(x, w, y, z_loss=1e-4),
                      triton_name: forced(lambda x, w, y=targets: fused_linear_cross_entropy(x, w, y, z_loss=1e-4))}
        if liger:
            case.impls["liger"] = lambda x, w, y=targets: liger.liger_fused_linear_cross_entropy(
                x, w, y, lse_square_scale=1e-4)
        cases.append(case)
    return cases


def _liger():
    try:
        from liger_kernel.transformers import functional
    except ImportError:
        return None
    return functional


def _fwd_bwd(fn: Callable, inputs: list[torch.Tensor], cotangents: list[torch.Tensor] | None) -> None:
    for t in inputs:
        t.grad = None
    out = fn(*inputs)
    outs = list(out) if isinstance(out, tuple) else [out]
    torch.autograd.backward(outs, cotangents or [torch.ones_like(o) for o in outs])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_ms(fn, inputs, cotangents, device: str, repeat: int, warmup_s: float = 0.2) -> float:
    """Milliseconds per forward+backward: on a GPU, the median over `repeat` blocks of calls run back to back.

    A block is as many calls as fill about BLOCK_MS (one call for the slow ones) between one pair of CUDA events,
    so the GPU time of a call is measured as a training step sees it, with the CPU launching ahead. A single call
    timed from an idle GPU measures the CPU's launch path instead wherever that is longer than the kernels: on the
    lent H200 (2026-12-04) Triton RMSNorm 8192x4096 took 0.13 ms of kernels but 0.52 ms of Python and launches.
    """
    _fwd_bwd(fn, inputs, cotangents)  # warm-up: compilation, autotuning, allocator
    _sync(device)
    if device != "cuda":
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            _fwd_bwd(fn, inputs, cotangents)
            samples.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(samples)
    # Warm up by time, as triton.testing.do_bench: an idle GPU's clocks take a while to rise. The warm-up's pace
    # sets the block length.
    t0, n = time.perf_counter(), 0
    while n < 5 or time.perf_counter() - t0 < warmup_s:
        _fwd_bwd(fn, inputs, cotangents)
        _sync(device)
        n += 1
    per_call_ms = (time.perf_counter() - t0) * 1e3 / n
    calls = max(1, min(50, int(BLOCK_MS / per_call_ms)))
    samples = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            _fwd_bwd(fn, inputs, cotangents)
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) / calls)
    return statistics.median(samples)


def peak_mib(fn, inputs, cotangents, device: str) -> float:
    """Peak memory allocated by one forward+backward, above what the inputs already held."""
    for t in inputs:
        t.grad = None
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        _fwd_bwd(fn, inputs, cotangents)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2 ** 20
    # On the CPU: replay the profiler's allocation and free events in time order and keep the highest total.
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _fwd_bwd(fn, inputs, cotangents)
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    total = peak = 0
    for e in events:
        total += e.self_cpu_memory_usage
        peak = max(peak, total)
    return peak / 2 ** 20


def run_case(case: Case, device: str, dtype: torch.dtype, repeat: int, compile_: bool) -> list[Row]:
    torch.manual_seed(0)
    inputs = case.make_inputs()
    inputs = [t.detach().requires_grad_() for t in inputs]
    with torch.no_grad():
        sample = case.impls["eager"](*inputs)
    outs = list(sample) if isinstance(sample, tuple) else [sample]
    cotangents = [torch.randn_like(o) for o in outs]
    impls = dict(case.impls)
    if compile_:
        impls = {"eager": impls["eager"], "torch.compile": torch.compile(impls["eager"], dynamic=False),
                 **{k: v for k, v in impls.items() if k != "eager"}}
    rows = []
    for name, fn in impls.items():
        mine = [c.clone() for c in cotangents]  # Liger's RMSNorm backward overwrites its incoming gradient
        try:
            ms = time_ms(fn, inputs, mine, device, repeat if "interpreter" not in name else 1)
            peak = peak_mib(fn, inputs, mine, device)
            rows.append(Row(case.op, case.shape, str(dtype).replace("torch.", ""), name, ms, peak))
        except Exception as e:  # one failing implementation (e.g. an old Liger) must not hide the others
            rows.append(Row(case.op, case.shape, str(dtype).replace("torch.", ""), name, None, None,
                            f"failed: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}"))
        finally:
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


TABLE_HEADER = ("| kernel | shape | dtype | implementation | fwd+bwd ms | speed-up vs eager | peak MiB | peak vs eager |\n"
                "|---|---|---|---|---:|---:|---:|---:|")


def markdown(rows: list[Row], header: bool = True) -> str:
    eager = {(r.op, r.shape): r for r in rows if r.impl == "eager"}
    lines = [TABLE_HEADER] if header else []
    for r in rows:
        e = eager[(r.op, r.shape)]
        if r.ms is None:
            lines.append(f"| {r.op} | {r.shape} | {r.dtype} | {r.impl} | {r.note} | | | |")
            continue
        speed = f"{e.ms / r.ms:.2f}x" if e.ms else ""
        mem = f"{r.peak_mib / e.peak_mib:.2f}" if e.peak_mib else ""
        lines.append(f"| {r.op} | {r.shape} | {r.dtype} | {r.impl} | {r.ms:.3f} | {speed} | "
                     f"{r.peak_mib:.1f} | {mem} |")
    return "\n".join(lines)


def target_checks(rows: list[Row]) -> list[str]:
    """The issue's GPU targets, one line each."""
    eager = {(r.op, r.shape): r for r in rows if r.impl == "eager"}
    lines = []
    for r in rows:
        if r.impl != "triton":
            continue
        e = eager[(r.op, r.shape)]
        if r.ms is None or e.ms is None:
            lines.append(f"- FAIL {r.op} {r.shape}: {r.note or 'eager ' + e.note}")
            continue
        speed = e.ms / r.ms
        need = 1.5 if r.op in ("rms_norm", "swiglu") else 1.0
        lines.append(f"- {'PASS' if speed >= need else 'FAIL'} {r.op} {r.shape}: {speed:.2f}x eager "
                     f"(target >= {need}x)")
        if r.op == "fused_linear_ce" and "V 128256" in r.shape:
            ratio = r.peak_mib / e.peak_mib
            lines.append(f"- {'PASS' if ratio <= 0.25 else 'FAIL'} {r.op} {r.shape}: peak {ratio:.3f} of eager's "
                         "(target <= 0.25)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", default=",".join(OPS),
                        help="comma-separated kernels to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="small shapes (the default when there is no GPU)")
    parser.add_argument("--repeat", type=int, default=20, help="timed repetitions per implementation (median)")
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default=None,
                        help="input dtype (default: bf16 on a GPU, fp32 in CPU smoke mode)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    smoke = args.smoke or device == "cpu"
    if device == "cpu":
        if "triton" not in sys.modules:
            os.environ["TRITON_INTERPRET"] = "1"  # the Triton path runs on CPU tensors only under the interpreter
        # On a shared 2-core machine, two intra-op threads stall at every barrier (RMSNorm eager median: 280 ms
        # with two threads, 6 ms with one); one thread gives figures that mean something.
        torch.set_num_threads(1)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype or ("fp32" if device == "cpu" else "bf16")]
    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    wanted = {o.strip() for o in args.ops.split(",") if o.strip()}
    unknown = wanted - set(OPS)
    if unknown or not wanted:
        print(f"error: --ops takes names from {', '.join(OPS)}; got {args.ops!r}", file=sys.stderr)
        return 2
    cases = [c for c in build_cases(device, dtype, smoke) if c.op in wanted]

    import triton

    where = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    print(f"# Kernel benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    threads = f"; {torch.get_num_threads()} CPU thread" if device == "cpu" else ""
    # run_case times the interpreter's rows once: each takes seconds, and their time means nothing anyway
    timing = (f"median of {args.repeat} runs, Triton-interpreter rows one run" if device == "cpu"
              else f"median of {args.repeat} blocks of back-to-back calls (about {BLOCK_MS:g} ms each), per call")
    print(f"device: {where}{threads}; torch {torch.__version__}; triton {triton.__version__}; "
          f"liger-kernel: {'yes' if _liger() else 'not installed'}; {timing}")
    if smoke and device == "cpu":
        print("\n**CPU SMOKE MODE: small shapes, not GPU figures.** The Triton column is Triton's interpreter, "
              "which checks that the path runs, not how fast it is.\n")
    elif smoke:
        print("\n**GPU SMOKE MODE: small shapes on the GPU, not the benchmark's shapes.** Every path runs on the "
              "GPU (the Triton column is the compiled kernels), but at these sizes launch overhead dominates, so "
              "the figures say little about speed at scale, and no targets are checked.\n")
    # Rows are printed as each case ends, so a run cut short by a time limit keeps what it measured.
    print(TABLE_HEADER, flush=True)
    rows = []
    for case in cases:
        case_rows = run_case(case, device, dtype, args.repeat, not args.no_compile)
        rows += case_rows
        print(markdown(case_rows, header=False), flush=True)
        print(f"done: {case.op} {case.shape}", file=sys.stderr)
    if device == "cuda" and not smoke:
        print("\nTargets:")
        print("\n".join(target_checks(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
