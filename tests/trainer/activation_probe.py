"""What one training micro-batch of the Transformer really keeps for its backward, in bytes, to check
`plan.activation_bytes` against. Used by test_plan.py; run as a script it prints one JSON object per case.

The forward runs as train.py runs it: the model through parallel.parallelize (so activation checkpointing is
the trainer's own checkpoint_wrapper), under torch.autocast(device, bfloat16) for bf16, with the model's
fused_linear_cross_entropy loss and reduction="sum". Two views of what the forward leaves behind:
- saved: the storages that torch.autograd.graph.saved_tensors_hooks sees packed (unique storages, each counted
  whole, since a saved view keeps its whole storage alive)
- held: every storage an op made during the forward that is still alive once the forward's own references are
  gone. A superset of `saved`: it also has what a checkpointed block's recomputation closure holds (its inputs,
  which checkpoint's own inner hooks hide from ours) and the fused cross-entropy's precomputed gradients.
Neither counts the batch, parameters, buffers, or the autocast copies of the weights (2 bytes per parameter, the weights'
memory, not activations); a cast of a buffer (the RoPE tables) is a layer's own copy, and counts.
"""
from __future__ import annotations

import gc
import json
import sys
from collections import defaultdict

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from gristmill.kernels import use_backend
from gristmill.trainer import parallel
from gristmill.trainer.model import Transformer, lm_targets, model_config


class _Recorder(TorchDispatchMode):
    """Every storage an op outputs (by data pointer), with its bytes and dtype; casts of the weights are set apart."""

    def __init__(self, weights: set[int], buffers: set[int]):
        super().__init__()
        self.weights = set(weights)
        self.buffers = buffers  # not activations either, but their casts are: a layer's own copies
        self.made: dict[int, tuple[StorageWeakRef, int, torch.dtype]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        from_weight = func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor) \
            and args[0].untyped_storage().data_ptr() in self.weights
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                s = t.untyped_storage()
                if from_weight:
                    self.weights.add(s.data_ptr())
                elif s.data_ptr() not in self.weights | self.buffers and s.nbytes():
                    known = self.made.get(s.data_ptr())
                    if known is None or known[0].expired():  # the allocator reuses a freed storage's address
                        self.made[s.data_ptr()] = (StorageWeakRef(s), s.nbytes(), t.dtype)
        return out


def _by_dtype(entries) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for nbytes, dtype in entries:
        out[str(dtype).removeprefix("torch.")] += nbytes
    return dict(out)


def measure(model_spec: dict, *, batch: int, seq: int, precision: str = "bf16", checkpointing: bool = False,
            kernels: str = "torch", seed: int = 0) -> dict:
    """{"saved": {dtype: bytes}, "held": {dtype: bytes}, "weight_grad": bytes} for one forward of `batch` x
    `seq` tokens with the `kernels` backend ("triton" on CPU tensors needs TRITON_INTERPRET=1 before triton is
    imported). weight_grad: the output projection's gradient, which the fused cross-entropy computes in its
    forward and keeps to its backward; it becomes that weight's .grad, so plan counts it with the gradients."""
    with use_backend(kernels):
        return _measure(model_spec, batch, seq, precision, checkpointing, seed)


def _measure(model_spec, batch, seq, precision, checkpointing, seed) -> dict:
    torch.manual_seed(seed)
    cfg = model_config(model_spec, max_seq_len=seq + 1)
    model = parallel.parallelize(Transformer(cfg), "single", world_size=1, device=torch.device("cpu"),
                                 activation_checkpointing=checkpointing, bf16=precision == "bf16")
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    buffers = {b.untyped_storage().data_ptr() for b in model.buffers()}
    ids = torch.randint(cfg.vocab_size, (batch, seq + 1))
    # contiguous, as train.py's targets are where the data has a PAD id (masked_fill makes a new tensor)
    inputs, targets = ids[:, :-1], lm_targets(ids, None).contiguous()
    buffers |= {ids.untyped_storage().data_ptr(), targets.untyped_storage().data_ptr()}  # the batch itself
    saved: dict[int, tuple[int, torch.dtype]] = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in weights | buffers and s.nbytes():
            saved[s.data_ptr()] = (s.nbytes(), t.dtype)
        return t

    recorder = _Recorder(weights, buffers)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):  # as train.py
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), recorder:
            loss = model(inputs, targets, reduction="sum")
    gc.collect()
    weight_grad = 0
    grads = getattr(loss.grad_fn, "grads", None)  # FusedLinearCrossEntropyFunction's (d hidden, d weight)
    if grads is not None and grads[1] is not None:
        weight_grad = grads[1].untyped_storage().nbytes()
        recorder.weights.add(grads[1].untyped_storage().data_ptr())
    # weights picked up late (a cast recorded before its source was known as a weight) are not activations
    saved = {p: v for p, v in saved.items() if p not in recorder.weights}
    held = {p: (n, d) for p, (ref, n, d) in recorder.made.items()
            if not ref.expired() and p not in recorder.weights and p != loss.untyped_storage().data_ptr()}
    result = {"saved": _by_dtype(saved.values()), "held": _by_dtype(held.values()), "weight_grad": weight_grad}
    loss.backward()  # the graph is whole: what was kept is enough for the backward
    return result


def main(argv: list[str]) -> int:
    for case in map(json.loads, argv):
        spec, kw = case.pop("model"), case
        print(json.dumps({"case": {"model": spec, **kw}, **measure(spec, **kw)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
