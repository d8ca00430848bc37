"""The training config: one typed dataclass, loaded from YAML or JSON, validated up front with one clear error.

    model: {preset: 125m, qk_norm: true, z_loss: 1.0e-4}   # or just `model: 125m`
    data: {mixture: mixes/web80.manifest.json}              # or {synthetic: {vocab_size: 256, seq_len: 32}}
    parallel: zero2            # single | ddp | zero1 | zero2 | zero3
    steps: 2000
    batch_size: 256            # sequences per optimizer step, all ranks together
    micro_batch_size: 8        # sequences per forward pass on one rank
    lr: 3.0e-4
    warmup_steps: 200
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gristmill.errors import UserError

PARALLEL_MODES = ("single", "ddp", "zero1", "zero2", "zero3")
PRECISIONS = ("bf16", "fp32")
ANOMALY_ACTIONS = ("skip", "stop")
SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")


@dataclass
class TrainConfig:
    model: Any = "tiny"                  # preset name or dict (see gristmill.trainer.model.model_config)
    data: dict = field(default_factory=lambda: {"synthetic": {"vocab_size": 256, "seq_len": 32}})
    parallel: str = "ddp"                # ignored (single process) when the world size is 1
    steps: int = 100
    batch_size: int = 32
    micro_batch_size: int = 8
    lr: float = 3e-4
    min_lr_ratio: float = 0.1            # the schedule ends at this fraction of the peak
    warmup_steps: int = 10
    schedule: str = "cosine"             # cosine | wsd (warmup, stable, then decay over the last decay_fraction)
    decay_fraction: float = 0.2          # wsd: share of `steps` in the final decay
    decay_shape: str = "linear"          # wsd: linear | cosine | 1-sqrt
    weight_decay: float = 0.1
    betas: tuple = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0               # 0 disables clipping
    precision: str = "bf16"
    activation_checkpointing: bool = False
    document_masking: bool = False       # attention within each packed document only (Llama 3), from EOS positions
    compile: bool = False                # torch.compile each transformer block (Inductor fuses its elementwise ops)
    seed: int = 0
    init_from: str = ""                  # a checkpoint (or out_dir: its newest) whose weights start the run; the
                                         # optimizer and schedule start fresh (annealing / continued training)
    out_dir: str = "runs/train"
    checkpoint_every: int = 0            # 0: only at the end
    keep_checkpoints: int = 2
    on_anomaly: str = "skip"             # non-finite loss/grad or a loss spike: skip the step, or stop
    spike_factor: float = 3.0            # a loss above spike_factor x its running mean is a spike
    max_skips: int = 10                  # stop anyway after this many skipped steps in a row
    log_every: int = 1
    eval_every: int = 0                  # steps between evaluations on the mixture's validation sets (0: none)
    eval_max_sequences: int = 256        # rows per validation set at most, evenly spaced (as in trainer ablate)
    kernels: str = "auto"                # auto | triton | torch (gristmill.kernels dispatch)

    def validate(self) -> "TrainConfig":
        def need(cond, msg):
            if not cond:
                raise UserError(f"config: {msg}")
        need(self.parallel in PARALLEL_MODES, f"parallel must be one of {', '.join(PARALLEL_MODES)}, not {self.parallel!r}")
        need(self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        need(self.on_anomaly in ANOMALY_ACTIONS, f"on_anomaly must be skip or stop, not {self.on_anomaly!r}")
        need(isinstance(self.steps, int) and self.steps >= 1, "steps must be an integer >= 1")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size must be an integer >= 1")
        need(isinstance(self.micro_batch_size, int) and self.micro_batch_size >= 1,
             "micro_batch_size must be an integer >= 1")
        need(self.lr > 0 and 0 <= self.min_lr_ratio <= 1, "lr must be > 0 and min_lr_ratio in [0, 1]")
        need(0 <= self.warmup_steps <= self.steps, "warmup_steps must be in [0, steps]")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}")
        need(self.decay_shape in DECAY_SHAPES,
             f"decay_shape must be one of {', '.join(DECAY_SHAPES)}, not {self.decay_shape!r}")
        need(isinstance(self.decay_fraction, (int, float)) and 0 < self.decay_fraction <= 1,
             "decay_fraction must be in (0, 1]")
        if self.schedule == "wsd":
            need(self.warmup_steps + self.decay_steps() <= self.steps,
                 f"warmup_steps {self.warmup_steps} + decay steps {self.decay_steps()} (decay_fraction "
                 f"{self.decay_fraction} of {self.steps}) exceed steps")
        need(len(self.betas) == 2, "betas must be two numbers")
        need(self.kernels in ("auto", "triton", "torch"), "kernels must be auto, triton or torch")
        need(isinstance(self.eval_every, int) and self.eval_every >= 0, "eval_every must be an integer >= 0")
        need(isinstance(self.eval_max_sequences, int) and self.eval_max_sequences >= 1,
             "eval_max_sequences must be an integer >= 1")
        need(isinstance(self.document_masking, bool),
             f"document_masking must be true or false, not {self.document_masking!r}")
        on_mixture = isinstance(self.data, dict) and "mixture" in self.data
        need(not self.document_masking or on_mixture,
             "document_masking needs data: {mixture: ...}; synthetic rows hold no documents")
        need(not self.eval_every or on_mixture,
             "eval_every needs data: {mixture: ...}; synthetic data has no validation sets")
        need(isinstance(self.compile, bool), f"compile must be true or false, not {self.compile!r}")
        # Inside compiled blocks the dispatch hands RMSNorm/SwiGLU/RoPE to Inductor; forcing our Triton kernels
        # there is untested (Dynamo would have to trace their autograd Functions), so it is refused, not guessed.
        need(not (self.compile and self.kernels == "triton"),
             "compile: true leaves the blocks' kernels to Inductor; use kernels: auto (or torch) with it")
        need(isinstance(self.activation_checkpointing, bool),
             f"activation_checkpointing must be true or false, not {self.activation_checkpointing!r}")
        need(isinstance(self.data, dict) and len(self.data) == 1 and next(iter(self.data)) in ("mixture", "synthetic"),
             "data must have exactly one of `mixture: PATH` or `synthetic: {vocab_size, seq_len}`")
        return self

    def decay_steps(self) -> int:
        """wsd: the steps of the final decay, at least one."""
        return max(1, round(self.decay_fraction * self.steps))

    def accumulation_steps(self, world_size: int) -> int:
        per_step = self.micro_batch_size * world_size
        if self.batch_size % per_step:
            raise UserError(f"config: batch_size {self.batch_size} is not a multiple of micro_batch_size "
                            f"{self.micro_batch_size} x {world_size} ranks")
        return self.batch_size // per_step

    def to_dict(self) -> dict:
        return asdict(self)


def load_config(path: str | Path, validate: bool = True, **overrides) -> TrainConfig:
    """Read YAML/JSON into a validated TrainConfig; relative data paths resolve against the config's folder.
    validate=False leaves the checks to the caller, for settings another command completes (trainer ablate sets
    the data and the steps, on which some checks depend)."""
    import yaml  # here, not at the top: the trainer itself (and bench/trainer.py on a bare GPU box) needs no YAML

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserError(f"config {path}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path}: expected a mapping at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"config {path}: unknown key(s) {', '.join(unknown)}")
    if "betas" in raw:
        raw["betas"] = tuple(raw["betas"])
    try:
        cfg = TrainConfig(**raw)
    except TypeError as e:
        raise UserError(f"config {path}: {e}") from None
    mix = cfg.data.get("mixture") if isinstance(cfg.data, dict) else None
    if isinstance(mix, str) and not Path(mix).is_absolute():
        cfg.data = {"mixture": str((path.parent / mix).resolve())}
    return cfg.validate() if validate else cfg
