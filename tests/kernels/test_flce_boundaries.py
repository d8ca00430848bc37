"""Edges of the fused linear cross-entropy that the main tests leave open, each found by a mutation audit: an
ignore_index inside the vocabulary, strided targets, no tokens at all, logits far from zero, chunk-size rounding,
the limits of the options, which dW / dx buffers get made, autocast's dtype, and the reference and dispatcher."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gristmill.kernels import fused_linear_cross_entropy, use_backend
from gristmill.kernels.fused_linear_cross_entropy import (
    _vocab_block, chunk_rows, fused_linear_cross_entropy_forward, fused_linear_cross_entropy_reference,
)
from flce_cases import by_hand, problem, triton_loss as _triton

aten = torch.ops.aten


def _problem(rows, hidden, vocab, seed):
    return problem(rows, hidden, vocab, seed, ignore_every=None)


def _reference(x, w, y, **kw):
    """The definition on the full logits, in fp32 (fp64 for fp64 inputs)."""
    return by_hand(x, w, y, fp32_logits=True, **kw)


class _PoisonEmpty(TorchDispatchMode):
    """Fills each new uninitialised float tensor with nan: whatever is read before it is written turns nan."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in (aten.empty, aten.empty_like, aten.empty_strided) and out.is_floating_point():
            out.fill_(float("nan"))
        return out


class _Made(TorchDispatchMode):
    """Records what each allocation and each matmul makes, as (kind, shape, dtype)."""

    KINDS = {aten.empty: "alloc", aten.empty_like: "alloc", aten.empty_strided: "alloc", aten.zeros: "alloc",
             aten.mm: "matmul", aten.addmm: "matmul", aten.addmm_: "matmul"}

    def __init__(self):
        super().__init__()
        self.made = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in self.KINDS:
            self.made.append((self.KINDS[func.overloadpacket], tuple(out.shape), out.dtype))
        return out

    def count(self, kind, shape, dtype=None):
        return sum(k == kind and s == shape and dtype in (None, d) for k, s, d in self.made)


def test_ignore_index_inside_the_vocabulary(values_and_grads):
    # A pad token id as ignore_index: 3 is a class like any other, so only `target == 3` marks the ignored rows
    # (a sign test would keep them). 9 rows in chunks of 4: the last chunk is one row.
    x, w, y = _problem(9, 16, 40, seed=20)
    assert chunk_rows(9, 16, 40) == 4
    y[[1, 5, 6]] = 3
    kw = {"ignore_index": 3, "z_loss": 1e-2}
    out, grads = values_and_grads(lambda x, w: _triton(**kw)(x, w, y), x, w)
    ref_out, ref_grads = values_and_grads(lambda x, w: _reference(x, w, y, **kw), x, w)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)


def test_strided_targets():
    # Every other token's target: a view with stride 2, which the kernel must not read as if it were dense.
    x, w, _ = _problem(6, 16, 40, seed=21)
    y = torch.randint(0, 40, (12,), generator=torch.Generator().manual_seed(1))[::2]
    assert y.stride() == (2,)
    torch.testing.assert_close(_triton()(x, w, y), _reference(x, w, y))


# The kernel's second pass loads 0.0 into the masked lanes past the row's end, so exp(0 - lse) overflows there
# when lse < -88; those lanes are never stored, and numpy's warning about them says nothing about the result.
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")
def test_logits_far_from_zero(values_and_grads):
    """Online softmax over two vocab blocks (1024 + 76 columns on the CPU), its reference point moved by constant
    features: row 0 sits near -200 (exp underflows in fp32 unless shifted by the running max); row 1's first block
    is 100 above its second (a max that followed each block down would overflow exp); row 2's second block is 60
    above its first (the first block's sum must be rescaled). F.cross_entropy on the full logits handles all three."""
    assert _vocab_block(1100, torch.device("cpu"))[0] < 1100  # else one block holds the row and this tests less
    x, w, y = _problem(3, 16, 1100, seed=22)
    w[:, :2] = 0.0
    w[:1024, 0] = 1.0
    w[1024:, 1] = 1.0
    x[:, :2] = torch.tensor([[-200.0, -200.0], [50.0, -50.0], [-30.0, 30.0]])
    y[:] = torch.tensor([5, 1030, 7])
    out, grads = values_and_grads(lambda x, w: _triton()(x, w, y), x, w)
    ref_out, ref_grads = values_and_grads(lambda x, w: _reference(x, w, y), x, w)
    assert torch.isfinite(ref_out[0]) and ref_out[0] > 1.0
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-4)


