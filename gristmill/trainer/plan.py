"""Memory per GPU under DDP and ZeRO stages 1-3, by the ZeRO paper's accounting (Rajbhandari et al., 2020).

Mixed-precision Adam holds 2 bytes/param of fp16 weights, 2 of fp16 gradients and K = 12 of optimizer state
(fp32 master weights, momentum, variance). With Psi parameters on N GPUs:
    DDP (stage 0)  16 Psi          stage 1  4 Psi + 12 Psi / N
    stage 2        2 Psi + 14 Psi / N          stage 3  16 Psi / N
This trainer keeps fp32 weights and runs bf16 autocast, i.e. 4 + 4 + 8 bytes; `--bytes trainer` uses that split.
Activations are not sharded by ZeRO; they follow Korthikanti et al. (2022) with flash attention (no s^2 term):
34 * seq * batch * d_model bytes per layer, or with activation checkpointing 2 * s * b * d per layer (the
saved block inputs) plus one layer recomputed at a time; plus fp32 logits (4 * s * b * vocab) when the
cross-entropy is not fused (CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

BYTES = {"zero-paper": (2, 2, 12), "trainer": (4, 4, 8)}
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


def model_states(psi: float, gpus: int, stage: int, bytes_per_param=BYTES["zero-paper"]) -> tuple[float, float, float]:
    """(params, grads, optimizer) bytes per GPU for `psi` parameters on `gpus` GPUs at ZeRO `stage`."""
    p, g, k = (b * psi for b in bytes_per_param)
    if stage >= 1:
        k /= gpus
    if stage >= 2:
        g /= gpus
    if stage >= 3:
        p /= gpus
    return p, g, k


def activation_bytes(*, n_layers: int, d_model: int, vocab_size: int, seq_len: int, micro_batch: int,
                     checkpointing: bool, fused_cross_entropy: bool = True) -> float:
    sbh = seq_len * micro_batch * d_model
    per_layer = 34 * sbh
    body = (2 * sbh * n_layers + per_layer) if checkpointing else per_layer * n_layers
    logits = 0 if fused_cross_entropy else 4 * seq_len * micro_batch * vocab_size
    return float(body + logits)


def plan(psi: float, gpus: int, *, activations: float = 0.0, accounting: str = "zero-paper") -> list[Estimate]:
    return [Estimate(mode, stage, *model_states(psi, gpus, stage, BYTES[accounting]), activations)
            for mode, stage in STAGES]


def format_plan(estimates: list[Estimate], header: str) -> str:
    gb = lambda b: f"{b / 1e9:10.2f}"  # noqa: E731
    lines = [header, f"{'mode':<14}{'params':>10}{'grads':>10}{'optimizer':>10}{'activ.':>10}{'total GB':>10}"]
    for e in estimates:
        lines.append(f"{e.mode + f' (ZeRO-{e.stage})':<14}{gb(e.params)}{gb(e.grads)}{gb(e.optimizer)}"
                     f"{gb(e.activations)}{gb(e.total)}")
    return "\n".join(lines)
