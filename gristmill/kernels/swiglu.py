"""SwiGLU, c = silu(a) * b, fused into one pass: Triton kernels, autograd Function, reference.

With s = sigmoid(a): dc/db = silu(a) = a * s and dc/da = b * s * (1 + a * (1 - s)). The backward recomputes s
from a instead of saving silu(a), so the forward keeps only its two inputs.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
import torch.nn.functional as F
import triton
import triton.language as tl

from gristmill.kernels.dispatch import check_launchable, use_triton

_BLOCK = 1024


@triton.jit
def _swiglu_forward_kernel(A, B, C, n_elements, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    # Round silu(a) to the input dtype before the product, as eager F.silu(a) * b does.
    silu = (a * tl.sigmoid(a)).to(A.dtype.element_ty).to(tl.float32)
    tl.store(C + offs, (silu * b).to(C.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_backward_kernel(DC, A, B, DA, DB, n_elements, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n_elements
    dc = tl.load(DC + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(A + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=mask, other=0.0).to(tl.float32)
    s = tl.sigmoid(a)
    silu = a * s
    tl.store(DB + offs, (dc * silu).to(DB.dtype.element_ty), mask=mask)
    tl.store(DA + offs, (dc * b * s * (1.0 + a * (1.0 - s))).to(DA.dtype.element_ty), mask=mask)


class SwiGLUFunction(torch.autograd.Function):
    """Triton silu(a) * b over tensors of one shape; saves a and b."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = a.contiguous(), b.contiguous()
        c = torch.empty_like(a)
        n = a.numel()
        check_launchable(_swiglu_forward_kernel, a)
        _swiglu_forward_kernel[(triton.cdiv(n, _BLOCK),)](a, b, c, n, BLOCK=_BLOCK, num_warps=4)
        ctx.save_for_backward(a, b)
        return c

    @staticmethod
    @once_differentiable  # the kernels build no graph: a double backward must raise, not be silently wrong
    def backward(ctx, dc: torch.Tensor):
        a, b = ctx.saved_tensors
        dc = dc.contiguous()
        da, db = torch.empty_like(a), torch.empty_like(b)
        n = a.numel()
        _swiglu_backward_kernel[(triton.cdiv(n, _BLOCK),)](dc, a, b, da, db, n, BLOCK=_BLOCK, num_warps=4)
        return da, db


def swiglu_reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch SwiGLU gate, as in LLaMA's MLP: act_fn(gate_proj(x)) * up_proj(x)."""
    return F.silu(a) * b


def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """silu(a) * b for a (gate) and b (up) of the same shape and dtype."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"swiglu needs a and b of one shape and dtype; got {tuple(a.shape)} {a.dtype} "
                         f"and {tuple(b.shape)} {b.dtype}")
    if use_triton(a):
        return SwiGLUFunction.apply(a, b)
    return swiglu_reference(a, b)
