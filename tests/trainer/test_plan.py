"""`trainer plan`: the ZeRO paper's memory accounting, reproduced on its own worked example."""
from __future__ import annotations

import pytest

from gristmill.trainer.cli import main
from gristmill.trainer.plan import activation_bytes, model_states, plan


def test_zero_paper_example_7_5b_on_64_gpus():
    # Rajbhandari et al. 2020, Figure 1: 120 GB, 31.4 GB, 16.6 GB and 1.9 GB per GPU
    totals = [e.total / 1e9 for e in plan(7.5e9, 64)]
    assert [round(t, 1) for t in totals] == [120.0, 31.4, 16.6, 1.9]
    assert model_states(7.5e9, 64, 1) == (15e9, 15e9, 90e9 / 64)  # 4 Psi + 12 Psi / N


def test_trainer_accounting_is_4_4_8():
    p, g, k = model_states(1e9, 8, 2, (4, 4, 8))
    assert (p, g, k) == (4e9, 0.5e9, 1e9)


def test_activations_follow_korthikanti_without_the_attention_matrix():
    full = activation_bytes(n_layers=12, d_model=768, vocab_size=50304, seq_len=1024, micro_batch=8,
                            checkpointing=False)
    assert full == 12 * 34 * 1024 * 8 * 768
    ckpt = activation_bytes(n_layers=12, d_model=768, vocab_size=50304, seq_len=1024, micro_batch=8,
                            checkpointing=True, fused_cross_entropy=False)
    assert ckpt == (12 * 2 + 34) * 1024 * 8 * 768 + 4 * 1024 * 8 * 50304


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
    (["plan", "missing.yaml", "--gpus", "8"], "config file not found"),
    (["plan", "--preset", "1b", "--gpus", "8", "--micro-batch", "-4", "--seq-len", "2048"],
     "--micro-batch must be >= 1, not -4"),
    (["plan", "--preset", "1b", "--gpus", "8", "--micro-batch", "4", "--seq-len", "0"], "--seq-len must be >= 1"),
    (["plan", "--params", "7.5B", "--gpus", "0"], "--gpus must be >= 1"),
    (["plan", "--params", "0", "--gpus", "8"], "not a parameter count: '0'"),
    (["plan", "--params", "7.5X", "--gpus", "8"], "not a parameter count: '7.5X'"),
    (["plan", "--params", "1e9e9", "--gpus", "8"], "not a parameter count"),
])
def test_plan_errors_are_one_line(capsys, argv, msg):
    assert main(argv) == 1
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
