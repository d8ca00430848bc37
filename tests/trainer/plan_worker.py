"""Run under torchrun by test_plan.py: what each rank of each parallel mode really holds, in bytes, to check
`trainer plan --bytes trainer` against. Rank 0 writes {"<precision>/<mode>": [rank 0's, rank 1's, ...]}.

Measured on the second of two steps of two micro-batches (the first step makes the lazy state: FSDP2's, Adam's):
- shards: this rank's local parameter tensors after the step (DTensor.to_local() under FSDP2)
- gathered: the peak, at every attention and MLP forward and backward of every block, of FSDP2's unsharded
  parameters registered on the modules plus its all-gather buffers (a prefetched group's flat output, and the
  one forward keeps until the next block has copied out)
- accumulated: the storage of every live tensor that is new after the first micro-batch's backward without
  gradient sync, i.e. what a mode keeps of gradients between micro-batches (snapshots once they stop changing:
  _held_storages)
- grads: this rank's local .grad tensors after the second (synchronised) backward
- grad_buckets: DDP's all-reduce buckets (its logging data's bucket_sizes, in bytes)
- optimizer: this rank's AdamW exp_avg and exp_avg_sq
"""
import gc
import json
import re
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from gristmill.trainer import parallel
from gristmill.trainer.model import Transformer, model_config

MODES = ("ddp", "zero1", "zero2", "zero3")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _nbytes(t: torch.Tensor) -> int:
    t = _local(t)
    return t.numel() * t.element_size()


def _live_storages() -> dict[int, int]:
    """{data_ptr: nbytes} of the storage of every tensor reachable from Python, and of every leaf's .grad (a
    gradient autograd made has no Python object until someone asks for it)."""
    found = {}
    gc.collect()  # what only a reference cycle keeps is garbage, not memory a mode holds
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # isinstance on some lazily imported modules' objects warns
        tensors = [obj for obj in gc.get_objects() if isinstance(obj, torch.Tensor)]
    for t in tensors:
        for x in (t, t.grad if t.is_leaf and t.requires_grad else None):
            if x is not None and _local(x).untyped_storage().nbytes():
                found[_local(x).untyped_storage().data_ptr()] = _local(x).untyped_storage().nbytes()
    return found


def _held_storages(tries: int = 100) -> dict[int, int]:
    """_live_storages once it has stopped changing. A collective's buffer that the module has dropped can still
    be owned for a moment by the process group's worker thread, which frees the work and its tensors after
    wait() returns, and needs the GIL to free their Python objects: a snapshot taken before it has run counts
    the buffer as held. Two snapshots alike, with a sleep between that hands over the GIL, are what is held."""
    last = _live_storages()
    for _ in range(tries):
        time.sleep(0.1)
        now = _live_storages()
        if now == last:
            return now
        last = now
    raise RuntimeError(f"live tensors still changing after {tries} snapshots")


def _gathered(model: torch.nn.Module) -> int:
    """FSDP2's unsharded parameter storage now: the modules' registered unsharded parameters and the flat
    all-gather outputs it holds (FSDP2 internals: a prefetched group's result, forward's deferred free)."""
    total = sum(_nbytes(p) for p in model.parameters() if not isinstance(p, DTensor))
    flats = []
    for module in model.modules():
        if hasattr(module, "_get_fsdp_state"):
            for group in module._get_fsdp_state()._fsdp_param_groups:
                if group._all_gather_result is not None:
                    flats.append(group._all_gather_result.all_gather_output)
                deferred = group.comm_ctx.all_gather_state
                if deferred is not None:
                    flats.append(deferred.all_gather_result.all_gather_output)
    seen = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in flats}
    return total + sum(seen.values())


def measure(mode: str, precision: str, world: int) -> dict:
    torch.manual_seed(0)
    cfg = model_config("tiny", n_layers=3, max_seq_len=16)
    bf16 = precision == "bf16"
    model = parallel.parallelize(Transformer(cfg), mode, world_size=world, device=torch.device("cpu"), bf16=bf16)
    opt = parallel.build_optimizer(model, mode, world_size=world, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95),
                                   eps=1e-8)
    plain = getattr(model, "module", model)  # DDP wraps; FSDP2 changes the class in place
    fsdp = mode in parallel.FSDP_MODES
    peak = {"gathered": 0}

    def look(*_):
        if fsdp:
            peak["gathered"] = max(peak["gathered"], _gathered(plain))

    for block in plain.layers:
        for sub in (block.attn, block.mlp):  # inside a block: after FSDP2's own pre-forward / pre-backward
            sub.register_forward_pre_hook(look)
            sub.register_full_backward_pre_hook(look)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    ids = torch.randint(0, cfg.vocab_size, (2, 2, 17))
    row = {}
    for step in range(2):
        before = _held_storages()
        for micro in range(2):
            with parallel.grad_sync(model, mode, world, sync=micro == 1), autocast:
                model(ids[micro, :, :-1], ids[micro, :, 1:], reduction="sum").backward()
            if micro == 0:
                row["accumulated"] = sum(n for ptr, n in _held_storages().items() if ptr not in before)
        row["grads"] = sum(_nbytes(p.grad) for p in plain.parameters())
        opt.step()
        opt.zero_grad(set_to_none=True)
    local = getattr(opt, "optim", opt)  # ZeroRedundancyOptimizer keeps this rank's shard in .optim
    row["optimizer"] = sum(_nbytes(s[k]) for s in local.state.values() for k in ("exp_avg", "exp_avg_sq"))
    row["shards"] = sum(_nbytes(p) for p in plain.parameters())
    row["gathered"] = peak["gathered"]
    buckets = model._get_ddp_logging_data().get("bucket_sizes", "") if hasattr(model, "_get_ddp_logging_data") else ""
    row["grad_buckets"] = sum(int(n) for n in re.findall(r"\d+", str(buckets)))
    return row


def main(out: str) -> None:
    rank, world, _ = parallel.init_distributed()
    torch.set_num_threads(1)
    results = {}
    for precision in ("bf16", "fp32"):
        for mode in MODES:
            row = measure(mode, precision, world)
            rows = [None] * world
            dist.all_gather_object(rows, row)
            results[f"{precision}/{mode}"] = rows
            gc.collect()
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    parallel.barrier(world)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
