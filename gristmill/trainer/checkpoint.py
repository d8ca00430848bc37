"""Checkpoints with torch.distributed.checkpoint (DCP): model, optimizer, scheduler, data position and RNG.

Model and optimizer go through DCP's `get_state_dict` / `set_state_dict`, so DDP, ZeRO-2/3 (FSDP2) and
single-process checkpoints share plain parameter names and load into one another. ZeRO-1's optimizer
(ZeroRedundancyOptimizer) is not covered by those helpers: each rank stores its own shard of Adam states under
its rank's key. Per-rank state (data position, RNG) is stored per rank too, so a run resumes with the same
number of processes.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)
from torch.distributed.optim import ZeroRedundancyOptimizer

from gristmill.errors import UserError

_STEP_DIR = re.compile(r"^step-(\d{8}|[1-9]\d{8,})$")  # as f"{step:08d}" writes: more digits from step 1e8 on


def _to_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _from_bytes(data) -> object:
    if isinstance(data, io.BytesIO):
        data.seek(0)
        return torch.load(data, weights_only=False)
    return torch.load(io.BytesIO(data), weights_only=False)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _state(model, optimizer, scheduler, source, step: int, rank: int, world: int, loop_state=None) -> dict:
    zero1 = isinstance(optimizer, ZeroRedundancyOptimizer)
    local = {"data": source.state_dict(), "rng": _rng_state()}
    if zero1:
        local["optim"] = optimizer.optim.state_dict()
    # The scheduler's position only: LambdaLR's own state dict also carries its schedule (the callable's fields)
    # and base lrs, which a resume must take from its own config, not from the checkpoint.
    state = {"model": get_model_state_dict(model), "scheduler": _to_bytes({"last_epoch": scheduler.last_epoch}),
             "meta": _to_bytes({"step": step, "world_size": world, "zero1": zero1, "loop": loop_state}),
             f"rank{rank}": _to_bytes(local)}
    if not zero1:
        state["optim"] = get_optimizer_state_dict(model, optimizer)
    return state


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns that it assumes one process when no process group exists; that is the intent here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _dcp_load(state: dict, path: Path, message: str) -> None:
    """dcp.load(state) from `path`; a failure is one UserError, `message` formatted with the path and DCP's
    problem. DCP's message is a traceback per rank whose last line names it (a missing key, a shape mismatch)."""
    try:
        with _single_process_quiet():
            dcp.load(state, checkpoint_id=str(path))
    except (Exception, CheckpointException) as e:  # CheckpointException is a BaseException, not an Exception
        lines = str(e).strip().splitlines() or [type(e).__name__]
        raise UserError(message.format(path=path, problem=lines[-1])) from None


def check_complete(path: Path) -> None:
    """One line when a checkpoint folder (with a .metadata) is damaged or incomplete, as a copy made in part or
    a save cut short by a full disk leaves it: the .metadata does not parse, or a data file it names is missing
    or shorter than the bytes it records there. Without this, DCP's error reads as a model mismatch."""
    path = Path(path)
    try:
        storage = FileSystemReader(str(path)).read_metadata().storage_data or {}
    except Exception as e:  # an unpickling error, EOFError, ... from a damaged .metadata
        raise UserError(f"checkpoint {path} is damaged: its .metadata cannot be read ({type(e).__name__}); "
                        f"use another checkpoint") from None
    needed: dict[str, int] = {}  # data file -> the bytes the metadata records in it
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        file = path / name
        if not file.is_file():
            raise UserError(f"checkpoint {path} is incomplete: {name} is missing; use another checkpoint")
        if file.stat().st_size < size:
            raise UserError(f"checkpoint {path} is damaged: {name} is {file.stat().st_size:,} bytes, its .metadata "
                            f"records {size:,}; use another checkpoint")


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:08d}"


def step_of(path: Path) -> int:
    return int(_STEP_DIR.match(Path(path).name).group(1))


def step_dirs(root: Path) -> list[Path]:
    """The step-NNNNNNNN folders under `root`, oldest first (written whole or not)."""
    root = Path(root)
    # by step, not by name: step-100000000 sorts before step-99999999 as text
    return sorted((p for p in root.iterdir() if _STEP_DIR.match(p.name)), key=step_of) if root.is_dir() else []


def latest(root: Path) -> Path | None:
    found = [p for p in step_dirs(root) if (p / ".metadata").is_file()]
    return found[-1] if found else None


def save(root: Path, model, optimizer, scheduler, source, step: int, *, rank: int, world: int, keep: int,
         loop_state: dict | None = None) -> Path:
    """Write step-NNNNNNNN under `root` (all ranks call this), then prune to the newest `keep` of those at or
    below `step` (one numbered past it is not this run's history, and the pruning must not delete the new one).
    `loop_state` is the training loop's own small state (e.g. the loss-spike window), returned by `load`."""
    path = step_dir(root, step)
    with _single_process_quiet():
        dcp.save(_state(model, optimizer, scheduler, source, step, rank, world, loop_state), checkpoint_id=str(path))
    if world > 1:
        dist.barrier()
    if rank == 0 and keep > 0:
        done = [p for p in step_dirs(root) if step_of(p) <= step]
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return path


