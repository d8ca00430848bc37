"""Every Triton kernel compiles to an sm_90 (H100) cubin with the ptxas that ships inside the triton wheel.

The interpreter that runs the CPU tests does not type-check a kernel the way the compiler does (loop-carried
types, constexpr use, casts), so on machines without a GPU this is what catches a kernel that would fail there.
"""
import pytest
import torch

pytestmark = [
    pytest.mark.triton_compiled,
    pytest.mark.skipif(torch.cuda.is_available(), reason="the GPU tests compile and run the kernels themselves"),
]

P = "*bf16"
KERNELS = {
    "rms_norm_forward": ("rms_norm", "_rms_norm_forward_kernel", 8, {"BLOCK": 4096}, dict(
        X=P, W=P, Y=P, RSTD="*fp32", x_row_stride="i32", y_row_stride="i32", n_cols="i32", eps="fp32")),
    "rms_norm_backward": ("rms_norm", "_rms_norm_backward_kernel", 8, {"BLOCK": 4096}, dict(
        DY=P, X=P, W=P, RSTD="*fp32", DX=P, DW_PARTIAL="*fp32", dy_row_stride="i32", x_row_stride="i32",
        dx_row_stride="i32", n_rows="i32", n_cols="i32", rows_per_program="i32")),
    "swiglu_forward": ("swiglu", "_swiglu_forward_kernel", 4, {"BLOCK": 1024}, dict(A=P, B=P, C=P, n_elements="i32")),
    "swiglu_backward": ("swiglu", "_swiglu_backward_kernel", 4, {"BLOCK": 1024}, dict(
        DC=P, A=P, B=P, DA=P, DB=P, n_elements="i32")),
    "rope": ("rope", "_rope_kernel", 4, {"HALF": 64, "BLOCK_H": 32, "BLOCK_HALF": 64, "TRANSPOSE": False}, dict(
        X=P, Y=P, COS="*fp32", SIN="*fp32", seq_len="i32", n_heads="i32", x_stride_b="i32", x_stride_s="i32",
        x_stride_h="i32", y_stride_b="i32", y_stride_s="i32", y_stride_h="i32", cos_stride_s="i32",
        sin_stride_s="i32")),
    "cross_entropy": ("fused_linear_cross_entropy", "_cross_entropy_kernel", 32, {"BLOCK": 16384}, dict(
        LOGITS=P, TARGETS="*i64", LOSS="*fp32", logits_row_stride="i32", n_cols="i32", ignore_index="i32",
        label_smoothing="fp32", z_loss="fp32", grad_scale="fp32")),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_compiles_for_h100(name):
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    module, attr, warps, constexprs, types = KERNELS[name]
    fn = getattr(importlib.import_module(f"gristmill.kernels.{module}"), attr)
    signature = {arg: "constexpr" if arg in constexprs else types[arg] for arg in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs), target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps})
    assert compiled.asm["cubin"][:4] == b"\x7fELF"
