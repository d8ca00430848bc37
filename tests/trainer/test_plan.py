"""`trainer plan`: the ZeRO paper's memory accounting, reproduced on its own worked example, for the run's
precision; and the trainer's own layout, checked against the tensors each rank of each mode really holds."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.trainer.cli import main
from gristmill.trainer.plan import Layout, activation_bytes, model_states, plan, trainer_states

ROOT = Path(__file__).resolve().parents[2]


def test_zero_paper_example_7_5b_on_64_gpus():
    # Rajbhandari et al. 2020, Figure 1: 120 GB, 31.4 GB, 16.6 GB and 1.9 GB per GPU
    totals = [e.total / 1e9 for e in plan(7.5e9, 64)]
    assert [round(t, 1) for t in totals] == [120.0, 31.4, 16.6, 1.9]
    assert model_states(7.5e9, 64, 1) == (15e9, 15e9, 90e9 / 64)  # 4 Psi + 12 Psi / N


def test_trainer_accounting_is_4_4_8():
    p, g, k = model_states(1e9, 8, 2, (4, 4, 8))
    assert (p, g, k) == (4e9, 0.5e9, 1e9)


# One token's saved bytes, by the probe, differ from plan's only by the loss's fp32 scalars (nll_loss's total
# weight, the sum): a few of 4 bytes each, whatever the model's size.
SCALARS = 16


def _probe():
    """tests/trainer/activation_probe.py as a module (pytest imports the tests by path, not from sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("activation_probe", Path(__file__).with_name("activation_probe.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _held(result: dict) -> int:
    return sum(result["held"].values())


def _check_against_probe(spec: dict, batch: int, seq: int, precision: str, kernels: str, runs: dict) -> None:
    """plan's activations, with and without checkpointing, against the probe's runs of one config: `full` (no
    checkpointing), `ckpt`, and `less` (one block fewer: full - less is what one block keeps, and so what its
    recomputation holds under checkpointing)."""
    from gristmill.trainer.model import model_config
    from gristmill.trainer.plan import activation_bytes, layer_activation_bytes

    cfg = model_config(spec, max_seq_len=seq + 1)
    kw = dict(seq_len=seq, micro_batch=batch, precision=precision, kernels=kernels)
    layer = _held(runs["full"]) - _held(runs["less"])
    assert layer == layer_activation_bytes(cfg, **kw)
    assert _held(runs["full"]) <= activation_bytes(cfg, checkpointing=False, **kw) + SCALARS
    assert activation_bytes(cfg, checkpointing=False, **kw) <= _held(runs["full"])
    assert 0 <= _held(runs["ckpt"]) + layer - activation_bytes(cfg, checkpointing=True, **kw) <= SCALARS


PROBE_CASES = [  # (model, batch, seq): vary d_model, layers, heads (GQA), vocab, tied embeddings, qk-norm
    ({"preset": "tiny"}, 2, 32),
    ({"preset": "tiny", "d_model": 96, "n_heads": 6, "n_layers": 3, "vocab_size": 512}, 1, 48),
    ({"preset": "tiny", "n_kv_heads": 2, "qk_norm": True, "tie_embeddings": True}, 3, 16),
]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("spec,batch,seq", PROBE_CASES)
def test_activations_are_what_the_models_forward_keeps(spec, batch, seq, precision):
    """The torch references (the CPU's path, and `kernels: torch`), under the trainer's own autocast and
    checkpointing, against the storages saved for backward (tests/trainer/activation_probe.py)."""
    from gristmill.trainer.model import model_config

    measure = _probe().measure
    less = {**spec, "n_layers": model_config(spec).n_layers - 1}
    runs = {"full": measure(spec, batch=batch, seq=seq, precision=precision),
            "less": measure(less, batch=batch, seq=seq, precision=precision),
            "ckpt": measure(spec, batch=batch, seq=seq, precision=precision, checkpointing=True)}
    if precision == "bf16":  # autocast keeps the matmuls' inputs in bf16, the residual stream and norms in fp32
        assert set(runs["full"]["held"]) == {"bfloat16", "float32"}
        assert set(runs["ckpt"]["held"]) == {"bfloat16", "float32"}  # the loss's bf16 hidden states
    assert runs["full"]["held"] == runs["full"]["saved"]  # all of it through saved_tensors_hooks
    _check_against_probe(spec, batch, seq, precision, "torch", runs)


def test_activations_on_the_triton_kernels():
    """What `kernels: auto` runs on a GPU, through Triton's interpreter: the fused kernels keep less (RMSNorm
    without x_hat, SwiGLU without silu, the fused loss without logits), and the fused loss's precomputed
    output-projection gradient is the weight's gradient, not an activation."""
    spec, batch, seq = {"preset": "tiny", "n_kv_heads": 2, "qk_norm": True, "n_layers": 2}, 2, 16
    cases = [{"model": model, "batch": batch, "seq": seq, "precision": precision, "checkpointing": ckpt,
              "kernels": "triton"}
             for precision in ("bf16", "fp32")
             for model, ckpt in ((spec, False), ({**spec, "n_layers": 1}, False), (spec, True))]
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("activation_probe.py")),
                           *map(json.dumps, cases)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    from gristmill.trainer.model import model_config

    cfg = model_config(spec)
    for precision, (full, less, ckpt) in zip(("bf16", "fp32"), (results[:3], results[3:])):
        assert full["weight_grad"] == 4 * cfg.vocab_size * cfg.d_model  # fp32, the master weight's dtype
        # what saved_tensors_hooks does not see: the fused loss's d(loss)/d(hidden), kept on its autograd node
        c = 2 if precision == "bf16" else 4
        assert _held(full) - sum(full["saved"].values()) == c * batch * seq * cfg.d_model
        _check_against_probe(spec, batch, seq, precision, "triton", {"full": full, "less": less, "ckpt": ckpt})


def test_activations_of_a_larger_model_by_term():
    """125m at 4 x 2048 in bf16 on the Triton kernels, written out: 10 blocks of (norms 8d + 8, five bf16 casts
    of the norms' outputs 10d, attention 8d + 4h, MLP 6f) per token, plus the final norm and the loss's bf16
    d(hidden). Checkpointed: each block's fp32 input, one block recomputed."""
    from gristmill.trainer.model import model_config

    cfg = model_config("125m", vocab_size=32768)
    d, f, h, tokens = cfg.d_model, cfg.ffn_hidden, cfg.n_heads, 4 * 2048
    layer = tokens * (8 * d + 8 + 10 * d + 8 * d + 4 * h + 6 * f)
    root = tokens * (4 * d + 4 + 2 * d)
    kw = dict(seq_len=2048, micro_batch=4, precision="bf16")
    assert activation_bytes(cfg, checkpointing=False, **kw) == 10 * layer + root
    assert activation_bytes(cfg, checkpointing=True, **kw) == 10 * tokens * 4 * d + layer + root
    torch_path = activation_bytes(cfg, checkpointing=False, kernels="torch", **kw)  # + x_hat, silu, logits
    assert torch_path == 10 * (layer + tokens * (8 * d + 2 * f) + 4 * 2 * cfg.head_dim * 2048) \
        + root + tokens * (4 * d + 4 * cfg.vocab_size)


def test_plan_command(capsys, tmp_path):
    assert main(["plan", "--params", "7.5B", "--gpus", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[-1] for line in out[2:]] == ["120.00", "31.41", "16.64", "1.88"]
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: 125m\nmicro_batch_size: 4\nbatch_size: 32\ndata: {synthetic: {vocab_size: 32768, "
                   "seq_len: 2048}}\n")
    assert main(["plan", str(cfg), "--gpus", "8"]) == 0
    text = capsys.readouterr().out
    assert "193.6M parameters" in text and "micro-batch 4 x seq 2048" in text


@pytest.mark.parametrize("argv,msg", [
    (["plan", "--gpus", "8"], "exactly one of CONFIG"),
    (["plan", "--preset", "3b", "--gpus", "8"], "unknown preset"),
    (["plan", "missing.yaml", "--gpus", "8"], "config file missing.yaml does not exist"),
    (["plan", "--preset", "1b", "--gpus", "8", "--micro-batch", "-4", "--seq-len", "2048"],
     "--micro-batch must be >= 1, not -4"),
    (["plan", "--preset", "1b", "--gpus", "8", "--micro-batch", "4", "--seq-len", "0"], "--seq-len must be >= 1"),
    (["plan", "--params", "7.5B", "--gpus", "0"], "--gpus must be >= 1"),
    (["plan", "--params", "0", "--gpus", "8"], "not a parameter count: '0'"),
    (["plan", "--params", "7.5X", "--gpus", "8"], "not a parameter count: '7.5X'"),
    (["plan", "--params", "1e9e9", "--gpus", "8"], "not a parameter count"),
])
def test_plan_errors_are_one_line(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1


def test_plan_takes_the_vocabulary_from_the_configs_data(capsys, tmp_path, mixture):
    """As `train` does: a 125m model over the fixture mixture's 256-token vocabulary, not the preset's 32768."""
    from gristmill.trainer.model import model_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"model: 125m\nmicro_batch_size: 2\ndata: {{mixture: {mixture}}}\n")
    assert main(["plan", str(cfg), "--gpus", "4"]) == 0
    want = model_config("125m", vocab_size=256).num_params()
    assert f"{want / 1e6:.1f}M parameters" in capsys.readouterr().out


@pytest.mark.parametrize("text,psi", [("7.5B", 7.5e9), ("1e9", 1e9), ("1E+9", 1e9), ("2.5e+9", 2.5e9), ("1.3B", 1.3e9),
                                      ("350M", 350e6), (".5T", 0.5e12), ("125m", 125e6), ("3e8", 3e8)])
def test_plan_reads_parameter_counts_in_the_usual_forms(capsys, text, psi):
    from gristmill.trainer.cli import _count

    assert _count(text) == pytest.approx(psi)
    assert main(["plan", "--params", text, "--gpus", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{psi / 1e9:g}B parameters")


def _rows(text: str) -> dict[str, list[float]]:
    """The table of `trainer plan`: {mode: [params, grads, optimizer, activ., total]} in GB."""
    return {line.split()[0]: [float(x) for x in line.split()[-5:]] for line in text.splitlines()
            if line.startswith(("ddp", "zero"))}


def test_fp32_adam_is_4_4_8_bytes_without_a_master_copy(capsys):
    # fp32 Adam: weights 4, gradients 4, momentum and variance 8 bytes/param; DDP still 16 Psi
    assert main(["plan", "--params", "7.5B", "--gpus", "64", "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "4+4+8 bytes/param (zero-paper, fp32" in out.splitlines()[0]
    psi, n = 7.5e9, 64
    want = [16 * psi, 8 * psi + 8 * psi / n, 4 * psi + 12 * psi / n, 16 * psi / n]
    assert [r[-1] for r in _rows(out).values()] == [round(w / 1e9, 2) for w in want]  # 120 / 60.94 / 31.41 / 1.88


def test_plan_takes_the_configs_precision(capsys, tmp_path):
    """precision: fp32 in a config: 4+4+8 bytes/param, and activations all in 32 bits."""
    from gristmill.trainer.model import model_config

    texts = {}
    for precision in ("bf16", "fp32"):
        cfg = tmp_path / f"{precision}.yaml"
        cfg.write_text(f"model: 125m\nmicro_batch_size: 4\nbatch_size: 32\nprecision: {precision}\n"
                       "data: {synthetic: {vocab_size: 32768, seq_len: 2048}}\n")
        assert main(["plan", str(cfg), "--gpus", "8"]) == 0
        texts[precision] = capsys.readouterr().out
    psi, n = model_config("125m", vocab_size=32768).num_params(), 8
    assert "2+2+12 bytes/param (zero-paper, mixed precision" in texts["bf16"]
    assert "4+4+8 bytes/param (zero-paper, fp32" in texts["fp32"]
    mcfg = model_config("125m", vocab_size=32768)
    acts = {p: activation_bytes(mcfg, seq_len=2048, micro_batch=4, checkpointing=False, precision=p)
            for p in ("bf16", "fp32")}
    assert 1.5 * acts["bf16"] < acts["fp32"] < 2 * acts["bf16"]  # the bf16 run's residual stream is fp32 too
    for precision, (p, g, k) in (("bf16", (2, 2, 12)), ("fp32", (4, 4, 8))):
        act = acts[precision]
        zero2 = _rows(texts[precision])["zero2"]
        assert zero2 == [round(x / 1e9, 2) for x in (p * psi, g * psi / n, k * psi / n, act,
                                                      p * psi + (g + k) * psi / n + act)]
    assert main(["plan", str(tmp_path / "fp32.yaml"), "--gpus", "8", "--precision", "bf16"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == texts["bf16"].splitlines()[1:]  # the flag wins


def test_layout_counts_the_models_blocks_and_root():
    import torch

    from gristmill.trainer.model import Transformer, model_config

    for cfg in (model_config("tiny", n_layers=3), model_config("tiny", tie_embeddings=True, qk_norm=True)):
        model = Transformer(cfg)
        numel = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        block = numel(model.layers[0])
        assert Layout.of(cfg) == Layout(params=numel(model), root=numel(model) - cfg.n_layers * block, block=block)
        assert all(numel(b) == block for b in model.layers) and isinstance(model.layers, torch.nn.ModuleList)


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict:
    """plan_worker.py under torchrun with two gloo processes: {"precision/mode": [per-rank bytes]}."""
    out = tmp_path_factory.mktemp("plan") / "measured.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(Path(__file__).with_name("plan_worker.py")), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("mode", ["ddp", "zero1", "zero2", "zero3"])
def test_trainer_layout_is_what_each_rank_holds(measured, mode, precision):
    """Term by term, against the tensors the ranks of a real two-process run hold (plan_worker.py)."""
    from gristmill.trainer.model import model_config

    cfg = model_config("tiny", n_layers=3, max_seq_len=16)
    layout = Layout.of(cfg)
    one = trainer_states(layout, 2, mode, precision=precision, accumulation=1)
    accumulating = trainer_states(layout, 2, mode, precision=precision, accumulation=2)
    for rank in measured[f"{precision}/{mode}"]:
        assert rank["gathered"] == one.gathered
        assert rank["grads"] == one.grads  # one micro-batch per step: what the step's backward leaves
        assert rank["accumulated"] == accumulating.grads  # held between micro-batches
        assert rank["grad_buckets"] == one.grad_buckets
        if mode != "zero1":
            assert (rank["shards"], rank["optimizer"]) == (one.shards, one.optimizer)
    if mode == "zero1":  # whole tensors per rank: the states add up to 8 Psi, each rank within a tensor of 8 Psi / N
        states = [r["optimizer"] for r in measured[f"{precision}/{mode}"]]
        assert sum(states) == 2 * one.optimizer == 8 * layout.params
        assert all(abs(s - one.optimizer) <= 8 * cfg.vocab_size * cfg.d_model for s in states)


def test_trainer_layout_on_the_command_line(capsys, tmp_path):
    from gristmill.trainer.model import model_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: 125m\nmicro_batch_size: 4\nbatch_size: 32\n"
                   "data: {synthetic: {vocab_size: 32768, seq_len: 2048}}\n")
    layout = Layout.of(model_config("125m", vocab_size=32768))
    for gpus, accum in ((8, 1), (2, 4)):  # batch 32 = micro 4 x gpus x accumulation, as train splits it
        assert main(["plan", str(cfg), "--gpus", str(gpus), "--bytes", "trainer"]) == 0
        out = capsys.readouterr().out
        assert "trainer layout (bf16" in out and f"accumulation {accum})" in out
        rows = _rows(out)
        for mode in ("ddp", "zero1", "zero2", "zero3"):
            s = trainer_states(layout, gpus, mode, accumulation=accum)
            assert rows[mode][:3] == [round(x / 1e9, 2) for x in (s.params, s.grads + s.grad_buckets, s.optimizer)]
    assert main(["plan", str(cfg), "--gpus", "8", "--bytes", "trainer"]) == 0
    zero2 = _rows(capsys.readouterr().out)["zero2"]
    # FSDP2 keeps the fp32 shard and, from forward to backward, a bf16 copy of the whole model (+ one block)
    assert zero2[0] == round((4 * layout.params / 8 + 2 * (layout.params + layout.block)) / 1e9, 2)


@pytest.mark.parametrize("argv,msg", [
    (["plan", "--params", "7.5B", "--gpus", "8", "--bytes", "trainer"], "--bytes trainer needs the model's blocks"),
    (["plan", "--preset", "1b", "--gpus", "8", "--accumulation", "0"], "--accumulation must be >= 1, not 0"),
])
def test_trainer_layout_errors_are_one_line(capsys, argv, msg):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1


def test_one_gpu_trains_the_plain_model_in_every_mode():
    layout = Layout(params=1000, root=200, block=100)
    for mode in ("ddp", "zero1", "zero2", "zero3"):
        s = trainer_states(layout, 1, mode, accumulation=4)
        assert (s.params, s.grads, s.grad_buckets, s.optimizer) == (4000, 4000, 0, 8000)