def test_no_tokens():
    # An empty batch: "sum" is 0 with a zero dW (which must not come from an uninitialised buffer), "mean" is
    # nan, both as F.cross_entropy gives.
    x = torch.zeros(0, 16, requires_grad=True)
    w = torch.randn(40, 16).requires_grad_()
    y = torch.zeros(0, dtype=torch.long)
    assert chunk_rows(0, 16, 40) == 1
    with _PoisonEmpty():
        loss = _triton(reduction="sum")(x, w, y)
        loss.backward()
    assert loss.item() == F.cross_entropy(torch.zeros(0, 40), y, reduction="sum").item() == 0.0
    assert torch.equal(w.grad, torch.zeros_like(w)) and x.grad.shape == (0, 16)
    assert torch.isnan(_triton()(x, w, y)) and torch.isnan(F.cross_entropy(torch.zeros(0, 40), y))


@pytest.mark.parametrize("accum_dtype", [None, torch.float32])
def test_weight_grad_summed_over_chunks_from_scratch(accum_dtype):
    # bf16 weights, 9 rows in chunks of 4, 4 and 1; every uninitialised buffer starts as nan, so dW is only finite
    # if the first chunk overwrites it and the others add to it, in the accumulator's dtype.
    x, w, y = _problem(9, 16, 40, seed=23)
    x, w = x.bfloat16(), w.bfloat16()
    y[4] = -100
    with _PoisonEmpty():
        loss, grad_x, grad_w = fused_linear_cross_entropy_forward(x, w, y, accum_dtype=accum_dtype)
    assert grad_w.dtype == (accum_dtype or torch.bfloat16)
    xr, wr = x.double().requires_grad_(), w.double().requires_grad_()
    ref = _reference(xr, wr, y)
    ref.backward()
    for got, want in ((loss, ref), (grad_x, xr.grad), (grad_w, wr.grad)):
        torch.testing.assert_close(got.double(), want.detach(), rtol=0, atol=0.02 * want.abs().max().item())


def test_buffers_made_for_each_gradient():
    # 9 rows of hidden 16 over a vocab of 40, in chunks of 4, 4 and 1: dW is (40, 16), dx (9, 16), dx's chunks
    # (4, 16) and (1, 16). A frozen input gets no gradient buffer and no matmul for it.
    x, w, y = _problem(9, 16, 40, seed=24)
    assert chunk_rows(9, 16, 40) == 4
    dw, dx = (40, 16), (9, 16)

    def made(x_grad, w_grad, dtype=torch.float32, **kw):
        xl = x.detach().to(dtype).requires_grad_(x_grad)
        wl = w.detach().to(dtype).requires_grad_(w_grad)
        with _Made() as mode:
            _triton(**kw)(xl, wl, y).backward()
        return mode

    both = made(True, True)
    # dW is summed in place: one V x H buffer, no second one for the chunks' products
    assert both.count("alloc", dw) == 1 and both.count("alloc", dx) == 1
    assert both.count("matmul", dw) == 3 and both.count("matmul", (4, 16)) == 2
    frozen_w = made(True, False)
    assert frozen_w.count("alloc", dw) == frozen_w.count("matmul", dw) == 0 and frozen_w.count("alloc", dx) == 1
    frozen_x = made(False, True)
    assert frozen_x.count("alloc", dx) == frozen_x.count("matmul", (4, 16)) == frozen_x.count("matmul", (1, 16)) == 0
    assert frozen_x.count("alloc", dw) == 1
    # bf16 weights with an fp32 accumulator asked for through the public function: the accumulator is fp32
    wide = made(True, True, dtype=torch.bfloat16, accum_dtype=torch.float32)
    assert wide.count("alloc", dw, torch.float32) == 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_projects_in_its_dtype(dtype):
    # Under autocast eager PyTorch runs the matmul in the autocast dtype and cross_entropy in fp32; so do we.
    x, w, y = _problem(8, 32, 300, seed=25)
    with torch.autocast("cpu", dtype=dtype):
        ours = _triton()(x, w, y)
        eager = F.cross_entropy(x @ w.t(), y)
    assert ours.dtype == eager.dtype == torch.float32
    torch.testing.assert_close(ours, eager, rtol=1e-5, atol=1e-5)
    # bf16 rounding moves the loss by far more than that tolerance, so full-precision logits would fail the check
    assert abs(_reference(x, w, y) - F.cross_entropy((x.bfloat16() @ w.bfloat16().t()).float(), y)) > 1e-4


