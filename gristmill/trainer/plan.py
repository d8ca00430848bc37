"""Memory per GPU under DDP and ZeRO stages 1-3: the ZeRO paper's accounting (Rajbhandari et al., 2020), or what
this trainer's parallel modes really keep (`--bytes trainer`).

zero-paper. Mixed-precision Adam (precision bf16, the paper's case) holds 2 bytes/param of 16-bit weights, 2 of
16-bit gradients and K = 12 of optimizer state (fp32 master weights, momentum, variance). With Psi parameters on
N GPUs:
    DDP (stage 0)  16 Psi          stage 1  4 Psi + 12 Psi / N
    stage 2        2 Psi + 14 Psi / N          stage 3  16 Psi / N
fp32 Adam (precision fp32) holds 4 + 4 + 8 (fp32 weights, gradients, momentum and variance; the weights are
the master copy): stage 1 = 8 Psi + 8 Psi / N, stage 2 = 4 Psi + 12 Psi / N, stage 3 = 16 Psi / N.

trainer. gristmill.trainer.parallel, term by term (c = 2 bytes for the bf16 copies FSDP2 gathers, 4 in fp32;
Psi_root = the parameters outside the blocks, i.e. embedding, output and final norm; Psi_block = one block):
    ddp    fp32 weights 4 Psi; fp32 gradients 4 Psi plus DDP's gradient buckets 4 Psi (gradient_as_bucket_view
           is off); AdamW momentum and variance 8 Psi
    zero1  as ddp, but ZeroRedundancyOptimizer keeps 8 Psi / N (whole tensors per rank: a rank may hold more)
    zero2  fp32 shards 4 Psi / N, plus the gathered copy of the whole model, which stays from forward to
           backward, and one block's all-gather buffer: c (Psi + Psi_block); gradients 4 Psi / N; states 8 Psi / N
    zero3  fp32 shards 4 Psi / N, plus the root group (gathered over the whole forward and backward), the block
           computing and the next one's prefetched all-gather buffer: c (Psi_root + 2 Psi_block); gradients and
           states as zero2
With gradient accumulation (> 1 micro-batch per step) FSDP2 keeps the unsharded fp32 gradients between
micro-batches, so zero2 and zero3 hold 4 Psi of gradients, not 4 Psi / N. With one GPU every mode is the plain
model: 4 + 4 + 8. Left out: a block's unsharded gradients before their reduce-scatter, the all-gather input
copies, Adam's step counters. Checked against the tensors each rank holds (tests/trainer/test_plan.py).

Activations are not sharded by ZeRO; they follow Korthikanti et al. (2022) with flash attention (no s^2 term):
34 * seq * batch * d_model bytes per layer of 16-bit activations (bf16), twice that in fp32, or with activation
checkpointing 2 (fp32: 4) * s * b * d per layer (the saved block inputs) plus one layer recomputed at a time;
plus fp32 logits (4 * s * b * vocab) when the cross-entropy is not fused (CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

# The ZeRO paper's (params, grads, optimizer) bytes per parameter, by the run's precision.
PAPER_BYTES = {"bf16": (2, 2, 12), "fp32": (4, 4, 8)}
STAGES = (("ddp", 0), ("zero1", 1), ("zero2", 2), ("zero3", 3))


@dataclass(frozen=True)
class Estimate:
    mode: str
    stage: int
    params: float     # bytes per GPU
    grads: float
    optimizer: float
    activations: float

    @property
    def total(self) -> float:
        return self.params + self.grads + self.optimizer + self.activations


@dataclass(frozen=True)
class Layout:
    """How FSDP2 groups a model's parameters: one group per block, and the root (all the rest)."""
    params: int       # Psi, all of them
    root: int         # outside the blocks: token embedding, output projection, final norm
    block: int        # one block

    @classmethod
    def of(cls, mcfg) -> Layout:
        """The layout of a ModelConfig's Transformer (its blocks are all alike)."""
        # num_params(embedding=False) is n_layers blocks plus the final norm's d_model gains
        block = (mcfg.num_params(embedding=False) - mcfg.d_model) // mcfg.n_layers
        total = mcfg.num_params()
        return cls(params=total, root=total - mcfg.n_layers * block, block=block)


@dataclass(frozen=True)
class TrainerStates:
    """What one rank of this trainer keeps, in bytes, term by term."""
    shards: float          # fp32 weights (DDP: all of them; FSDP2: this rank's shard)
    gathered: float        # FSDP2's unsharded copies and all-gather buffers at the peak
    grads: float           # fp32 gradients (FSDP2 with accumulation: the unsharded ones it accumulates)
    grad_buckets: float    # DDP's all-reduce buckets
    optimizer: float       # AdamW momentum and variance

    @property
    def params(self) -> float:
        return self.shards + self.gathered


