"""The training loop: AdamW, warmup + cosine schedule, accumulation, clipping, bf16 autocast, checkpoints,
one JSON line of metrics per step, and loss-spike / non-finite detection.

Run under torchrun for several processes (`trainer train CONFIG`); one process needs no launcher.
"""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from collections import deque
from pathlib import Path

import torch
import torch.distributed as dist

from gristmill.errors import UserError
from gristmill.kernels.dispatch import set_backend as set_kernel_backend
from gristmill.trainer import checkpoint, parallel
from gristmill.trainer.config import TrainConfig
from gristmill.trainer.data import open_source
from gristmill.trainer.evaluate import evaluate_sets
from gristmill.trainer.model import IGNORE_INDEX, Transformer, doc_segments, lm_targets, model_config_for_data
from gristmill.trainer.progress import Progress

# Dense bf16 peak FLOP/s by device name, for MFU.
# More specific names first: the first key found in the device name wins (H100 PCIe and NVL run lower clocks).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "A100": 312e12,
                   "L40S": 362e12, "A10G": 125e12}


class TrainingStopped(UserError):
    """The run stopped on a non-finite value or a loss spike (on_anomaly: stop)."""


class WarmupCosine:
    """LR multiplier: linear warmup to 1 over `warmup` steps, then cosine decay to `min_ratio` at the run's last
    update. LambdaLR gives update k (0-based) the multiplier at k, so the last of `total` updates is at total - 1,
    and that is where the cosine ends."""

    def __init__(self, warmup: int, total: int, min_ratio: float):
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - 1 - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupStableDecay:
    """LR multiplier for warmup-stable-decay (WSD; MiniCPM, Hu et al. 2024; Hägele et al. 2024): the same linear
    warmup, then 1 until the last `decay` steps, which fall to `min_ratio` along `shape` (linear, cosine or
    1-sqrt). After warmup it is HF transformers' `get_wsd_schedule`, whose decay reaches `min_ratio` one step
    after the last update (the last update runs at min_ratio + (1 - min_ratio) / decay for a linear decay).
    A stable-phase checkpoint can be resumed with more steps (which moves the decay later), or seed annealing
    runs through `init_from`."""

    SHAPES = ("linear", "cosine", "1-sqrt")

    def __init__(self, warmup: int, total: int, decay: int, min_ratio: float, shape: str = "linear"):
        self.warmup, self.total, self.decay, self.min_ratio, self.shape = warmup, total, decay, min_ratio, shape
        self.stable_end = total - decay

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if step < self.stable_end:
            return 1.0
        if step >= self.total:
            return self.min_ratio
        progress = (step - self.stable_end) / max(1, self.decay)
        factor = {"linear": 1.0 - progress, "cosine": 0.5 * (1.0 + math.cos(math.pi * progress)),
                  "1-sqrt": 1.0 - math.sqrt(progress)}[self.shape]
        return self.min_ratio + (1.0 - self.min_ratio) * factor


