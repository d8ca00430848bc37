"""Turns a plain model into its data-parallel form: DDP, ZeRO-1, ZeRO-2 or ZeRO-3 (FSDP2).

- ddp:   DistributedDataParallel; every rank holds everything, gradients are all-reduced.
- zero1: DDP plus ZeroRedundancyOptimizer: each rank keeps 1/N of the Adam states.
- zero2: FSDP2 `fully_shard` with reshard_after_forward=False: optimizer states and gradients sharded; the
         parameters stay gathered between forward and backward (no second all-gather), as in ZeRO stage 2.
- zero3: FSDP2 `fully_shard` per block then the root, reshard_after_forward=True: parameters sharded too.
With one process every mode is the plain model. Before any of them, each block may be wrapped for activation
checkpointing and then compiled (torchtitan's order), so the data-parallel hooks stay outside compiled code.
"""
from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.nn.parallel import DistributedDataParallel

FSDP_MODES = ("zero2", "zero3")


def init_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). Under torchrun: NCCL on GPU, gloo on CPU; otherwise one plain process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    return rank, world, device


def effective_mode(mode: str, world_size: int) -> str:
    return "single" if world_size == 1 else mode


def parallelize(model: nn.Module, mode: str, *, world_size: int, device: torch.device,
                activation_checkpointing: bool = False, bf16: bool = False, compile: bool = False) -> nn.Module:
    """Apply activation checkpointing and torch.compile (per block), then the data-parallel `mode`, to a Transformer.

    A compiled block is torch.compile's wrapper module: its state-dict keys gain `_orig_mod.`, which DCP's
    get/set_model_state_dict strip, so checkpoints load into compiled and plain models alike. Inside it the
    kernel dispatch's `auto` picks the PyTorch references and Inductor fuses them (gristmill.kernels.dispatch).

    bf16 only matters to FSDP2: it gathers bf16 copies of the fp32 shards for compute (half the all-gather
    traffic) and reduce-scatters gradients in fp32. DDP and one process rely on the loop's autocast alone."""
    if activation_checkpointing:
        for i, block in enumerate(model.layers):
            model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    if compile:
        for i, block in enumerate(model.layers):
            # fullgraph: a graph break inside a block is a bug to report, not a silent slowdown.
            model.layers[i] = torch.compile(block, fullgraph=True)
    mode = effective_mode(mode, world_size)
    if mode == "single":
        return model
    if mode in ("ddp", "zero1"):
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    reshard = mode == "zero3"
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
    for block in model.layers:
        fully_shard(block, reshard_after_forward=reshard, mp_policy=mp)
    fully_shard(model, reshard_after_forward=reshard, mp_policy=mp)
    return model


def build_optimizer(model: nn.Module, mode: str, *, world_size: int, lr: float, weight_decay: float,
                    betas: tuple, eps: float) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay on matrices only (norm gains are not decayed); fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    kw = dict(lr=lr, betas=tuple(betas), eps=eps)
    if params and all(p.is_cuda for p in params):
        kw["fused"] = True  # one kernel for the whole update on the GPU, as torchtitan defaults to
    if effective_mode(mode, world_size) == "zero1":
        # ZeroRedundancyOptimizer takes one flat list; it shards the parameters, and with them the states.
        opt = ZeroRedundancyOptimizer(groups[0]["params"], optimizer_class=torch.optim.AdamW,
                                      weight_decay=weight_decay, **kw)
        opt.add_param_group(groups[1])
        return opt
    return torch.optim.AdamW(groups, **kw)


def grad_sync(model: nn.Module, mode: str, world_size: int, sync: bool):
    """Context for one micro-batch's backward: skip the gradient all-reduce / reduce-scatter unless `sync`."""
    mode = effective_mode(mode, world_size)
    if mode in ("ddp", "zero1"):
        return contextlib.nullcontext() if sync else model.no_sync()
    if mode in FSDP_MODES:
        model.set_requires_gradient_sync(sync)
    return contextlib.nullcontext()


def all_reduce_sum(value: torch.Tensor, world_size: int) -> torch.Tensor:
    """The sum of `value` over all ranks (a new tensor; `value` itself is left as it is)."""
    value = value.clone()
    if world_size > 1:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()
