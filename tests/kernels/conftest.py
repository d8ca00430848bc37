"""Runs each kernel test in a process whose Triton mode fits it: the CPU interpreter, or compiled kernels on a GPU.

Triton fixes its mode when it is first imported (TRITON_INTERPRET=1 makes even tl.sum an interpreted function),
and one process cannot hold both. On a machine without a GPU this file switches the interpreter on before triton
is imported, so the CPU tests run here. Tests whose mode this process lacks (CPU tests after something imported
triton uncompiled, or CPU tests on a GPU machine, which keeps compiled Triton for its `gpu` tests) run together
in one pytest subprocess of the right mode, and their outcomes are reported here under their own names.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

_MODE_VAR = "_GRISTMILL_KERNEL_TEST_MODE"  # set only by the parent for its subprocess
_REPORT_VAR = "_GRISTMILL_KERNEL_TEST_REPORT"
_forced = os.environ.get(_MODE_VAR)
if "triton" not in sys.modules and (_forced == "interpreter" or (_forced is None and not torch.cuda.is_available())):
    # Stays set for the session: Triton also reads it lazily, when a launch first imports its gluon modules.
    os.environ["TRITON_INTERPRET"] = "1"

sys.path.insert(0, str(Path(__file__).parent))  # --import-mode=importlib: make flce_cases importable

from gristmill.kernels.dispatch import interpreter_active  # noqa: E402

MODE = "interpreter" if interpreter_active() else "compiled"
ROOT = Path(__file__).resolve().parents[2]
_elsewhere: list[str] = []  # node ids of the tests that need the other mode
_outcomes: dict[str, dict] | None = None
_subprocess_tail = ""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "triton_compiled: needs Triton's compiler rather than its interpreter "
                                       "(no GPU needed); run in a subprocess when this process interprets")


def _needed_mode(item: pytest.Item) -> str:
    compiled = item.get_closest_marker("gpu") or item.get_closest_marker("triton_compiled")
    return "compiled" if compiled else "interpreter"


@pytest.hookimpl(trylast=True)  # after -k / -m have deselected what will not run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [it for it in items if it.nodeid.startswith("tests/kernels/")]
    if not torch.cuda.is_available():
        for it in ours:
            if it.get_closest_marker("gpu"):
                it.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
    _elsewhere[:] = [it.nodeid for it in ours
                     if _needed_mode(it) != MODE and not it.get_closest_marker("skip")]


def _run_elsewhere() -> dict[str, dict]:
    """Run every test that needs the other mode in one subprocess; outcomes by node id."""
    global _outcomes, _subprocess_tail
    if _outcomes is None:
        with tempfile.TemporaryDirectory() as tmp:
            report = Path(tmp) / "report.jsonl"
            env = dict(os.environ, **{_MODE_VAR: "compiled" if MODE == "interpreter" else "interpreter",
                                      _REPORT_VAR: str(report)})
            env.pop("TRITON_INTERPRET", None)
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *_elsewhere],
                cwd=ROOT, env=env, capture_output=True, text=True,
            )
            lines = report.read_text().splitlines() if report.exists() else []
        _outcomes = {r["nodeid"]: r for r in map(json.loads, lines)}
        _subprocess_tail = (proc.stdout + proc.stderr)[-3000:]
    return _outcomes


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function):
    if pyfuncitem.nodeid not in _elsewhere:
        return None
    result = _run_elsewhere().get(pyfuncitem.nodeid)
    where = f"(run in a subprocess with Triton in {_needed_mode(pyfuncitem)} mode)"
    if result is None:
        pytest.fail(f"no outcome {where}:\n{_subprocess_tail}", pytrace=False)
    if result["outcome"] == "skipped":
        pytest.skip(f"{result['detail']} {where}")
    if result["outcome"] == "failed":
        pytest.fail(f"{where}\n{result['detail']}", pytrace=False)
    return True


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = os.environ.get(_REPORT_VAR)
    if not path or (report.when != "call" and report.outcome == "passed"):
        return
    if report.skipped and isinstance(report.longrepr, tuple):
        detail = report.longrepr[2]
    else:
        detail = str(report.longrepr or "")
    with open(path, "a") as f:
        f.write(json.dumps({"nodeid": report.nodeid, "outcome": report.outcome, "detail": detail}) + "\n")


def _values_and_grads(fn, *inputs: torch.Tensor, seed: int = 1):
    """fn's outputs and the input gradients for a fixed random cotangent (a plain .sum() would hide sign errors)."""
    leaves = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], [leaf.grad for leaf in leaves if leaf.requires_grad]


@pytest.fixture
def values_and_grads():
    return _values_and_grads


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture
def assert_no_worse_than_eager():
    """For low precision: the kernel's error against an fp32 computation is at most twice eager PyTorch's."""

    def check(kernel: list[torch.Tensor], eager: list[torch.Tensor], exact: list[torch.Tensor]) -> None:
        for i, (k, e, x) in enumerate(zip(kernel, eager, exact)):
            floor = 1e-3 * x.float().abs().max().item()
            assert _max_err(k, x) <= 2 * _max_err(e, x) + floor, (i, _max_err(k, x), _max_err(e, x), floor)

    return check