def test_chunk_rows_round_up_like_liger():
    # Liger-Kernel: inc_factor = cdiv(V, H), chunk = next_power_of_2(cdiv(BT, inc_factor)). At 33 rows, hidden 64,
    # vocab 100: cdiv(100, 64) = 2 and cdiv(33, 2) = 17 give 32 (flooring either division gives 33 or 16), above
    # the 16 of hidden / 4.
    assert chunk_rows(33, 64, 100) == 32
    # a vocabulary below hidden is one chunk's worth, not zero of them
    assert chunk_rows(10, 64, 32) == 10


def test_label_smoothing_of_one():
    # The whole target mass spread evenly over the vocab: the upper limit, which PyTorch accepts too.
    x, w, y = _problem(4, 16, 40, seed=26)
    torch.testing.assert_close(_triton(label_smoothing=1.0)(x, w, y),
                               F.cross_entropy(x @ w.t(), y, label_smoothing=1.0))


def test_rejects_bad_options_and_shapes():
    x, w, y = _problem(8, 16, 40, seed=27)
    for kw, match in (({"label_smoothing": 1.1}, "label_smoothing"), ({"label_smoothing": -0.1}, "label_smoothing"),
                      ({"z_loss": -1e-4}, "z_loss")):
        with pytest.raises(ValueError, match=match):
            _triton(**kw)(x, w, y)
    with pytest.raises(RuntimeError, match="label_smoothing"):  # PyTorch's own limit, for comparison
        F.cross_entropy(x @ w.t(), y, label_smoothing=1.1)
    with pytest.raises(ValueError, match="weight"):  # hidden 16 against a weight of hidden 8
        _triton()(x, w[:, :8], y)
    with pytest.raises(ValueError, match="weight"):  # a 3-D weight whose second dim happens to be 16
        _triton()(x, w.unsqueeze(-1), y)
    with pytest.raises(ValueError, match="targets"):  # as many targets as rows, in the wrong shape
        _triton()(x, w, y.view(2, 4))
    y[2] = -1  # negative, and not ignore_index: PyTorch refuses it as well
    with pytest.raises(ValueError, match="outside"):
        _triton()(x, w, y)
    with pytest.raises(IndexError):
        F.cross_entropy(x @ w.t(), y)


def test_reference_is_fp32_for_bf16_inputs():
    x, w, y = _problem(8, 16, 40, seed=28)
    x, w = x.bfloat16(), w.bfloat16()
    loss = fused_linear_cross_entropy_reference(x, w, y, z_loss=1e-2)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, _reference(x, w, y, z_loss=1e-2))


def test_torch_backend_passes_every_option():
    x, w, y = _problem(8, 16, 40, seed=29)
    y[1] = 3
    kw = {"ignore_index": 3, "z_loss": 1e-2, "label_smoothing": 0.1, "reduction": "sum"}
    with use_backend("torch"):
        got = fused_linear_cross_entropy(x, w, y, **kw)
    torch.testing.assert_close(got, _reference(x, w, y, **kw))
