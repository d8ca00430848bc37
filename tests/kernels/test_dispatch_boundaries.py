"""The backend switch at its edges: an empty variable, exceptions inside use_backend, torch.compile on CPU
tensors, CUDA tensors (stood in for by an object with is_cuda), and the row-length limit of the row kernels."""
from types import SimpleNamespace

import pytest
import torch

import gristmill.kernels as kernels
from gristmill.errors import UserError
from gristmill.kernels import dispatch


def test_empty_variable_means_auto(monkeypatch):
    monkeypatch.setenv("GRISTMILL_KERNELS", "")
    assert kernels.backend() == "auto" and not kernels.use_triton(torch.ones(1))


def test_set_backend_normalises_its_argument(monkeypatch):
    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    try:
        kernels.set_backend(" TRITON ")
        assert kernels.backend() == "triton" and kernels.use_triton(torch.ones(1))
    finally:
        kernels.set_backend(None)
    assert kernels.backend() == "auto"


def test_use_backend_restores_after_an_exception(monkeypatch):
    monkeypatch.setenv("GRISTMILL_KERNELS", "torch")
    with pytest.raises(RuntimeError, match="inside"):
        with kernels.use_backend("triton"):
            assert kernels.backend() == "triton"
            raise RuntimeError("inside")
    assert kernels.backend() == "torch"
    kernels.set_backend("triton")
    try:
        with pytest.raises(RuntimeError):
            with kernels.use_backend("auto"):
                with kernels.use_backend("torch"):
                    raise RuntimeError("nested")
        assert kernels.backend() == "triton"
    finally:
        kernels.set_backend(None)


def test_a_bad_name_in_use_backend_leaves_the_choice_alone(monkeypatch):
    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    with pytest.raises(UserError):
        with kernels.use_backend("cuda"):
            pass
    assert kernels.backend() == "auto"


def test_auto_inside_torch_compile_on_a_cpu_tensor(monkeypatch):
    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)

    def probe(x):
        return x + 1 if kernels.use_triton(x) else x - 1

    x = torch.zeros(3)
    assert torch.compile(probe, backend="eager")(x).tolist() == [-1, -1, -1]
    with kernels.use_backend("triton"):  # forced wins, compiling or not
        assert torch.compile(probe, backend="eager")(x).tolist() == [1, 1, 1]


def test_auto_for_a_cuda_tensor_follows_the_compile_state(monkeypatch):
    # A stand-in with is_cuda=True: on this machine torch.compile never sees a CUDA tensor.
    monkeypatch.delenv("GRISTMILL_KERNELS", raising=False)
    cuda_like = SimpleNamespace(is_cuda=True)
    assert kernels.use_triton(cuda_like)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not kernels.use_triton(cuda_like)
    with kernels.use_backend("triton"):
        assert kernels.use_triton(cuda_like)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: False)
    with kernels.use_backend("torch"):
        assert not kernels.use_triton(cuda_like)


def test_check_launchable_lets_cuda_tensors_through_and_stops_plain_functions():
    cuda_like = SimpleNamespace(is_cuda=True)
    assert dispatch.check_launchable(object(), cuda_like) is None
    with pytest.raises(UserError, match="interpreter is off"):
        dispatch.check_launchable(object(), torch.ones(1))  # not an interpreted kernel
    from gristmill.kernels.rms_norm import _rms_norm_forward_kernel

    assert dispatch.check_launchable(_rms_norm_forward_kernel, torch.ones(1)) is None  # interpreter on here


@pytest.mark.parametrize("n", [1, 2, 3, 100, 1000, 2047, 2048, 2049, 5000, 8193, 32767, 32768, 40000, 65536])
def test_row_settings_block_covers_the_row(n):
    block, warps = dispatch.row_settings(n)
    assert block >= n and block < 2 * n + 1 and block & (block - 1) == 0  # the next power of two
    assert warps in (4, 8, 16, 32)  # at most 1024 threads per program


def test_row_settings_warps_grow_with_the_row():
    warps = [dispatch.row_settings(2 ** e)[1] for e in range(0, 17)]
    assert warps == sorted(warps) and warps[0] == 4 and warps[-1] == 32


def test_rows_longer_than_65536_are_refused():
    assert dispatch.row_settings(65536)[0] == 65536
    with pytest.raises(ValueError, match="too long"):
        dispatch.row_settings(65537)
    with kernels.use_backend("triton"), pytest.raises(ValueError, match="too long"):
        kernels.rms_norm(torch.ones(1, 65537), torch.ones(65537))
