"""Validation loss in nats per token, and bits per byte using the token dataset's `n_bytes` column.

bits/byte = total nats / ln 2 / total bytes, summed over all ranks. Each row of L tokens is scored on its
L - 1 next-token predictions while `n_bytes` counts the bytes of all L tokens, so bits/byte reads low by
about one token's bytes per row (under 1/L); it is comparable between runs with the same seq_len and tokenizer.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch
import torch.distributed as dist


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable, *, device: torch.device | None = None,
             autocast_bf16: bool = False, pad_id: int | None = None, eos_id: int | None = None,
             on_batch: Callable[[int, int], None] | None = None) -> dict:
    """batches: (ids [B, L], n_bytes [B]) pairs, or bare ids tensors (then bits_per_byte is None). Targets equal
    to pad_id are not scored, and the loss is plain cross-entropy (no z-loss); with eos_id, attention stays
    within each document (document masking). on_batch(rows, scored targets) is called after each batch (this
    rank's; progress). Returns {"loss": mean nats/token, "bits_per_byte": ..., "tokens": scored targets,
    "bytes": n}, reduced over ranks; loss and bits_per_byte are NaN where no target is scored."""
    from gristmill.trainer.model import IGNORE_INDEX, doc_segments, lm_targets

    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # nats, predicted tokens, bytes
    have_bytes = True
    for batch in batches:
        ids, n_bytes = batch if isinstance(batch, (tuple, list)) else (batch, None)
        ids = ids.to(device)
        targets = lm_targets(ids, pad_id)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
            inputs = ids[:, :-1]
            # plain cross-entropy: a z-loss the model trains with is a penalty, not part of the validation loss
            nats = model(inputs, targets, segments=None if eos_id is None else doc_segments(inputs, eos_id),
                         reduction="sum", with_z_loss=False)
        n_tok = int((targets != IGNORE_INDEX).sum())
        totals[0] += nats.double()
        totals[1] += n_tok
        if n_bytes is None:
            have_bytes = False
        else:
            totals[2] += torch.as_tensor(n_bytes).sum().item()
        if on_batch is not None:
            on_batch(ids.shape[0], n_tok)
    if dist.is_initialized():
        dist.all_reduce(totals)
    model.train(was_training)
    nats, tokens, nbytes = totals.tolist()
    return {"loss": nats / tokens if tokens else float("nan"),
            # no scored target: no figure, as the loss (nats 0 over the rows' bytes would read a perfect 0.0)
            "bits_per_byte": (nats / math.log(2) / nbytes if tokens else float("nan")) if have_bytes and nbytes
            else None,
            "tokens": int(tokens), "bytes": int(nbytes)}


def evaluate_sets(model: torch.nn.Module, sets: list[dict], tokenizer: dict, *, document_masking: bool,
                  batch_size: int, device: torch.device, autocast_bf16: bool = False, rank: int = 0,
                  world_size: int = 1, progress: str | None = None) -> dict:
    """{set name: evaluate(...)} over evaluation sets as `trainer ablate` picks them (ablate.evaluation_sets),
    each rank scoring an equal block of every set's rows. `tokenizer` is a manifest's tokenizer entry: its PAD
    is not scored, and with document_masking its EOS separates the documents. Training, `trainer ablate` and
    `trainer evaluate` all score through here.

    progress (rank 0, stderr, through the training bar's Progress): None shows nothing; "lines" a bar per set
    on a terminal and a line per ~5% of the set otherwise (`trainer evaluate`); "terminal" the bar on a
    terminal only, erased when the set is done (training's periodic evaluation, which prints its own line).
    The counts are all ranks' rows; the figures are the same with and without it."""
    from gristmill.trainer.ablate import eval_rows, row_batches
    from gristmill.trainer.progress import Progress

    if progress not in (None, "lines", "terminal"):
        raise ValueError(f"progress must be None, 'lines' or 'terminal', not {progress!r}")
    pad_id, eos_id = tokenizer.get("pad_id"), (tokenizer.get("eos_id") if document_masking else None)
    out = {}
    for s in sets:
        picked = eval_rows(s["sources"], rank=rank, world_size=world_size)
        on_batch = None
        if progress is not None and rank == 0:
            total = sum(len(rows) for _, rows in picked) * world_size
            bar = Progress(total, True, what=f"eval {s['name']}: sequences", lines=progress == "lines",
                           transient=progress == "terminal")
            done = [0, 0]  # rows, scored targets, over all ranks (each rank scores as many rows)

            def on_batch(rows: int, tokens: int, bar=bar, done=done) -> None:
                done[0] += rows * world_size
                done[1] += tokens * world_size
                secs = max(time.perf_counter() - bar.t0, 1e-9)
                bar.show(done[0], f"{done[0] / secs:,.1f} seq/s {done[1] / secs:,.0f} tok/s")
        out[s["name"]] = evaluate(model, row_batches(picked, batch_size), device=device, autocast_bf16=autocast_bf16,
                                  pad_id=pad_id, eos_id=eos_id, on_batch=on_batch)
    return out


def evaluate_run(path, extra: dict[str, str] | None = None, *, max_sequences: int = 512, batch_size: int = 16,
                 mixture_sets: bool = True, progress: bool = False) -> dict:
    """`trainer evaluate`: a run's checkpoint (an out_dir's newest, or the one named) on its mixture's
    validation domains and on extra token datasets' validation splits, picked as `trainer ablate` picks them
    (at most max_sequences evenly spaced rows per set). progress: each set's rows on stderr as they are scored
    (evaluate_sets' "lines"). Returns {"checkpoint", "sets": {name: metrics}}."""
    from pathlib import Path

    from gristmill.errors import UserError
    from gristmill.trainer import ablate
    from gristmill.trainer.checkpoint import find_run, load_model, saved_step

    config_path, ckpt = find_run(Path(path))
    model, saved = load_model(config_path, ckpt)
    mixture = (saved.get("train", {}).get("data") or {}).get("mixture")
    if not mixture:
        raise UserError(f"{config_path}: the run trained on synthetic data, which has no validation sets")
    mix = ablate.load_mixture(mixture)
    if mix["manifest"]["tokenizer"]["vocab_size"] != model.config.vocab_size:
        raise UserError(f"{mixture} has vocabulary {mix['manifest']['tokenizer']['vocab_size']}, the checkpoint's "
                        f"model {model.config.vocab_size}")
    sets = ablate.evaluation_sets([mix], dict(extra or {}), max_sequences)
    if not mixture_sets:
        sets = [s for s in sets if s["kind"] == "extra"]
        if not sets:
            raise UserError("--no-mixture-sets leaves nothing to evaluate: add --eval NAME=DIR")
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    model.to(device)
    train = saved.get("train", {})
    scores = evaluate_sets(model, sets, mix["manifest"]["tokenizer"],
                           document_masking=bool(train.get("document_masking")), batch_size=batch_size,
                           device=device, autocast_bf16=device.type == "cuda" and train.get("precision") == "bf16",
                           progress="lines" if progress else None)
    out = {s["name"]: {**scores[s["name"]], "kind": s["kind"],
                       "sequences": sum(src["sequences"] for src in s["sources"])} for s in sets}
    return {"checkpoint": str(ckpt), "step": saved_step(ckpt), "sets": out}
