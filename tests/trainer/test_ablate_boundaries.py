"""`trainer ablate`'s planning and bookkeeping at their edges, against docs/ablate.md's rules and values worked by
hand: whole steps and the exact tokens of a budget, the defaults (the small preset, batch 16, the micro-batch the
largest divisor up to 16, lr 1e-3, about 10 evaluation points, the smallest mixture budget), seeds --seed ..
--seed + K - 1, evaluation sets (a dataset shared by mixtures at the most rows any of them uses, Hamilton caps, evenly
spaced rows, no empty source), one-line refusals, a RUNDIR's record of every mixture version, failed.json cleared by a
later success, unfinished runs dealt round-robin, and a run whose steps are not a multiple of --eval-every."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import spec_from_dict
from gristmill.tokenize.shards import ShardWriter, build_manifest, shard_name, write_manifest
from gristmill.trainer import ablate

SEQ, VOCAB = 32, 64
TINY = ["--preset", "tiny", "--batch-size", "8", "--eval-max-sequences", "16"]


def token_dataset(folder: Path, seed: int, *, val_rows: int = 24, domain: str = "web", seq_len: int = SEQ) -> Path:
    """96 training rows of arithmetic progressions and `val_rows` validation rows, 2 bytes a token."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (("train", 96), ("validation", val_rows)):
        w = ShardWriter(folder / shard_name(split, 0), seq_len, VOCAB, pad_id=0)
        for _ in range(n):
            w.write_row(3 + (rng.integers(VOCAB) + rng.integers(1, 3) * np.arange(seq_len)) % (VOCAB - 3), [0],
                        2 * seq_len)
        splits[split] = [w.close()]
    (folder / "tokenizer.json").write_text("{}", encoding="utf-8")
    tok = {"path": "tokenizer.json", "sha256": "ab" * 32, "vocab_size": VOCAB, "bos_id": 1, "eos_id": 2,
           "pad_id": 0}
    write_manifest(folder, build_manifest(source=folder.name, domain=domain, seq_len=seq_len, tokenizer=tok,
                                          recipe_sha256="00" * 32, seed=seed, splits=splits))
    return folder


def mixture(root: Path, name: str, sources: dict[str, Path], *, budget: int = 4096, val_cap: int | None = None) -> Path:
    spec = {"sources": [{"name": n, "manifest": str(p)} for n, p in sources.items()], "budget_tokens": budget,
            "seed": 0, "weighting": {"method": "explicit", "proportions": {n: 1 / len(sources) for n in sources}}}
    if val_cap is not None:
        spec["validation"] = {"max_sequences": val_cap}
    path = root / f"{name}.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, root), path), path)
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="trainer ablate")
    ablate.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Mixture a = web_a + ref (budget 4096); b = web_a + web_b (budget 8192) with its validation capped at 12
    rows, which Hamilton's method shares as 8 of web_a's 24 and 4 of web_b's 10 (8.47 and 3.53 by hand)."""
    root = tmp_path_factory.mktemp("ablate-bounds")
    src = {"web_a": token_dataset(root / "web_a", 0), "web_b": token_dataset(root / "web_b", 1, val_rows=10),
           "ref": token_dataset(root / "ref", 2, domain="reference")}
    return {**src, "root": root,
            "a": mixture(root, "a", {"web_a": src["web_a"], "ref": src["ref"]}),
            "b": mixture(root, "b", {"web_a": src["web_a"], "web_b": src["web_b"]}, budget=8192, val_cap=12)}


def plan_for(data, tmp_path, *flags: str, mixtures=("a",)) -> dict:
    return ablate.make_plan(parse([*(str(data[m]) for m in mixtures), "-o", str(tmp_path / "run"), *flags]))


# ----------------------------------------------------------------------------------------------------------
# The budget, the defaults and the seeds


def test_the_budget_is_whole_steps_and_the_report_gives_their_tokens(data, tmp_path):
    # docs: steps = N // (batch_size x seq_len), tokens = steps x batch_size x seq_len: 4000 // 256 = 15, 3840
    s = plan_for(data, tmp_path, *TINY, "--tokens", "4000")["settings"]
    assert (s["steps"], s["tokens"]) == (15, 3840)


