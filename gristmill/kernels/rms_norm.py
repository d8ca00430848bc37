"""RMSNorm, y = w * x / rms(x) with rms(x) = sqrt(mean(x^2) + eps): Triton kernels, autograd Function, reference.

With r = 1/rms(x) (saved by the forward), x_hat = x * r and g = dy * w, the gradients are
dx = r * (g - x_hat * mean(g * x_hat)) and dw = sum over rows of dy * x_hat.
Casting follows HF LLaMA: normalise in fp32, round x_hat to x's dtype, then multiply by w.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
import triton
import triton.language as tl

from gristmill.kernels.dispatch import check_launchable, program_count, row_settings, use_triton


@triton.jit
def _rms_norm_forward_kernel(
    X, W, Y, RSTD,
    x_row_stride, y_row_stride, n_cols, eps,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * x_row_stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(RSTD + row, rstd)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    x_hat = (x * rstd).to(X.dtype.element_ty).to(tl.float32)
    tl.store(Y + row * y_row_stride + cols, (x_hat * w).to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_backward_kernel(
    DY, X, W, RSTD, DX, DW_PARTIAL,
    dy_row_stride, x_row_stride, dx_row_stride, n_rows, n_cols, rows_per_program,
    BLOCK: tl.constexpr,
):
    # Each program owns a contiguous run of rows and keeps its share of dw in registers, so dw needs no atomics:
    # the host sums one partial row per program.
    pid = tl.program_id(0)
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    dy_ptr = DY + row_start.to(tl.int64) * dy_row_stride
    x_ptr = X + row_start.to(tl.int64) * x_row_stride
    dx_ptr = DX + row_start.to(tl.int64) * dx_row_stride
    for row in range(row_start, row_end):
        x = tl.load(x_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        x_hat = x * rstd
        g = dy * w
        dx = rstd * (g - x_hat * (tl.sum(g * x_hat, axis=0) / n_cols))
        tl.store(dx_ptr + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * x_hat.to(X.dtype.element_ty).to(tl.float32)
        dy_ptr += dy_row_stride
        x_ptr += x_row_stride
        dx_ptr += dx_row_stride
    tl.store(DW_PARTIAL + pid.to(tl.int64) * n_cols + cols, dw, mask=mask)


def _as_rows(t: torch.Tensor) -> torch.Tensor:
    rows = t.reshape(-1, t.shape[-1])
    return rows if rows.stride(-1) == 1 else rows.contiguous()


class RMSNormFunction(torch.autograd.Function):
    """Triton RMSNorm over the last dimension; saves x and 1/rms per row for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        rows = _as_rows(x)
        weight = weight.contiguous()  # the kernels read it at W + column (a strided view, w[::2], would not be)
        n_rows, n_cols = rows.shape
        block, warps = row_settings(n_cols)
        y = torch.empty((n_rows, n_cols), dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        check_launchable(_rms_norm_forward_kernel, x)
        _rms_norm_forward_kernel[(n_rows,)](
            rows, weight, y, rstd, rows.stride(0), y.stride(0), n_cols, eps, BLOCK=block, num_warps=warps
        )
        ctx.save_for_backward(rows, weight, rstd)
        ctx.x_shape = x.shape
        return y.view(x.shape)

    @staticmethod
    @once_differentiable  # the kernels build no graph: a double backward must raise, not be silently wrong
    def backward(ctx, dy: torch.Tensor):
        rows, weight, rstd = ctx.saved_tensors
        dy_rows = _as_rows(dy)
        n_rows, n_cols = rows.shape
        block, warps = row_settings(n_cols)
        programs = max(1, min(n_rows, program_count(rows.device)))
        rows_per_program = triton.cdiv(n_rows, programs)
        dx = torch.empty_like(rows)
        dw_partial = torch.empty((programs, n_cols), dtype=torch.float32, device=rows.device)
        _rms_norm_backward_kernel[(programs,)](
            dy_rows, rows, weight, rstd, dx, dw_partial,
            dy_rows.stride(0), rows.stride(0), dx.stride(0), n_rows, n_cols, rows_per_program,
            BLOCK=block, num_warps=warps,
        )
        return dx.view(ctx.x_shape), dw_partial.sum(0).to(weight.dtype), None


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Plain PyTorch RMSNorm, the same arithmetic as transformers' LlamaRMSNorm."""
    x32 = x.float()
    x_hat = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x_hat.to(x.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dimension of x, with a learned scale `weight` of that size."""
    if x.shape[-1] != weight.shape[-1] or weight.dim() != 1:
        raise ValueError(f"weight of shape {tuple(weight.shape)} does not fit x of shape {tuple(x.shape)}")
    if use_triton(x):
        return RMSNormFunction.apply(x, weight, eps)
    return rms_norm_reference(x, weight, eps)
