"""A LLaMA-style decoder-only transformer in plain PyTorch: RMSNorm pre-norm, SwiGLU, RoPE, no biases.

Knows nothing about distribution; `gristmill.trainer.parallel` wraps it. The math goes through the
gristmill.kernels API so CUDA tensors get the fused Triton kernels and everything else the PyTorch reference.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from gristmill.errors import UserError
from gristmill.kernels import apply_rope, fused_linear_cross_entropy, rms_norm, rope_cache, swiglu
from gristmill.trainer.checks import BOOL, Int, Number


# Each ModelConfig field's type and range, checked when a ModelConfig is made.
MODEL_CHECKS = {
    "vocab_size": Int(lo=1), "d_model": Int(lo=1), "n_layers": Int(lo=1), "n_heads": Int(lo=1),
    "n_kv_heads": Int(lo=0), "max_seq_len": Int(lo=1), "ffn_hidden": Int(lo=0), "rope_base": Number(lo=0, lo_open=True),
    "norm_eps": Number(lo=0, lo_open=True), "qk_norm": BOOL, "z_loss": Number(lo=0), "tie_embeddings": BOOL,
    "init_std": Number(lo=0, lo_open=True),
}


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 32768
    d_model: int = 512
    n_layers: int = 8
    n_heads: int = 8
    n_kv_heads: int = 0          # 0: n_heads (multi-head); fewer: grouped-query attention, as in Llama 3
    max_seq_len: int = 2048
    ffn_hidden: int = 0          # 0: 8/3 * d_model rounded up to a multiple of 64 (LLaMA's rule)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    qk_norm: bool = False        # RMSNorm on each head's q and k before RoPE (as in Qwen3 / OLMo-2)
    z_loss: float = 0.0          # coefficient of mean(logsumexp(logits)^2) added to the loss (PaLM)
    tie_embeddings: bool = False
    init_std: float = 0.02

    def __post_init__(self):
        for f in fields(self):
            MODEL_CHECKS[f.name].check("model: ", f.name, getattr(self, f.name))
        if self.ffn_hidden == 0:
            object.__setattr__(self, "ffn_hidden", 64 * math.ceil(8 * self.d_model / 3 / 64))
        if self.d_model % self.n_heads:
            raise UserError(f"model: d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_kv_heads == 0:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise UserError(f"model: n_heads {self.n_heads} is not a multiple of n_kv_heads {self.n_kv_heads}")
        if (self.d_model // self.n_heads) % 2:
            raise UserError(f"model: head dim {self.d_model // self.n_heads} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    def num_params(self, embedding: bool = True) -> int:
        """Exact parameter count (matches sum(p.numel()) of the built model). With embedding=False, the
        token embedding and output projection are left out (Kaplan et al.'s non-embedding count)."""
        d, h = self.d_model, self.ffn_hidden
        kv = self.n_kv_heads * self.head_dim
        attn = 2 * d * d + 2 * d * kv + (2 * self.head_dim if self.qk_norm else 0)
        per_layer = attn + 3 * d * h + 2 * d
        n = self.n_layers * per_layer + d  # + final norm
        if embedding:
            n += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token: 6N for the matmuls (N = non-embedding params plus the output projection,
        which is a matmul, not a lookup) plus attention scores and values, 12 * n_layers * d_model * seq_len
        (the PaLM / nanoGPT accounting)."""
        t = seq_len or self.max_seq_len
        n = self.num_params(embedding=False) + self.vocab_size * self.d_model
        return 6 * n + 12 * self.n_layers * self.d_model * t

    def to_dict(self) -> dict:
        return asdict(self)


IGNORE_INDEX = -100  # a target that does not count: PAD, which fills the tail of a bucket's last row


def lm_targets(ids: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """The next-token targets of ids [B, L]: ids[:, 1:], with PAD marked IGNORE_INDEX (never learned or scored)."""
    targets = ids[:, 1:]
    return targets if pad_id is None else targets.masked_fill(targets == pad_id, IGNORE_INDEX)


def doc_segments(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Per position of ids [B, T], the number of EOS tokens before it: packed documents each end with EOS, so
    this numbers the documents of a row (the row's first, possibly continued, document is 0)."""
    is_eos = (ids == eos_id).to(torch.int32)
    return torch.cumsum(is_eos, dim=1) - is_eos


def document_mask(segments: torch.Tensor) -> torch.Tensor:
    """[B, 1, T, T] booleans: query i may attend key j when j <= i and both are in the same document."""
    t = segments.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segments.device).tril()
    return ((segments[:, :, None] == segments[:, None, :]) & causal)[:, None]


