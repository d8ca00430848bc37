"""RMSNorm: the Triton kernels against the PyTorch reference, and the reference against transformers' LlamaRMSNorm."""
import pytest
import torch

from gristmill.kernels import rms_norm, use_backend
from gristmill.kernels.rms_norm import rms_norm_reference


def _triton(x, w, eps=1e-6):
    with use_backend("triton"):
        return rms_norm(x, w, eps)


@pytest.mark.parametrize("shape", [(37, 100), (2, 3, 129), (5, 7)])
def test_triton_matches_reference_fp32(shape, values_and_grads):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen) * 3
    w = torch.randn(shape[-1], generator=gen)
    out, grads = values_and_grads(_triton, x, w)
    ref_out, ref_grads = values_and_grads(rms_norm_reference, x, w)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)


def test_strided_inputs(values_and_grads):
    gen = torch.Generator().manual_seed(1)
    padded = torch.randn(37, 128, generator=gen)[:, :100]  # rows 128 apart
    transposed = torch.randn(100, 37, generator=gen).t()  # columns not contiguous
    w = torch.randn(100, generator=gen)
    for x in (padded, transposed):
        out, grads = values_and_grads(lambda a, b: _triton(a, b, 1e-5), x, w)
        ref_out, ref_grads = values_and_grads(lambda a, b: rms_norm_reference(a, b, 1e-5), x, w)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(grads, ref_grads)


def test_strided_weight_and_one_row(values_and_grads):
    # A weight that is a strided view (every other element of a bigger tensor): the kernels index it by column.
    gen = torch.Generator().manual_seed(2)
    w_big = torch.randn(2 * 24, generator=gen)
    for x in (torch.randn(3, 24, generator=gen), torch.randn(1, 24, generator=gen)):
        out, grads = values_and_grads(lambda a, b: _triton(a, b[::2]), x, w_big)
        ref_out, ref_grads = values_and_grads(lambda a, b: rms_norm_reference(a, b[::2]), x, w_big)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(grads, ref_grads)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reference_is_llama_rms_norm(dtype):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    norm = llama.LlamaRMSNorm(48, eps=1e-5).to(dtype)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 1.5, 48))
    x = torch.randn(3, 5, 48, generator=torch.Generator().manual_seed(2)).to(dtype)
    assert torch.equal(rms_norm_reference(x, norm.weight, 1e-5), norm(x))


def test_rejects_wrong_weight():
    with pytest.raises(ValueError, match="does not fit"):
        rms_norm(torch.ones(2, 8), torch.ones(7))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_realistic(dtype, values_and_grads, assert_no_worse_than_eager):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 1024, 4096, generator=gen).cuda()
    w = (1 + 0.1 * torch.randn(4096, generator=gen)).cuda()
    out, grads = values_and_grads(rms_norm, x.to(dtype), w.to(dtype))
    eager_out, eager_grads = values_and_grads(rms_norm_reference, x.to(dtype), w.to(dtype))
    if dtype == torch.float32:
        torch.testing.assert_close(out, eager_out)
        torch.testing.assert_close(grads, eager_grads, rtol=1e-4, atol=1e-3)  # dw sums 4096 rows in another order
    else:
        exact_out, exact_grads = values_and_grads(rms_norm_reference, x.to(dtype).double(), w.to(dtype).double())
        assert_no_worse_than_eager(out + grads, eager_out + eager_grads, exact_out + exact_grads)
