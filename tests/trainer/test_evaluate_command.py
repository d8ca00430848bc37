"""`trainer evaluate` against a direct computation: the checkpoint's plain logits, cross-entropy summed over
every next-token prediction of the chosen validation rows, and bits per byte from the rows' n_bytes."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F

from gristmill.tokenize.shards import TokenDataset
from gristmill.trainer.cli import main
from gristmill.trainer.export import find_run, load_model
from gristmill.trainer.train import train


def _reference(model, folder, rows):
    ds = TokenDataset(folder, "validation")
    ids = torch.stack([torch.from_numpy(ds[i].astype("int64")) for i in rows])
    with torch.no_grad():
        logits = model(ids)  # the plain head, not the fused loss the trainer evaluates with
    nats = F.cross_entropy(logits[:, :-1].flatten(0, 1).double(), ids[:, 1:].flatten(), reduction="sum").item()
    n_bytes = sum(ds.n_bytes(i) for i in rows)
    return nats / ids[:, 1:].numel(), nats / math.log(2) / n_bytes


def test_evaluate_matches_a_direct_computation(tiny, mixture, tmp_path, capsys):
    cfg = tiny("run", steps=3, data={"mixture": str(mixture)})
    train(cfg, verbose=False)
    web, wiki = mixture.parent / "web", mixture.parent / "wiki"
    out = tmp_path / "eval.json"
    assert main(["evaluate", cfg.out_dir, "--eval", f"again={web}", "--max-sequences", "5", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{tmp_path / 'run' / 'checkpoints' / 'step-00000003'} (step 3)")
    result = json.loads(out.read_text())
    assert sorted(result["sets"]) == ["again", "reference", "web"]
    assert [line.split()[0] for line in printed.splitlines()[2:]] == ["reference", "web", "again"]
    model, _ = load_model(*find_run(cfg.out_dir))
    # 16 validation rows per dataset; a cap of 5 takes rows 0, 3, 6, 9, 12 of one set of one source
    for name, folder in (("web", web), ("reference", wiki), ("again", web)):
        loss, bpb = _reference(model, folder, [0, 3, 6, 9, 12])
        got = result["sets"][name]
        assert got["sequences"] == 5 and got["loss"] == pytest.approx(loss, rel=1e-6)
        assert got["bits_per_byte"] == pytest.approx(bpb, rel=1e-6)
        assert f"{got['loss']:.4f}" in printed


def test_evaluate_errors_are_one_line(tiny, tmp_path, capsys):
    cfg = tiny("syn", steps=1, warmup_steps=0)  # synthetic data: nothing to evaluate on
    train(cfg, verbose=False)
    assert main(["evaluate", cfg.out_dir]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'syn' / 'config.json'}: the run trained on synthetic "
                                       f"data, which has no validation sets\n")
    assert main(["evaluate", cfg.out_dir, "--eval", "broken"]) == 2
    assert "error: " in capsys.readouterr().err


def test_evaluate_output_and_set_mistakes_are_one_line_before_any_scoring(tiny, mixture, tmp_path, capsys,
                                                                          monkeypatch):
    """--json into a file's folder was a NotADirectoryError traceback after the evaluation; two --eval sets of
    one name kept the later one only."""
    from gristmill.trainer import evaluate

    cfg = tiny("run", steps=1, warmup_steps=0, data={"mixture": str(mixture)})
    train(cfg, verbose=False)
    monkeypatch.setattr(evaluate, "evaluate_sets", lambda *a, **k: pytest.fail("evaluated before the check"))
    (tmp_path / "file").write_text("")
    assert main(["evaluate", cfg.out_dir, "--json", str(tmp_path / "file" / "eval.json")]) == 2
    assert capsys.readouterr().err == (f"error: cannot write {tmp_path / 'file' / 'eval.json'}: {tmp_path / 'file'} "
                                       f"is a file, not a folder\n")
    web, wiki = mixture.parent / "web", mixture.parent / "wiki"
    assert main(["evaluate", cfg.out_dir, "--eval", f"x={web}", "--eval", f"x={wiki}"]) == 2
    assert capsys.readouterr().err == f"error: --eval x=... is given twice ({web} and {wiki}); give each set its own name\n"


PROGRESS_LINE = re.compile(r"^\[[#.]{30}\] eval (\w+): sequences (\d+)/(\d+) [\d,.]+ seq/s [\d,]+ tok/s( ETA \d+:\d\d:\d\d)?$")


def test_evaluate_shows_progress_on_stderr_and_the_results_do_not_change(tiny, mixture, tmp_path, capsys):
    """Each set's rows scored of its total, with the rate, on stderr (a plain line per ~5% of the set: stderr
    is not a terminal here), up to the total; stdout and --json are byte-identical with --quiet, which is silent."""
    cfg = tiny("run", steps=2, warmup_steps=0, data={"mixture": str(mixture)})
    train(cfg, verbose=False)
    web = mixture.parent / "web"
    args = ["evaluate", cfg.out_dir, "--eval", f"again={web}", "--max-sequences", "12", "--batch-size", "4"]
    assert main([*args, "--json", str(tmp_path / "shown.json")]) == 0
    shown = capsys.readouterr()
    lines = shown.err.splitlines()
    assert lines and all(PROGRESS_LINE.match(line) for line in lines), shown.err
    done = {}
    for line in lines:
        name, k, total = PROGRESS_LINE.match(line).group(1, 2, 3)
        assert int(total) == 12 and int(k) > done.get(name, 0)
        done[name] = int(k)
    assert done == {"reference": 12, "web": 12, "again": 12}  # every set reaches its total
    names = [PROGRESS_LINE.match(line).group(1) for line in lines]
    assert [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n] == ["reference", "web", "again"]
    assert "ETA" not in lines[-1] and "seq/s" not in shown.out

    assert main([*args, "--json", str(tmp_path / "quiet.json"), "--quiet"]) == 0
    quiet = capsys.readouterr()
    assert quiet.err == ""
    assert quiet.out == shown.out
    assert (tmp_path / "quiet.json").read_bytes() == (tmp_path / "shown.json").read_bytes()


def test_evaluate_progress_on_a_terminal_is_one_bar_per_set_redrawn_in_place(tiny, mixture, capsys, monkeypatch):
    import sys

    cfg = tiny("run", steps=1, warmup_steps=0, data={"mixture": str(mixture)})
    train(cfg, verbose=False)
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["evaluate", cfg.out_dir, "--max-sequences", "8", "--batch-size", "2"]) == 0
    err = capsys.readouterr().err
    finished = err.split("\n")
    assert finished[-1] == "" and len(finished) == 3  # one finished bar per set (reference, web), each on its line
    for set_line in finished[:2]:
        draws = set_line.split("\r")[1:]
        assert len(draws) == 4 and all(d.endswith("\033[K") for d in draws)  # a redraw per batch of 2 of 8 rows
        assert PROGRESS_LINE.match(draws[-1].removesuffix("\033[K")).group(2, 3) == ("8", "8")


def test_periodic_evaluation_in_training_prints_one_line_per_evaluation(tiny, mixture, capsys, monkeypatch):
    """Off a terminal, training's evaluation adds its one result line, not a line per 5% of every set; on a
    terminal its bar is erased before that line."""
    import sys

    cfg = tiny("run", steps=2, warmup_steps=0, eval_every=1, eval_max_sequences=8, micro_batch_size=2,
               batch_size=2, data={"mixture": str(mixture)})
    train(cfg, verbose=True)
    err = capsys.readouterr().err.splitlines()
    evals = [line for line in err if line.startswith("eval ")]
    assert [line.split(":")[0] for line in evals] == ["eval step 1", "eval step 2"]
    assert not any("sequences" in line for line in err)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    cfg = tiny("tty", steps=1, warmup_steps=0, eval_every=1, eval_max_sequences=8, micro_batch_size=2,
               batch_size=2, data={"mixture": str(mixture)})
    train(cfg, verbose=True)
    err = capsys.readouterr().err
    assert "eval reference: sequences 2/8" in err and "\r\033[Keval step 1: reference loss " in err
