"""The `trainer` command end to end: train through the console script, help texts, errors, presets."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gristmill.trainer.cli import main


def test_train_command_writes_metrics_and_resumes(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: {preset: tiny, qk_norm: true, z_loss: 1.0e-4, tie_embeddings: true}\nsteps: 4\n"
                   "batch_size: 4\nmicro_batch_size: 2\nprecision: bf16\nwarmup_steps: 1\n")
    out = tmp_path / "out"
    assert main(["train", str(cfg), "--out-dir", str(out), "--stop-after", "2"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith("config: {") and "parameters" in printed.out
    # the progress bar (stderr is not a terminal here: a plain line per 5% of the run)
    assert "] step 1/4 loss " in printed.err and "] step 2/4 loss " in printed.err
    assert main(["train", str(cfg), "--out-dir", str(out), "--quiet"]) == 0
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert "resumed" not in capsys.readouterr().out  # --quiet


def test_stop_after_below_one_is_a_one_line_error(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: tiny\nsteps: 2\nbatch_size: 2\nmicro_batch_size: 2\nwarmup_steps: 0\n")
    for n in ("0", "-1"):  # trained nothing and exited 0
        assert main(["train", str(cfg), "--out-dir", str(tmp_path / "out"), "--stop-after", n]) == 2
        assert capsys.readouterr().err == f"error: --stop-after must be >= 1, not {n}\n"


def test_ablate_without_mixtures_is_a_one_line_error(tmp_path, capsys):
    assert main(["ablate", "-o", str(tmp_path / "run")]) == 2  # a user error, as every other
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]


def test_a_token_dataset_or_mix_spec_as_mixture_is_one_line(tmp_path, capsys):
    folder = tmp_path / "tokens"
    folder.mkdir()
    spec = tmp_path / "cc_en.yaml"
    spec.write_text("sources: [{name: a, manifest: tokens}]\nbudget_tokens: 200K\nseed: 0\n"
                    "weighting: {method: explicit, proportions: {a: 1.0}}\n")
    for mix, msg in ((folder, "is a folder (a token dataset?); give a mixture manifest written by `mix build`"),
                     (spec, f"looks like a mix spec; run `mix build {spec} -o MIX.json` first")):
        cfg = tmp_path / "run.yaml"
        cfg.write_text(f"data: {{mixture: {mix}}}\nmodel: tiny\nsteps: 2\nwarmup_steps: 0\n"
                       f"out_dir: {tmp_path / 'out'}\n")
        assert main(["train", str(cfg), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {mix} ") and msg in err[0]
        assert main(["ablate", str(mix), "-o", str(tmp_path / "ab")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0]


def test_presets_lists_counts_and_flops(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["tiny", "10m", "25m", "50m", "125m", "350m", "760m", "1b"]


@pytest.mark.parametrize("sub", ["train", "plan", "presets", "ablate", "export", "evaluate"])
def test_help_has_examples(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0 and "example" in capsys.readouterr().out


def test_console_script_user_error_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("parallel: zero9\n")
    proc = subprocess.run([sys.executable, "-m", "gristmill.trainer", "train", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: config: parallel must be one of") and "Traceback" not in proc.stderr


def _torchrun_train(tmp_path, config: str) -> subprocess.CompletedProcess:
    """`trainer train` of `config` under torchrun, 2 gloo processes on the CPU."""
    path = tmp_path / "run.yaml"
    path.write_text(config)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "gristmill.trainer", "train", str(path), "--quiet"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("config,error", [
    ("parallel: zero9\n", "error: config: parallel must be one of"),  # before the process group
    # after it: the anomaly is judged on the all-reduced gradient norm, so both ranks stop at step 2
    ("model: tiny\nsteps: 5\nbatch_size: 8\nmicro_batch_size: 2\nprecision: fp32\nlr: 1.0e+30\nwarmup_steps: 0\n"
     "grad_clip: 0.0\non_anomaly: stop\nsave_checkpoints: false\nout_dir: OUT\n",
     "error: step 2: non-finite gradient norm; stopping"),
])
def test_a_user_error_under_torchrun_is_one_line(tmp_path, config, error):
    """Both ranks raise it; one prints it, and torchrun's report gives each failed rank's reason from its error
    file (it read "To enable traceback see: ..." before), not a traceback of ours. Under load a rank can still
    be starting when the other exits with the error; torchrun then ends it, and reports it as ended (SIGTERM)."""
    proc = _torchrun_train(tmp_path, config.replace("OUT", str(tmp_path / "out")))
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [next(x for x in lines if x.startswith(error))]
    reasons = [line.strip() for line in lines if line.strip().startswith("traceback :")]
    assert any(r.startswith(f"traceback : {error}") for r in reasons)
    assert all(r.startswith((f"traceback : {error}", "traceback : Signal 15 (SIGTERM)")) for r in reasons), reasons
    assert not any("gristmill" in line for line in lines if line.startswith("  File "))  # only torchrun's own


def test_a_user_error_is_printed_when_the_first_process_is_the_slowest(tmp_path):
    """torchrun ends the other processes once one exits with an error: where the machine's first process (the one
    that prints) came to the error last (slower to start, under load), it was ended before it printed, and the
    line reached only torchrun's report. Its first process here starts 3 s late."""
    (tmp_path / "bad.yaml").write_text("parallel: zero9\n")
    (tmp_path / "slow_first.py").write_text(
        "import os, sys, time\n"
        "if os.environ['LOCAL_RANK'] == '0':\n    time.sleep(3)\n"
        "from gristmill.trainer.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(tmp_path / "slow_first.py"), "train", str(tmp_path / "bad.yaml"), "--quiet"],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert [line for line in proc.stderr.splitlines() if line.startswith("error: ")] == [
        "error: config: parallel must be one of single, ddp, zero1, zero2, zero3, not 'zero9'"]


