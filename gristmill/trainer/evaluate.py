"""Validation loss in nats per token, and bits per byte using the token dataset's `n_bytes` column.

bits/byte = total nats / ln 2 / total bytes, summed over all ranks. Each row of L tokens is scored on its
L - 1 next-token predictions while `n_bytes` counts the bytes of all L tokens, so bits/byte reads low by
about one token's bytes per row (under 1/L); it is comparable between runs with the same seq_len and tokenizer.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.distributed as dist


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, *, device: torch.device | None = None,
             autocast_bf16: bool = False) -> dict:
    """batches: (ids [B, L], n_bytes [B]) pairs, or bare ids tensors (then bits_per_byte is None).
    Returns {"loss": mean nats/token, "bits_per_byte": ..., "tokens": n, "bytes": n}, reduced over ranks."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # nats, predicted tokens, bytes
    have_bytes = True
    for batch in batches:
        ids, n_bytes = batch if isinstance(batch, (tuple, list)) else (batch, None)
        ids = ids.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            mean_loss = model(ids[:, :-1], ids[:, 1:])
        n_tok = ids[:, 1:].numel()
        totals[0] += mean_loss.double() * n_tok
        totals[1] += n_tok
        if n_bytes is None:
            have_bytes = False
        else:
            totals[2] += torch.as_tensor(n_bytes).sum().item()
    if dist.is_initialized():
        dist.all_reduce(totals)
    model.train(was_training)
    nats, tokens, nbytes = totals.tolist()
    return {"loss": nats / tokens if tokens else float("nan"),
            "bits_per_byte": nats / math.log(2) / nbytes if have_bytes and nbytes else None,
            "tokens": int(tokens), "bytes": int(nbytes)}
