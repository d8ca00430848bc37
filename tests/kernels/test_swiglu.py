"""SwiGLU: the fused Triton kernels against silu(a) * b in PyTorch."""
import pytest
import torch
import torch.nn.functional as F

from gristmill.kernels import swiglu, use_backend
from gristmill.kernels.swiglu import swiglu_reference


def _triton(a, b):
    with use_backend("triton"):
        return swiglu(a, b)


@pytest.mark.parametrize("shape", [(37, 100), (2, 5, 129), (3,), (1100,)])  # 1100: more than one 1024 block
def test_triton_matches_reference_fp32(shape, values_and_grads):
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(shape, generator=gen) * 4, torch.randn(shape, generator=gen)
    out, grads = values_and_grads(_triton, a, b)
    ref_out, ref_grads = values_and_grads(swiglu_reference, a, b)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)


def test_non_contiguous_halves_of_a_fused_projection(values_and_grads):
    gate_up = torch.randn(8, 37, 2 * 24, generator=torch.Generator().manual_seed(1))
    out, grads = values_and_grads(lambda x: _triton(*x.chunk(2, dim=-1)), gate_up)
    ref_out, ref_grads = values_and_grads(lambda x: F.silu(x[..., :24]) * x[..., 24:], gate_up)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)


def test_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="one shape and dtype"):
        swiglu(torch.ones(2, 3), torch.ones(3, 2))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_realistic(dtype, values_and_grads, assert_no_worse_than_eager):
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(4, 1024, 11008, generator=gen).cuda()
    b = torch.randn(4, 1024, 11008, generator=gen).cuda()
    out, grads = values_and_grads(swiglu, a.to(dtype), b.to(dtype))
    eager_out, eager_grads = values_and_grads(swiglu_reference, a.to(dtype), b.to(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(out, eager_out)
        torch.testing.assert_close(grads, eager_grads)
    else:
        exact_out, exact_grads = values_and_grads(swiglu_reference, a.to(dtype).double(), b.to(dtype).double())
        assert_no_worse_than_eager(out + grads, eager_out + eager_grads, exact_out + exact_grads)