def test_the_defaults_are_the_documented_ones(data, tmp_path):
    s = plan_for(data, tmp_path, mixtures=("a", "b"))["settings"]
    assert s["train"]["model"] == {"d_model": 128, "n_layers": 2, "n_heads": 2}  # --preset small
    assert (s["train"]["batch_size"], s["train"]["micro_batch_size"], s["train"]["lr"]) == (16, 16, 1e-3)
    # the smaller budget of a (4096) and b (8192): 4096 // (16 x 32) = 8 steps
    assert (s["tokens"], s["steps"]) == (4096, 8)
    # about 10 evaluation points: 25 steps are evaluated every ceil(25 / 10) = 3 (at 3, 6, ..., 24 and 25)
    s = plan_for(data, tmp_path, *TINY, "--tokens", str(25 * 8 * SEQ))["settings"]
    assert (s["steps"], s["eval_every"], s["train"]["warmup_steps"]) == (25, 3, 2)


@pytest.mark.parametrize("batch, micro", [(16, 16), (24, 12), (17, 1), (48, 16), (20, 10)])
def test_the_default_micro_batch_is_the_largest_divisor_up_to_16(data, tmp_path, batch, micro):
    train = plan_for(data, tmp_path, "--preset", "tiny", "--batch-size", str(batch),
                     "--tokens", str(batch * SEQ))["settings"]["train"]
    assert train["micro_batch_size"] == micro


def test_seeds_run_from_seed_to_seed_plus_k_minus_1(data, tmp_path):
    plan = plan_for(data, tmp_path, *TINY, "--seed", "3", "--seeds", "2", mixtures=("a", "b"))
    assert plan["seeds"] == [3, 4]
    assert [(r["name"], r["seed"]) for r in plan["runs"]] == [("a-s3", 3), ("a-s4", 4), ("b-s3", 3), ("b-s4", 4)]


def test_a_config_warmup_is_capped_and_the_plan_survives_its_own_rerun(data, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text("warmup_steps: 100\nbetas: [0.9, 0.95]\nseed: 7\n")
    args = parse([str(data["a"]), "--config", str(config), "-o", str(tmp_path / "run"), *TINY])
    plan = ablate.make_plan(args)
    train = plan["settings"]["train"]
    assert plan["settings"]["steps"] == 16 and train["warmup_steps"] == 16  # 4096 // 256 steps; capped, not refused
    # the runs' seeds are the ablation's: a config seed kept in the shared settings would refuse a rerun whose
    # config changed only that
    assert "seed" not in train and train["betas"] == [0.9, 0.95]
    ablate.save_plan(tmp_path / "run", plan)
    # the rerun compares its settings with those read back from ablation.json (JSON has lists, not tuples)
    ablate.save_plan(tmp_path / "run", ablate.make_plan(args))


# ----------------------------------------------------------------------------------------------------------
# One-line refusals before anything trains


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "0"], r"^--seeds must be >= 1, not 0$"),  # no runs: an empty report
    (["--micro-batch-size", "0"], r"^--micro-batch-size must be >= 1, not 0$"),
    (["--parallel-gpus", "-1"], r"^--parallel-gpus must be >= 0, not -1$"),
    (["--sweep", "SWEEP"], r"^give mixtures or --sweep DIR, not both$"),
    # torch.manual_seed takes a 64-bit word: the last seed, not only the first, must fit, or run K crashes
    (["--seed", str(2**64 - 2), "--seeds", "2"], None),
    (["--seed", str(2**64 - 1), "--seeds", "2"],
     rf"^--seed \+ --seeds - 1 must be <= {2**64 - 1} \(a 64-bit seed\), not {2**64}$"),
    (["--seed", str(2**64)], rf"^--seed \+ --seeds - 1 must be <= {2**64 - 1} \(a 64-bit seed\), not {2**64}$"),
])
def test_flags_out_of_range_are_one_line(data, tmp_path, flags, message):
    flags = [str(tmp_path / "sweep") if f == "SWEEP" else f for f in flags]
    if message is None:  # the largest accepted value: planned, with every seed in range
        assert plan_for(data, tmp_path, *TINY, *flags)["seeds"] == [2**64 - 2, 2**64 - 1]
        return
    with pytest.raises(UserError, match=message):
        plan_for(data, tmp_path, *TINY, *flags)


