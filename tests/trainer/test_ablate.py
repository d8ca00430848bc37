"""`trainer ablate`: runs, resume, failures, evaluation sets, the report, the RegMix fit, and the proof that
filtered, deduplicated data beats raw data at equal tokens."""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import spec_from_dict
from gristmill.tokenize.shards import ShardWriter, TokenDataset, build_manifest, shard_name, write_manifest
from gristmill.trainer import ablate, report

SEQ, VOCAB = 32, 64
# 16 steps of 8 x 32 tokens, evaluated at steps 8 and 16
FAST = ["--preset", "tiny", "--tokens", "4096", "--batch-size", "8", "--lr", "3e-3", "--eval-every", "8",
        "--eval-max-sequences", "16"]


def token_dataset(folder: Path, strides: tuple[int, int], seed: int, *, rows: int = 96, val_rows: int = 24,
                  tokenizer_sha: str = "ab" * 32, domain: str = "web") -> Path:
    """Arithmetic progressions mod VOCAB with strides in [lo, hi): wider ranges are harder to predict.
    n_bytes is 1 to 3 bytes per token, varying by row, so bits per byte is not a fixed multiple of the loss."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", rows), ("validation", val_rows)):
        w = ShardWriter(folder / shard_name(split, 0), SEQ, VOCAB, pad_id=0)
        for _ in range(n):
            start, stride = rng.integers(VOCAB), rng.integers(*strides)
            # ids 0-2 stay free, as a tokenizer keeps them for PAD, BOS and EOS
            w.write_row(3 + (start + stride * np.arange(SEQ)) % (VOCAB - 3), [0], int(rng.integers(1, 4)) * SEQ)
        splits[split] = [w.close()]
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    tok = {"path": "tokenizer.json", "sha256": tokenizer_sha, "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2,
           "pad_id": 0}
    write_manifest(folder, build_manifest(source=folder.name, domain=domain, seq_len=SEQ, tokenizer=tok,
                                          recipe_sha256="00" * 32, seed=seed, splits=splits))
    return folder


def mixture(root: Path, name: str, proportions: dict[str, float], sources: dict[str, Path]) -> Path:
    spec = {"sources": [{"name": n, "manifest": str(sources[n])} for n in proportions], "budget_tokens": 4096,
            "seed": 0, "weighting": {"method": "explicit", "proportions": proportions}}
    path = root / f"{name}.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, root), path), path)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trainer ablate")
    ablate.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ablate-data")
    src = {"easy": token_dataset(root / "easy", (1, 2), 0), "hard": token_dataset(root / "hard", (1, 9), 1),
           "ref": token_dataset(root / "ref", (1, 3), 2, domain="reference")}
    return {**src, "root": root,
            "easy_mix": mixture(root, "easy_mix", {"easy": 0.8, "ref": 0.2}, src),
            "hard_mix": mixture(root, "hard_mix", {"hard": 0.8, "ref": 0.2}, src)}


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """Two mixtures x 2 seeds, with checkpoints kept and an extra evaluation set."""
    rundir = tmp_path_factory.mktemp("ablate-run") / "run"
    torch.set_num_threads(1)
    args = parse([str(data["easy_mix"]), str(data["hard_mix"]), "--seeds", "2", "--eval", f"extra={data['hard']}",
                  "--keep-checkpoints", "-o", str(rundir), *FAST])
    assert ablate.run(args) == 0
    return rundir


def test_outputs_ranked_table_and_seed_spread(finished):
    results = json.loads((finished / "results.json").read_text())
    runs = results["runs"]
    assert [r["name"] for r in runs] == ["easy_mix-s0", "easy_mix-s1", "hard_mix-s0", "hard_mix-s1"]
    assert all(r["status"] == "ok" for r in runs)
    assert [e["step"] for e in runs[0]["curve"]] == [8, 16]
    assert {e["name"] for e in results["eval_sets"]} == {"web", "reference", "extra"}
    # mixture averages and sample standard deviations, recomputed from the per-run CSV
    with open(finished / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    summary = {s["mixture"]: s for s in results["summary"]}
    for mix in ("easy_mix", "hard_mix"):
        vals = [float(r["avg_bpb"]) for r in rows if r["mixture"] == mix]
        assert summary[mix]["avg_bpb"] == pytest.approx(np.mean(vals), rel=1e-12)
        assert summary[mix]["avg_bpb_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-9)
        per_set = [np.mean([float(r[f"{s}_bpb"]) for s in ("web", "reference", "extra")]) for r in rows
                   if r["mixture"] == mix]
        assert vals == pytest.approx(per_set, rel=1e-12)
    ranked = results["summary"]
    assert [s["rank"] for s in ranked] == [1, 2] and ranked[0]["gap"] == 0
    assert ranked[0]["avg_bpb"] < ranked[1]["avg_bpb"]
    assert ranked[1]["gap"] == pytest.approx(ranked[1]["avg_bpb"] - ranked[0]["avg_bpb"])
    md = (finished / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert ranked[0]["mixture"] in table[0] and ranked[1]["mixture"] in table[1]
    assert "best" in table[0] and "±" in table[0] and f"+{ranked[1]['gap']:.4f}" in table[1]
    assert "± is the sample standard deviation over seeds (n − 1 in the denominator)" in md  # as computed above
    assert "![validation loss curves](val_loss.png)" in md
    for png in ("val_loss.png", "bpb_by_domain.png"):
        assert (finished / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(finished / "summary.csv") as f:
        assert [r["mixture"] for r in csv.DictReader(f)] == [s["mixture"] for s in ranked]


def test_curve_tokens_are_the_trainers_targets_trained_on(finished):
    """The run's eval.jsonl and results' curve count tokens as its metrics.jsonl does: batch x (seq_len - 1) a
    step (8 x 31), not the tokens read (8 x 32), which the run's `tokens` (the --tokens budget) counts."""
    run = json.loads((finished / "results.json").read_text())["runs"][0]
    metrics = {m["step"]: m["tokens"] for m in map(json.loads, (finished / "runs" / run["name"] / "metrics.jsonl")
                                                   .read_text().splitlines())}
    evals = [json.loads(line) for line in (finished / "runs" / run["name"] / "eval.jsonl").read_text().splitlines()]
    assert [e["tokens"] for e in run["curve"]] == [e["tokens"] for e in evals] == [8 * 8 * 31, 16 * 8 * 31]
    assert [metrics[e["step"]] for e in run["curve"]] == [8 * 8 * 31, 16 * 8 * 31]
    assert run["tokens"] == 16 * 8 * 32