def test_a_non_zero_rank_writes_its_error_for_torchrun_not_to_stderr(tmp_path):
    """What a rank other than a machine's first saw still reaches torchrun's report (read here by torchrun's own
    ProcessFailure and ChildFailedError), and its exit status stays 2."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    bad, error_file = tmp_path / "bad.yaml", tmp_path / "error.json"
    bad.write_text("parallel: zero9\n")
    env = {**os.environ, "RANK": "1", "LOCAL_RANK": "1", "TORCHELASTIC_ERROR_FILE": str(error_file)}
    proc = subprocess.run([sys.executable, "-m", "gristmill.trainer", "train", str(bad)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr == ""
    failure = ProcessFailure(local_rank=1, pid=0, exitcode=2, error_file=str(error_file))
    report = ChildFailedError("trainer", {1: failure}).format_msg()
    assert "traceback : error: config: parallel must be one of single, ddp, zero1, zero2, zero3, not 'zero9'" in report


@pytest.mark.parametrize("case,msg", [
    ("log_every: 0", "log_every must be an integer >= 1, not 0"),
    ("spike_factor: 3x", "spike_factor must be a number > 1, not '3x'"),
    ("lr: 3e-4", "lr must be a number > 0, not '3e-4' (YAML reads"),
    ("warmup_steps: '1'", "warmup_steps must be an integer >= 0, not '1'"),
    ("grad_clip: abc", "grad_clip must be a number >= 0"),
    ("min_lr_ratio: a", "min_lr_ratio must be a number in [0, 1]"),
    ("betas: 0.9", "betas must be two numbers in [0, 1)"),
    ("eps: -1", "eps must be a number > 0, not -1"),
    ("seed: abc", "seed must be an integer in [0, 18446744073709551615], not 'abc'"),
    ("steps: true", "steps must be an integer >= 1, not True"),
    ("data: {synthetic: {vocab_size: abc}}", "data: synthetic: vocab_size must be an integer >= 2"),
    ("data: {synthetic: {vocab: 256}}", "data: synthetic: unknown key(s) vocab"),
    ("data: {mixture: 5}", "data: mixture must be a non-empty string"),
    ("model: 5", "model must be a preset name or a mapping"),
    ("model: {preset: tiny, d_model: x}", "model: d_model must be an integer >= 1, not 'x'"),
    ("model: {preset: tiny, n_heads: 0}", "model: n_heads must be an integer >= 1, not 0"),
    ("model: {preset: [tiny]}", "model: unknown preset ['tiny']"),
    ("out_dir: /proc/foo", "out_dir /proc/foo: cannot create it"),
    ("checkpoint_every: -1", "checkpoint_every must be an integer >= 0"),
    ("keep_checkpoints: -1", "keep_checkpoints must be an integer >= 0"),
])
def test_config_type_and_range_errors_are_one_line(tmp_path, capsys, case, msg):
    """Each mistake is one `error:` line from the config check, before any training (no traceback, no crash
    some steps in)."""
    import yaml

    config = {"model": "tiny", "steps": 2, "batch_size": 4, "micro_batch_size": 4, "precision": "fp32",
              "warmup_steps": 1, "out_dir": str(tmp_path / "o"), **yaml.safe_load(case)}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert msg in err
    assert not (tmp_path / "o" / "metrics.jsonl").exists()


def test_every_config_field_is_checked():
    from dataclasses import fields

    from gristmill.trainer.config import FIELD_CHECKS, TrainConfig
    from gristmill.trainer.model import MODEL_CHECKS, ModelConfig

    assert set(FIELD_CHECKS) | {"model", "data", "betas"} == {f.name for f in fields(TrainConfig)}
    assert set(MODEL_CHECKS) == {f.name for f in fields(ModelConfig)}


def _help_gaps(parser, prog: str) -> list[str]:
    """Subcommands without a help line or description, and options/arguments without a help string."""
    import argparse

    gaps = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not helps.get(name):
                    gaps.append(f"{prog} {name}: no help line")
                if not sub.description:
                    gaps.append(f"{prog} {name}: no description")
                gaps += _help_gaps(sub, f"{prog} {name}")
        elif not isinstance(action, argparse._HelpAction) and not (action.help or "").strip():
            gaps.append(f"{prog} {'/'.join(action.option_strings) or action.dest}: no help")
    return gaps


def test_every_subcommand_and_option_has_help():
    from gristmill.mixtures.cli import make_parser
    from gristmill.trainer.cli import build_parser

    assert _help_gaps(build_parser(), "trainer") + _help_gaps(make_parser(), "mix") == []


def test_top_level_help_names_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    summary = out[out.index("\n\n"):out.index("positional arguments")]
    for word in ("train", "plan", "presets", "ablat", "evaluate", "export"):
        assert word in summary, word
    assert "trainer ablate " in out  # an example of each command
