"""Chooses, per call, between the Triton kernels and their PyTorch references.

`auto` (the default) runs Triton on CUDA tensors and the reference elsewhere, and the reference inside a region
that torch.compile is tracing, so Inductor fuses it with its neighbours into kernels of its own (as torchtitan's
compiled blocks do) instead of tracing around ours. The environment variable
GRISTMILL_KERNELS=auto|triton|torch, or `set_backend` / `use_backend` from code (which win over the variable),
forces one path. Forcing `triton` on CPU tensors runs Triton's interpreter, which must have been switched on with
TRITON_INTERPRET=1 before `triton` was first imported.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch

from gristmill.errors import UserError

BACKENDS = ("auto", "triton", "torch")
ENV_VAR = "GRISTMILL_KERNELS"

_override: str | None = None


def _validate(name: str, where: str) -> str:
    name = name.strip().lower()
    if name not in BACKENDS:
        raise UserError(f"{where} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


def backend() -> str:
    """The backend now in force: the value given to `set_backend`, else $GRISTMILL_KERNELS, else 'auto'."""
    if _override is not None:
        return _override
    return _validate(os.environ.get(ENV_VAR, "auto") or "auto", ENV_VAR)


def set_backend(name: str | None) -> None:
    """Force 'triton', 'torch' or 'auto' for this process (e.g. from a trainer config); None returns to the env."""
    global _override
    _override = None if name is None else _validate(name, "kernel backend")


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run a block under one backend, then restore the previous choice."""
    global _override
    previous = _override
    set_backend(name)
    try:
        yield
    finally:
        _override = previous


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether an op on `tensor` should run the Triton kernels."""
    return choose_triton(backend(), tensor.is_cuda, torch.compiler.is_compiling())


def choose_triton(chosen: str, is_cuda: bool, compiling: bool) -> bool:
    """The dispatch rule: a forced backend wins; `auto` means Triton for CUDA tensors outside torch.compile."""
    if chosen == "auto":
        return is_cuda and not compiling
    return chosen == "triton"


def interpreter_active() -> bool:
    """True when Triton's CPU interpreter was switched on before triton was imported (TRITON_INTERPRET=1)."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    # triton.language's own helpers (tl.sum, tl.max, ...) are decorated when triton is imported, so the
    # interpreter only works if it was on at that moment, not merely when our kernels were defined.
    return isinstance(tl.sum, InterpretedFunction)


def check_launchable(kernel: object, tensor: torch.Tensor) -> None:
    """Fail with one clear line, rather than deep inside Triton, when a CPU tensor reaches a compiled kernel."""
    if tensor.is_cuda:
        return
    from triton.runtime.interpreter import InterpretedFunction

    if not (isinstance(kernel, InterpretedFunction) and interpreter_active()):
        raise UserError(
            "the Triton kernels got a CPU tensor but Triton's interpreter is off: set TRITON_INTERPRET=1 before "
            f"Python imports triton, or use {ENV_VAR}=auto|torch"
        )


def row_settings(n_cols: int) -> tuple[int, int]:
    """Block size (the row length rounded up to a power of two) and warp count for one-row-per-program kernels."""
    import triton

    block = triton.next_power_of_2(n_cols)
    if block > 65536:
        raise ValueError(f"rows of {n_cols} elements are too long for a one-block-per-row kernel (max 65536)")
    # Wider rows need more threads to keep each thread's share of the row in registers.
    warps = 4 if block < 2048 else 8 if block < 8192 else 16 if block < 32768 else 32
    return block, warps


def program_count(device: torch.device) -> int:
    """How many persistent programs to launch for kernels that loop over rows: one per SM on a GPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter runs programs one after another; a few are enough to exercise the split
