"""Cross-entropy over an output projection, chunked over tokens so the full (tokens x vocab) logits never exist.

For each chunk of rows, logits = x_c @ W.T (a torch matmul), then one Triton program per row computes the loss
and overwrites that row of logits with d(loss)/d(logits) = softmax * (1 + 2 z lse) - eps/V - (1 - eps) onehot(y).
The chunk's gradients dx_c = dlogits @ W and dW += dlogits.T @ x_c are taken at once (Liger-Kernel's scheme), so
the backward only scales them by the incoming gradient. Per token, with lse = logsumexp(logits):
loss = lse - (1 - eps) * logits[y] - eps * mean(logits) + z * lse^2, which is PyTorch's label-smoothed
cross-entropy plus PaLM's z-loss; tokens whose target is ignore_index count for nothing, and "mean" divides by
the number of the others (nan when there are none, as F.cross_entropy gives).
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable
import torch.nn.functional as F
import triton
import triton.language as tl

from gristmill.kernels.dispatch import check_launchable, use_triton

REDUCTIONS = ("mean", "sum")


@triton.jit
def _cross_entropy_kernel(
    LOGITS, TARGETS, LOSS,
    logits_row_stride, n_cols, ignore_index, label_smoothing, z_loss, grad_scale,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = LOGITS + row * logits_row_stride
    target = tl.load(TARGETS + row)
    if target == ignore_index:
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            tl.store(row_ptr + cols, tl.zeros((BLOCK,), dtype=tl.float32).to(LOGITS.dtype.element_ty),
                     mask=cols < n_cols)
        tl.store(LOSS + row, 0.0)
        return

    # Pass 1: running max and rescaled sum of exponentials (online softmax), plus the sum of logits.
    running_max = float("-inf")
    sum_exp = 0.0
    sum_logits = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        z = tl.load(row_ptr + cols, mask=mask, other=float("-inf")).to(tl.float32)
        new_max = tl.maximum(running_max, tl.max(z, axis=0))
        sum_exp = sum_exp * tl.exp(running_max - new_max) + tl.sum(tl.exp(z - new_max), axis=0)
        sum_logits += tl.sum(tl.where(mask, z, 0.0), axis=0)
        running_max = new_max
    lse = running_max + tl.log(sum_exp)
    target_logit = tl.load(row_ptr + target).to(tl.float32)
    smooth = label_smoothing / n_cols
    loss = lse - (1.0 - label_smoothing) * target_logit - smooth * sum_logits + z_loss * lse * lse
    tl.store(LOSS + row, loss)

    # Pass 2: overwrite the logits with the gradient, already divided by the token count for "mean".
    softmax_factor = 1.0 + 2.0 * z_loss * lse
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        z = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        grad = tl.exp(z - lse) * softmax_factor - smooth - tl.where(cols == target, 1.0 - label_smoothing, 0.0)
        tl.store(row_ptr + cols, (grad * grad_scale).to(LOGITS.dtype.element_ty), mask=mask)


def _vocab_block(n_cols: int, device: torch.device) -> tuple[int, int]:
    if device.type == "cuda":
        # ptxas for sm_90 spills registers at 32768 x 32 warps; 16384 x 32 warps fits (51 registers, no spills).
        block = min(16384, triton.next_power_of_2(n_cols))
        return block, 32 if block >= 16384 else 16 if block >= 8192 else 8
    # Triton's interpreter runs a block as one numpy op, so the block is whatever keeps those ops few but small.
    return min(1024, triton.next_power_of_2(n_cols)), 1


def chunk_rows(n_rows: int, hidden_size: int, vocab_size: int) -> int:
    """Rows per chunk, a power of two and no more than the rows there are: the larger of two sizes.

    - The largest power of two up to hidden_size / 4: that chunk's logits hold at most a quarter as many values as
      dW, which the forward holds anyway, so a big vocabulary (128k at hidden 4096: 1024 rows) stays far below
      eager's peak memory.
    - Liger-Kernel's rule, next_power_of_2(n_rows / ceil(vocab / hidden)): the chunk's logits hold at most about
      twice as many values as the hidden states. A small vocabulary over many tokens (32k at hidden 1408 and 32k
      tokens: 2048 rows, not 256) then needs 16 passes over dW instead of 128, each a read and a write of all of it.
    """
    by_weight = 1 << max(hidden_size // 4, 1).bit_length() - 1
    chunks = -(-vocab_size // hidden_size)
    by_hidden = triton.next_power_of_2(-(-n_rows // chunks))
    return max(1, min(n_rows, max(by_weight, by_hidden)))


_MIXED_ADDMM: dict[torch.device, bool] = {}


def _mixed_addmm_works(device: torch.device) -> bool:
    """Whether torch.addmm takes bf16/fp16 factors into an fp32 sum (out_dtype=, CUDA in recent PyTorch), probed
    once per device; where it does, a wider dW accumulator costs no extra pass per chunk."""
    if device.type != "cuda":
        return False
    if device not in _MIXED_ADDMM:
        try:
            a = torch.full((2, 2), float("nan"), device=device)
            b = torch.full((2, 2), 0.5, device=device, dtype=torch.bfloat16)
            torch.addmm(a, b, b, beta=0, out_dtype=torch.float32, out=a)  # the first chunk: overwrite
            torch.addmm(a, b, b, beta=1, out_dtype=torch.float32, out=a)  # the others: accumulate
            _MIXED_ADDMM[device] = a.dtype == torch.float32 and bool((a == 1.0).all())
        except (TypeError, RuntimeError, NotImplementedError):
            _MIXED_ADDMM[device] = False
    return _MIXED_ADDMM[device]


def _check_args(hidden, weight, targets, ignore_index, z_loss, label_smoothing, reduction):
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1]; got {label_smoothing}")
    if z_loss < 0.0:
        raise ValueError(f"z_loss must be >= 0; got {z_loss}")
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be (vocab, hidden) for hidden {tuple(hidden.shape)}")
    if targets.shape != hidden.shape[:-1]:
        raise ValueError(f"targets {tuple(targets.shape)} must match hidden {tuple(hidden.shape)} without its last dim")


def fused_linear_cross_entropy_forward(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
    z_loss: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
    accum_dtype: torch.dtype | None = None, need_hidden_grad: bool = True, need_weight_grad: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The loss (fp32 scalar) and its gradients for hidden and weight, computed chunk by chunk with Triton.

    dW is accumulated across chunks in `accum_dtype` (default: weight's dtype, as Liger does, to save memory;
    torch.float32 is more accurate for bf16 weights at the cost of vocab x hidden x 4 bytes).
    """
    _check_args(hidden, weight, targets, ignore_index, z_loss, label_smoothing, reduction)
    x = hidden.reshape(-1, hidden.shape[-1])
    x = x if x.stride(-1) == 1 else x.contiguous()
    y = targets.reshape(-1).contiguous()
    n_rows, hidden_size = x.shape
    vocab = weight.shape[0]
    valid = y != ignore_index
    # One host sync buys the token count (so gradients are scaled inside the kernel, not rescaled afterwards)
    # and a target check (an out-of-range target would read outside the logits row).
    n_valid, n_bad = torch.stack([valid.sum(), (valid & ((y < 0) | (y >= vocab))).sum()]).tolist()
    if n_bad:
        raise ValueError(f"{n_bad} targets are outside [0, {vocab}) and are not ignore_index={ignore_index}")
    grad_scale = 1.0 / n_valid if reduction == "mean" and n_valid else 1.0

    check_launchable(_cross_entropy_kernel, x)
    block, warps = _vocab_block(vocab, x.device)
    chunk = chunk_rows(n_rows, hidden_size, vocab)
    loss_rows = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x) if need_hidden_grad else None
    # The first chunk writes dW (beta=0) rather than adding to zeros: one pass over V x H values fewer.
    make = torch.empty if n_rows else torch.zeros
    grad_w = make(weight.shape, dtype=accum_dtype or weight.dtype, device=weight.device) if need_weight_grad else None
    # With a wider accumulator, each chunk's product is summed into it by one mixed-precision addmm where PyTorch
    # has one; elsewhere it lands in one reused buffer first and is then added.
    wide = grad_w is not None and grad_w.dtype != weight.dtype
    mixed = wide and weight.dtype in (torch.bfloat16, torch.float16) and grad_w.dtype == torch.float32 \
        and _mixed_addmm_works(weight.device)
    chunk_grad_w = torch.empty_like(weight) if wide and not mixed else None
    for start in range(0, n_rows, chunk):
        end = min(start + chunk, n_rows)
        x_chunk = x[start:end]
        logits = x_chunk @ weight.t()
        _cross_entropy_kernel[(end - start,)](
            logits, y[start:end], loss_rows[start:end],
            logits.stride(0), vocab, ignore_index, label_smoothing, z_loss, grad_scale,
            BLOCK=block, num_warps=warps,
        )
        if grad_x is not None:
            torch.mm(logits, weight, out=grad_x[start:end])
        if grad_w is not None:
            beta = 0 if start == 0 else 1
            if not wide:
                grad_w.addmm_(logits.t(), x_chunk, beta=beta)
            elif mixed:
                torch.addmm(grad_w, logits.t(), x_chunk, beta=beta, out_dtype=grad_w.dtype, out=grad_w)
            elif beta:
                grad_w.add_(torch.mm(logits.t(), x_chunk, out=chunk_grad_w))
            else:
                grad_w.copy_(torch.mm(logits.t(), x_chunk, out=chunk_grad_w))
    total = loss_rows.sum()
    loss = total / n_valid if reduction == "mean" else total  # 0 / 0 = nan when every target is ignored
    return loss, (grad_x.view(hidden.shape) if grad_x is not None else None), grad_w