# Names give the non-embedding parameter count (the vocabulary comes from the tokenizer).
# d_model / n_layers is kept near 100; head_dim is 64 throughout.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=64),  # tests
    "10m": ModelConfig(d_model=448, n_layers=4, n_heads=7),
    "25m": ModelConfig(d_model=576, n_layers=6, n_heads=9),
    "50m": ModelConfig(d_model=768, n_layers=7, n_heads=12),
    "125m": ModelConfig(d_model=1024, n_layers=10, n_heads=16),
    "350m": ModelConfig(d_model=1408, n_layers=14, n_heads=22),
    "760m": ModelConfig(d_model=1792, n_layers=20, n_heads=28),
    "1b": ModelConfig(d_model=2048, n_layers=20, n_heads=32),
}


def model_config(spec: str | dict, **overrides) -> ModelConfig:
    """A preset name, or a dict with an optional `preset` key plus ModelConfig fields to override."""
    if isinstance(spec, str):
        spec = {"preset": spec}
    spec = {**spec, **overrides}
    name = spec.pop("preset", None)
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UserError(f"model: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    if name is None:
        return ModelConfig(**spec)
    if not isinstance(name, str) or name not in PRESETS:
        raise UserError(f"model: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    if "d_model" in spec and "ffn_hidden" not in spec:
        spec["ffn_hidden"] = 0
    if "n_heads" in spec and "n_kv_heads" not in spec:
        spec["n_kv_heads"] = 0  # multi-head again, for the new head count
    return replace(base, **spec)


def model_config_for_data(spec: str | dict, **data) -> ModelConfig:
    """model_config(spec) with the shape the data gives (vocab_size, and max_seq_len where known). A spec that
    sets one of them to another value is refused: the data's would replace it without a word."""
    given = spec if isinstance(spec, dict) else {}
    for key, value in data.items():
        if key in given and given[key] != value:
            raise UserError(f"config: model: {key} {given[key]!r} differs from the data's {value}; the model takes "
                            f"its {key} from the data (leave {key} out)")
    return model_config(spec, **data)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.wk = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wv = nn.Linear(cfg.d_model, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.norm_eps) if cfg.qk_norm else None

    def forward(self, x, cos, sin, mask=None):
        b, t, d = x.shape
        q = self.wq(x).view(b, t, self.n_heads, self.head_dim)
        k = self.wk(x).view(b, t, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(b, t, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, k, cos, sin)
        # Grouped-query: query head i reads key/value head i // (n_heads / n_kv_heads), as transformers' repeat_kv.
        # mask: None for plain causal attention, else document_mask's booleans (causal within each document).
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                           is_causal=mask is None, enable_gqa=self.n_kv_heads != self.n_heads)
        return self.wo(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w_gate = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w_up = nn.Linear(cfg.d_model, cfg.ffn_hidden, bias=False)
        self.w_down = nn.Linear(cfg.ffn_hidden, cfg.d_model, bias=False)

    def forward(self, x):
        return self.w_down(swiglu(self.w_gate(x), self.w_up(x)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg)
        self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask=None):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rope_cache(cfg.max_seq_len, cfg.head_dim, cfg.rope_base, None, torch.float32)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Normal(0, 0.02) everywhere; residual output projections scaled by 1/sqrt(2 * n_layers) (GPT-2)."""
        std = self.config.init_std
        for name, p in self.named_parameters():
            if p.dim() == 1:
                nn.init.ones_(p)
            elif name.endswith(("attn.wo.weight", "mlp.w_down.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * self.config.n_layers))
            else:
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, segments: torch.Tensor | None = None,
                reduction: str = "mean", with_z_loss: bool = True):
        """idx: (batch, seq) token ids. Returns logits (batch, seq, vocab), or, with targets, the loss over the
        targets that count (IGNORE_INDEX marks PAD): their mean (a batch with none gives 0, not 0/0), or with
        reduction="sum" their sum, for a caller that divides by the scored targets of a whole batch. The loss
        includes the config's z-loss penalty unless with_z_loss=False (evaluation: plain cross-entropy).
        segments (batch, seq), e.g. doc_segments(idx, eos_id): attention stays within each document."""
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
        t = idx.shape[1]
        if t > self.config.max_seq_len:
            raise UserError(f"sequence length {t} exceeds the model's max_seq_len {self.config.max_seq_len}")
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.tok_emb(idx)
        mask = None if segments is None else document_mask(segments)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        x = self.norm(x)
        if targets is None:
            return self.lm_head(x)
        flat = targets.flatten()
        total = fused_linear_cross_entropy(x.flatten(0, 1), self.lm_head.weight, flat, ignore_index=IGNORE_INDEX,
                                           z_loss=self.config.z_loss if with_z_loss else 0.0, reduction="sum")
        if reduction == "sum":
            return total
        return total / (flat != IGNORE_INDEX).sum().clamp(min=1)
