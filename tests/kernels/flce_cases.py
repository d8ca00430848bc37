"""Shared pieces of the fused linear cross-entropy tests: a problem, the loss by its definition, and our path."""
import torch
import torch.nn.functional as F

from gristmill.kernels import fused_linear_cross_entropy, use_backend

IGNORE = -100


def problem(rows=37, hidden=64, vocab=1100, seed=0, ignore_every=5):
    """x, W and targets; every `ignore_every`-th target is IGNORE (None: none are)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, hidden, generator=gen)
    w = torch.randn(vocab, hidden, generator=gen) / hidden ** 0.5 * 4
    y = torch.randint(0, vocab, (rows,), generator=gen)
    if ignore_every:
        y[::ignore_every] = IGNORE
    return x, w, y


def by_hand(x, w, y, ignore_index=IGNORE, z_loss=0.0, label_smoothing=0.0, reduction="mean", fp32_logits=False):
    """The definition, from F.cross_entropy on the full logits and z_loss * logsumexp^2 on the kept tokens. The
    logits keep the inputs' dtype (eager's arithmetic), or with fp32_logits are cast up to at least fp32."""
    logits = x.reshape(-1, x.shape[-1]) @ w.t()
    if fp32_logits:
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    y = y.reshape(-1)
    loss = F.cross_entropy(logits, y, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction)
    kept = y != ignore_index
    z = (z_loss * torch.logsumexp(logits, -1)[kept] ** 2).sum()
    return loss + (z / kept.sum() if reduction == "mean" else z)


def triton_loss(**kw):
    """fused_linear_cross_entropy forced onto the Triton path, ignore_index IGNORE unless kw names another."""
    kw.setdefault("ignore_index", IGNORE)

    def run(x, w, y):
        with use_backend("triton"):
            return fused_linear_cross_entropy(x, w, y, **kw)
    return run
