"""Fused training kernels (Triton on CUDA, PyTorch references elsewhere): RMSNorm, SwiGLU, RoPE, linear + CE.

Each op's file holds its Triton kernels, its autograd Function and its plain PyTorch reference; `dispatch`
chooses between them per call (GRISTMILL_KERNELS=auto|triton|torch, or `set_backend`).
"""
from gristmill.kernels.dispatch import backend, set_backend, use_backend, use_triton
from gristmill.kernels.fused_linear_cross_entropy import fused_linear_cross_entropy
from gristmill.kernels.rms_norm import rms_norm
from gristmill.kernels.rope import apply_rope, rope_cache
from gristmill.kernels.swiglu import swiglu

__all__ = [
    "apply_rope", "backend", "fused_linear_cross_entropy", "rms_norm", "rope_cache", "set_backend", "swiglu",
    "use_backend", "use_triton",
]