def model_states(psi: float, gpus: int, stage: int, bytes_per_param=PAPER_BYTES["bf16"]) -> tuple[float, float, float]:
    """(params, grads, optimizer) bytes per GPU for `psi` parameters on `gpus` GPUs at ZeRO `stage`, by the
    paper's accounting with `bytes_per_param` (default: mixed precision, 2 + 2 + 12)."""
    p, g, k = (b * psi for b in bytes_per_param)
    if stage >= 1:
        k /= gpus
    if stage >= 2:
        g /= gpus
    if stage >= 3:
        p /= gpus
    return p, g, k


def trainer_states(layout: Layout, gpus: int, mode: str, *, precision: str = "bf16",
                   accumulation: int = 1) -> TrainerStates:
    """Bytes one rank keeps for `mode` (ddp, zero1, zero2, zero3) of gristmill.trainer.parallel on `gpus` ranks."""
    psi, n = layout.params, gpus
    if n == 1:  # parallel.effective_mode: one process trains the plain model whatever the mode
        return TrainerStates(shards=4 * psi, gathered=0, grads=4 * psi, grad_buckets=0, optimizer=8 * psi)
    if mode in ("ddp", "zero1"):
        return TrainerStates(shards=4 * psi, gathered=0, grads=4 * psi, grad_buckets=4 * psi,
                             optimizer=8 * psi / (n if mode == "zero1" else 1))
    c = 2 if precision == "bf16" else 4
    gathered = c * (psi + layout.block) if mode == "zero2" else c * (layout.root + 2 * layout.block)
    return TrainerStates(shards=4 * psi / n, gathered=gathered, grads=4 * psi if accumulation > 1 else 4 * psi / n,
                         grad_buckets=0, optimizer=8 * psi / n)


def activation_bytes(*, n_layers: int, d_model: int, vocab_size: int, seq_len: int, micro_batch: int,
                     checkpointing: bool, fused_cross_entropy: bool = True, precision: str = "bf16") -> float:
    sbh = seq_len * micro_batch * d_model
    scale = 1 if precision == "bf16" else 2  # Korthikanti's counts are of 16-bit values
    per_layer = 34 * sbh * scale
    body = (2 * sbh * scale * n_layers + per_layer) if checkpointing else per_layer * n_layers
    logits = 0 if fused_cross_entropy else 4 * seq_len * micro_batch * vocab_size
    return float(body + logits)


def plan(psi: float, gpus: int, *, activations: float = 0.0, accounting: str = "zero-paper", precision: str = "bf16",
         layout: Layout | None = None, accumulation: int = 1) -> list[Estimate]:
    """One Estimate per mode. accounting "trainer" needs the model's `layout` (FSDP2 gathers block by block)."""
    if accounting == "zero-paper":
        return [Estimate(mode, stage, *model_states(psi, gpus, stage, PAPER_BYTES[precision]), activations)
                for mode, stage in STAGES]
    if layout is None:
        raise ValueError("the trainer accounting needs the model's layout")
    estimates = []
    for mode, stage in STAGES:
        s = trainer_states(layout, gpus, mode, precision=precision, accumulation=accumulation)
        estimates.append(Estimate(mode, stage, s.params, s.grads + s.grad_buckets, s.optimizer, activations))
    return estimates


def accounting_note(accounting: str, precision: str, gpus: int = 2, accumulation: int = 1) -> str:
    """The accounting `plan` used, in words, for the header of its table."""
    if accounting == "zero-paper":
        p, g, k = PAPER_BYTES[precision]
        what = ("mixed precision: 16-bit weights and gradients, fp32 master weights and Adam states"
                if precision == "bf16" else "fp32: weights, gradients, Adam momentum and variance")
        return f"{p}+{g}+{k} bytes/param (zero-paper, {what})"
    if gpus == 1:
        return "trainer layout, one GPU: the plain model in every mode, 4+4+8 bytes/param"
    return (f"trainer layout ({precision}: fp32 weights, {precision} copies gathered by zero2/zero3, DDP buckets; "
            f"accumulation {accumulation})")


def format_plan(estimates: list[Estimate], header: str) -> str:
    gb = lambda b: f"{b / 1e9:10.2f}"  # noqa: E731
    lines = [header, f"{'mode':<14}{'params':>10}{'grads':>10}{'optimizer':>10}{'activ.':>10}{'total GB':>10}"]
    for e in estimates:
        lines.append(f"{e.mode + f' (ZeRO-{e.stage})':<14}{gb(e.params)}{gb(e.grads)}{gb(e.optimizer)}"
                     f"{gb(e.activations)}{gb(e.total)}")
    return "\n".join(lines)
