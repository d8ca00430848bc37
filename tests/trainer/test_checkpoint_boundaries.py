"""Checkpoints at their edges, against references worked here: the data file's size as DCP wrote it (one byte
short is damage, whatever order the .metadata lists its extents in), which step folders count (only those DCP
finished, by step number), the process count and ZeRO-1's shards checked both ways, this run's schedule at the
saved position, the loop state handed back as saved, a run's model loaded in eval mode, and one-line refusals of
what is not a checkpoint, a run or a model config."""
from __future__ import annotations

import json
import pickle
import random

import pytest
import torch

from gristmill.errors import UserError
from gristmill.trainer import checkpoint
from gristmill.trainer.data import SyntheticSource
from gristmill.trainer.model import Transformer, model_config
from gristmill.trainer.train import WarmupCosine

SEQ_LEN = 32  # conftest.SEQ_LEN


def objects(lr: float = 1e-3, zero1: bool = False):
    """A tiny model, AdamW (or ZeRO-1's sharded one), a 10-step warmup-cosine LambdaLR and a synthetic source, as
    `trainer train` makes them."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    opt = (ZeroRedundancyOptimizer(model.parameters(), optimizer_class=torch.optim.AdamW, lr=lr) if zero1
           else torch.optim.AdamW(model.parameters(), lr=lr))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(2, 10, 0.1))
    return model, opt, sched, SyntheticSource(256, SEQ_LEN, 4, seed=0)


def test_one_byte_short_is_damage_whatever_order_the_metadata_lists_the_extents_in(tmp_path):
    path = checkpoint.save(tmp_path, *objects(), 1, rank=0, world=1, keep=0)
    data = path / "__0_0.distcp"
    whole = data.read_bytes()  # DCP writes its extents end to end: the file's size is what the .metadata records
    data.write_bytes(whole[:-1])
    damaged = (f"checkpoint {path} is damaged: __0_0.distcp is {len(whole) - 1:,} bytes, its .metadata records "
               f"{len(whole):,}; use another checkpoint")
    with pytest.raises(UserError) as e:
        checkpoint.check_complete(path)
    assert str(e.value) == damaged
    # The check takes the furthest extent, not the last one listed: DCP does not promise its order.
    meta = path / ".metadata"
    with meta.open("rb") as f:
        md = pickle.load(f)
    md.storage_data = dict(reversed(list(md.storage_data.items())))
    with meta.open("wb") as f:
        pickle.dump(md, f)
    with pytest.raises(UserError) as e:
        checkpoint.check_complete(path)
    assert str(e.value) == damaged
    data.write_bytes(whole)
    checkpoint.check_complete(path)  # exactly the recorded size is whole


def test_latest_is_the_highest_step_dcp_finished(tmp_path):
    for step in (2, 10):
        checkpoint.save(tmp_path, *objects(), step, rank=0, world=1, keep=0)
    # a save cut short before DCP wrote the .metadata (it writes it last), and names that are no step folder
    cut = checkpoint.step_dir(tmp_path, 11)
    cut.mkdir()
    (cut / "__0_0.distcp").write_bytes(b"\0" * 100)
    (tmp_path / "step-12").mkdir()
    (tmp_path / "step-000000013").mkdir()
    assert checkpoint.latest(tmp_path) == tmp_path / "step-00000010"
    assert [p.name for p in checkpoint.step_dirs(tmp_path)] == ["step-00000002", "step-00000010", "step-00000011"]
    # oldest first by number, whatever order the folders were made (and the file system lists them) in
    steps = list(range(1, 41)) + [99_999_999, 100_000_000, 1_000_000_001]  # past 8 digits: by number, not name
    random.Random(0).shuffle(steps)
    root = tmp_path / "many"
    for step in steps:
        checkpoint.step_dir(root, step).mkdir(parents=True)
    assert [checkpoint.step_of(p) for p in checkpoint.step_dirs(root)] == sorted(steps)
    assert checkpoint.step_dir(root, 7).name == "step-00000007" and checkpoint.latest(root) is None


def test_the_process_count_is_checked_both_ways(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint.dist, "barrier", lambda: None)  # a save of world 2 waits for the other rank
    two = checkpoint.save(tmp_path / "two", *objects(), 1, rank=0, world=2, keep=1)
    with pytest.raises(UserError) as e:
        checkpoint.load(two, *objects(), rank=0, world=1)
    assert str(e.value) == (f"checkpoint {two} was written by 2 process(es); resume it with the same number "
                            f"(this run has 1)")
    one = checkpoint.save(tmp_path / "one", *objects(), 1, rank=0, world=1, keep=1)
    with pytest.raises(UserError, match=r"was written by 1 process\(es\); .* \(this run has 2\)$"):
        checkpoint.load(one, *objects(), rank=0, world=2)


def test_a_resume_is_at_the_saved_position_of_this_runs_schedule_and_returns_the_loop_state(tmp_path):
    model, opt, sched, src = objects(lr=1e-3)
    for _ in range(3):
        opt.step()  # no gradients: a no-op that lets the scheduler step without torch's order warning
        sched.step()
    src.next_batch()
    loop = {"recent": [2.5, 2.25], "skips": 1}
    path = checkpoint.save(tmp_path, model, opt, sched, src, 3, rank=0, world=1, keep=1, loop_state=loop)
    model, opt, sched, src = objects(lr=2e-3)  # a resume with another peak lr
    assert checkpoint.load(path, model, opt, sched, src, rank=0, world=1) == (3, loop, None)
    want = 2e-3 * WarmupCosine(2, 10, 0.1)(3)
    assert sched.last_epoch == 3 and sched.get_last_lr() == pytest.approx([want] * len(opt.param_groups))
    for group in opt.param_groups:  # the loaded optimizer state carried the old run's lr and initial_lr
        assert group["lr"] == pytest.approx(want) and group["initial_lr"] == 2e-3
    assert src.sample == 4
    opt.step()
    sched.step()  # and it goes on along this run's schedule
    assert sched.get_last_lr()[0] == pytest.approx(2e-3 * WarmupCosine(2, 10, 0.1)(4))


def test_what_is_not_a_checkpoint_a_run_or_a_model_config_is_one_line(tmp_path):
    empty = tmp_path / "run" / "checkpoints" / "step-00000001"
    empty.mkdir(parents=True)
    with pytest.raises(UserError) as e:
        checkpoint.load(empty, *objects(), rank=0, world=1)
    assert str(e.value) == f"not a checkpoint (no .metadata): {empty}"
    with pytest.raises(UserError) as e:
        checkpoint.load_model_weights(empty, objects()[0])
    assert str(e.value) == f"not a checkpoint (no .metadata): {empty}"
    saved = objects()
    ckpt = checkpoint.save(tmp_path / "run" / "checkpoints", *saved, 2, rank=0, world=1, keep=0)
    config = tmp_path / "run" / "config.json"
    with pytest.raises(UserError) as e:
        checkpoint.find_run(ckpt)
    assert str(e.value) == f"{config} does not exist: a run's checkpoints are read with the config.json beside them"
    with pytest.raises(UserError) as e:
        checkpoint.find_run(tmp_path)
    assert str(e.value) == (f"{tmp_path} holds no checkpoint (looked in {tmp_path / 'checkpoints'}); an ablation "
                            f"keeps its runs' checkpoints only with --keep-checkpoints")
    for text, why in (({"train": {}}, "'model'"), ({"model": {"d_model": 64, "heads": 2}}, "heads")):
        config.write_text(json.dumps(text))
        with pytest.raises(UserError, match=rf"^{config}: no model config a Transformer accepts \(.*{why}"):
            checkpoint.load_model(*checkpoint.find_run(tmp_path / "run"))
    assert checkpoint.find_run(tmp_path / "run") == (config, ckpt)  # the newest finished step, beside its config
    config.write_text(json.dumps({"model": saved[0].config.to_dict()}))
    model, _ = checkpoint.load_model(config, ckpt)
    assert not model.training  # for export and evaluation, however the run was saved
    want = saved[0].state_dict()
    assert all(torch.equal(t, want[k]) for k, t in model.state_dict().items())


def test_zero1_shards_round_trip_and_a_checkpoint_of_the_other_optimizer_is_refused(tmp_path):
    """ZeRO-1's Adam states go through the rank's own entry, not DCP's optimizer helpers; a one-process gloo group
    makes a ZeroRedundancyOptimizer here (test_parallel covers two ranks, at far greater cost)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model, opt, sched, src = objects(zero1=True)
        batch = src.next_batch()
        model(batch[:, :-1], batch[:, 1:]).backward()
        opt.step()  # Adam states to save
        zero1 = checkpoint.save(tmp_path / "zero1", model, opt, sched, src, 1, rank=0, world=1, keep=0)
        plain = checkpoint.save(tmp_path / "plain", *objects(), 1, rank=0, world=1, keep=0)
        fresh = objects(zero1=True)
        checkpoint.load(zero1, *fresh, rank=0, world=1)
        want, got = opt.optim.state_dict()["state"], fresh[1].optim.state_dict()["state"]
        assert sorted(got) == sorted(want) and len(want) == len(list(model.parameters()))
        assert all(torch.equal(got[k][name], want[k][name]) for k in want for name in ("exp_avg", "exp_avg_sq", "step"))
        with pytest.raises(UserError) as e:
            checkpoint.load(zero1, *objects(), rank=0, world=1)
        assert str(e.value) == (f"checkpoint {zero1} was written with ZeRO-1 optimizer shards; resume it with "
                                f"parallel: zero1")
        with pytest.raises(UserError) as e:
            checkpoint.load(plain, *objects(zero1=True), rank=0, world=1)
        assert str(e.value) == (f"checkpoint {plain} was written without ZeRO-1 optimizer shards; resume it with "
                                f"parallel: ddp, zero2 or zero3")
    finally:
        dist.destroy_process_group()