def test_a_missing_or_foreign_sweep_index_is_one_line(tmp_path):
    sweep = tmp_path / "sweep"
    with pytest.raises(UserError, match=r"sweep.json does not exist; make the sweep with `mix sweep"):
        ablate.make_plan(parse(["--sweep", str(sweep), "-o", str(tmp_path / "run")]))
    sweep.mkdir()
    (sweep / "sweep.json").write_text('{"format": "gristmill.mixture/1", "mixtures": []}')
    with pytest.raises(UserError, match=r"format is 'gristmill.mixture/1', expected 'gristmill.sweep/1'"):
        ablate.make_plan(parse(["--sweep", str(sweep), "-o", str(tmp_path / "run")]))


def _fake(name: str, tokenizer: str = "ab" * 32, seq_len: int = SEQ) -> dict:
    return {"name": name, "manifest": {"tokenizer": {"sha256": tokenizer}, "seq_len": seq_len}}


def test_check_compatible_names_the_repeated_mixture_and_a_seq_len_mismatch():
    # `a` appears once: the error names `b`, the one given twice
    with pytest.raises(UserError, match=r"^two mixtures are both named 'b' "):
        ablate.check_compatible([_fake("b"), _fake("a"), _fake("b")])
    with pytest.raises(UserError, match=r"^mixtures 'x' and 'y' have different seq_len \(32 vs 64\)$"):
        ablate.check_compatible([_fake("x"), _fake("y", seq_len=64)])
    ablate.check_compatible([_fake("x"), _fake("y")])


@pytest.mark.parametrize("item", ["=some/dir", "clean=", "clean"])
def test_an_eval_flag_needs_both_a_name_and_a_folder(item):
    with pytest.raises(UserError, match=r"^--eval takes NAME=TOKEN_DATASET_DIR, not "):
        ablate.parse_eval_sets([item])


def test_a_token_dataset_manifest_is_not_a_mixture(data):
    with pytest.raises(UserError, match=r"manifest.json is not a mixture manifest \(format 'gristmill.mixture/1'\)"):
        ablate.load_mixture(data["web_a"] / "manifest.json")


@pytest.mark.parametrize("edit, problem", [
    (lambda m: m.pop("tokenizer"), "it has no tokenizer.vocab_size"),
    (lambda m: m.pop("validation"), "it has no validation object"),
    (lambda m: m["tokenizer"].pop("sha256"), "tokenizer.sha256"),
    (lambda m: m.pop("budget_tokens"), "budget_tokens"),
])
def test_a_mixture_manifest_edited_by_hand_is_one_line(data, tmp_path, edit, problem):
    # these were KeyError tracebacks; MixtureLoader (trainer train) already refused them in one line
    manifest = json.loads(data["a"].read_text())
    edit(manifest)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"edited.json was edited or damaged: .*" + problem) as e:
        ablate.make_plan(parse([str(path), str(data["b"]), "-o", str(tmp_path / "run"), *TINY]))
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------------------------------------
# Evaluation sets


def test_a_shared_dataset_keeps_the_most_rows_any_mixture_uses(data):
    mixes = [ablate.load_mixture(data["a"]), ablate.load_mixture(data["b"])]  # web_a: 24 rows in a, 8 in b
    sets = {e["name"]: [(Path(s["manifest"]).parent.name, s["sequences"]) for s in e["sources"]]
            for e in ablate.evaluation_sets(mixes, {}, 512)}
    assert sets == {"reference": [("ref", 24)], "web": [("web_a", 24), ("web_b", 4)]}
    # capped at 16: 24/28 x 16 = 13.71 and 4/28 x 16 = 2.29 -> 13 + 1 (the larger remainder) and 2
    sets = {e["name"]: [s["sequences"] for s in e["sources"]] for e in ablate.evaluation_sets(mixes, {}, 16)}
    assert sets == {"reference": [16], "web": [14, 2]}
    # capped at 3: 2.57 and 0.43 -> 3 and 0; a source left no rows is not listed
    web = next(e for e in ablate.evaluation_sets(mixes, {}, 3) if e["name"] == "web")
    assert [(Path(s["manifest"]).parent.name, s["sequences"]) for s in web["sources"]] == [("web_a", 3)]


