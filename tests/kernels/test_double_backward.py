"""The Triton Functions build no autograd graph in their backward, so a second derivative through them must raise
(torch's once_differentiable) rather than silently treat the first gradients as constants. The references, plain
PyTorch, give the true second derivative; the test checks that one is nonzero, so a silent zero would be wrong."""
import pytest
import torch

from gristmill.kernels import apply_rope, fused_linear_cross_entropy, rms_norm, rope_cache, swiglu, use_backend

_gen = torch.Generator().manual_seed(0)
_x = torch.randn(6, 16, generator=_gen)
_w = torch.randn(16, generator=_gen) * 0.1 + 1
_cos, _sin = rope_cache(5, 8)
_W = torch.randn(11, 16, generator=_gen) * 0.3
_y = torch.randint(0, 11, (6,), generator=_gen)


def _rms(x):
    return rms_norm(x, _w)


def _swiglu(x):
    return swiglu(x, x * 0.5 + 1)


def _rope(x):
    q = x.reshape(1, 6, 2, 8)[:, :5]
    return apply_rope(q, q[:, :, :1] * 2, _cos, _sin)[1]


def _rope_inplace(x):
    q = x.reshape(1, 6, 2, 8)[:, :5] * 1.0  # a non-leaf, as in the model
    k = q[:, :, :1] * 2
    return apply_rope(q, k, _cos, _sin, inplace=True)[0]


def _flce(x):
    return fused_linear_cross_entropy(x, _W, _y, z_loss=1e-3)


@pytest.mark.parametrize("op", [_rms, _swiglu, _rope, _rope_inplace, _flce],
                         ids=["rms_norm", "swiglu", "rope", "rope_inplace", "fused_linear_ce"])
def test_second_derivative_raises_on_triton_and_is_real_on_reference(op):
    def grad_of_grad():
        x = _x.clone().requires_grad_()
        (g,) = torch.autograd.grad(op(x).pow(2).sum(), x, create_graph=True)
        g.pow(2).sum().backward()  # runs the graph of g, where once_differentiable left its error node
        return g, x.grad

    with use_backend("torch"):
        _, second = grad_of_grad()
    assert second.abs().max() > 1e-3  # a real second derivative exists, so zeros would be silently wrong
    with use_backend("triton"):
        with pytest.raises(RuntimeError, match="once_differentiable"):
            grad_of_grad()
        # first derivatives are unaffected by the guard
        x = _x.clone().requires_grad_()
        op(x).pow(2).sum().backward()
    xr = _x.clone().requires_grad_()
    with use_backend("torch"):
        op(xr).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-5)
