"""`trainer plan` at its edges: the table exactly as docs/trainer.md prints it, the --help example against the
command's own output, each config value against the flag that overrides it, and the one-line errors."""
from __future__ import annotations

import re

import pytest

from gristmill.trainer.cli import main
from gristmill.trainer.model import model_config
from gristmill.trainer.plan import Layout, activation_bytes, plan

GB = 1e9


def _rows(text: str) -> dict[str, list[float]]:
    """{mode: [params, grads, optimizer, activ., total]} in GB, from the table of `trainer plan`."""
    return {line.split()[0]: [float(x) for x in line.split()[-5:]] for line in text.splitlines()
            if line.startswith(("ddp", "zero"))}


def _plan_out(capsys, argv: list[str]) -> str:
    assert main(["plan", *argv]) == 0
    return capsys.readouterr().out


def _config(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


def test_the_table_is_the_one_the_docs_print(capsys):
    # docs/trainer.md, `trainer plan`: the ZeRO paper's example (Rajbhandari et al. 2020, Fig. 1), verbatim
    out = _plan_out(capsys, ["--params", "7.5B", "--gpus", "64"]).splitlines()
    assert out[0].startswith("7.5B parameters on 64 GPUs, 2+2+12 bytes/param (zero-paper, mixed precision")
    assert out[1:] == [
        "mode              params     grads optimizer    activ.  total GB",
        "ddp (ZeRO-0)       15.00     15.00     90.00      0.00    120.00",
        "zero1 (ZeRO-1)     15.00     15.00      1.41      0.00     31.41",
        "zero2 (ZeRO-2)     15.00      0.23      1.41      0.00     16.64",
        "zero3 (ZeRO-3)      0.23      0.23      1.41      0.00      1.88",
    ]
    assert _plan_out(capsys, ["--params", "1B", "--gpus", "1"]).startswith("1B parameters on 1 GPU, ")


def test_the_help_examples_numbers_are_the_commands_output(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    helptext = capsys.readouterr().out
    line = next(x for x in helptext.splitlines() if "the ZeRO paper's example" in x)
    command, numbers = re.fullmatch(r"\s*trainer plan (.+?)\s+# the ZeRO paper's example: (.+) GB", line).groups()
    want = [float(x) for x in numbers.split(" / ")]
    assert want == [120, 31.4, 16.6, 1.9]  # the paper's Figure 1
    totals = [r[-1] for r in _rows(_plan_out(capsys, command.split())).values()]
    assert [round(t, 1) for t in totals] == want


def test_one_gpu_under_the_trainer_accounting_is_the_plain_model(capsys):
    psi = model_config("1b").num_params()
    out = _plan_out(capsys, ["--preset", "1b", "--gpus", "1", "--bytes", "trainer"])
    assert "one GPU: the plain model in every mode, 4+4+8 bytes/param" in out.splitlines()[0]
    want = [round(x / GB, 2) for x in (4 * psi, 4 * psi, 8 * psi, 0, 16 * psi)]
    assert list(_rows(out).values()) == [want] * 4


def test_plan_module_refuses_what_it_cannot_count():
    cfg = model_config("tiny")
    with pytest.raises(ValueError, match="kernels must be one of triton, torch; got 'cuda'"):
        activation_bytes(cfg, seq_len=16, micro_batch=1, checkpointing=False, kernels="cuda")
    with pytest.raises(ValueError, match="trainer accounting needs the model's layout"):
        plan(1e9, 8, accounting="trainer")
    assert [e.total for e in plan(1e9, 8, accounting="trainer", layout=Layout.of(cfg))]  # with one it counts


def _acts_125m_triton(tokens: int, *, checkpointing: bool = False) -> float:
    """125m (10 blocks, d 1024, 16 heads, no GQA, ffn 2752) in bf16 on the Triton path, per docs/trainer.md's
    table: per token of a block 2(4d + 4) + 5 * 2d + 2(2d + 2d) + 4h + 3 * 2f; once 4d + 4 + 2d."""
    d, h, f, n = 1024, 16, 2752, 10
    layer = tokens * (2 * (4 * d + 4) + 10 * d + 2 * 4 * d + 4 * h + 6 * f)
    root = tokens * (4 * d + 4 + 2 * d)
    return (n * tokens * 4 * d + layer + root) if checkpointing else n * layer + root


CONFIG = ("model: 125m\nmicro_batch_size: 4\nbatch_size: 32\nactivation_checkpointing: {ckpt}\nkernels: {kernels}\n"
          "data: {{synthetic: {{vocab_size: 32768, seq_len: 2048}}}}\n")


def test_config_values_and_the_flags_that_override_them(capsys, tmp_path):
    assert model_config("125m", vocab_size=32768).n_layers == 10  # the hand count's model
    cfg = _config(tmp_path, CONFIG.format(ckpt="false", kernels="auto"))
    out = _plan_out(capsys, [cfg, "--gpus", "8"])
    assert "micro-batch 4 x seq 2048" in out and "checkpointed" not in out
    assert _rows(out)["ddp"][3] == round(_acts_125m_triton(4 * 2048) / GB, 2)
    out = _plan_out(capsys, [cfg, "--gpus", "8", "--micro-batch", "2", "--seq-len", "1024", "--checkpointing"])
    assert "micro-batch 2 x seq 1024, checkpointed" in out
    assert _rows(out)["ddp"][3] == round(_acts_125m_triton(2 * 1024, checkpointing=True) / GB, 2)
    # the config's own activation_checkpointing
    out = _plan_out(capsys, [_config(tmp_path, CONFIG.format(ckpt="true", kernels="auto")), "--gpus", "8"])
    assert "micro-batch 4 x seq 2048, checkpointed" in out
    assert _rows(out)["ddp"][3] == round(_acts_125m_triton(4 * 2048, checkpointing=True) / GB, 2)


def test_kernels_torch_in_the_config_counts_the_torch_references(capsys, tmp_path):
    # the unfused loss alone keeps the fp32 log-softmax of the logits: 4 * vocab bytes per token
    out = _plan_out(capsys, [_config(tmp_path, CONFIG.format(ckpt="false", kernels="torch")), "--gpus", "8"])
    d, f, hd, tokens = 1024, 2752, 64, 4 * 2048
    extra = 10 * (tokens * (2 * 4 * d + 2 * f) + 4 * 2 * hd * 2048) + tokens * (4 * d + 4 * 32768)
    assert _rows(out)["ddp"][3] == round((_acts_125m_triton(tokens) + extra) / GB, 2)


def test_accumulation_follows_the_micro_batch_flag_and_the_accumulation_flag(capsys, tmp_path):
    cfg = _config(tmp_path, CONFIG.format(ckpt="false", kernels="auto"))
    psi = model_config("125m", vocab_size=32768).num_params()
    # batch 32 = micro 2 x 2 GPUs x 8
    out = _plan_out(capsys, [cfg, "--gpus", "2", "--micro-batch", "2", "--bytes", "trainer"])
    assert "accumulation 8)" in out and _rows(out)["zero2"][1] == round(4 * psi / GB, 2)
    # --accumulation 1 over the config's 4: zero2 keeps the sharded gradients only
    out = _plan_out(capsys, [cfg, "--gpus", "2", "--accumulation", "1", "--bytes", "trainer"])
    assert "accumulation 1)" in out and _rows(out)["zero2"][1] == round(4 * psi / 2 / GB, 2)
    # --accumulation with a preset (no config to split): above 1, zero2 and zero3 keep the unsharded gradients
    psi = model_config("125m").num_params()
    out = _plan_out(capsys, ["--preset", "125m", "--gpus", "8", "--accumulation", "3", "--bytes", "trainer"])
    assert "accumulation 3)" in out
    assert _rows(out)["zero2"][1] == _rows(out)["zero3"][1] == round(4 * psi / GB, 2)


def test_synthetic_data_defaults_are_the_trainers(capsys, tmp_path):
    from gristmill.trainer.data import open_source

    source = open_source({"synthetic": None}, 1, rank=0, world_size=1, seed=0, batches=1)  # what `train` reads with `synthetic:` alone
    assert (source.vocab_size, source.seq_len) == (256, 32)  # docs: {synthetic: {vocab_size: 256, seq_len: 32}}
    out = _plan_out(capsys, [_config(tmp_path, "model: 125m\nmicro_batch_size: 2\ndata: {synthetic: }\n"),
                             "--gpus", "1"])
    want = model_config("125m", vocab_size=256).num_params()
    assert out.startswith(f"{want / 1e6:.1f}M parameters") and "micro-batch 2 x seq 32" in out


def test_a_preset_without_the_batch_shape_has_no_activations(capsys):
    out = _plan_out(capsys, ["--preset", "1b", "--gpus", "8", "--micro-batch", "4"])
    assert "activations: not estimated" in out and all(r[3] == 0 for r in _rows(out).values())


@pytest.mark.parametrize("argv,msg", [
    (["--params", "1e999", "--gpus", "8"], "--params: not a parameter count: '1e999'"),  # float('inf')
    (["--params", "7.5B", "--preset", "1b", "--gpus", "8"], "give exactly one of CONFIG, --params or --preset"),
    (["CFG", "--preset", "1b", "--gpus", "8"], "give exactly one of CONFIG, --params or --preset"),
    (["CFG", "--gpus", "3", "--bytes", "trainer"], "batch_size 32 is not a multiple of micro_batch_size 4 x 3"),
])
def test_more_plan_mistakes_are_one_line(capsys, tmp_path, argv, msg):
    cfg = _config(tmp_path, CONFIG.format(ckpt="false", kernels="auto"))
    assert main(["plan", *[cfg if a == "CFG" else a for a in argv]]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert msg in captured.err and "Traceback" not in captured.err


def test_an_interrupt_is_exit_130_with_one_line(capsys, monkeypatch):
    from gristmill.trainer import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_plan", interrupted)
    assert main(["plan", "--params", "1B", "--gpus", "1"]) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_presets_counts_follow_vocab_size_and_seq_len(capsys):
    """Each row by hand: total - non-embedding = vocab x d_model x 2 (untied embedding and output projection),
    and training FLOPs/token = 6 (non-emb + vocab x d) + 12 x layers x d x seq (PaLM / nanoGPT)."""
    vocab, seq = 50304, 8192
    assert main(["presets", "--vocab-size", str(vocab), "--seq-len", str(seq)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"(vocab {vocab}, seq {seq})")
    for line in lines[1:]:
        name, d, layers, heads, ffn, d_per_l, nonemb, total, gflops = line.split()
        d, layers, nonemb, total = int(d), int(layers), float(nonemb[:-1]) * 1e6, float(total[:-1]) * 1e6
        assert float(d_per_l) == round(d / layers)
        assert abs(total - nonemb - 2 * vocab * d) <= 0.1e6, name
        assert float(gflops) == pytest.approx((6 * (nonemb + vocab * d) + 12 * layers * d * seq) / 1e9, abs=2e-3)


@pytest.mark.parametrize("flag", ["--batch-size", "--max-sequences"])
def test_evaluate_counts_below_one_are_one_line_before_any_work(capsys, tmp_path, flag):
    # checked before the run folder is even read: tmp_path holds no checkpoint
    assert main(["evaluate", str(tmp_path), flag, "0"]) == 2
    assert capsys.readouterr().err == "error: --max-sequences and --batch-size must be >= 1\n"


def test_only_each_machines_first_process_prints_the_error(capsys, monkeypatch, tmp_path):
    """LOCAL_RANK 2 of a machine (torchrun --nproc_per_node 4, say) stays silent on stderr and writes its line to
    torchrun's error file; LOCAL_RANK 0 prints it. (No TORCHELASTIC_RUN_ID: no grace wait.)"""
    import json

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for local_rank, printed in (("2", ""), ("0", "error: --gpus must be >= 1, not 0\n")):
        error_file = tmp_path / f"error-{local_rank}.json"
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
        assert main(["plan", "--params", "1B", "--gpus", "0"]) == 2
        assert capsys.readouterr().err == printed
        message = json.loads(error_file.read_text())["message"]
        assert message["message"] == message["extraInfo"]["py_callstack"] == "error: --gpus must be >= 1, not 0"