def lr_schedule(cfg) -> WarmupCosine | WarmupStableDecay:
    if cfg.schedule == "wsd":
        return WarmupStableDecay(cfg.warmup_steps, cfg.steps, cfg.decay_steps(), cfg.min_lr_ratio, cfg.decay_shape)
    return WarmupCosine(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def peak_memory_gb(device: torch.device) -> float:
    """CUDA: the most allocated since the step began (the loop resets the peak at each step's start). CPU: the
    process's peak resident memory so far (ru_maxrss, which cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux


def _finite(value):
    """`value` with every NaN or infinity (a skipped step's loss or norm) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def json_line(obj, **kw) -> str:
    """One line of strict JSON: a non-finite number is written as null, not as NaN or Infinity (which
    json.dumps writes by default, and which strict parsers, jq and JavaScript reject)."""
    return json.dumps(_finite(obj), allow_nan=False, **kw) + "\n"


def budget_warning(manifest: dict, steps: int, batch_size: int) -> str | None:
    """A `warning:` line when steps x batch_size x seq_len tokens exceed a mixture's budget_tokens more than
    twice: `steps` alone decides how long a run trains, so its data repeats for as many more epochs."""
    seq_len, budget = int(manifest["seq_len"]), int(manifest.get("budget_tokens") or 0)
    planned = steps * batch_size * seq_len
    if budget <= 0 or planned <= 2 * budget:
        return None
    ratio = planned / budget
    worst = max(manifest["sources"], key=lambda s: s.get("epochs") or 0.0)
    epochs = (worst.get("epochs") or 0.0) * ratio
    return (f"warning: steps {steps} x batch_size {batch_size} x seq_len {seq_len} = {planned:,} tokens is "
            f"{ratio:,.1f}x the mixture's budget_tokens {budget:,}: about {epochs:,.1f} epochs of source "
            f"{worst['name']!r} (the budget is {int(manifest['budget_sequences']) // batch_size:,} steps at this "
            f"batch size; `steps` alone sets the run's length)")


def _eval_sets(cfg) -> list[dict]:
    """The mixture's validation sets, one per domain, chosen as `trainer ablate` chooses them."""
    if not cfg.eval_every:
        return []
    from gristmill.trainer import ablate

    return ablate.evaluation_sets([ablate.load_mixture(cfg.data["mixture"])], {}, cfg.eval_max_sequences)


# Fields that shape the weights: a checkpoint to start from must agree on them (z_loss and init_std may change).
_ARCHITECTURE_EXEMPT = ("z_loss", "init_std")


def _model_changes(old: dict, new: dict, exempt: tuple[str, ...] = ()) -> list[str]:
    """"field: old -> new" for each model field a saved config sets to another value (fields it lacks, and
    `exempt` ones, are not compared)."""
    return [f"{k}: {old[k]!r} -> {v!r}" for k, v in new.items() if k in old and k not in exempt and old[k] != v]


def _init_weights(model, init_from: str, mcfg) -> Path:
    """Load the model weights of another run's checkpoint into the plain model (before it is parallelized)."""
    try:
        config_path, ckpt = checkpoint.find_run(Path(init_from))
    except UserError as e:
        raise UserError(f"init_from: {e}") from None
    try:
        old = json.loads(config_path.read_text()).get("model", {})
    except (OSError, ValueError):
        old = {}
    changed = _model_changes(old, mcfg.to_dict(), _ARCHITECTURE_EXEMPT)
    if changed:
        raise UserError(f"init_from {ckpt}: that run trained another model ({', '.join(changed)}); a run can only "
                        f"start from the weights of the same architecture and vocabulary")
    checkpoint.load_model_weights(ckpt, model)
    return ckpt


# What a run leaves in its out_dir; `--resume never` moves the previous run's aside as a whole.
_RUN_FILES = ("checkpoints", "config.json", "metrics.jsonl", "eval.jsonl")


def _set_aside(out: Path, paths: list[Path]) -> Path | None:
    """Move `paths` (inside `out`) to out/replaced-<UTC time>/, keeping their places relative to `out`, so that the
    folder is itself a run folder that `trainer evaluate`/`export` or a resume can read. Returns it, or None."""
    present = [p for p in paths if p.exists()]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest, n = out / f"replaced-{stamp}", 1
    while dest.exists():
        n += 1
        dest = out / f"replaced-{stamp}-{n}"
    for path in present:
        target = dest / path.relative_to(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    return dest


def _set_aside_previous_run(out: Path) -> Path | None:
    """`--resume never`: the previous run's checkpoints, config and metrics go aside whole, so that nothing of it
    is resumed later (its checkpoints could be numbered past the new run's)."""
    return _set_aside(out, [out / name for name in _RUN_FILES])


def _set_aside_later_checkpoints(out: Path, ckpt_root: Path, step: int) -> Path | None:
    """`--resume PATH` at `step`: this out_dir's checkpoints numbered past it belong to the abandoned continuation
    (their metrics rows are dropped too); a later auto resume must not pick the newest of them."""
    later = [p for p in checkpoint.step_dirs(ckpt_root) if checkpoint.step_of(p) > step]
    return _set_aside(out, later)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows logged after the checkpoint being resumed from (a crash can leave some, the last of them cut
    short mid-line), so steps stay unique."""
    if not path.is_file():
        return
    lines, keep = path.read_text().splitlines(keepends=True), []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            if number == len(lines) and not line.endswith("\n"):
                continue  # the row being written when the run died, cut short
            raise UserError(f"{path}: line {number} is not a metrics row; move the file aside to resume") from None
        if step <= last_step:
            keep.append(line)
    path.write_text("".join(keep))


def _check_same_run(saved_config: Path, model: dict, data: dict) -> None:
    """A resumed run must train the same model on the same data: the schedule, steps or lr may change, but a
    checkpoint of another model (even one of the same shapes) or another data source is refused, not mixed."""
    if not saved_config.is_file():
        return
    try:
        saved = json.loads(saved_config.read_text())
    except (OSError, ValueError):
        return
    old_model, old_data = saved.get("model", model), saved.get("train", {}).get("data", data)
    changed = _model_changes(old_model, model)
    if changed:
        raise UserError(f"{saved_config.parent} holds a run of another model ({', '.join(changed)}); use another "
                        f"out_dir, or --resume never to start over")
    if old_data != data:
        raise UserError(f"{saved_config.parent} holds a run on other data ({json.dumps(old_data)} -> "
                        f"{json.dumps(data)}); use another out_dir, or --resume never to start over")


def _anomaly(loss: float, grad_norm: float, recent: deque, factor: float) -> str | None:
    if not math.isfinite(loss):
        return "non-finite loss"
    if not math.isfinite(grad_norm):
        return "non-finite gradient norm"
    if len(recent) == recent.maxlen and loss > factor * (sum(recent) / len(recent)):
        return f"loss spike ({loss:.4g} > {factor:g} x running mean {sum(recent) / len(recent):.4g})"
    return None


def train(cfg: TrainConfig, *, resume: str = "auto", stop_after: int | None = None, verbose: bool = True,
          progress: str | None = None, allow_draw_change: bool = False) -> list[dict]:
    """Train per `cfg`; returns the metrics rows this process logged (rank 0; other ranks get an empty list).

    verbose: echo the config and model, show a progress bar and the evaluations (stderr).
    progress: a label; with verbose=False still prints a progress line every ~10% of the run to stderr, as
    "LABEL: step N/TOTAL (P%) loss ... tok/s ETA h:mm:ss" (`trainer ablate` gives the run's name).

    resume: "auto" (latest checkpoint under out_dir, if any), "never" (a previous run in out_dir is moved to
    out_dir/replaced-<time>/ first), or a checkpoint folder.
    stop_after: end (with a checkpoint) after this many steps in total, leaving the schedule as configured.
    allow_draw_change: resume a checkpoint whose data position was counted in another mixture draw (an older
    gristmill's), continuing by this loader's draw with a warning; without it such a resume is refused.
    """
    cfg.validate()
    set_kernel_backend(None if cfg.kernels == "auto" else cfg.kernels)  # "auto" leaves $GRISTMILL_KERNELS in force
    rank, world, device = parallel.init_distributed()
    mode = parallel.effective_mode(cfg.parallel, world)
    accum = cfg.accumulation_steps(world)
    out = Path(cfg.out_dir)
    ckpt_root = out / "checkpoints"
    from gristmill.pipeline import fs  # stdlib only: no Beam, PyYAML or pyarrow

    try:
        fs.check_output_folder(str(out))
    except UserError as e:
        raise UserError(f"out_dir: {e}") from None
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"out_dir {out}: cannot create it ({e.strerror or e})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"out_dir {out}: not writable")
    torch.manual_seed(cfg.seed)

    source = open_source(cfg.data, cfg.micro_batch_size, rank=rank, world_size=world, seed=cfg.seed,
                         batches=cfg.steps * accum)
    mcfg = model_config_for_data(cfg.model, vocab_size=source.vocab_size, max_seq_len=source.seq_len)
    model = Transformer(mcfg).to(device)
    is_main = rank == 0
    if resume == "never":
        replaced = _set_aside_previous_run(out) if is_main else None
        if replaced:
            print(f"note: --resume never: moved the previous run in {out} (checkpoints, config, metrics) to "
                  f"{replaced}", file=sys.stderr, flush=True)
        parallel.barrier(world)
    resume_from = None if resume == "never" else (checkpoint.latest(ckpt_root) if resume == "auto" else Path(resume))
    # A run's own checkpoint wins: init_from only seeds a run that has none yet.
    initialized = _init_weights(model, cfg.init_from, mcfg) if cfg.init_from and resume_from is None else None
    model = parallel.parallelize(model, mode, world_size=world, device=device,
                                 activation_checkpointing=cfg.activation_checkpointing, bf16=cfg.precision == "bf16",
                                 compile=cfg.compile)
    optimizer = parallel.build_optimizer(model, mode, world_size=world, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                         betas=cfg.betas, eps=cfg.eps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_schedule(cfg))
    tokens_per_step = cfg.batch_size * (source.seq_len - 1)
    flops_tok = mcfg.flops_per_token(source.seq_len - 1)
    peak = peak_flops(device)

    start, loop_state = 0, {"recent": [], "skipped_in_row": 0, "tokens": 0}
    if resume_from is not None:
        # here, not at the top: the mixtures package needs PyYAML and pyarrow, which a synthetic-data run (and
        # bench/trainer.py on a bare GPU box) does without
        from gristmill.mixtures.loader import DrawChanged

        _check_same_run(Path(resume_from).parent.parent / "config.json", mcfg.to_dict(), cfg.data)
        try:
            start, saved, draw_change = checkpoint.load(resume_from, model, optimizer, scheduler, source, rank=rank,
                                                        world=world, allow_draw_change=allow_draw_change)
        except DrawChanged as e:
            raise UserError(f"cannot resume {resume_from} exactly: {e}; rerun with --allow-draw-change to continue "
                            f"from its position by this draw, or --resume never to start over") from None
        if draw_change and is_main:
            print(f"warning: --allow-draw-change: {draw_change}; continuing from step {start} by this version's draw",
                  file=sys.stderr, flush=True)
        # The tokens trained on so far: a checkpoint written before they were recorded ran at this batch size.
        loop_state = {**loop_state, "tokens": start * tokens_per_step, **(saved or {})}
        if resume != "auto":
            parallel.barrier(world)  # every rank has read the checkpoint before any is moved
            replaced = _set_aside_later_checkpoints(out, ckpt_root, start) if is_main else None
            if replaced:
                print(f"note: --resume {resume}: moved this out_dir's checkpoints past step {start} to {replaced}",
                      file=sys.stderr, flush=True)
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    limit = f"--stop-after {stop_after}" if stop_after is not None and stop_after < cfg.steps else f"steps {cfg.steps}"
    if end < start:  # the loop would train nothing and exit 0 as if it had
        raise UserError(f"{limit} is before step {start}, where {resume_from} resumes; nothing to train (raise it, "
                        f"or --resume never to start over)")
    if is_main and start == 0 and hasattr(source, "loader"):
        warning = budget_warning(source.loader.manifest, cfg.steps, cfg.batch_size)
        if warning:
            print(warning, file=sys.stderr, flush=True)
    if is_main:
        _truncate_metrics(out / "metrics.jsonl", start)
        _truncate_metrics(out / "eval.jsonl", start)
        (out / "config.json").write_text(json.dumps({"train": cfg.to_dict(), "model": mcfg.to_dict(),
                                                     "world_size": world}, indent=2) + "\n")
        if verbose:
            print(f"config: {json.dumps(cfg.to_dict())}", flush=True)
            print(f"model: {mcfg.num_params() / 1e6:.2f}M parameters ({mcfg.num_params(embedding=False) / 1e6:.2f}M "
                  f"non-embedding), {flops_tok / 1e9:.3f} GFLOPs/token; parallel={mode} world={world} "
                  f"accumulation={accum} device={device.type}" +
                  (f"; resumed from {resume_from} at step {start}" if resume_from else "") +
                  (f"; weights from {initialized}" if initialized else ""), flush=True)
        if verbose and resume_from and end == start:  # a finished run run again: say why nothing follows, not only exit 0
            print(f"note: {resume_from} is at step {start} ({limit}); nothing left to train (raise it to continue, "
                  f"or --resume never to start over)", file=sys.stderr, flush=True)
    metrics_file = open(out / "metrics.jsonl", "a") if is_main else None
    eval_sets = _eval_sets(cfg)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")
    recent: deque = deque(loop_state["recent"], maxlen=20)
    skipped_in_row = loop_state["skipped_in_row"]
    # Counted on, not step x batch_size: a resume may change batch_size, and the steps before it ran at the old one.
    tokens_before = loop_state["tokens"] - start * tokens_per_step
    rows: list[dict] = []
    bar = Progress(cfg.steps, is_main and (verbose or progress is not None), start=start,
                   label=None if verbose else progress)
    params = [p for p in model.parameters() if p.requires_grad]

    try:
        for step in range(start, end):
            t0 = time.perf_counter()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)  # peak_mem_gb is this step's
            # The step's loss is the mean over every scored (non-PAD) target of the global batch, however it is
            # split into ranks and micro-batches: each micro-batch backpropagates its summed loss over the
            # step's scored-target count. DDP and FSDP average gradients over the ranks, hence the x world.
            batches = [source.next_batch().to(device, non_blocking=True) for _ in range(accum)]
            targets = [lm_targets(b, source.pad_id) for b in batches]
            # an exact int64 count, summed over the ranks; clamped so a batch that is all PAD gives 0, not 0/0
            n_scored = parallel.all_reduce_sum(sum((t != IGNORE_INDEX).sum() for t in targets), world).clamp(min=1)
            scale = world / n_scored.float()
            loss_sum = torch.zeros((), device=device)
            for micro, (batch, target) in enumerate(zip(batches, targets)):
                with parallel.grad_sync(model, mode, world, sync=micro == accum - 1), autocast:
                    inputs = batch[:, :-1]
                    segments = doc_segments(inputs, source.eos_id) if cfg.document_masking else None
                    loss = model(inputs, target, segments=segments, reduction="sum")
                    (loss * scale).backward()
                loss_sum += loss.detach().float()
            loss_avg = parallel.all_reduce_sum(loss_sum, world) / n_scored.float()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if hasattr(grad_norm, "full_tensor"):  # FSDP2: a DTensor
                grad_norm = grad_norm.full_tensor()
            loss_v, norm_v = loss_avg.item(), grad_norm.item()
            problem = _anomaly(loss_v, norm_v, recent, cfg.spike_factor)
            if problem and cfg.on_anomaly == "stop":
                raise TrainingStopped(f"step {step + 1}: {problem}; stopping (set on_anomaly: skip to skip such steps)")
            lr = scheduler.get_last_lr()[0]  # the lr this step's update runs at, or would have
            if problem:
                skipped_in_row += 1
                if skipped_in_row > cfg.max_skips:
                    raise TrainingStopped(f"step {step + 1}: {problem}, {skipped_in_row} steps skipped in a row "
                                          f"(max_skips {cfg.max_skips}); stopping")
                if is_main:
                    print(f"warning: step {step + 1}: {problem}; skipping the update", file=sys.stderr, flush=True)
            else:
                skipped_in_row = 0
                optimizer.step()
                # The schedule counts applied updates, as Megatron-LM's steps only on a successful update: a
                # skipped step leaves the warmup and decay where they were. The checkpoint stores this count.
                scheduler.step()
                recent.append(loss_v)
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0
            tok_s = tokens_per_step / dt
            tokens = tokens_before + (step + 1) * tokens_per_step
            row = {"step": step + 1, "loss": loss_v, "grad_norm": norm_v, "lr": lr, "tokens": tokens,
                   "tokens_per_s": round(tok_s, 1),
                   "mfu": round(flops_tok * tok_s / (peak * world), 4) if peak else None,
                   "peak_mem_gb": round(peak_memory_gb(device), 3), "step_time_s": round(dt, 4),
                   "skipped": problem}
            if is_main:
                rows.append(row)
                if (step + 1) % cfg.log_every == 0 or step + 1 == end:
                    metrics_file.write(json_line(row))
                    metrics_file.flush()
                bar.update(step + 1, loss_v, tok_s)
            if eval_sets and ((step + 1) % cfg.eval_every == 0 or step + 1 == cfg.steps):
                t_eval = time.perf_counter()
                sets = evaluate_sets(model, eval_sets, source.loader.manifest["tokenizer"],
                                     document_masking=cfg.document_masking, batch_size=cfg.micro_batch_size,
                                     device=device, autocast_bf16=cfg.precision == "bf16", rank=rank, world_size=world,
                                     progress="terminal" if is_main and verbose else None)
                if is_main:
                    with open(out / "eval.jsonl", "a") as f:
                        f.write(json_line({"step": step + 1, "tokens": tokens, "sets": sets}, sort_keys=True))
                    if verbose:
                        shown = ", ".join(f"{k} loss {v['loss']:.4f} / {v['bits_per_byte']:.4f} bpb"
                                          for k, v in sets.items())
                        print(f"eval step {step + 1}: {shown} ({time.perf_counter() - t_eval:.1f} s)", file=sys.stderr,
                              flush=True)
            last = step + 1 == end
            if cfg.save_checkpoints and (last or (cfg.checkpoint_every and (step + 1) % cfg.checkpoint_every == 0)):
                checkpoint.save(ckpt_root, model, optimizer, scheduler, source, step + 1, rank=rank, world=world,
                                keep=cfg.keep_checkpoints,
                                loop_state={"recent": list(recent), "skipped_in_row": skipped_in_row, "tokens": tokens})
    finally:
        if metrics_file:
            metrics_file.close()
    return rows


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
