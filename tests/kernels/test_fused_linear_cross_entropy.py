"""Fused linear cross-entropy against F.cross_entropy(x @ W.T, y) (plus z-loss written out here), chunked."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from gristmill.kernels import fused_linear_cross_entropy, use_backend
from gristmill.kernels.fused_linear_cross_entropy import chunk_rows, fused_linear_cross_entropy_reference
from flce_cases import IGNORE, by_hand as _by_hand, problem as _problem, triton_loss as _triton


@pytest.mark.parametrize("kw", [
    {},
    {"z_loss": 1e-2},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3, "label_smoothing": 0.2, "reduction": "sum"},
])
def test_matches_cross_entropy_fp32(kw, values_and_grads):
    x, w, y = _problem()
    # Several chunks, the last one partial, and two blocks of the vocab (1024 on the CPU), the last one masked.
    assert chunk_rows(37, 64, 1100) == 16
    out, grads = values_and_grads(lambda x, w: _triton(**kw)(x, w, y), x, w)
    ref_out, ref_grads = values_and_grads(lambda x, w: _by_hand(x, w, y, **kw), x, w)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)
    # and the reference that the dispatcher uses off the GPU is the same function
    torch.testing.assert_close(fused_linear_cross_entropy_reference(x, w, y, IGNORE, **kw), ref_out[0])


def test_batched_hidden_and_backward_scale():
    x, w, y = _problem(rows=2 * 19, seed=1)
    x3, y3 = x.view(2, 19, 64).requires_grad_(), y.view(2, 19)
    w1 = w.clone().requires_grad_()
    (3.0 * _triton(z_loss=1e-4)(x3, w1, y3)).backward()
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    (3.0 * _by_hand(xr, wr, y, z_loss=1e-4)).backward()
    assert x3.grad.shape == (2, 19, 64)
    torch.testing.assert_close(x3.grad.view(-1, 64), xr.grad)
    torch.testing.assert_close(w1.grad, wr.grad)


@pytest.mark.parametrize("accum_dtype", [None, torch.float32])
def test_bf16_no_worse_than_eager(accum_dtype, values_and_grads, assert_no_worse_than_eager):
    x, w, y = _problem(seed=8)
    x, w = x.bfloat16(), w.bfloat16()
    out, grads = values_and_grads(lambda x, w: _triton(z_loss=1e-3, accum_dtype=accum_dtype)(x, w, y), x, w)
    assert grads[1].dtype == torch.bfloat16
    eager = values_and_grads(lambda x, w: fused_linear_cross_entropy_reference(x, w, y, IGNORE, 1e-3), x, w)
    exact = values_and_grads(lambda x, w: _by_hand(x, w, y, z_loss=1e-3), x.double(), w.double())
    assert_no_worse_than_eager(out + grads, eager[0] + eager[1], exact[0] + exact[1])


def test_bf16_autocast_with_fp32_weights(values_and_grads, assert_no_worse_than_eager):
    # The trainer's setting: fp32 parameters, bf16 autocast; the loss and gradients come back in fp32.
    x, w, y = _problem(seed=9)

    def under_autocast(fn):
        def run(x, w):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn(x, w)
        return run

    out, grads = values_and_grads(under_autocast(lambda x, w: _triton(z_loss=1e-3)(x, w, y)), x, w)
    assert out[0].dtype == grads[0].dtype == grads[1].dtype == torch.float32
    eager = values_and_grads(under_autocast(lambda x, w: _by_hand(x, w, y, z_loss=1e-3)), x, w)
    exact = values_and_grads(lambda x, w: _by_hand(x, w, y, z_loss=1e-3), x.double(), w.double())
    assert_no_worse_than_eager(out + grads, eager[0] + eager[1], exact[0] + exact[1])


def test_autocast_sums_weight_grad_over_chunks_in_fp32():
    # 1024 rows at hidden 8 and vocab 512 make 64 chunks of 16. Eager autocast rounds dW to bf16 once, after one
    # fp32-accumulated matmul; summing 64 bf16 chunk products in bf16 rounds 64 times: about twice eager's error
    # (relative norm 0.0114 against 0.0060 here), where an fp32 sum stays level with eager (0.0066).
    x, w, y = _problem(rows=1024, hidden=8, vocab=512, seed=11, ignore_every=7)
    assert chunk_rows(1024, 8, 512) == 16

    def grad_w(fn, x, w):
        w = w.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fn(x, w).backward()
        return w.grad

    ours = grad_w(lambda x, w: _triton()(x, w, y), x, w)
    eager = grad_w(lambda x, w: _by_hand(x, w, y), x, w)
    exact = grad_w(lambda x, w: _by_hand(x, w, y), x.double(), w.double())
    err = lambda g: ((g.double() - exact).norm() / exact.norm()).item()
    assert ours.dtype == torch.float32
    assert err(ours) <= 1.3 * err(eager), (err(ours), err(eager))


def test_chunk_sizes():
    # 128k vocab at hidden 4096: hidden / 4 rows, so a chunk's logits are a quarter of dW's values
    assert chunk_rows(8192, 4096, 128256) == 1024 and chunk_rows(4096, 4096, 128256) == 1024
    # 32k vocab at hidden 1408 (the 350m preset) over 32k tokens: Liger's rule, 24 chunks' worth rounded to 16
    assert chunk_rows(32768, 1408, 32768) == 2048
    assert chunk_rows(5, 64, 100) == 5 and chunk_rows(1, 1, 10) == 1


def test_frozen_weight_and_second_backward():
    x, w, y = _problem(seed=2)
    x = x.requires_grad_()
    loss = _triton()(x, w, y)  # w needs no grad: only dx is made
    loss.backward(retain_graph=True)
    expected = torch.autograd.grad(_by_hand(x, w, y), x)[0]
    torch.testing.assert_close(x.grad, expected)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


def test_never_holds_full_logits():
    x, w, y = _problem(rows=96, seed=3)
    x, w = x.requires_grad_(), w.requires_grad_()

    class LargestTensor(TorchDispatchMode):  # sees every tensor that any op creates
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.largest = max(self.largest, t.numel() * t.element_size())
            return out

    with LargestTensor() as mode:
        _triton()(x, w, y).backward()
    # in bytes, since Triton's interpreter views its buffers as uint8; the largest legitimate ones are one
    # chunk of logits and dW
    assert mode.largest <= max(chunk_rows(96, 64, 1100) * 1100, 1100 * 64) * 4 < 96 * 1100 * 4


def test_all_targets_ignored_gives_nan_like_pytorch():
    x, w, y = _problem(rows=8, seed=4)
    y[:] = IGNORE
    out = _triton()(x, w, y)
    assert torch.isnan(out) and torch.isnan(F.cross_entropy(x @ w.t(), y, ignore_index=IGNORE))
    assert _triton(reduction="sum")(x, w, y).item() == 0.0


def test_rejects_bad_arguments():
    x, w, y = _problem(rows=8, seed=5)
    y[3] = 1100
    with pytest.raises(ValueError, match="outside"):
        _triton()(x, w, y)
    with pytest.raises(ValueError, match="reduction"):
        _triton(reduction="none")(x, w, y.clamp(max=99))
    with pytest.raises(ValueError, match="targets"):
        fused_linear_cross_entropy(x, w, y[:4])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_vocab_128k(dtype, values_and_grads, assert_no_worse_than_eager):
    x, w, y = _problem(rows=2048, hidden=4096, vocab=128256, seed=6, ignore_every=7)
    x, w, y = x.cuda().to(dtype), w.cuda().to(dtype), y.cuda()
    kw = {"z_loss": 1e-4, "label_smoothing": 0.1}
    assert chunk_rows(2048, 4096, 128256) < 2048
    out, grads = values_and_grads(lambda x, w: fused_linear_cross_entropy(x, w, y, **kw), x, w)
    if dtype == torch.float32:
        ref_out, ref_grads = values_and_grads(lambda x, w: _by_hand(x, w, y, **kw), x, w)
        torch.testing.assert_close(out, ref_out)
        torch.testing.assert_close(grads, ref_grads, rtol=1e-4, atol=1e-6)
    else:
        eager = values_and_grads(lambda x, w: fused_linear_cross_entropy_reference(x, w, y, IGNORE, **kw), x, w)
        exact = values_and_grads(lambda x, w: _by_hand(x, w, y, **kw), x.double(), w.double())
        assert_no_worse_than_eager(out + grads, eager[0] + eager[1], exact[0] + exact[1])


@pytest.mark.gpu
def test_gpu_autocast_fp32_weights(values_and_grads, assert_no_worse_than_eager):
    # The trainer's setting on a GPU: dW summed in fp32 (one mixed-precision addmm per chunk where PyTorch has it)
    x, w, y = _problem(rows=8192, hidden=1024, vocab=32768, seed=12, ignore_every=7)
    x, w, y = x.cuda(), w.cuda(), y.cuda()

    def under_autocast(fn):
        def run(x, w):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return fn(x, w)
        return run

    out, grads = values_and_grads(under_autocast(lambda x, w: fused_linear_cross_entropy(x, w, y, z_loss=1e-4)), x, w)
    assert grads[1].dtype == torch.float32
    eager = values_and_grads(under_autocast(lambda x, w: _by_hand(x, w, y, z_loss=1e-4)), x, w)
    exact = values_and_grads(lambda x, w: _by_hand(x, w, y, z_loss=1e-4), x.double(), w.double())
    assert_no_worse_than_eager(out + grads, eager[0] + eager[1], exact[0] + exact[1])


def _cuda_peak_bytes(fn) -> int:
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


@pytest.mark.gpu
def test_gpu_peak_memory_quarter_of_eager():
    x, w, y = _problem(rows=8192, hidden=4096, vocab=128256, seed=7)
    x, w, y = x.cuda().bfloat16().requires_grad_(), w.cuda().bfloat16().requires_grad_(), y.cuda()
    fused = _cuda_peak_bytes(lambda: fused_linear_cross_entropy(x, w, y).backward())
    x.grad = w.grad = None
    eager = _cuda_peak_bytes(lambda: fused_linear_cross_entropy_reference(x, w, y).backward())
    assert fused <= eager / 4, (fused / 2**20, eager / 2**20)


def test_label_smoothing_spreads_eps_over_all_v_classes():
    """PyTorch's (and Szegedy et al.'s) label smoothing: the target distribution is (1 - eps) onehot + eps / V,
    V counting the target class too. With V = 5 an eps / (V - 1) spread (mutant) is 25% off; the large-vocab
    tests (V = 1100) cannot tell the two apart. Exact values by hand on two rows, then F.cross_entropy."""
    import math

    eps, v = 0.3, 5
    # hidden = identity rows, so the logits are the weight's columns: easy to write out by hand
    w = torch.tensor([[0.0, 1.0], [1.0, 0.0], [2.0, -1.0], [-1.0, 0.5], [0.5, 0.5]])  # (V, H) = (5, 2)
    x = torch.eye(2)
    y = torch.tensor([2, 4])
    logits = x @ w.t()  # row 0: w[:, 0], row 1: w[:, 1]
    by_hand = []
    for row, t in zip(logits.tolist(), y.tolist()):
        lse = math.log(sum(math.exp(z) for z in row))
        by_hand.append(lse - (1 - eps) * row[t] - eps / v * sum(row))
    want = sum(by_hand) / 2
    with use_backend("triton"):
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        got = fused_linear_cross_entropy(xg, wg, y, label_smoothing=eps)
        got.backward()
    assert got.item() == pytest.approx(want, rel=1e-6)
    # gradients against autograd through F.cross_entropy on the full logits
    xr, wr = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref = F.cross_entropy(xr @ wr.t(), y, label_smoothing=eps)
    ref.backward()
    assert ref.item() == pytest.approx(want, rel=1e-6)
    torch.testing.assert_close(xg.grad, xr.grad)
    torch.testing.assert_close(wg.grad, wr.grad)
