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

Activations are not sharded by ZeRO. They are counted tensor by tensor for this model (RMSNorm, SwiGLU, RoPE,
SDPA, no dropout; not Korthikanti et al.'s GPT block) as train.py runs it: fp32 master weights, so the embedding
and the residual stream stay fp32 under bf16 autocast, which runs the matmuls and SDPA in c = 2 bytes (fp32:
c = 4). Per token of a block, with d = d_model, kv = n_kv_heads * head_dim, f = ffn_hidden, h = n_heads:
    the two norms       2 (4d + 4): the fp32 input and 1/rms (the torch references also keep x_hat, 2 * 4d)
    matmul inputs       5 c d under autocast (each of q, k, v, gate, up casts the norm's output for itself);
                        fp32: 2 * 4d (the projections share the norm's output)
    attention           c (2d + 2kv) (q, k, v, output; GQA's kv are not repeated) + 4h (fp32 logsumexp)
    MLP                 3 c f: gate, up, their product (the torch SwiGLU also keeps silu(gate): 4 c f)
    qk_norm             c (d + kv) + 4 (h + n_kv_heads) (torch: (4 + c)(d + kv) + ...); without it, the torch
                        RoPE keeps bf16 copies of cos and sin per layer, 4 c head_dim per position
Outside the blocks: the final norm (4d + 4) and the fused cross-entropy's d(loss)/d(hidden) (c d); the torch
reference instead keeps x_hat, the hidden states in c bytes and the fp32 log-softmax (4 * vocab). The fused
loss also keeps the output projection's fp32 gradient from forward to backward: it becomes its .grad, counted
with the gradients. With activation checkpointing a block keeps only its fp32 input (4d per token), and one
block at a time is recomputed: n_layers * 4d + one block + the root. Checked against the storages a tiny
model's forward really keeps (tests/trainer/activation_probe.py): exact but for the loss's 4-byte scalars.
Left out: the attention kernel's small extras on a GPU (flash's RNG state; the memory-efficient kernel pads
its logsumexp), document_masking's [b, 1, s, s] mask, torch.compile's own choice of what to save, the
transient tensors of the backward itself (activation gradients), and the caching allocator's slack.
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


KERNEL_PATHS = ("triton", "torch")


def layer_activation_bytes(mcfg, *, seq_len: int, micro_batch: int, precision: str = "bf16",
                           kernels: str = "triton") -> float:
    """Bytes one block keeps for its backward over micro_batch x seq_len tokens (module docstring: Activations)."""
    c = 2 if precision == "bf16" else 4  # the matmuls' dtype under autocast (bf16), or fp32
    d, f, kv, h, g = mcfg.d_model, mcfg.ffn_hidden, mcfg.n_kv_heads * mcfg.head_dim, mcfg.n_heads, mcfg.n_kv_heads
    norms = 2 * (4 * d + 4) + (2 * 4 * d if kernels == "torch" else 0)  # fp32 input, 1/rms (torch: and x_hat)
    # bf16: each of the 5 projections reading a norm's fp32 output casts it for itself; fp32: they share it
    matmul_inputs = 5 * c * d if precision == "bf16" else 2 * 4 * d
    attention = c * (2 * d + 2 * kv) + 4 * h  # q, k, v and the output in the SDPA kernel's saves, fp32 logsumexp
    mlp = (4 if kernels == "torch" else 3) * c * f  # gate, up, (torch: silu(gate),) their product
    per_token = norms + matmul_inputs + attention + mlp
    per_position = 0
    if mcfg.qk_norm:  # each head's q and k before the norm (torch: an fp32 copy, then x_hat), its 1/rms
        per_token += (4 + c) * (d + kv) + 4 * (h + g) if kernels == "torch" else c * (d + kv) + 4 * (h + g)
    elif kernels == "torch" and precision == "bf16":
        per_position = 4 * c * mcfg.head_dim  # the reference RoPE's bf16 copies of cos and sin, for q and for k
    return float(seq_len * micro_batch * per_token + seq_len * per_position)


def activation_bytes(mcfg, *, seq_len: int, micro_batch: int, checkpointing: bool, precision: str = "bf16",
                     kernels: str = "triton") -> float:
    """Bytes a micro-batch keeps for its backward at the peak (module docstring: Activations). kernels: "triton"
    (what `kernels: auto` runs on a GPU) or "torch" (the PyTorch references, as on the CPU)."""
    if kernels not in KERNEL_PATHS:
        raise ValueError(f"kernels must be one of {', '.join(KERNEL_PATHS)}; got {kernels!r}")
    c = 2 if precision == "bf16" else 4
    tokens, d = seq_len * micro_batch, mcfg.d_model
    layer = layer_activation_bytes(mcfg, seq_len=seq_len, micro_batch=micro_batch, precision=precision,
                                   kernels=kernels)
    # the final norm's input and 1/rms; then the fused loss's precomputed d(loss)/d(hidden), or, unfused (torch),
    # the norm's x_hat, the normed hidden states in the matmul's dtype and the fp32 log-softmax of the logits
    if kernels == "triton":
        root = tokens * (4 * d + 4 + c * d)
    else:
        root = tokens * (4 * d + 4 + 4 * d + c * d + 4 * mcfg.vocab_size)
    blocks = tokens * 4 * d * mcfg.n_layers + layer if checkpointing else layer * mcfg.n_layers
    return float(blocks + root)


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