def _restore_position(scheduler, optimizer, last_epoch: int) -> None:
    """Put a LambdaLR at `last_epoch` of this run's schedule (its lambdas and base lrs, i.e. this run's steps,
    warmup, decay and peak lr), and give the optimizer that lr. The optimizer's state dict just loaded carries
    the old run's lr and initial_lr in its param groups: both are overwritten. (ZeroRedundancyOptimizer pushes
    its own param_groups' lr into the local shard at each step, so setting them is enough there too.)"""
    scheduler.last_epoch = last_epoch
    lrs = [base * fn(last_epoch) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas)]
    for group, base, lr in zip(optimizer.param_groups, scheduler.base_lrs, lrs):
        group["initial_lr"], group["lr"] = base, lr
    scheduler._last_lr = lrs


def saved_step(path: Path) -> int:
    """The step a checkpoint written by `save` was saved at, from its own record: the folder may have been
    copied or renamed (e.g. checkpoints/best)."""
    meta = {"meta": b""}
    _dcp_load(meta, Path(path), "cannot read {path}: not a checkpoint of `trainer train` ({problem})")
    return int(_from_bytes(meta["meta"])["step"])


def load(path: Path, model, optimizer, scheduler, source, *, rank: int, world: int,
         allow_draw_change: bool = False) -> tuple[int, dict, str | None]:
    """Restore everything saved by `save` into live objects; returns (step, loop_state, draw change). A data
    position saved in another mixture draw raises DrawChanged, unless allow_draw_change: then it is loaded and
    the change returned (else None)."""
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise UserError(f"not a checkpoint (no .metadata): {path}")
    check_complete(path)
    meta = {"meta": b""}
    _dcp_load(meta, path, "cannot resume from {path}: not a checkpoint of `trainer train` ({problem})")
    meta = _from_bytes(meta["meta"])
    if meta["world_size"] != world:
        raise UserError(f"checkpoint {path} was written by {meta['world_size']} process(es); resume it with the "
                        f"same number (this run has {world})")
    zero1 = isinstance(optimizer, ZeroRedundancyOptimizer)
    if meta["zero1"] != zero1:
        raise UserError(f"checkpoint {path} was written {'with' if meta['zero1'] else 'without'} ZeRO-1 optimizer "
                        f"shards; resume it with parallel: {'zero1' if meta['zero1'] else 'ddp, zero2 or zero3'}")
    state = _state(model, optimizer, scheduler, source, 0, rank, world)
    _dcp_load(state, path, "cannot resume from {path}: it holds another model or config ({problem}); use another "
                           "out_dir, or --resume never to start over")
    set_model_state_dict(model, state["model"])
    local = _from_bytes(state[f"rank{rank}"])
    if "optim" in local:
        optimizer.optim.load_state_dict(local["optim"])
    else:
        set_optimizer_state_dict(model, optimizer, state["optim"])
    _restore_position(scheduler, optimizer, int(_from_bytes(state["scheduler"])["last_epoch"]))
    draw_change = source.load_state_dict(local["data"], allow_draw_change=allow_draw_change)
    _set_rng_state(local["rng"])
    return int(meta["step"]), meta["loop"], draw_change


def load_model_weights(path: Path, model) -> None:
    """Load only the model's weights from a checkpoint written by `save` (any parallel mode) into a plain,
    single-process model, for export or evaluation."""
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise UserError(f"not a checkpoint (no .metadata): {path}")
    check_complete(path)
    state = {"model": get_model_state_dict(model)}
    _dcp_load(state, path, "cannot read the model from {path}: it holds another model ({problem})")
    set_model_state_dict(model, state["model"])


def find_run(path: Path) -> tuple[Path, Path]:
    """(the run's config.json, the checkpoint folder) for an out_dir (its newest checkpoint) or a checkpoint
    folder (OUT_DIR/checkpoints/step-N)."""
    path = Path(path)
    if (path / ".metadata").is_file():
        ckpt, run = path, path.parent.parent
    else:
        if not path.is_dir():
            raise UserError(f"{path} is neither a training out_dir nor a checkpoint folder")
        ckpt, run = latest(path / "checkpoints"), path
        if ckpt is None:
            raise UserError(f"{path} holds no checkpoint (looked in {path / 'checkpoints'}); an ablation keeps its "
                            f"runs' checkpoints only with --keep-checkpoints")
    config = run / "config.json"
    if not config.is_file():
        raise UserError(f"{config} does not exist: a run's checkpoints are read with the config.json beside them")
    return config, ckpt


def load_model(config_path: Path, ckpt: Path):
    """(the run's model with the checkpoint's weights (fp32 master weights), in eval mode; the run's saved
    config)."""
    from gristmill.trainer.model import ModelConfig, Transformer

    saved = json.loads(Path(config_path).read_text())
    try:
        cfg = ModelConfig(**saved["model"])
    except (KeyError, TypeError) as e:
        raise UserError(f"{config_path}: no model config a Transformer accepts ({e})") from None
    model = Transformer(cfg)
    load_model_weights(ckpt, model)
    return model.eval(), saved
