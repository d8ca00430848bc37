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

from gristmill.errors import UserError, require_file
from gristmill.trainer.checks import BOOL, PATH, STR, Int, Number, OneOf, check_mapping, is_number

PARALLEL_MODES = ("single", "ddp", "zero1", "zero2", "zero3")
PRECISIONS = ("bf16", "fp32")
ANOMALY_ACTIONS = ("skip", "stop")
SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt")
KERNELS = ("auto", "triton", "torch")
DATA_KINDS = ("mixture", "synthetic")

# torch.manual_seed and the synthetic rows' Philox key take 64-bit words: a larger seed was a ValueError traceback
SEED = Int(lo=0, hi=2**64 - 1)
# Each scalar field's type and range (model, data and betas are checked on their own, in validate).
FIELD_CHECKS = {
    "parallel": OneOf(*PARALLEL_MODES), "steps": Int(lo=1), "batch_size": Int(lo=1), "micro_batch_size": Int(lo=1),
    "lr": Number(lo=0, lo_open=True), "min_lr_ratio": Number(0, 1), "warmup_steps": Int(lo=0),
    "schedule": OneOf(*SCHEDULES), "decay_fraction": Number(0, 1, lo_open=True), "decay_shape": OneOf(*DECAY_SHAPES),
    "weight_decay": Number(lo=0), "eps": Number(lo=0, lo_open=True), "grad_clip": Number(lo=0),
    "precision": OneOf(*PRECISIONS), "activation_checkpointing": BOOL, "document_masking": BOOL, "compile": BOOL,
    "seed": SEED, "init_from": STR, "out_dir": PATH, "checkpoint_every": Int(lo=0), "keep_checkpoints": Int(lo=0),
    "save_checkpoints": BOOL,
    "on_anomaly": OneOf(*ANOMALY_ACTIONS), "spike_factor": Number(lo=1, lo_open=True), "max_skips": Int(lo=0),
    "log_every": Int(lo=1), "eval_every": Int(lo=0), "eval_max_sequences": Int(lo=1), "kernels": OneOf(*KERNELS),
}
SYNTHETIC_CHECKS = {"vocab_size": Int(lo=2), "seq_len": Int(lo=2), "seed": SEED}


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
    save_checkpoints: bool = True        # false: none at all (benchmarks, throwaway runs; nothing to resume)
    keep_checkpoints: int = 2
    on_anomaly: str = "skip"             # non-finite loss/grad or a loss spike: skip the step, or stop
    spike_factor: float = 3.0            # a loss above spike_factor x its running mean is a spike
    max_skips: int = 10                  # stop anyway after this many skipped steps in a row
    log_every: int = 1
    eval_every: int = 0                  # steps between evaluations on the mixture's validation sets (0: none)
    eval_max_sequences: int = 256        # rows per validation set at most, evenly spaced (as in trainer ablate)
    kernels: str = "auto"                # auto | triton | torch (gristmill.kernels dispatch)

    def validate(self) -> "TrainConfig":
        """Every field's type and range (FIELD_CHECKS), then the checks across fields; a mistake is one
        UserError line, raised here rather than as a traceback or a crash some steps into the run."""
        def need(cond, msg):
            if not cond:
                raise UserError(f"config: {msg}")
        for f in fields(self):
            if f.name in FIELD_CHECKS:
                FIELD_CHECKS[f.name].check("config: ", f.name, getattr(self, f.name))
        need(isinstance(self.betas, (list, tuple)) and len(self.betas) == 2
             and all(is_number(b) and 0 <= b < 1 for b in self.betas),
             f"betas must be two numbers in [0, 1), such as [0.9, 0.95], not {self.betas!r}")
        self._validate_data()
        self._validate_model()
        need(self.warmup_steps <= self.steps, f"warmup_steps {self.warmup_steps} exceeds steps {self.steps}")
        if self.schedule == "wsd":
            need(self.warmup_steps + self.decay_steps() <= self.steps,
                 f"warmup_steps {self.warmup_steps} + decay steps {self.decay_steps()} (decay_fraction "
                 f"{self.decay_fraction} of {self.steps}) exceed steps")
        on_mixture = "mixture" in self.data
        need(not self.document_masking or on_mixture,
             "document_masking needs data: {mixture: ...}; synthetic rows hold no documents")
        need(not self.eval_every or on_mixture,
             "eval_every needs data: {mixture: ...}; synthetic data has no validation sets")
        # Inside compiled blocks the dispatch hands RMSNorm/SwiGLU/RoPE to Inductor; forcing our Triton kernels
        # there is untested (Dynamo would have to trace their autograd Functions), so it is refused, not guessed.
        need(not (self.compile and self.kernels == "triton"),
             "compile: true leaves the blocks' kernels to Inductor; use kernels: auto (or torch) with it")
        return self

    def _validate_data(self) -> None:
        if not (isinstance(self.data, dict) and len(self.data) == 1 and next(iter(self.data)) in DATA_KINDS):
            raise UserError("config: data must have exactly one of `mixture: PATH` or `synthetic: {vocab_size, "
                            f"seq_len}}`, not {self.data!r}")
        if "mixture" in self.data:
            PATH.check("config: data: ", "mixture", self.data["mixture"])
        elif self.data["synthetic"] is not None:  # `synthetic:` alone takes the defaults
            check_mapping("config: data: ", "synthetic", self.data["synthetic"], SYNTHETIC_CHECKS)

    def _validate_model(self) -> None:
        """A preset name or a mapping of ModelConfig fields; ModelConfig checks each field's type and range
        (the vocabulary and max_seq_len come from the data at training time)."""
        from gristmill.trainer.model import model_config

        if not isinstance(self.model, (str, dict)):
            raise UserError(f"config: model must be a preset name or a mapping of model fields, not {self.model!r}")
        try:
            model_config(self.model)
        except UserError as e:
            raise UserError(f"config: {e}") from None

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
    require_file(path, "config file")
    try:
        text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except UnicodeDecodeError as e:  # a binary file given as the config (a checkpoint, a shard): not a traceback
        raise UserError(f"config {path}: cannot parse: not UTF-8 text (byte {e.start})") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise UserError(f"config {path}: cannot parse: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config {path}: expected a mapping at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise UserError(f"config {path}: unknown key(s) {', '.join(unknown)}")
    if isinstance(raw.get("betas"), list):
        raw["betas"] = tuple(raw["betas"])
    try:
        cfg = TrainConfig(**raw)
    except TypeError as e:
        raise UserError(f"config {path}: {e}") from None
    mix = cfg.data.get("mixture") if isinstance(cfg.data, dict) else None
    if isinstance(mix, str) and not Path(mix).is_absolute():
        cfg.data = {"mixture": str((path.parent / mix).resolve())}
    return cfg.validate() if validate else cfg