class FusedLinearCrossEntropyFunction(torch.autograd.Function):
    """Loss of hidden @ weight.T against targets; the gradients are computed in the forward and scaled here."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, z_loss, label_smoothing, reduction, accum_dtype):
        ctx.dtypes = (hidden.dtype, weight.dtype)
        device = hidden.device.type
        # Under autocast, do what it would do to the projection (compute in its dtype), but explicitly: autocast
        # does not reach the out= and in-place matmuls of the chunk loop. dW is summed over the chunks in the
        # master weight's dtype (fp32 in the trainer), which the gradient is returned in anyway: summing a
        # hundred bf16 chunk products in bf16 would round away the small ones.
        if torch.is_autocast_enabled(device):
            low = torch.get_autocast_dtype(device)
            accum_dtype = accum_dtype or weight.dtype
            hidden, weight = hidden.to(low), weight.to(low)
        with torch.autocast(device, enabled=False):
            loss, grad_hidden, grad_weight = fused_linear_cross_entropy_forward(
                hidden, weight, targets, ignore_index, z_loss, label_smoothing, reduction, accum_dtype,
                need_hidden_grad=ctx.needs_input_grad[0], need_weight_grad=ctx.needs_input_grad[1],
            )
        ctx.grads = (grad_hidden, grad_weight)
        return loss

    @staticmethod
    @once_differentiable  # the kernels build no graph: a double backward must raise, not be silently wrong
    def backward(ctx, grad_loss):
        if ctx.grads is None:
            raise RuntimeError("fused_linear_cross_entropy supports one backward per forward (no retain_graph)")
        grad_hidden, grad_weight = ctx.grads
        # The gradients were made for this backward alone, so scale them in place rather than copy V x H values.
        ctx.grads = None
        for g in (grad_hidden, grad_weight):
            if g is not None:
                g.mul_(grad_loss.to(g.dtype))
        hidden_dtype, weight_dtype = ctx.dtypes
        grad_hidden = grad_hidden if grad_hidden is None else grad_hidden.to(hidden_dtype)
        grad_weight = grad_weight if grad_weight is None else grad_weight.to(weight_dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None


def fused_linear_cross_entropy_reference(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
    z_loss: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
) -> torch.Tensor:
    """Plain PyTorch: F.cross_entropy on the full fp32 logits, plus z * logsumexp^2 reduced the same way."""
    _check_args(hidden, weight, targets, ignore_index, z_loss, label_smoothing, reduction)
    logits = (hidden.reshape(-1, hidden.shape[-1]) @ weight.t()).float()
    y = targets.reshape(-1)
    loss = F.cross_entropy(logits, y, ignore_index=ignore_index, label_smoothing=label_smoothing,
                           reduction=reduction)
    if z_loss:
        valid = y != ignore_index
        z_total = (z_loss * torch.logsumexp(logits, dim=-1).pow(2) * valid).sum()
        loss = loss + (z_total / valid.sum() if reduction == "mean" else z_total)
    return loss


def fused_linear_cross_entropy(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100,
    z_loss: float = 0.0, label_smoothing: float = 0.0, reduction: str = "mean",
    accum_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Cross-entropy of hidden (..., H) @ weight (V, H).T against targets (...), as an fp32 scalar.

    Equal to F.cross_entropy(logits, targets, ignore_index=, label_smoothing=, reduction=) plus
    z_loss * logsumexp(logits)^2 reduced the same way; the Triton path never holds more than one chunk of logits.
    dW is summed over chunks in `accum_dtype`: by default the weight's dtype, which under autocast is the master
    weight's (fp32 in the trainer), not the autocast dtype.
    """
    if use_triton(hidden):
        return FusedLinearCrossEntropyFunction.apply(hidden, weight, targets, ignore_index, z_loss,
                                                     label_smoothing, reduction, accum_dtype)
    return fused_linear_cross_entropy_reference(hidden, weight, targets, ignore_index, z_loss, label_smoothing,
                                                reduction)
