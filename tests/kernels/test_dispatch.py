"""The backend switch: auto picks Triton only for CUDA tensors; the env variable and set_backend force a path."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gristmill.kernels as kernels
from gristmill.errors import UserError


def _path_taken() -> str:
    x = torch.randn(4, 8, requires_grad=True)
    return kernels.rms_norm(x, torch.ones(8)).grad_fn.name()


def test_env_variable_chooses_the_path(monkeypatch):
    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    assert kernels.backend() == "auto" and "RMSNormFunction" not in _path_taken()  # auto on a CPU tensor
    monkeypatch.setenv("GRISTMILL_KERNELS", "triton")
    assert "RMSNormFunction" in _path_taken()
    monkeypatch.setenv("GRISTMILL_KERNELS", " Torch ")
    assert kernels.backend() == "torch" and "RMSNormFunction" not in _path_taken()


def test_set_backend_wins_over_the_env(monkeypatch):
    monkeypatch.setenv("GRISTMILL_KERNELS", "torch")
    kernels.set_backend("triton")
    try:
        assert "RMSNormFunction" in _path_taken()
        with kernels.use_backend("torch"):
            assert not kernels.use_triton(torch.ones(1))
        assert kernels.backend() == "triton"
    finally:
        kernels.set_backend(None)
    assert kernels.backend() == "torch"


def test_auto_leaves_compiled_regions_to_inductor():
    from gristmill.kernels.dispatch import choose_triton

    assert [choose_triton("auto", cuda, compiling) for cuda, compiling in
            ((True, False), (True, True), (False, False), (False, True))] == [True, False, False, False]
    assert choose_triton("triton", False, True) and not choose_triton("torch", True, False)  # forced wins

    def probe(x):  # what the dispatch sees, from inside a function torch.compile traces
        return x + 1 if choose_triton("auto", True, torch.compiler.is_compiling()) else x - 1

    x = torch.zeros(2)
    assert probe(x).tolist() == [1, 1] and torch.compile(probe, backend="eager")(x).tolist() == [-1, -1]


def test_bad_values_are_user_errors(monkeypatch):
    monkeypatch.setenv("GRISTMILL_KERNELS", "cuda")
    with pytest.raises(UserError, match="GRISTMILL_KERNELS must be one of auto, triton, torch; got 'cuda'"):
        kernels.backend()
    with pytest.raises(UserError, match="kernel backend must be one of"):
        kernels.set_backend("fast")


def test_import_needs_no_gpu_and_no_interpreter():
    script = textwrap.dedent("""
        import os, torch
        import gristmill.kernels as k
        from gristmill.errors import UserError
        x, w = torch.randn(3, 8), torch.ones(8)
        assert k.use_triton(x) is False
        torch.testing.assert_close(k.rms_norm(x, w), x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6))
        os.environ["GRISTMILL_KERNELS"] = "triton"
        try:
            k.rms_norm(x, w)
        except UserError as e:
            print("refused:", e)
    """)
    env = {key: v for key, v in os.environ.items() if key not in ("TRITON_INTERPRET", "GRISTMILL_KERNELS")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "refused: the Triton kernels got a CPU tensor but Triton's interpreter is off" in proc.stdout


@pytest.mark.gpu
def test_auto_uses_triton_on_cuda(monkeypatch):
    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    x = torch.randn(4, 8, device="cuda", requires_grad=True)
    assert "RMSNormFunction" in kernels.rms_norm(x, torch.ones(8, device="cuda")).grad_fn.name()


@pytest.mark.gpu
def test_compiled_model_on_cuda_matches_the_triton_path(monkeypatch):
    # Inside torch.compile, auto hands the blocks' norms, RoPE and SwiGLU to Inductor; the loss stays ours.
    from gristmill.trainer.model import Transformer, model_config

    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=64)).cuda()
    idx = torch.randint(0, 256, (4, 65), device="cuda")

    def loss_and_grads(m):
        m.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(idx[:, :-1], idx[:, 1:])
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    eager_loss, eager_grads = loss_and_grads(model)
    for i, block in enumerate(model.layers):
        model.layers[i] = torch.compile(block, fullgraph=True)
    loss, grads = loss_and_grads(model)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-2, atol=1e-2)
    for g, e in zip(grads, eager_grads):  # bf16 roundings differ between the two paths: compare norms
        assert ((g - e).norm() / e.norm()).item() < 3e-2


@pytest.mark.gpu
def test_document_masked_gqa_model_on_cuda_matches_the_cpu_reference(monkeypatch):
    # The Triton kernels (RoPE with fewer K heads, the fused loss) and SDPA's masked GQA path on CUDA, in fp32,
    # against the PyTorch references on the CPU.
    from gristmill.trainer.model import Transformer, doc_segments, lm_targets, model_config

    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    torch.manual_seed(0)
    cpu = Transformer(model_config("tiny", max_seq_len=64, n_kv_heads=2))
    gpu = Transformer(model_config("tiny", max_seq_len=64, n_kv_heads=2)).cuda()
    gpu.load_state_dict(cpu.state_dict())
    idx = torch.randint(3, 256, (4, 65))
    idx[:, [20, 41]] = 2
    results = []
    for model, ids in ((cpu, idx), (gpu, idx.cuda())):
        loss = model(ids[:, :-1], lm_targets(ids, 0), segments=doc_segments(ids[:, :-1], 2))
        loss.backward()
        results.append((loss.detach().cpu(), [p.grad.detach().cpu() for p in model.parameters()]))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-4, atol=1e-4)
    for g, e in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(g, e, rtol=1e-3, atol=1e-4)
