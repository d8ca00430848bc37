"""Two gloo processes under torchrun: every parallel mode gives the losses of one process taking the whole
global batch in one forward, shards what it says it shards, and runs interrupted and resumed in every mode give
the uninterrupted losses."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gristmill.trainer.config import TrainConfig
from gristmill.trainer.train import train

MODES = ("ddp", "zero1", "zero2", "zero3")
COMPILED_MODES = ("ddp", "zero3")
EVAL_MODES = ("ddp", "zero3")
INIT_MODES = ("ddp", "zero3")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_settings, mixture, pad_mixture) -> dict:
    """One torchrun launch running every mode and the resumes: {run: [[step, loss, grad_norm], ...]}.
    Each rank takes micro-batches of 2 (accumulation 2) of rows with PAD tails, so ranks and micro-batches hold
    different numbers of scored targets; the single-process reference takes the global batch of 8 at once."""
    out = tmp_path_factory.mktemp("dist")
    config = {**tiny_settings, "micro_batch_size": 2, "data": {"mixture": str(pad_mixture)}}
    reference = {**config, "micro_batch_size": 8}
    plan = {m: {"mode": m} for m in MODES}
    for m in MODES:
        plan[f"{m}_first"] = {"mode": m, "dir": f"{m}_resume", "stop_after": 3}
        plan[f"{m}_resumed"] = {"mode": m, "dir": f"{m}_resume", "resume": "auto"}
    for m in COMPILED_MODES:  # compiled blocks under DDP's and FSDP2's hooks
        plan[f"{m}_compiled"] = {"mode": m, "config": {"compile": True}}
    evaluated = {"data": {"mixture": str(mixture)}, "eval_every": 2, "eval_max_sequences": 8}
    # init_from under torchrun: every rank loads the base weights before the model is wrapped or sharded
    base = out / "base"
    train(TrainConfig(**{**reference, "out_dir": str(base), "seed": 9}), verbose=False)
    seeded = {"init_from": str(base)}
    for m in INIT_MODES:
        plan[f"{m}_init"] = {"mode": m, "config": seeded}
    for m in EVAL_MODES:  # evaluation splits the validation rows over the ranks (FSDP2 needs both in each forward)
        plan[f"{m}_eval"] = {"mode": m, "config": evaluated}
    spec = out / "spec.json"
    spec.write_text(json.dumps({"out": str(out), "config": config, "runs": plan, "layouts": list(MODES)}))
    worker = Path(__file__).with_name("dist_worker.py")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(spec)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    single = train(TrainConfig(**{**reference, "out_dir": str(out / "single")}), verbose=False)
    results["single"] = [[r["step"], r["loss"], r["grad_norm"]] for r in single]
    results["layouts"] = json.loads((out / "layouts.json").read_text())
    for m in EVAL_MODES:
        results[f"{m}_eval:rows"] = _eval_rows(out / f"{m}_eval")
    train(TrainConfig(**{**reference, **evaluated, "out_dir": str(out / "single_eval")}), verbose=False)
    results["single_eval:rows"] = _eval_rows(out / "single_eval")
    init = train(TrainConfig(**{**reference, **seeded, "out_dir": str(out / "single_init")}), verbose=False)
    results["single_init"] = [[r["step"], r["loss"], r["grad_norm"]] for r in init]
    return results


def _eval_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "eval.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES)
def test_two_ranks_match_one_process(runs, mode):
    ref = runs["single"]
    got = runs[mode]
    assert [s for s, _, _ in got] == [1, 2, 3, 4, 5]
    assert [loss for _, loss, _ in got] == pytest.approx([loss for _, loss, _ in ref], rel=1e-5)
    assert [n for _, _, n in got] == pytest.approx([n for _, _, n in ref], rel=1e-4)
    assert ref[-1][1] < ref[0][1]  # it learns, so a wrong update would show


@pytest.mark.parametrize("mode", COMPILED_MODES)
def test_compiled_blocks_match_eager_across_ranks(runs, mode):
    got, ref = runs[f"{mode}_compiled"], runs[mode]
    # Dynamo compiled a graph only when asked (the later compiled run may reuse the first one's graphs)
    assert sum(runs[f"{m}_compiled:graphs"] for m in COMPILED_MODES) >= 1 and runs[f"{mode}:graphs"] == 0
    assert [loss for _, loss, _ in got] == pytest.approx([loss for _, loss, _ in ref], rel=1e-5)
    assert [n for _, _, n in got] == pytest.approx([n for _, _, n in ref], rel=1e-4)


@pytest.mark.parametrize("mode", EVAL_MODES)
def test_evaluation_across_ranks_matches_one_process(runs, mode):
    """8 evenly spaced rows per set: each of 2 ranks scores its 4, reduced over both, so every figure is the one
    process's (to the tolerance the trained weights agree to)."""
    got, ref = runs[f"{mode}_eval:rows"], runs["single_eval:rows"]
    assert [r["step"] for r in got] == [r["step"] for r in ref] == [2, 4, 5]
    for a, b in zip(got, ref):
        assert sorted(a["sets"]) == sorted(b["sets"]) == ["reference", "web"]
        for name in a["sets"]:
            assert a["sets"][name]["tokens"] == b["sets"][name]["tokens"] == 8 * 31
            for key in ("loss", "bits_per_byte"):
                assert a["sets"][name][key] == pytest.approx(b["sets"][name][key], rel=1e-5)


@pytest.mark.parametrize("mode", INIT_MODES)
def test_init_from_across_ranks_matches_one_process(runs, mode):
    got, ref = runs[f"{mode}_init"], runs["single_init"]
    assert [loss for _, loss, _ in got] == pytest.approx([loss for _, loss, _ in ref], rel=1e-5)
    assert ref[0][1] < runs["single"][0][1] - 0.01  # the base weights were really loaded: a lower first loss


@pytest.mark.parametrize("mode", MODES)
def test_sharded_resume_is_exact(runs, mode):
    assert [s for s, _, _ in runs[f"{mode}_first"]] == [1, 2, 3]
    assert runs[f"{mode}_first"] + runs[f"{mode}_resumed"] == runs[mode]


# What rank 0 of 2 holds, as fractions of the full model: (wrapper, optimizer, block weights gathered between
# forward and backward, gradients, Adam moments). Equal losses alone cannot tell one mode from another.
LAYOUTS = {
    "ddp": ("DistributedDataParallel", "AdamW", True, 1.0, 1.0),
    "zero1": ("DistributedDataParallel", "ZeroRedundancyOptimizer", True, 1.0, 0.5),
    "zero2": ("FSDPTransformer", "AdamW", True, 0.5, 0.5),
    "zero3": ("FSDPTransformer", "AdamW", False, 0.5, 0.5),
}


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_shards_what_it_says(runs, mode):
    got = runs["layouts"][mode]
    wrapper, optimizer, gathered, grads, states = LAYOUTS[mode]
    assert (got["wrapper"], got["optimizer"], got["gathered_after_forward"]) == (wrapper, optimizer, gathered)
    # ZeRO-1 balances whole tensors over ranks and FSDP2 pads dim 0: about half, not exactly
    assert got["grad_fraction"] == pytest.approx(grads, abs=0.02)
    assert got["state_fraction"] == pytest.approx(states, abs=0.02)
