"""Run under torchrun by test_parallel.py: trains the same config in every parallel mode, plus interrupted and
resumed runs, and records what each mode shards on this rank; rank 0 writes it all to a JSON file."""
import json
import os
import sys
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch.distributed.tensor import DTensor

from gristmill.trainer import parallel
from gristmill.trainer.config import TrainConfig
from gristmill.trainer.model import Transformer, model_config
from gristmill.trainer.train import shutdown, train


def _local_numel(t: torch.Tensor) -> int:
    return (t.to_local() if isinstance(t, DTensor) else t).numel()


def shard_layout(mode: str, world: int) -> dict:
    """One forward, backward and optimizer step of the tiny model in `mode`; the fractions of the full sizes
    this rank holds, so a mode that silently fell back to another (ZeRO-2 to ZeRO-3, ZeRO-1 to DDP) shows."""
    torch.manual_seed(0)
    cfg = model_config("tiny", max_seq_len=16)
    model = parallel.parallelize(Transformer(cfg), mode, world_size=world, device=torch.device("cpu"))
    opt = parallel.build_optimizer(model, mode, world_size=world, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95),
                                   eps=1e-8)
    plain = getattr(model, "module", model)  # DDP wraps; FSDP2 changes the class in place
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    loss = model(ids[:, :-1], ids[:, 1:])
    weight = plain.layers[0].attn.wq.weight
    gathered = _local_numel(weight) == weight.numel()  # a block's weight between forward and backward
    loss.backward()
    grads = sum(_local_numel(p.grad) for p in plain.parameters())
    opt.step()
    local = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps this rank's shard in .optim
    states = sum(_local_numel(s["exp_avg"]) for s in local.state.values())
    n = cfg.num_params()
    return {"wrapper": type(model).__name__, "optimizer": type(opt).__name__,
            "gathered_after_forward": gathered, "grad_fraction": grads / n, "state_fraction": states / n}


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    results = {}
    for name, run in spec["runs"].items():
        cfg = TrainConfig(**{**spec["config"], **run.get("config", {}), "parallel": run["mode"],
                              "out_dir": str(out / run.get("dir", name))})
        graphs = counters["stats"]["unique_graphs"]
        rows = train(cfg, resume=run.get("resume", "never"), stop_after=run.get("stop_after"), verbose=False)
        results[name] = [[r["step"], r["loss"], r["grad_norm"]] for r in rows]
        results[f"{name}:graphs"] = counters["stats"]["unique_graphs"] - graphs  # what Dynamo compiled
    world = int(os.environ.get("WORLD_SIZE", "1"))
    layouts = {mode: shard_layout(mode, world) for mode in spec.get("layouts", [])}
    if int(os.environ.get("RANK", "0")) == 0:
        (out / "results.json").write_text(json.dumps(results))
        (out / "layouts.json").write_text(json.dumps(layouts))
    shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