def test_bits_per_byte_recomputed_row_by_row(finished, data):
    """The `web` set's figure equals nats / ln 2 / bytes over the evenly spaced rows (16 of 24), each row scored
    alone by the saved model, with no ablation code in the loop."""
    from gristmill.trainer import checkpoint
    from gristmill.trainer.model import Transformer, model_config

    plan = json.loads((finished / "ablation.json").read_text())
    result = json.loads((finished / "runs" / "hard_mix-s1" / "result.json").read_text())
    model = Transformer(model_config("tiny", vocab_size=VOCAB, max_seq_len=SEQ))
    checkpoint.load_model_weights(next((finished / "runs" / "hard_mix-s1" / "checkpoints").iterdir()), model)
    model.eval()
    ds = TokenDataset(data["easy"], split="validation")
    web = next(e for e in plan["eval_sets"] if e["name"] == "web")
    assert [s["sequences"] for s in web["sources"]] == [8, 8]  # 16 rows shared by easy and hard (24 each)
    nats = nbytes = tokens = 0.0
    for src in (data["easy"], data["hard"]):
        ds = TokenDataset(src, split="validation")
        for i in (0, 3, 6, 9, 12, 15, 18, 21):  # 8 evenly spaced rows of 24
            ids = torch.from_numpy(np.asarray(ds[i], dtype=np.int64))[None]
            with torch.no_grad():
                nats += float(model(ids[:, :-1], ids[:, 1:])) * (SEQ - 1)
            tokens += SEQ - 1
            nbytes += ds.n_bytes(i)
    assert result["sets"]["web"]["loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert result["sets"]["web"]["bits_per_byte"] == pytest.approx(nats / math.log(2) / nbytes, rel=1e-5)


def test_rerun_skips_finished_runs_and_rewrites_identical_files(finished, data, capsys):
    before = {p: p.read_bytes() for p in finished.rglob("*")
              if p.is_file() and p.suffix in (".json", ".jsonl", ".csv", ".md", ".png")}
    args = parse([str(data["easy_mix"]), str(data["hard_mix"]), "--seeds", "2", "--eval", f"extra={data['hard']}",
                  "--keep-checkpoints", "-o", str(finished), *FAST])
    assert ablate.run(args) == 0
    assert capsys.readouterr().err.count("finished earlier, skipped") == 4
    after = {p: p.read_bytes() for p in before}
    assert after == before
    without_extra = parse([str(data["easy_mix"]), str(data["hard_mix"]), "-o", str(finished), *FAST])
    with pytest.raises(UserError, match="holds an ablation with different evaluation sets"):
        ablate.run(without_extra)
    other_lr = parse([str(data["easy_mix"]), "--eval", f"extra={data['hard']}", "-o", str(finished), *FAST,
                      "--lr", "1e-3"])
    with pytest.raises(UserError, match="holds an ablation with different training settings"):
        ablate.run(other_lr)
    # the mixture rebuilt (here: one more byte) under the same name: its finished runs would be stale
    original = data["easy_mix"].read_bytes()
    data["easy_mix"].write_bytes(original + b"\n")
    try:
        with pytest.raises(UserError, match="holds runs of mixture.s. easy_mix made from another version"):
            ablate.run(args)
    finally:
        data["easy_mix"].write_bytes(original)
    assert {p: p.read_bytes() for p in before} == before


def test_killed_run_resumes_to_the_same_result(finished, data, tmp_path, monkeypatch):
    rundir = tmp_path / "run"
    args = parse([str(data["easy_mix"]), str(data["hard_mix"]), "--seeds", "2", "--eval", f"extra={data['hard']}",
                  "-o", str(rundir), *FAST])
    plan = ablate.make_plan(args)
    ablate.save_plan(rundir, plan)
    real = ablate.evaluate_checkpoint
    calls = []

    def killed_after_first_eval(*a, **kw):  # the process dies during the second evaluation
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(ablate, "evaluate_checkpoint", killed_after_first_eval)
    with pytest.raises(KeyboardInterrupt):
        ablate.execute(plan, rundir, ["hard_mix-s1"])
    run_dir = rundir / "runs" / "hard_mix-s1"
    assert not (run_dir / "result.json").exists() and (run_dir / "checkpoints" / "step-00000016").is_dir()
    monkeypatch.setattr(ablate, "evaluate_checkpoint", real)
    ablate.execute(plan, rundir, ["hard_mix-s1"])
    resumed = json.loads((run_dir / "result.json").read_text())
    uninterrupted = json.loads((finished / "runs" / "hard_mix-s1" / "result.json").read_text())
    assert resumed["curve"] == uninterrupted["curve"]
    assert not (run_dir / "checkpoints").exists()  # removed once finished, without --keep-checkpoints


def test_crashed_run_is_reported_failed_and_the_rest_go_on(data, tmp_path, capsys):
    broken = token_dataset(tmp_path / "broken", (1, 2), 5)
    src = {"broken": broken, "ref": data["ref"]}
    bad_mix = mixture(tmp_path, "bad_mix", {"broken": 0.5, "ref": 0.5}, src)
    (broken / "train-00000.arrow").write_bytes(b"not an arrow file")
    rundir = tmp_path / "run"
    assert ablate.run(parse([str(bad_mix), str(data["easy_mix"]), "-o", str(rundir), *FAST])) == 0
    err = capsys.readouterr().err
    assert "bad_mix-s0: FAILED: " in err and "easy_mix-s0: mean over evaluation sets: loss" in err
    # progress within a run, on stderr (16 steps: a line every step), with an ETA until the last step
    assert "easy_mix-s0: step 8/16 (50%) loss " in err and "easy_mix-s0: step 16/16 (100%) loss " in err
    assert " ETA 0:" in next(line for line in err.splitlines() if line.startswith("easy_mix-s0: step 15/16"))
    # one line per evaluation (after steps 8 and 16), not a line per part of every set
    evals = [line for line in err.splitlines() if line.startswith("easy_mix-s0: eval ")]
    assert [line.split(":")[1] for line in evals] == [" eval step 8/16", " eval step 16/16"]
    assert all(re.search(r": 2 sets, 32 sequences in [\d.]+ s \([\d,.]+ seq/s\); mean loss [\d.]+, [\d.]+ bits/byte$",
                         line) for line in evals), evals
    assert "sequences 16/16" not in err
    results = json.loads((rundir / "results.json").read_text())
    status = {r["name"]: r["status"] for r in results["runs"]}
    assert status == {"bad_mix-s0": "failed", "easy_mix-s0": "ok"}
    error = results["runs"][0]["error"]
    assert "\n" not in error and error
    md = (rundir / "report.md").read_text()
    assert "| 1 | easy_mix |" in md
    assert any(line.startswith("| – | bad_mix |") and "failed" in line and error in line for line in md.splitlines())


def test_a_config_without_checkpoints_still_ablates(data, tmp_path):
    # Each segment is evaluated from the checkpoint it ends with: `save_checkpoints: false` in --config failed every
    # run ("... is neither a training out_dir nor a checkpoint folder"); the ablation sets it, as it sets out_dir.
    config = tmp_path / "train.yaml"
    config.write_text("save_checkpoints: false\ncheckpoint_every: 3\nkeep_checkpoints: 0\n")
    rundir = tmp_path / "run"
    assert ablate.run(parse([str(data["easy_mix"]), "--config", str(config), "-o", str(rundir), *FAST])) == 0
    run = json.loads((rundir / "results.json").read_text())["runs"][0]
    assert run["status"] == "ok" and [e["step"] for e in run["curve"]] == [8, 16]


def test_mixtures_with_different_tokenizers_are_refused(data, tmp_path):
    other = token_dataset(tmp_path / "other", (1, 2), 3, tokenizer_sha="cd" * 32)
    other_mix = mixture(tmp_path, "other_mix", {"other": 1.0}, {"other": other})
    rundir = tmp_path / "run"
    with pytest.raises(UserError, match=r"^mixtures 'easy_mix' and 'other_mix' were built with different "
                                        r"tokenizers \(abababababab vs cdcdcdcdcdcd\)") as e:
        ablate.run(parse([str(data["easy_mix"]), str(other_mix), "-o", str(rundir), *FAST]))
    assert "\n" not in str(e.value)
    assert not rundir.exists()  # refused before anything was written or trained
    with pytest.raises(UserError, match="--eval extra: .* tokenizer cdcdcdcdcdcd"):
        ablate.make_plan(parse([str(data["easy_mix"]), "--eval", f"extra={other}", "-o", str(rundir), *FAST]))


def test_evaluation_sets_are_the_union_of_domains(data, tmp_path):
    plan = ablate.make_plan(parse([str(data["easy_mix"]), str(data["hard_mix"]), "--eval", f"clean={data['easy']}",
                                   "-o", str(tmp_path), *FAST[:-1], "1000"]))
    sets = {e["name"]: e for e in plan["eval_sets"]}
    assert list(sets) == ["reference", "web", "clean"]
    assert [Path(s["manifest"]).parent.name for s in sets["web"]["sources"]] == ["easy", "hard"]
    assert [s["sequences"] for s in sets["reference"]["sources"]] == [24]  # `ref` once, though in both mixtures
    assert plan["settings"]["steps"] == 16 and plan["settings"]["tokens"] == 4096
    config = tmp_path / "train.yaml"
    config.write_text("lr: 0.005\nweight_decay: 0.0\nbatch_size: 4\n")
    train = ablate.make_plan(parse([str(data["easy_mix"]), "--config", str(config), "-o", str(tmp_path),
                                    *FAST]))["settings"]["train"]
    # the file's keys, then flags over them, then the ablation's defaults (fp32 on the CPU, not the trainer's bf16)
    assert (train["lr"], train["weight_decay"], train["batch_size"], train["precision"]) == (3e-3, 0.0, 8, "fp32")
    # settings that only make sense once the ablation sets the data and steps: checked then, not on the bare file
    anneal = tmp_path / "anneal.yaml"
    anneal.write_text("document_masking: true\nschedule: wsd\ndecay_fraction: 1.0\nwarmup_steps: 0\n")
    train = ablate.make_plan(parse([str(data["easy_mix"]), "--config", str(anneal), "-o", str(tmp_path / "a"),
                                    *FAST]))["settings"]["train"]
    assert (train["document_masking"], train["schedule"], train["decay_fraction"]) == (True, "wsd", 1.0)
    anneal.write_text("schedule: wsd\ndecay_fraction: 1.0\n")  # the default warmup (steps // 10) leaves no room
    with pytest.raises(UserError, match=r"config: warmup_steps 1 \+ decay steps 16"):
        ablate.make_plan(parse([str(data["easy_mix"]), "--config", str(anneal), "-o", str(tmp_path / "b"), *FAST]))
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [1\n")
    for bad, message in ((["--config", str(tmp_path / "none.yaml")], "config file .*none.yaml does not exist"),
                         (["--config", str(broken)], "cannot parse"),
                         (["--eval", "nonsense"], "NAME=TOKEN_DATASET_DIR"),
                         (["--eval", f"web={data['easy']}"], "already a mixture domain"),
                         (["--rank-by", "nope"], "not an evaluation set"), (["--tokens", "100"], "less than one step"),
                         (["--preset", "huge"], "unknown --preset")):
        with pytest.raises(UserError, match=message):
            ablate.make_plan(parse([str(data["easy_mix"]), "-o", str(tmp_path), *FAST, *bad]))


@pytest.mark.parametrize("bad,message", [
    (["--batch-size", "0"], "--batch-size must be >= 1, not 0"),  # was a ZeroDivisionError traceback
    (["--eval-every", "-5"], "--eval-every must be >= 1, not -5"),  # was a run that never ended
    (["--eval-max-sequences", "0"], "--eval-max-sequences must be >= 1, not 0"),  # was every model scored nan
    (["--eval-batch-size", "0"], "--eval-batch-size must be >= 1, not 0"),  # was every run failing after training
    (["--seed", "-1"], "--seed must be >= 0, not -1"),  # was every run failing after planning
    (["--eval", "x=A", "--eval", "x=B"], r"--eval x=\.\.\. is given twice \(A and B\)"),  # was B silently, A dropped
    (["--config", "batch_size: 0"], "config: batch_size must be an integer >= 1, not 0"),  # a ZeroDivisionError
    (["--config", "batch_size: '8'"], "config: batch_size must be an integer >= 1, not '8'"),  # a TypeError
    (["--config", "warmup_steps: '5'"], "config: warmup_steps must be an integer >= 0, not '5'"),  # a TypeError
])
def test_bad_flags_are_one_line_before_anything_trains(data, tmp_path, bad, message):
    flags = FAST
    if bad[0] == "--config":
        (tmp_path / "train.yaml").write_text(bad[1] + "\n")
        bad = ["--config", str(tmp_path / "train.yaml")]
        at = FAST.index("--batch-size")
        flags = FAST[:at] + FAST[at + 2:]  # the file's batch, not the flag's
    rundir = tmp_path / "run"
    with pytest.raises(UserError, match=message) as e:
        ablate.run(parse([str(data["easy_mix"]), "-o", str(rundir), *flags, *bad]))
    assert "\n" not in str(e.value)
    assert not rundir.exists()


def test_an_output_that_cannot_be_a_folder_is_one_line(data, tmp_path):
    (tmp_path / "file").write_text("")
    for out, message in ((tmp_path / "file", "is a file, not a folder"), (tmp_path / "file" / "run", "is a file")):
        with pytest.raises(UserError, match=message):  # was FileExistsError / NotADirectoryError from mkdir
            ablate.run(parse([str(data["easy_mix"]), "-o", str(out), *FAST]))


def test_a_damaged_sweep_index_is_one_line(tmp_path):
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{")
    with pytest.raises(UserError, match="sweep.json is not valid JSON") as e:
        ablate.make_plan(parse(["--sweep", str(tmp_path / "sweep"), "-o", str(tmp_path / "run")]))
    assert "\n" not in str(e.value)


def test_ridge_matches_least_squares_and_regmix_finds_a_planted_optimum():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([2.0, 2.0, 2.0], size=24)
    target = np.array([0.5, 0.3, 0.2])
    y = 3.0 + 4.0 * ((p - target) ** 2).sum(axis=1) + rng.normal(0, 0.002, size=24)
    # with lambda -> 0, ridge with an intercept is least squares (reference: numpy's lstsq with a ones column)
    x = report.features(p, "quadratic")
    w, b = report.ridge_fit(x, y, 1e-12)
    ref = np.linalg.lstsq(np.hstack([x, np.ones((24, 1))]), y, rcond=None)[0]
    assert x @ w + b == pytest.approx(np.hstack([x, np.ones((24, 1))]) @ ref, abs=1e-6)
    plan = {"sweep": {"prior_proportions": {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, "concentration": 6.0, "seed": 0}}
    summary = [{"mixture": f"m{i}", "seeds_ok": 1, "avg_loss": float(v), "proportions": dict(zip("abc", row))}
               for i, (row, v) in enumerate(zip(p, y))]
    fit = report.regmix(plan, summary)
    assert fit["model"] == "quadratic"
    assert fit["loo_spearman"] > 0.9
    best = np.array([fit["predicted_best"]["proportions"][k] for k in "abc"])
    assert np.abs(best - target).max() < 0.05
    assert report.regmix(plan, summary[:4])["skipped"].startswith("4 finished")


def test_sweep_ablation_reports_the_regression(data, tmp_path):
    spec = {"sources": [{"name": n, "manifest": str(data[n])} for n in ("easy", "hard")], "budget_tokens": 1024,
            "seed": 0, "weighting": {"method": "explicit", "proportions": {"easy": 0.5, "hard": 0.5}}}
    mixbuild.sweep(spec_from_dict(spec, tmp_path), 5, tmp_path / "sweep", concentration=2.0)
    rundir = tmp_path / "run"
    assert ablate.run(parse(["--sweep", str(tmp_path / "sweep"), "-o", str(rundir), "--preset", "tiny",
                             "--batch-size", "8", "--lr", "3e-3", "--eval-max-sequences", "8",
                             "--eval-every", "4"])) == 0
    results = json.loads((rundir / "results.json").read_text())
    assert len(results["runs"]) == 5 and results["settings"]["steps"] == 4
    fit = results["regmix"]
    assert fit["runs"] == 5 and len(fit["held_out"]) == 5
    assert sum(fit["predicted_best"]["proportions"].values()) == pytest.approx(1.0)
    md = (rundir / "report.md").read_text()
    assert "## Sweep regression (RegMix)" in md and "Spearman ρ" in md


def test_parallel_workers_give_the_sequential_results(finished, data, tmp_path):
    """Without GPUs, --parallel-gpus N runs N CPU worker processes; each run's result is the same (to float
    rounding: a worker may use another number of threads)."""
    rundir = tmp_path / "run"
    args = parse([str(data["easy_mix"]), str(data["hard_mix"]), "--eval", f"extra={data['hard']}",
                  "--parallel-gpus", "2", "-o", str(rundir), *FAST])
    assert ablate.run(args) == 0
    for name in ("easy_mix-s0", "hard_mix-s0"):
        got = json.loads((rundir / "runs" / name / "result.json").read_text())
        want = json.loads((finished / "runs" / name / "result.json").read_text())
        assert [e["step"] for e in got["curve"]] == [e["step"] for e in want["curve"]]
        for g, w in zip(got["curve"], want["curve"]):
            for name in w["sets"]:
                assert g["sets"][name]["loss"] == pytest.approx(w["sets"][name]["loss"], rel=1e-5)


def test_filtered_deduplicated_mixture_beats_raw_at_equal_tokens(tmp_path):
    """The planted corpus: raw = clean prose + spam pages with boilerplate + copies of 3 paragraphs (60% of its
    text). At equal tokens and seeds, the model trained on the filtered mixture has lower loss on held-out
    clean prose (paragraphs neither mixture contains)."""
    ds = ablate.planted_corpus(tmp_path / "data", clean_docs=150, junk_fraction=0.6, seq_len=64, vocab_size=512)
    mixes = []
    for name in ("filtered", "raw"):
        spec = {"sources": [{"name": name, "manifest": str(ds[name])}], "budget_tokens": 10**6, "seed": 0,
                "weighting": {"method": "explicit", "proportions": {name: 1.0}}}
        mixes.append(tmp_path / f"{name}.json")
        mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, tmp_path), mixes[-1]), mixes[-1])
    rundir = tmp_path / "run"
    assert ablate.run(parse([*map(str, mixes), "--eval", f"clean={ds['heldout']}", "--rank-by", "clean",
                             "--preset", "tiny", "--tokens", "80K", "--lr", "2e-3", "--eval-every", "1000",
                             "--eval-max-sequences", "96", "-o", str(rundir)])) == 0
    results = json.loads((rundir / "results.json").read_text())
    clean = {r["mixture"]: r["sets"]["clean"]["bits_per_byte"] for r in results["runs"]}
    print(f"held-out clean prose, bits per byte: {clean}")
    assert clean["filtered"] < clean["raw"] - 0.05, clean
    assert results["summary"][0]["mixture"] == "filtered"



@pytest.mark.parametrize("visible, count, expected", [
    ("0,1", 0, None),           # set on a box without GPUs: CPU workers sharing the cores
    ("3,5,7", 2, ["3", "5"]),   # CUDA uses no more of its entries than the GPUs it finds
    (None, 2, ["0", "1"]),
])
def test_parallel_workers_get_only_the_gpus_cuda_finds(monkeypatch, tmp_path, visible, count, expected):
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    launched = []

    class RecordedWorker:  # keeps each worker's environment instead of training
        def __init__(self, cmd, env):
            launched.append(env)

        def wait(self):
            return 0

    monkeypatch.setattr(ablate.subprocess, "Popen", RecordedWorker)
    ablate.execute_parallel({"runs": [{"name": "a"}, {"name": "b"}]}, tmp_path, 2, keep_checkpoints=False,
                            log=lambda _: None)
    assert len(launched) == 2
    if expected is None:
        assert all("OMP_NUM_THREADS" in env for env in launched)
    else:
        assert [env["CUDA_VISIBLE_DEVICES"] for env in launched] == expected
        assert all(env.get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS") for env in launched)  # as set


def test_parallel_gpus_beyond_those_cuda_finds_are_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")  # three named, two found: the third would be no GPU
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(ablate.subprocess, "Popen", None)  # nothing may be launched
    with pytest.raises(UserError, match=r"--parallel-gpus 3, but only 2 GPU\(s\) are visible"):
        ablate.execute_parallel({"runs": [{"name": "a"}]}, tmp_path, 3, keep_checkpoints=False, log=lambda _: None)
