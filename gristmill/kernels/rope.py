"""Rotary position embedding (rotate-half convention of HF LLaMA): Triton kernels, autograd Function, reference.

q and k are (batch, seq, heads, head_dim); cos and sin are (seq, head_dim), as `rope_cache` builds them.
With x = [x1, x2] split in halves, y1 = x1 * cos1 - x2 * sin1 and y2 = x2 * cos2 + x1 * sin2. The map is linear
in x, so the backward applies its transpose: dx1 = dy1 * cos1 + dy2 * sin2, dx2 = dy2 * cos2 - dy1 * sin1.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
import triton
import triton.language as tl

from gristmill.kernels.dispatch import check_launchable, use_triton


@triton.jit
def _rope_kernel(
    X, Y, COS, SIN,
    seq_len, n_heads,
    x_stride_b, x_stride_s, x_stride_h, y_stride_b, y_stride_s, y_stride_h, cos_stride_s, sin_stride_s,
    HALF: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_HALF: tl.constexpr, TRANSPOSE: tl.constexpr,
):
    # One program rotates every head of one (batch, position) pair, so cos and sin are read once per position.
    pid = tl.program_id(0)
    b = (pid // seq_len).to(tl.int64)
    s = (pid % seq_len).to(tl.int64)
    d = tl.arange(0, BLOCK_HALF)
    d_mask = d < HALF
    cos1 = tl.load(COS + s * cos_stride_s + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    cos2 = tl.load(COS + s * cos_stride_s + HALF + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    sin1 = tl.load(SIN + s * sin_stride_s + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    sin2 = tl.load(SIN + s * sin_stride_s + HALF + d, mask=d_mask, other=0.0).to(tl.float32)[None, :]
    h = tl.arange(0, BLOCK_H)
    mask = (h < n_heads)[:, None] & d_mask[None, :]
    x_ptr = X + b * x_stride_b + s * x_stride_s + h[:, None] * x_stride_h + d[None, :]
    y_ptr = Y + b * y_stride_b + s * y_stride_s + h[:, None] * y_stride_h + d[None, :]
    x1 = tl.load(x_ptr, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_ptr + HALF, mask=mask, other=0.0).to(tl.float32)
    if TRANSPOSE:
        y1 = x1 * cos1 + x2 * sin2
        y2 = x2 * cos2 - x1 * sin1
    else:
        y1 = x1 * cos1 - x2 * sin1
        y2 = x2 * cos2 + x1 * sin2
    tl.store(y_ptr, y1.to(Y.dtype.element_ty), mask=mask)
    tl.store(y_ptr + HALF, y2.to(Y.dtype.element_ty), mask=mask)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor, transpose: bool) -> None:
    """Write the rotation of x (batch, seq, heads, head_dim) into out, which may be x itself."""
    batch, seq, heads, head_dim = x.shape
    check_launchable(_rope_kernel, x)
    half = head_dim // 2
    _rope_kernel[(batch * seq,)](
        x, out, cos, sin, seq, heads,
        x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1), out.stride(2),
        cos.stride(0), sin.stride(0),
        HALF=half, BLOCK_H=triton.next_power_of_2(heads), BLOCK_HALF=triton.next_power_of_2(half),
        TRANSPOSE=transpose, num_warps=4,
    )


def _unit_last_stride(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _rotated(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, transpose: bool) -> torch.Tensor:
    """The rotation of x (with transpose, its inverse: the backward) into a new tensor."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _rotate(_unit_last_stride(x), cos, sin, out, transpose=transpose)
    return out


class RoPEFunction(torch.autograd.Function):
    """Triton RoPE on q and k together, into new tensors."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        cos, sin = _unit_last_stride(cos), _unit_last_stride(sin)
        ctx.save_for_backward(cos, sin)
        return _rotated(q, cos, sin, transpose=False), _rotated(k, cos, sin, transpose=False)

    @staticmethod
    @once_differentiable  # the kernels build no graph: a double backward must raise, not be silently wrong
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        return _rotated(dq, cos, sin, transpose=True), _rotated(dk, cos, sin, transpose=True), None, None


class RoPEInPlaceFunction(torch.autograd.Function):
    """Triton RoPE of one tensor in place. One tensor per Function: autograd refuses a Function that returns more
    than one output when it modifies a view (q and k are views of a projection's output) in place."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        cos, sin = _unit_last_stride(cos), _unit_last_stride(sin)
        if x.stride(-1) == 1:
            _rotate(x, cos, sin, x, transpose=False)
        else:
            x.copy_(_rotated(x, cos, sin, transpose=False))
        ctx.mark_dirty(x)
        ctx.save_for_backward(cos, sin)
        return x

    @staticmethod
    @once_differentiable  # the kernels build no graph: a double backward must raise, not be silently wrong
    def backward(ctx, dy):
        cos, sin = ctx.saved_tensors
        return _rotated(dy, cos, sin, transpose=True), None, None


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope_reference(q, k, cos, sin, inplace: bool = False):
    """Plain PyTorch RoPE, the arithmetic of transformers' apply_rotary_pos_emb for the (b, s, h, d) layout."""
    cos_q, sin_q = cos.to(q.dtype)[:, None, :], sin.to(q.dtype)[:, None, :]
    cos_k, sin_k = cos.to(k.dtype)[:, None, :], sin.to(k.dtype)[:, None, :]
    q_out = q * cos_q + _rotate_half(q) * sin_q
    k_out = k * cos_k + _rotate_half(k) * sin_k
    if inplace:
        return q.copy_(q_out), k.copy_(k_out)
    return q_out, k_out


def apply_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               inplace: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k, each (batch, seq, heads, head_dim) with their own head counts, by cos/sin (seq, head_dim).

    With inplace=True, q and k are overwritten and returned; they may be views (of a qkv projection, transposed),
    but as with any in-place op under autograd not leaves that require grad, nor outputs of split/chunk.
    """
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must be (batch, seq, heads, head_dim); got {tuple(q.shape)} and {tuple(k.shape)}")
    seq, head_dim = q.shape[1], q.shape[3]
    if head_dim % 2 or k.shape[1] != seq or k.shape[3] != head_dim or q.shape[0] != k.shape[0]:
        raise ValueError(f"q {tuple(q.shape)} and k {tuple(k.shape)} need equal batch, seq and an even head_dim")
    if cos.shape != (seq, head_dim) or sin.shape != (seq, head_dim):
        raise ValueError(f"cos and sin must be (seq, head_dim) = {(seq, head_dim)}; got {tuple(cos.shape)}, "
                         f"{tuple(sin.shape)}")
    if use_triton(q):
        if inplace:
            return RoPEInPlaceFunction.apply(q, cos, sin), RoPEInPlaceFunction.apply(k, cos, sin)
        return RoPEFunction.apply(q, k, cos, sin)
    return apply_rope_reference(q, k, cos, sin, inplace)


def rope_cache(seq_len: int, head_dim: int, base: float = 10000.0, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each (seq_len, head_dim), computed in fp32 as transformers' default LLaMA rotary does."""
    if head_dim % 2:
        raise ValueError(f"head_dim must be even; got {head_dim}")
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device=device).float() / head_dim))
    positions = torch.arange(seq_len, dtype=torch.int64, device=device).float()
    freqs = torch.outer(positions, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)
