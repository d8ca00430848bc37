"""RMSNorm, SwiGLU and RoPE at their edges, each against a formula written out here in float64.

The edges: strided views built inside the differentiated function (a leaf's clone() would make them contiguous),
upstream gradients that are not contiguous, fp16 rounding rules (fp16, not bf16: Triton's interpreter casts
fp32 to bf16 by truncation, unlike the GPU), cos/sin tables whose halves differ, the default eps, empty batches,
and the shape checks.
"""
import math

import pytest
import torch

from gristmill.kernels import apply_rope, rms_norm, rope_cache, swiglu, use_backend


def _grads(fn, inputs, cotangent):
    """fn's output and the gradients of <fn(inputs), cotangent> with respect to every input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    cots = cotangent if isinstance(cotangent, tuple) else (cotangent,)
    sum((o.double() * c.double()).sum() for o, c in zip(outs, cots)).backward()
    return [o.detach() for o in outs], [leaf.grad for leaf in leaves]


def _close(actual, expected, **tol):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a.double(), e.double(), **tol)


# --- RMSNorm ---------------------------------------------------------------------------------------------------

def _rms_norm_f64(x, w, eps):
    x = x.double()
    return w.double() * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def test_rms_norm_on_a_padded_view_with_a_transposed_upstream_grad():
    # x is every row of a (37, 128) buffer cut to 100 columns, so rows are 128 apart; the loss reads y.t(), so
    # dy arrives transposed. 37 rows over 4 programs leaves the last program a short run.
    gen = torch.Generator().manual_seed(10)
    buf, w = torch.randn(37, 128, generator=gen) * 2, torch.randn(100, generator=gen)
    cot = torch.randn(100, 37, generator=gen)

    def triton_path(buf, w):
        with use_backend("triton"):
            return rms_norm(buf[:, :100], w, 1e-5).t()

    out, grads = _grads(triton_path, (buf, w), cot)
    ref_out, ref_grads = _grads(lambda b, w: _rms_norm_f64(b[:, :100], w, 1e-5).t(), (buf.double(), w.double()),
                                cot)
    _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-5)
    assert grads[0][:, 100:].abs().max() == 0  # the padding gets no gradient


def test_rms_norm_upstream_grad_broadcast_over_rows():
    # dy = v expanded over the rows has row stride 0.
    gen = torch.Generator().manual_seed(11)
    x, w, v = torch.randn(5, 3, 12, generator=gen), torch.randn(12, generator=gen), torch.randn(12, generator=gen)

    def grads(fn, x, w):
        x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
        fn(x, w).backward(v.expand(5, 3, 12))
        return [x.grad, w.grad]

    def triton_path(x, w):
        with use_backend("triton"):
            return rms_norm(x, w, 1e-6)

    _close(grads(triton_path, x, w), grads(lambda x, w: _rms_norm_f64(x, w, 1e-6), x.double(), w.double()),
           rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["triton", "torch"])
def test_rms_norm_default_eps_is_1e_6(path):
    # mean(x^2) is about 1e-6 here, so eps = 1e-6 halves it against eps = 0 and 1e-5 would be far off.
    gen = torch.Generator().manual_seed(12)
    x, w = torch.randn(6, 20, generator=gen) * 1e-3, torch.randn(20, generator=gen)
    cot = torch.randn(6, 20, generator=gen)
    with use_backend(path):
        out, grads = _grads(rms_norm, (x, w), cot)
    ref_out, ref_grads = _grads(lambda x, w: _rms_norm_f64(x, w, 1e-6), (x.double(), w.double()), cot)
    _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-6)


def test_rms_norm_reference_default_eps_is_1e_6():
    from gristmill.kernels.rms_norm import rms_norm_reference

    x, w = torch.full((2, 4), 1e-3), torch.ones(4)
    torch.testing.assert_close(rms_norm_reference(x, w), x / math.sqrt(1e-6 + 1e-6))


def test_rms_norm_large_eps_fp32():
    gen = torch.Generator().manual_seed(13)
    x, w = torch.randn(9, 33, generator=gen), torch.randn(33, generator=gen)
    cot = torch.randn(9, 33, generator=gen)

    def triton_path(x, w):
        with use_backend("triton"):
            return rms_norm(x, w, 0.5)

    out, grads = _grads(triton_path, (x, w), cot)
    ref_out, ref_grads = _grads(lambda x, w: _rms_norm_f64(x, w, 0.5), (x.double(), w.double()), cot)
    _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-5)


def test_rms_norm_fp16_input_fp32_weight_rounds_x_hat_first():
    # HF LLaMA's rule: x_hat = x / rms(x) is rounded to x's dtype (fp16), then multiplied by the fp32 weight,
    # giving fp32. With weights that are powers of two, y / w is exactly the rounded x_hat.
    gen = torch.Generator().manual_seed(14)
    x = (torch.randn(37, 29, generator=gen) * 3).half()
    w = 2.0 ** torch.randint(-2, 3, (29,), generator=gen).float() * torch.where(torch.arange(29) % 3 == 0, -1, 1)
    cot = torch.randn(37, 29, generator=gen)
    with use_backend("triton"):
        (y,), (dx, dw) = _grads(lambda x, w: rms_norm(x, w, 1e-6), (x, w), cot)
    assert y.dtype == torch.float32 and dx.dtype == torch.float16 and dw.dtype == torch.float32
    x_hat = y / w
    assert torch.equal(x_hat.half().float(), x_hat)  # representable in fp16
    exact = _rms_norm_f64(x, torch.ones(29), 1e-6)
    torch.testing.assert_close(x_hat.double(), exact, rtol=2 ** -10, atol=2 ** -24)  # within half an fp16 ulp
    # dw sums dy * (the rounded x_hat), the x_hat the forward multiplied by w.
    torch.testing.assert_close(dw.double(), (cot.double() * x_hat.double()).sum(0), rtol=1e-5, atol=1e-5)
    _, (ref_dx, _) = _grads(lambda x, w: _rms_norm_f64(x, w, 1e-6), (x.double(), w.double()), cot)
    torch.testing.assert_close(dx.double(), ref_dx, rtol=2e-3, atol=2e-3)


def test_rms_norm_empty_batch():
    x, w = torch.randn(0, 3, 8, requires_grad=True), torch.randn(8, requires_grad=True)
    with use_backend("triton"):
        y = rms_norm(x, w)
    assert y.shape == (0, 3, 8)
    y.sum().backward()
    assert x.grad.shape == (0, 3, 8) and torch.equal(w.grad, torch.zeros(8))


def test_rms_norm_rejects_a_weight_that_is_not_one_dimensional():
    with pytest.raises(ValueError, match="does not fit"):
        rms_norm(torch.ones(2, 8), torch.ones(2, 8))
    with pytest.raises(ValueError, match="does not fit"):
        rms_norm(torch.ones(2, 8), torch.ones(1, 8))


# --- SwiGLU ----------------------------------------------------------------------------------------------------

def _swiglu_f64(a, b):
    a = a.double()
    return a * torch.sigmoid(a) * b.double()


def test_swiglu_fp32_against_the_formula():
    gen = torch.Generator().manual_seed(20)
    a, b = torch.randn(3, 1031, generator=gen) * 4, torch.randn(3, 1031, generator=gen)  # 3093: four blocks
    cot = torch.randn(3, 1031, generator=gen)

    def triton_path(a, b):
        with use_backend("triton"):
            return swiglu(a, b)

    out, grads = _grads(triton_path, (a, b), cot)
    ref_out, ref_grads = _grads(_swiglu_f64, (a.double(), b.double()), cot)
    _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-6)


def test_swiglu_transposed_upstream_grad():
    # The loss reads c.t(), so dc reaches the backward transposed (not contiguous).
    gen = torch.Generator().manual_seed(21)
    a, b = torch.randn(7, 45, generator=gen), torch.randn(7, 45, generator=gen)
    cot = torch.randn(45, 7, generator=gen)

    def triton_path(a, b):
        with use_backend("triton"):
            return swiglu(a, b).t()

    out, grads = _grads(triton_path, (a, b), cot)
    ref_out, ref_grads = _grads(lambda a, b: _swiglu_f64(a, b).t(), (a.double(), b.double()), cot)
    _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-6)


def test_swiglu_fp16_rounds_silu_before_the_product():
    # Eager F.silu(a) * b rounds silu(a) to fp16, then rounds the product: c = fp16(fp16(silu(a)) * b).
    gen = torch.Generator().manual_seed(22)
    a, b = (torch.randn(37, 29, generator=gen) * 3).half(), torch.randn(37, 29, generator=gen).half()
    with use_backend("triton"):
        c = swiglu(a, b)
    assert c.dtype == torch.float16
    expected = (_swiglu_f64(a, torch.ones(())).half().double() * b.double()).half()
    differ = c != expected
    # fp32 sigmoid can land an fp16 rounding on the other side of a tie, rarely; never by more than one ulp.
    assert differ.float().mean() < 0.01, differ.sum()
    torch.testing.assert_close(c, expected, rtol=2 ** -10, atol=2 ** -24)


def test_swiglu_empty_and_rejects_mixed_dtypes():
    a = torch.randn(0, 5, requires_grad=True)
    with use_backend("triton"):
        c = swiglu(a, torch.randn(0, 5))
        assert c.shape == (0, 5)
        with pytest.raises(ValueError, match="one shape and dtype"):
            swiglu(torch.ones(4, 3), torch.ones(4, 3, dtype=torch.float64))
    c.sum().backward()
    assert a.grad.shape == (0, 5)


# --- RoPE ------------------------------------------------------------------------------------------------------

def _rope_f64(x, cos, sin):
    """y1 = x1 cos1 - x2 sin1, y2 = x2 cos2 + x1 sin2 for x (b, s, h, d) and tables (s, d)."""
    half = x.shape[-1] // 2
    x, cos, sin = x.double(), cos.double()[:, None, :], sin.double()[:, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos[..., :half] - x2 * sin[..., :half], x2 * cos[..., half:] + x1 * sin[..., half:]), -1)


def _rope_path(cos, sin, inplace):
    def run(q, k):
        with use_backend("triton"):
            if inplace:
                return apply_rope(q * 1, k * 1, cos, sin, inplace=True)  # in place needs non-leaves
            return apply_rope(q, k, cos, sin)
    return run


@pytest.mark.parametrize("inplace", [False, True])
def test_rope_with_tables_whose_halves_differ(inplace):
    # rope_cache repeats one table in both halves; apply_rope takes any (seq, head_dim) tables, and each half of
    # cos and sin must go to its own half of the rotation, forward and backward.
    gen = torch.Generator().manual_seed(30)
    q, k = torch.randn(2, 5, 3, 10, generator=gen), torch.randn(2, 5, 1, 10, generator=gen)
    cos, sin = torch.randn(5, 10, generator=gen), torch.randn(5, 10, generator=gen)
    cots = (torch.randn(2, 5, 3, 10, generator=gen), torch.randn(2, 5, 1, 10, generator=gen))
    out, grads = _grads(_rope_path(cos, sin, inplace), (q, k), cots)
    ref_out, ref_grads = _grads(lambda q, k: (_rope_f64(q, cos, sin), _rope_f64(k, cos, sin)),
                                (q.double(), k.double()), cots)
    _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("inplace", [False, True])
def test_rope_tables_with_other_strides(inplace):
    # cos is a plain table; sin is the right half of a packed (seq, 2 * head_dim) buffer (another row stride);
    # in a second round both are every other column of a wider table (last stride 2).
    gen = torch.Generator().manual_seed(31)
    q, k = torch.randn(1, 6, 2, 8, generator=gen), torch.randn(1, 6, 2, 8, generator=gen)
    cots = (torch.randn(1, 6, 2, 8, generator=gen), torch.randn(1, 6, 2, 8, generator=gen))
    packed = torch.randn(6, 16, generator=gen)
    wide = torch.randn(6, 32, generator=gen)
    for cos, sin in ((torch.randn(6, 8, generator=gen), packed[:, 8:]), (wide[:, ::4], wide[:, 1::4])):
        out, grads = _grads(_rope_path(cos, sin, inplace), (q, k), cots)
        ref_out, ref_grads = _grads(lambda q, k: (_rope_f64(q, cos, sin), _rope_f64(k, cos, sin)),
                                    (q.double(), k.double()), cots)
        _close(out + grads, ref_out + ref_grads, rtol=1e-5, atol=1e-5)


def test_rope_cache_and_apply_rope_are_a_complex_rotation():
    # Pair x[i] with x[i + d/2] as the complex number z_i; position p multiplies it by exp(i p theta_i), with
    # theta_i = base^(-2i/d). Written with complex numbers, independently of transformers.
    seq, d, base = 7, 12, 300.0
    cos, sin = rope_cache(seq, d, base=base)
    theta = base ** (-2 * torch.arange(d // 2, dtype=torch.float64) / d)
    angle = torch.arange(seq, dtype=torch.float64)[:, None] * theta
    torch.testing.assert_close(cos.double(), torch.cat((angle.cos(), angle.cos()), -1), rtol=0, atol=1e-6)
    torch.testing.assert_close(sin.double(), torch.cat((angle.sin(), angle.sin()), -1), rtol=0, atol=1e-6)
    default_cos, _ = rope_cache(seq, d)
    torch.testing.assert_close(default_cos[:, 1].double(), torch.cos(torch.arange(seq) * 10000.0 ** (-2 / d)).double(),
                               rtol=0, atol=1e-6)

    gen = torch.Generator().manual_seed(32)
    q, k = torch.randn(2, seq, 3, d, generator=gen), torch.randn(2, seq, 2, d, generator=gen)
    rot = torch.polar(torch.ones_like(angle), angle)[:, None, :]
    for path in ("triton", "torch"):
        with use_backend(path):
            outs = apply_rope(q, k, cos, sin)
        for x, y in zip((q, k), outs):
            z = torch.complex(x[..., : d // 2].double(), x[..., d // 2:].double()) * rot
            torch.testing.assert_close(y.double(), torch.cat((z.real, z.imag), -1), rtol=1e-5, atol=1e-5)


def test_rope_fp16():
    gen = torch.Generator().manual_seed(33)
    q, k = torch.randn(2, 4, 3, 6, generator=gen).half(), torch.randn(2, 4, 1, 6, generator=gen).half()
    cos, sin = rope_cache(4, 6)
    with use_backend("triton"):
        outs = apply_rope(q, k, cos, sin)
    for x, y in zip((q, k), outs):
        assert y.dtype == torch.float16
        torch.testing.assert_close(y.double(), _rope_f64(x, cos, sin), rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("path", ["triton", "torch"])
def test_rope_rejects_mismatched_shapes(path):
    q, k = torch.randn(2, 4, 3, 8), torch.randn(2, 4, 1, 8)
    cos, sin = rope_cache(4, 8)
    bad = {
        "odd head_dim": (torch.randn(2, 4, 3, 7), torch.randn(2, 4, 1, 7), torch.randn(4, 7), torch.randn(4, 7)),
        "k seq": (q, torch.randn(2, 5, 1, 8), cos, sin),
        "k batch": (q, torch.randn(1, 4, 1, 8), cos, sin),
        "k head_dim": (q, torch.randn(2, 4, 1, 4), cos, sin),
        "sin shape": (q, k, cos, sin[:3]),
        "cos shape": (q, k, cos[:, :4], sin),
        "3d q": (q[0], k, cos, sin),
    }
    with use_backend(path):
        for name, args in bad.items():
            with pytest.raises(ValueError):
                apply_rope(*args)
                pytest.fail(f"accepted {name}")
