"""Run by test_model.py with TRITON_INTERPRET=1 (it must be set before triton is imported): one forward and
backward of the tiny model on each kernel backend; prints JSON with the losses, the largest gradient gap and
the autograd node names seen on the Triton path."""
import json

import torch

from gristmill.kernels import use_backend
from gristmill.trainer.model import Transformer, model_config


def graph_names(fn, seen=None) -> set:
    seen = set() if seen is None else seen
    if fn is not None and fn not in seen:
        seen.add(fn)
        for nxt, _ in fn.next_functions:
            graph_names(nxt, seen)
    return seen


torch.manual_seed(0)
model = Transformer(model_config("tiny", max_seq_len=16, qk_norm=True, n_kv_heads=2))  # GQA: k has 2 heads
idx = torch.randint(0, 256, (2, 17))
result = {}
for backend in ("torch", "triton"):
    model.zero_grad()
    with use_backend(backend):
        loss = model(idx[:, :-1], idx[:, 1:])
        names = sorted({type(n).__name__ for n in graph_names(loss.grad_fn)})
        loss.backward()
    result[backend] = {"loss": loss.item(), "grads": [p.grad.clone() for p in model.parameters()], "nodes": names}
gap = max((a - b).abs().max().item() for a, b in zip(result["torch"]["grads"], result["triton"]["grads"]))
print(json.dumps({"losses": [result["torch"]["loss"], result["triton"]["loss"]], "grad_gap": gap,
                  "triton_nodes": result["triton"]["nodes"], "torch_nodes": result["torch"]["nodes"]}))