def test_rows_are_evenly_spaced_and_ranks_take_equal_blocks(data):
    # floor(j x n / k), as the mixture loader caps a validation set: 10 rows, 4 kept -> 0, 2.5, 5, 7.5 floored
    assert ablate._spaced(10, 4) == [0, 2, 5, 7]
    assert ablate._spaced(24, 8) == [0, 3, 6, 9, 12, 15, 18, 21]
    src = [{"manifest": str(data["web_b"]), "sequences": 10}]
    # 10 rows over 3 ranks: 3 each, the last row left out, so every rank runs the same batches
    assert [ablate.eval_rows(src, rank=r, world_size=3)[0][1] for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert ablate.eval_rows([{**src[0], "sequences": 4}])[0][1] == [0, 2, 5, 7]


def test_extra_sets_and_no_validation_are_refused(data, tmp_path):
    short = token_dataset(tmp_path / "short", 3, seq_len=16)
    empty = token_dataset(tmp_path / "empty", 4, val_rows=0)
    for flags, message in (
            (["--eval", f"s={short}"], r"^--eval s: .*short has seq_len 16, the mixtures 32$"),
            (["--eval", f"e={empty}"], r"^--eval e: .*empty has no validation sequences$"),
            # the average over the sets: --rank-by avg and the avg_bpb/avg_loss columns; a set named so was
            # shadowed by them (results.csv and summary.csv repeated the column names)
            (["--eval", f"avg={data['web_b']}"], r"^--eval avg=\.\.\.: 'avg' names the average over all")):
        with pytest.raises(UserError, match=message):
            plan_for(data, tmp_path, *TINY, *flags)
    avg_domain = mixture(tmp_path, "avg_domain", {"d": token_dataset(tmp_path / "d", 5, domain="avg")})
    with pytest.raises(UserError, match=r"^mixture domain 'avg': 'avg' names the average over all"):
        ablate.make_plan(parse([str(avg_domain), "-o", str(tmp_path / "run"), *TINY]))
    no_val = mixture(tmp_path, "no_val", {"empty": empty})
    with pytest.raises(UserError, match=r"^no validation data: the mixtures have no validation sequences"):
        ablate.make_plan(parse([str(no_val), "-o", str(tmp_path / "run"), *TINY]))


def test_average_is_none_when_any_set_lacks_bytes():
    assert ablate._average({"x": {"bpb": 1.0}, "y": {"bpb": 2.5}}, "bpb") == 1.75
    # a mean over the sets that have bytes would compare mixtures on different sets
    assert ablate._average({"x": {"bpb": 1.0}, "y": {"bpb": None}}, "bpb") is None


# ----------------------------------------------------------------------------------------------------------
# The RUNDIR: mixture versions, failures, workers


def _plan(*mixtures: tuple[str, str]) -> dict:
    return {"settings": {"steps": 1}, "eval_sets": [{"name": "web"}], "mixtures": [{"name": n, "sha256": h}
                                                                                for n, h in mixtures]}


def test_a_rundir_remembers_every_mixture_version_it_trained(tmp_path):
    ablate.save_plan(tmp_path, _plan(("a", "a1"), ("b", "b1")))
    ablate.save_plan(tmp_path, _plan(("a", "a1")))  # a rerun of `a` alone: b's runs are still in the RUNDIR
    assert json.loads((tmp_path / "ablation.json").read_text())["mixture_sha256"] == {"a": "a1", "b": "b1"}
    with pytest.raises(UserError, match=r"holds runs of mixture\(s\) b made from another version"):
        ablate.save_plan(tmp_path, _plan(("b", "b2")))
    ablate.save_plan(tmp_path, _plan(("c", "c1")))  # a new mixture may join
    # an ablation.json written before mixture_sha256 was kept: its mixtures' sha256 are the record
    (tmp_path / "ablation.json").write_text(json.dumps(_plan(("a", "a1"))))
    with pytest.raises(UserError, match=r"holds runs of mixture\(s\) a made from another version"):
        ablate.save_plan(tmp_path, _plan(("a", "a2")))


def test_a_result_killed_mid_write_leaves_the_run_unfinished(tmp_path, monkeypatch):
    """A result.json cut short by a kill would be read as finished forever (execute skips any result.json):
    it is written whole or not at all, so a write that never completes leaves the run to train again."""
    plan = {"runs": [{"name": "a-s0", "mixture": "a", "seed": 0}]}
    monkeypatch.setattr(ablate, "train_run", lambda plan, run, rundir, *, log=None: {
        "format": ablate.RUN_FORMAT, **run, "status": "ok", "avg_loss": 2.0, "avg_bpb": None, "pad": "x" * 65536})

    def killed(src, dst):  # the process dies between writing the data and putting it in place
        raise KeyboardInterrupt

    monkeypatch.setattr(mixbuild.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        ablate.execute(plan, tmp_path, ["a-s0"], log=lambda _: None)
    assert not (tmp_path / "runs" / "a-s0" / "result.json").exists()
    assert [r["status"] for r in ablate.collect(plan, tmp_path)] == ["failed"]
    # and an ablation.json rewritten by a rerun keeps the old one until the new one is whole
    (tmp_path / "ablation.json").write_text(json.dumps(_plan(("a", "a1"))))
    with pytest.raises(KeyboardInterrupt):
        ablate.save_plan(tmp_path, _plan(("a", "a1"), ("b", "b1")))
    assert json.loads((tmp_path / "ablation.json").read_text()) == _plan(("a", "a1"))


@pytest.mark.parametrize("name, text", [("ablation.json", '{"settings": {"steps"'), ("ablation.json", "[1, 2]"),
                                        ("runs/a-s0/result.json", '{"name": "a-s0", "sta'),
                                        ("runs/a-s0/failed.json", b"\xff\xfe")])
def test_a_damaged_rundir_file_is_one_line_naming_it(tmp_path, name, text):
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(UserError, match=rf"^{path} is damaged \(.+\); delete "):
        if name == "ablation.json":
            ablate.save_plan(tmp_path, _plan(("a", "a1")))
        else:
            ablate.collect({"runs": [{"name": "a-s0", "mixture": "a", "seed": 0}]}, tmp_path)


@pytest.mark.parametrize("entries", ['[]', '{"a": 1}', '[{"path": "a.json", "name": "a"}]',
                                     '[{"path": 3, "name": "a", "proportions": {}}]', '["a.json"]'])
def test_a_sweep_index_without_whole_entries_is_one_line(tmp_path, entries):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text('{"format": "gristmill.sweep/1", "mixtures": %s}' % entries)
    with pytest.raises(UserError, match=r"sweep.json: mixtures must be a non-empty list of entries with a path, a "
                                        r"name and proportions, as `mix sweep` writes them; make the sweep again$"):
        ablate.load_sweep(sweep)


def test_last_line_of_an_error():
    assert ablate._last_line(ValueError("while reading shard 3\nArrowInvalid: bad magic\n")) == \
        "ValueError: ArrowInvalid: bad magic"
    assert ablate._last_line(ValueError("")) == "ValueError"
    assert ablate._last_line(KeyError("  ")) == "KeyError: '  '"  # str(KeyError) is its repr


def test_a_run_that_failed_then_finished_is_recorded_once_as_finished(tmp_path, monkeypatch):
    plan = {"runs": [{"name": "a-s0", "mixture": "a", "seed": 0}, {"name": "a-s1", "mixture": "a", "seed": 1}]}
    attempts = []

    def fake_train_run(plan, run, rundir, *, log=None):
        attempts.append(run["name"])
        (rundir / "runs" / run["name"]).mkdir(parents=True, exist_ok=True)  # as train_run makes it
        if len(attempts) == 1:
            raise RuntimeError("first line\nshard broken")
        return {"format": ablate.RUN_FORMAT, **run, "status": "ok", "avg_loss": 2.0, "avg_bpb": None}

    monkeypatch.setattr(ablate, "train_run", fake_train_run)
    lines = []
    ablate.execute(plan, tmp_path, ["a-s0", "a-s1"], log=lines.append)
    assert attempts == ["a-s0", "a-s1"] and lines[0] == "[1/2] a-s0: FAILED: RuntimeError: shard broken"
    assert json.loads((tmp_path / "runs" / "a-s0" / "failed.json").read_text()) == \
        {"name": "a-s0", "error": "RuntimeError: shard broken"}
    assert [r.get("error") for r in ablate.collect(plan, tmp_path)] == ["RuntimeError: shard broken", None]
    ablate.execute(plan, tmp_path, ["a-s0", "a-s1"], log=lines.append)  # the rerun tries the failed run again
    assert attempts == ["a-s0", "a-s1", "a-s0"] and lines[-1] == "[2/2] a-s1: finished earlier, skipped"
    assert not (tmp_path / "runs" / "a-s0" / "failed.json").exists()
    assert [r["status"] for r in ablate.collect(plan, tmp_path)] == ["ok", "ok"]


def test_workers_are_dealt_the_unfinished_runs_round_robin(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(ablate.os, "cpu_count", lambda: 8)
    launched = []

    class RecordedWorker:
        def __init__(self, cmd, env):
            launched.append((cmd, env))

        def wait(self):
            return 0

    monkeypatch.setattr(ablate.subprocess, "Popen", RecordedWorker)
    names = [f"m-s{k}" for k in range(5)]
    (tmp_path / "runs" / "m-s1").mkdir(parents=True)
    (tmp_path / "runs" / "m-s1" / "result.json").write_text("{}")
    ablate.execute_parallel({"runs": [{"name": n} for n in names]}, tmp_path, 2, keep_checkpoints=True,
                            log=lambda _: None)
    runs = [cmd[cmd.index("--worker") + 2:] for cmd, _ in launched]
    assert runs == [["m-s0", "m-s3", "--keep-checkpoints"], ["m-s2", "m-s4", "--keep-checkpoints"]]
    assert [env["OMP_NUM_THREADS"] for _, env in launched] == ["4", "4"]  # cores / N


def test_runs_that_never_finished_are_reported_failed(data, tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(ablate, "execute", lambda *a, **kw: calls.append("execute"))
    monkeypatch.setattr(ablate, "execute_parallel", lambda plan, rundir, workers, **kw: calls.append(workers))
    rundir = tmp_path / "run"
    assert ablate.run(parse([str(data["a"]), "--parallel-gpus", "1", "-o", str(rundir), *TINY])) == 0
    assert calls == [1]  # one worker process, as --parallel-gpus 1 asks
    assert "1 of 1 run(s) failed; see the table" in capsys.readouterr().err
    run = json.loads((rundir / "results.json").read_text())["runs"][0]
    assert (run["status"], run["error"]) == ("failed", "did not finish (interrupted, or its worker process died)")


# ----------------------------------------------------------------------------------------------------------
# A run whose steps are not a multiple of --eval-every (trains the tiny preset for 5 steps)


def test_a_run_is_evaluated_every_eval_every_steps_and_at_its_last(data, tmp_path):
    rundir = tmp_path / "run"
    plan = plan_for(data, tmp_path, *TINY, "--tokens", str(5 * 8 * SEQ), "--eval-every", "2", "--lr", "3e-3")
    ablate.save_plan(rundir, plan)
    ablate.execute(plan, rundir, ["a-s0"], keep_checkpoints=True, log=lambda _: None)
    out = rundir / "runs" / "a-s0"
    result = json.loads((out / "result.json").read_text())
    # 5 steps every 2: at 2, 4 and the last, 5; the tokens are targets trained on, 8 x 31 a step
    assert [(e["step"], e["tokens"]) for e in result["curve"]] == [(2, 2 * 248), (4, 4 * 248), (5, 5 * 248)]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 5 and result["train_loss"] == metrics[-1]["loss"]  # the last step's, as trained
    assert result["avg_loss"] == result["curve"][-1]["avg_loss"]
    # a row past the newest checkpoint (step 5) is dropped on resume, as docs/ablate.md says
    with open(out / "eval.jsonl", "a") as f:
        f.write(json.dumps({**result["curve"][-1], "step": 7, "avg_loss": 99.0}) + "\n")
    again = ablate.train_run(plan, plan["runs"][0], rundir)
    assert again["curve"] == result["curve"] and again["avg_loss"] == result["avg_loss"]
