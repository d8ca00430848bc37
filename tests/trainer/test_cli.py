"""The `trainer` command end to end: train through the console script, help texts, errors, presets."""
from __future__ import annotations

import json
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


def test_ablate_without_mixtures_is_a_one_line_error(tmp_path, capsys):
    assert main(["ablate", "-o", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0]


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
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: config: parallel must be one of") and "Traceback" not in proc.stderr
