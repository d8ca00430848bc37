"""`trainer evaluate` against a direct computation: the checkpoint's plain logits, cross-entropy summed over
every next-token prediction of the chosen validation rows, and bits per byte from the rows' n_bytes."""
from __future__ import annotations

import json
import math

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
    assert main(["evaluate", cfg.out_dir]) == 1
    assert capsys.readouterr().err == (f"error: {tmp_path / 'syn' / 'config.json'}: the run trained on synthetic "
                                       f"data, which has no validation sets\n")
    assert main(["evaluate", cfg.out_dir, "--eval", "broken"]) == 1
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
    assert main(["evaluate", cfg.out_dir, "--json", str(tmp_path / "file" / "eval.json")]) == 1
    assert capsys.readouterr().err == (f"error: cannot write {tmp_path / 'file' / 'eval.json'}: {tmp_path / 'file'} "
                                       f"is a file, not a folder\n")
    web, wiki = mixture.parent / "web", mixture.parent / "wiki"
    assert main(["evaluate", cfg.out_dir, "--eval", f"x={web}", "--eval", f"x={wiki}"]) == 1
    assert capsys.readouterr().err == f"error: --eval x=... is given twice ({web} and {wiki}); give each set its own name\n"
