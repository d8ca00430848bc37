"""The single-process training loop: exact resume, schedule, metrics, anomalies, the mixture loader, evaluation."""
from __future__ import annotations

import json
import math
import re
from collections import deque

import pytest
import torch
import torch.nn.functional as F

from gristmill.errors import UserError
from gristmill.tokenize.shards import TokenDataset
from gristmill.trainer.config import load_config
from gristmill.trainer.data import SyntheticSource, token_dataset_batches
from gristmill.trainer.evaluate import evaluate
from gristmill.trainer.model import Transformer, model_config
from gristmill.trainer.train import WarmupCosine, _anomaly, train

SEQ_LEN = 32  # conftest.SEQ_LEN
TIMING = ("tokens_per_s", "step_time_s", "peak_mem_gb")


def metrics(tmp_path, name="run") -> list[dict]:
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def test_resume_gives_the_uninterrupted_losses(tmp_path, tiny):
    full = train(tiny("full"), verbose=False)
    assert len(full) == 5 and full[-1]["loss"] < full[0]["loss"]
    first = train(tiny("cut"), stop_after=2, verbose=False)
    assert [r["step"] for r in first] == [1, 2]
    second = train(tiny("cut"), verbose=False)  # resume="auto" picks up checkpoints/step-00000002
    assert [r["step"] for r in second] == [3, 4, 5]
    # bitwise: same model, optimizer moments, lr schedule and data position
    assert metrics(tmp_path, "cut") == metrics(tmp_path, "full")
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == ["step-00000002", "step-00000005"]
    saved = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert saved["model"]["d_model"] == 64 and saved["train"]["steps"] == 5


def test_metrics_rows_and_schedule(tiny):
    rows = train(tiny(steps=8, warmup_steps=3, checkpoint_every=0), verbose=False)
    sched = WarmupCosine(3, 8, 0.1)
    for r in rows:
        assert set(r) >= {"step", "loss", "grad_norm", "lr", "tokens_per_s", "mfu", "peak_mem_gb", "skipped"}
        assert r["lr"] == pytest.approx(3e-3 * sched(r["step"] - 1))
        assert r["tokens_per_s"] > 0 and r["peak_mem_gb"] > 0 and r["mfu"] is None  # no MFU on CPU
        assert r["tokens"] == r["step"] * 8 * (SEQ_LEN - 1)
    # linear warmup to the peak, then cosine down to 10% of the peak at the last update (step 8 uses sched(7))
    assert [round(sched(s), 6) for s in range(3)] == [round(1 / 3, 6), round(2 / 3, 6), 1.0]
    assert sched(7) == pytest.approx(0.1) and sched(5) == pytest.approx(0.55) and sched(3) == 1.0
    assert rows[-1]["lr"] == pytest.approx(3e-3 * 0.1)


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
def test_wsd_schedule_is_transformers_get_wsd_schedule_after_warmup(tiny, shape):
    """The trainer's lr under schedule: wsd against HF transformers' get_wsd_schedule (a peer library's
    implementation): equal at every step after warmup; the warmup is the trainer's own (step + 1) / warmup."""
    transformers = pytest.importorskip("transformers")
    steps, warmup, decay = 20, 3, 6  # decay_fraction 0.3 of 20
    rows = train(tiny(steps=steps, warmup_steps=warmup, schedule="wsd", decay_fraction=0.3, decay_shape=shape,
                      min_lr_ratio=0.1), verbose=False)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    ref = transformers.get_wsd_schedule(opt, num_warmup_steps=warmup, num_stable_steps=steps - warmup - decay,
                                        num_decay_steps=decay, decay_type=shape, min_lr_ratio=0.1)
    want = []
    for _ in range(steps):
        want.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    got = [r["lr"] / 3e-3 for r in rows]
    assert got[warmup:] == pytest.approx(want[warmup:], rel=1e-12, abs=1e-15)
    assert got[:warmup] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert got[warmup:steps - decay] == [1.0] * (steps - warmup - decay) and got[-1] < 0.3  # stable, then decay


def test_wsd_config_errors_are_one_line():
    from gristmill.trainer.config import TrainConfig

    with pytest.raises(UserError, match=r"config: warmup_steps 10 \+ decay steps 8 \(decay_fraction 0.8 of 10\)"):
        TrainConfig(steps=10, warmup_steps=10, schedule="wsd", decay_fraction=0.8).validate()
    with pytest.raises(UserError, match="config: schedule must be one of cosine, wsd, not 'step'"):
        TrainConfig(schedule="step").validate()
    with pytest.raises(UserError, match="config: decay_shape must be one of linear, cosine, 1-sqrt"):
        TrainConfig(schedule="wsd", decay_shape="exp").validate()


def test_grad_norm_is_reported_before_clipping(tiny):
    clipped = train(tiny("a", grad_clip=0.1, steps=2), verbose=False)
    free = train(tiny("b", grad_clip=0.0, steps=2), verbose=False)
    assert clipped[0]["grad_norm"] == pytest.approx(free[0]["grad_norm"]) and clipped[0]["grad_norm"] > 0.1
    assert clipped[1]["loss"] != free[1]["loss"]  # the clipped update differs


def test_activation_checkpointing_and_bf16(tiny):
    base = train(tiny("a", steps=3), verbose=False)
    ckpt = train(tiny("b", steps=3, activation_checkpointing=True), verbose=False)
    assert [r["loss"] for r in ckpt] == pytest.approx([r["loss"] for r in base], rel=1e-6)
    bf16 = train(tiny("c", steps=3, precision="bf16"), verbose=False)
    assert [r["loss"] for r in bf16] == pytest.approx([r["loss"] for r in base], rel=2e-2)


def test_compiled_blocks_train_like_eager_and_share_checkpoints(tmp_path, tiny):
    from torch._dynamo.utils import counters

    base = train(tiny("eager"), verbose=False)
    graphs = counters["stats"]["unique_graphs"]
    compiled = train(tiny("compiled", compile=True, activation_checkpointing=True), verbose=False)
    assert counters["stats"]["unique_graphs"] > graphs  # Dynamo really compiled the blocks
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in base], rel=1e-5)
    assert [r["grad_norm"] for r in compiled] == pytest.approx([r["grad_norm"] for r in base], rel=1e-4)
    # A compiled block's keys gain `_orig_mod.`; DCP strips it, so a plain run resumes a compiled one's checkpoint
    train(tiny("mixed", compile=True), stop_after=2, verbose=False)
    train(tiny("mixed"), verbose=False)
    mixed, eager = metrics(tmp_path, "mixed"), metrics(tmp_path, "eager")
    assert [r["step"] for r in mixed] == [1, 2, 3, 4, 5]
    assert [r["loss"] for r in mixed] == pytest.approx([r["loss"] for r in eager], rel=1e-5)


def test_non_finite_loss_stops_or_skips(tmp_path, tiny):
    # lr 1e30 with no warmup: the first update blows the weights up, the second forward overflows
    boom = dict(lr=1e30, warmup_steps=0, grad_clip=0.0, steps=5)
    with pytest.raises(UserError, match=r"step 2: non-finite (loss|gradient norm); stopping"):
        train(tiny("stop", on_anomaly="stop", **boom), verbose=False)
    with pytest.raises(UserError, match=r"3 steps skipped in a row \(max_skips 2\)"):
        train(tiny("skip", on_anomaly="skip", max_skips=2, **boom), verbose=False)
    def strict(constant):
        raise ValueError(f"not strict JSON: {constant}")

    lines = (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()
    logged = [json.loads(x, parse_constant=strict) for x in lines]  # NaN / Infinity are written as null
    skipped = [r["skipped"] for r in logged]
    assert skipped[0] is None and all(s.startswith("non-finite") for s in skipped[1:]) and len(skipped) == 3
    assert all(r["loss"] is None or r["grad_norm"] is None for r in logged[1:])


def _skip_step(monkeypatch, skipped: int, first: int = 1) -> None:
    """Make the loop judge step `skipped` an anomaly, whatever its loss; the run's first step is `first`."""
    from gristmill.trainer import train as train_module

    judged = iter(range(first, 10 ** 6))
    monkeypatch.setattr(train_module, "_anomaly", lambda loss, norm, recent, factor: "forced" if next(judged) == skipped
                        else _anomaly(loss, norm, recent, factor))


def test_a_skipped_step_does_not_advance_the_schedule(tmp_path, tiny, monkeypatch):
    """As Megatron-LM (its scheduler steps only `if update_successful`), the schedule counts applied updates:
    step 4 runs at the lr skipped step 3 would have, and a run resumed after the skip gives the same losses."""
    settings = dict(steps=8, warmup_steps=3, min_lr_ratio=0.1, on_anomaly="skip")
    _skip_step(monkeypatch, 3)
    full = train(tiny("full", **settings), verbose=False)
    assert [r["skipped"] for r in full] == [None, None, "forced"] + [None] * 5
    # WarmupCosine(3, 8, 0.1) by hand at the updates applied before each step, 0 1 2 2 3 4 5 6: warmup 1/3, 2/3,
    # 1; then 0.1 + 0.45 (1 + cos(pi p)) at p = (applied - 3) / 4 = 0, 1/4, 1/2, 3/4
    by_hand = [1 / 3, 2 / 3, 1.0, 1.0, 1.0, 0.1 + 0.45 * (1 + math.sqrt(0.5)), 0.55, 0.1 + 0.45 * (1 - math.sqrt(0.5))]
    assert [r["lr"] / 3e-3 for r in full] == pytest.approx(by_hand, rel=1e-12)
    _skip_step(monkeypatch, 3)
    train(tiny("cut", **settings), stop_after=5, verbose=False)
    _skip_step(monkeypatch, 3, first=6)  # the resumed run's first step is 6: nothing more is forced
    train(tiny("cut", **settings), verbose=False)
    assert metrics(tmp_path, "cut") == metrics(tmp_path, "full")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_peak_memory_is_per_step_on_cuda(tiny):
    """peak_mem_gb is the step's own peak: 2 GB allocated and freed before the run do not show in it."""
    big = torch.empty(2 * 1024 ** 3 // 4, device="cuda")
    del big
    rows = train(tiny("gpu", precision="bf16"), verbose=False)
    assert all(0 < r["peak_mem_gb"] < 1 for r in rows)


def test_spike_detection():
    from collections import deque

    recent = deque([2.0] * 20, maxlen=20)
    assert _anomaly(2.5, 1.0, recent, 3.0) is None
    assert _anomaly(7.0, 1.0, recent, 3.0).startswith("loss spike")
    assert _anomaly(7.0, 1.0, deque([2.0] * 5, maxlen=20), 3.0) is None  # no judgement before the window fills
    assert _anomaly(1.0, math.inf, recent, 3.0) == "non-finite gradient norm"


def test_trains_from_a_mixture_manifest_and_resumes_its_position(tmp_path, mixture):
    def config(name):
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model: tiny\ndata: {{mixture: {mixture}}}\nsteps: 6\nbatch_size: 8\nmicro_batch_size: 4\n"
                        f"precision: fp32\nlr: 3.0e-3\nwarmup_steps: 2\nout_dir: {tmp_path / name}\n")
        return load_config(path)

    rows = train(config("full"), verbose=False)
    assert rows[-1]["loss"] < rows[0]["loss"] < math.log(256) + 0.1
    train(config("cut"), stop_after=4, verbose=False)
    train(config("cut"), verbose=False)
    assert metrics(tmp_path, "cut") == metrics(tmp_path, "full")
    ds = TokenDataset(mixture.parent / "web", split="validation")
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    result = evaluate(model, token_dataset_batches(ds, 5))
    assert result["tokens"] == 16 * (SEQ_LEN - 1) and result["bytes"] == 16 * 3 * SEQ_LEN


def test_pad_targets_are_neither_learned_nor_scored():
    """PAD fills the tail of a bucket's last row: the loss, its gradient and the evaluation skip those targets."""
    from gristmill.trainer.model import lm_targets

    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    pad, eos = 0, 2
    ids = torch.randint(3, 256, (3, SEQ_LEN))
    ids[0, 20] = eos
    ids[0, 21:] = pad  # a last row: the document's EOS, then PAD
    ids[2, 1] = eos
    ids[2, 2:] = pad
    targets = lm_targets(ids, pad)
    keep = ids[:, 1:] != pad
    assert int(keep.sum()) == 20 + (SEQ_LEN - 1) + 1  # targets 1..20, a full row, the lone EOS
    loss = model(ids[:, :-1], targets)
    with torch.no_grad():
        logits = model(ids[:, :-1])
    want = F.cross_entropy(logits[keep].double(), ids[:, 1:][keep])
    assert float(loss.detach()) == pytest.approx(float(want), rel=1e-5)
    result = evaluate(model, [(ids, torch.tensor([10, 10, 10]))], pad_id=pad)
    assert result["tokens"] == int(keep.sum()) and result["loss"] == pytest.approx(float(want), rel=1e-5)
    # a batch whose every target is PAD: a zero loss and zero gradients, not 0/0
    only_pad = torch.full((1, SEQ_LEN), pad)
    only_pad[0, 0] = eos
    empty = model(only_pad[:, :-1], lm_targets(only_pad, pad))
    empty.backward()
    assert float(empty.detach()) == 0.0 and all(float(p.grad.abs().sum()) == 0.0 for p in model.parameters())


def test_evaluate_matches_a_direct_computation():
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    src = SyntheticSource(256, SEQ_LEN, 6, seed=1)
    batches = [(src.next_batch(), torch.full((6,), 50)) for _ in range(2)]
    result = evaluate(model, batches)
    with torch.no_grad():
        ids = torch.cat([b[0] for b in batches])
        nats = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
    assert result["loss"] == pytest.approx(nats / ids[:, 1:].numel(), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(nats / math.log(2) / (12 * 50), rel=1e-5)
    assert evaluate(model, [b[0] for b in batches])["bits_per_byte"] is None


def test_evaluation_is_plain_cross_entropy_without_the_z_loss():
    """A model trained with z_loss: the validation loss (and so bits per byte) leaves the penalty out."""
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN, z_loss=1e-2))
    ids = SyntheticSource(256, SEQ_LEN, 6, seed=1).next_batch()
    with torch.no_grad():
        want = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1).double(), ids[:, 1:].flatten()).item()
        trained = float(model(ids[:, :-1], ids[:, 1:]))
    assert trained > want + 0.1  # the training loss does carry the penalty
    result = evaluate(model, [(ids, torch.full((6,), 50))])
    assert result["loss"] == pytest.approx(want, rel=1e-6)
    assert result["bits_per_byte"] == pytest.approx(want * 6 * (SEQ_LEN - 1) / math.log(2) / 300, rel=1e-6)


@pytest.mark.parametrize("text,msg", [
    ("parallel: zero4\n", "parallel must be one of"),
    ("stepz: 3\n", "unknown key(s) stepz"),
    ("model: {preset: tiny, heads: 2}\n", "unknown field(s) heads"),
    ("data: {mixture: nowhere.json}\n", "does not exist"),
    ("batch_size: 10\nmicro_batch_size: 4\n", "not a multiple of micro_batch_size"),
    ("steps: [1\n", "cannot parse"),
    ("compile: yes please\n", "compile must be true or false"),
    ("compile: true\nkernels: triton\n", "use kernels: auto (or torch) with it"),
])
def test_config_errors_are_one_line(tmp_path, text, msg):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as e:
        train(load_config(path, out_dir=str(tmp_path / "o")), verbose=False)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_resume_refuses_another_model_or_data_but_allows_a_longer_run(tmp_path, tiny):
    train(tiny("r"), stop_after=2, verbose=False)
    # same shapes, another model: DCP would load it without complaint
    with pytest.raises(UserError, match=r"holds a run of another model \(z_loss: 0.0 -> 0.001\)"):
        train(tiny("r", model={"preset": "tiny", "z_loss": 1e-3}), verbose=False)
    with pytest.raises(UserError, match="holds a run of another model .*d_model: 64 -> 128"):
        train(tiny("r", model={"preset": "tiny", "d_model": 128}), verbose=False)
    with pytest.raises(UserError, match="holds a run on other data"):
        train(tiny("r", data={"synthetic": {"vocab_size": 256, "seq_len": 32, "seed": 1}}), verbose=False)
    rows = train(tiny("r", steps=7), verbose=False)  # more steps (and so another schedule) is a resume
    assert [r["step"] for r in rows] == [3, 4, 5, 6, 7]
    # a checkpoint that does not fit (here: its config.json is gone) is still one line, not DCP's traceback
    (tmp_path / "r" / "config.json").unlink()
    with pytest.raises(UserError, match="cannot resume from .*Size mismatch"):
        train(tiny("r", model={"preset": "tiny", "d_model": 128}), verbose=False)


def test_resume_follows_this_runs_schedule_and_peak_lr(tiny):
    """A resume restores the schedule's position only: the steps, warmup, decay and peak lr are this run's.
    A WSD run of 10 steps stopped in its stable phase and resumed with 20 decays over 20's last 4 steps."""
    from gristmill.trainer.train import lr_schedule

    kw = dict(schedule="wsd", decay_fraction=0.2, warmup_steps=2, micro_batch_size=8)
    train(tiny("long", steps=10, **kw), stop_after=4, verbose=False)
    longer = tiny("long", steps=20, **kw)
    rows = train(longer, verbose=False)
    want = lr_schedule(longer)
    assert [r["step"] for r in rows] == list(range(5, 21))
    assert [r["lr"] / 3e-3 for r in rows] == pytest.approx([want(r["step"] - 1) for r in rows], rel=1e-12)
    assert [round(r["lr"] / 3e-3, 3) for r in rows[-5:]] == [1.0, 1.0, 0.775, 0.55, 0.325]
    train(tiny("peak", steps=10, **kw), stop_after=4, verbose=False)
    rows = train(tiny("peak", steps=10, **{**kw, "lr": 5e-4}), verbose=False)
    assert [r["lr"] for r in rows][:4] == pytest.approx([5e-4] * 4, rel=1e-12)  # the stable phase, at the new peak
    assert rows[-1]["lr"] == pytest.approx(5e-4 * lr_schedule(tiny(steps=10, **kw))(9), rel=1e-12)


def test_resume_with_other_micro_batches_or_batch_size(tmp_path, tiny):
    """micro_batch_size (so the accumulation) may change on a resume: a step reads the same global batch, so the
    losses are the uninterrupted run's. batch_size may change too: the data goes on from the next sample, and
    `tokens` counts on from the tokens trained so far (2 steps x 8 rows x 31 targets, then 16 rows a step)."""
    full = train(tiny("full"), verbose=False)
    train(tiny("micro"), stop_after=2, verbose=False)
    resumed = train(tiny("micro", micro_batch_size=2), verbose=False)
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in full[2:]], rel=1e-6)
    train(tiny("bigger"), stop_after=2, verbose=False)
    train(tiny("bigger", batch_size=16), stop_after=3, verbose=False)
    train(tiny("bigger", batch_size=16), verbose=False)  # the count survives a second resume
    tokens = [r["tokens"] for r in metrics(tmp_path, "bigger")]
    assert tokens == [8 * 31, 2 * 8 * 31, 2 * 8 * 31 + 16 * 31, 2 * 8 * 31 + 2 * 16 * 31, 2 * 8 * 31 + 3 * 16 * 31]


def test_resume_never_sets_the_previous_run_aside(tmp_path, tiny, capsys):
    """--resume never in an out_dir holding a longer run: that run's checkpoints (numbered past the new run's)
    move to replaced-<time>/ with its config and metrics, so the new run's checkpoint is kept and a later auto
    resume continues the new run, not the old one."""
    kw = dict(micro_batch_size=8, out_dir=str(tmp_path / "r"))
    train(tiny(steps=10, checkpoint_every=2, **kw), verbose=False)
    rows = train(tiny(steps=5, **kw), resume="never", verbose=False)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert "note: --resume never: moved the previous run" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "r" / "checkpoints").iterdir()) == ["step-00000005"]
    [old] = (tmp_path / "r").glob("replaced-*")
    assert sorted(p.name for p in (old / "checkpoints").iterdir()) == ["step-00000008", "step-00000010"]
    assert len((old / "metrics.jsonl").read_text().splitlines()) == 10 and (old / "config.json").is_file()
    assert len(metrics(tmp_path, "r")) == 5
    rows = train(tiny(steps=7, **kw), verbose=False)
    assert [r["step"] for r in rows] == [6, 7]


def test_resume_from_an_earlier_checkpoint_sets_the_later_ones_aside(tmp_path, tiny, capsys):
    """--resume PATH at step 4 of a 10-step run continues from there: the checkpoints past step 4 (the abandoned
    continuation, whose metrics rows are dropped) move to replaced-<time>/, so a later auto resume continues the
    resumed run instead of jumping to the old step 10."""
    kw = dict(micro_batch_size=8, checkpoint_every=2, keep_checkpoints=0)
    full = train(tiny("r", steps=10, **kw), verbose=False)
    ckpts = tmp_path / "r" / "checkpoints"
    rows = train(tiny("r", steps=10, **kw), resume=str(ckpts / "step-00000004"), stop_after=6, verbose=False)
    assert [r["step"] for r in rows] == [5, 6]
    assert "moved this out_dir's checkpoints past step 4" in capsys.readouterr().err
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002", "step-00000004", "step-00000006"]
    [old] = (tmp_path / "r").glob("replaced-*")
    assert sorted(p.name for p in (old / "checkpoints").iterdir()) == ["step-00000006", "step-00000008",
                                                                          "step-00000010"]
    rows = train(tiny("r", steps=10, **kw), stop_after=7, verbose=False)
    assert [r["step"] for r in rows] == [7]
    assert [r["loss"] for r in metrics(tmp_path, "r")] == [r["loss"] for r in full[:7]]


def test_save_checkpoints_false_writes_none(tmp_path, tiny):
    """A benchmark or throwaway run: no checkpoint at all, also at the end (the losses are those of a saving run)."""
    rows = train(tiny("none", save_checkpoints=False, checkpoint_every=2), verbose=False)
    assert not (tmp_path / "none" / "checkpoints").exists() or not any((tmp_path / "none" / "checkpoints").iterdir())
    assert [r["loss"] for r in rows] == [r["loss"] for r in train(tiny("saved"), verbose=False)]
    assert any((tmp_path / "saved" / "checkpoints").iterdir())


def test_pruning_keeps_the_checkpoint_just_written(tmp_path):
    """keep counts the checkpoints at or below the step written; one numbered past it is left alone."""
    from gristmill.trainer import checkpoint

    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(1, 5, 0.1))
    src = SyntheticSource(256, SEQ_LEN, 4, seed=0)
    for step in (9, 1, 2, 3):
        checkpoint.save(tmp_path, model, opt, sched, src, step, rank=0, world=1, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002", "step-00000003", "step-00000009"]


def test_resume_drops_metrics_logged_after_the_checkpoint(tmp_path, tiny):
    train(tiny("r", checkpoint_every=2), stop_after=3, verbose=False)  # checkpoints at 2 and 3
    import shutil

    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step-00000003")  # as if the run died before saving step 3
    train(tiny("r", checkpoint_every=2), verbose=False)
    assert [r["step"] for r in metrics(tmp_path, "r")] == [1, 2, 3, 4, 5]
    train(tiny("full"), verbose=False)
    assert metrics(tmp_path, "r") == metrics(tmp_path, "full")


def test_gradient_accumulation_matches_one_big_micro_batch(tiny, pad_mixture):
    """batch 8 as 1 x 8, 2 x 4 and 8 x 1 on rows with PAD tails of different lengths: the same update, so the same
    losses and gradient norms. The loss is the mean over the batch's scored targets, not a mean of micro-batch
    means (which weights a PAD-heavy micro-batch's targets more), and a dropped or unscaled micro-batch would
    change it too."""
    data = {"mixture": str(pad_mixture)}
    runs = [train(tiny(f"m{m}", micro_batch_size=m, data=data), verbose=False) for m in (8, 4, 1)]
    for key in ("loss", "grad_norm"):  # Adam hides a wrongly scaled gradient from the loss, not from its norm
        values = [[r[key] for r in rows] for rows in runs]
        assert values[1] == pytest.approx(values[0], rel=1e-6) and values[2] == pytest.approx(values[0], rel=1e-6)
    assert runs[0][-1]["loss"] < runs[0][0]["loss"]


def test_the_loss_is_the_mean_over_the_batchs_scored_targets(tiny, pad_mixture):
    """The first step's logged loss is the fresh model's cross-entropy averaged over every non-PAD target of the
    step's batch (both micro-batches together)."""
    from gristmill.mixtures.loader import MixtureLoader
    from gristmill.trainer.model import lm_targets

    rows = train(tiny("m", micro_batch_size=2, batch_size=4, data={"mixture": str(pad_mixture)}), verbose=False)
    torch.manual_seed(0)  # the run's seed; the model is the first thing to draw from torch's RNG
    model = Transformer(model_config("tiny", vocab_size=256, max_seq_len=SEQ_LEN))
    loader = MixtureLoader(pad_mixture, 2)
    ids = torch.cat([loader.next_batch(), loader.next_batch()])
    targets = lm_targets(ids, 0)
    with torch.no_grad():
        want = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1).double(), targets.flatten(), ignore_index=-100)
    assert int((targets == -100).sum()) > 0  # the batch has PAD
    assert rows[0]["loss"] == pytest.approx(float(want), rel=1e-6)


def test_bf16_autocasts_over_fp32_weights(tiny, tmp_path):
    from gristmill.trainer import checkpoint

    fp32 = train(tiny("a", steps=2), verbose=False)
    bf16 = train(tiny("b", steps=2, precision="bf16"), verbose=False)
    assert [r["loss"] for r in bf16] != [r["loss"] for r in fp32]  # the forward really ran in bf16
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    checkpoint.load_model_weights(checkpoint.latest(tmp_path / "b" / "checkpoints"), model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_activation_checkpointing_recomputes_each_block():
    """Wrapped blocks keep few tensors for backward and run their forward again in it; same gradients."""
    from gristmill.trainer.parallel import parallelize

    def run(checkpointing: bool):
        torch.manual_seed(0)
        model = parallelize(Transformer(model_config("tiny", max_seq_len=SEQ_LEN)), "single", world_size=1,
                            device=torch.device("cpu"), activation_checkpointing=checkpointing)
        attn_calls, saved = [], [0]
        block = getattr(model.layers[0], "_checkpoint_wrapped_module", model.layers[0])
        block.attn.register_forward_pre_hook(lambda *a: attn_calls.append(1))

        def pack(t):
            saved[0] += 1
            return t

        ids = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(ids[:, :-1], ids[:, 1:])
        loss.backward()
        return len(attn_calls), saved[0], model.layers[0].attn.wq.weight.grad.clone()

    calls_plain, saved_plain, grad_plain = run(False)
    calls_ckpt, saved_ckpt, grad_ckpt = run(True)
    assert (calls_plain, calls_ckpt) == (1, 2)  # recomputed in backward
    assert saved_ckpt < saved_plain / 2
    torch.testing.assert_close(grad_ckpt, grad_plain)


def test_weight_decay_is_decoupled_and_on_matrices_only():
    from gristmill.trainer.parallel import build_optimizer

    model = Transformer(model_config("tiny", qk_norm=True))
    opt = build_optimizer(model, "single", world_size=1, lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    assert isinstance(opt, torch.optim.AdamW)  # decoupled weight decay
    decayed, free = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and free["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decayed["params"]) and all(p.dim() == 1 for p in free["params"])
    assert len(decayed["params"]) + len(free["params"]) == len(list(model.parameters()))


def test_checkpoint_restores_the_rng_state(tmp_path):
    from gristmill.trainer import checkpoint
    from gristmill.trainer.train import WarmupCosine

    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    opt = torch.optim.AdamW(model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupCosine(1, 5, 0.1))
    src = SyntheticSource(256, SEQ_LEN, 4, seed=0)
    torch.manual_seed(7)
    torch.rand(3)
    path = checkpoint.save(tmp_path, model, opt, sched, src, 1, rank=0, world=1, keep=1)
    want = torch.rand(5)
    torch.manual_seed(99)
    checkpoint.load(path, model, opt, sched, src, rank=0, world=1)
    assert torch.equal(torch.rand(5), want)


def test_eval_every_scores_the_mixture_validation_sets(tiny, mixture, tmp_path):
    """In-loop evaluation equals `trainer evaluate` of the checkpoint at that step, and a resumed run writes the
    same rows as an uninterrupted one."""
    from gristmill.trainer.evaluate import evaluate_run

    kw = dict(steps=4, data={"mixture": str(mixture)}, eval_every=2, eval_max_sequences=6)
    train(tiny("full", **kw), verbose=False)
    rows = [json.loads(x) for x in (tmp_path / "full" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and sorted(rows[0]["sets"]) == ["reference", "web"]
    offline = evaluate_run(tmp_path / "full", max_sequences=6, batch_size=5)["sets"]
    for name, m in rows[-1]["sets"].items():
        assert m["tokens"] == offline[name]["tokens"] == 6 * (SEQ_LEN - 1)
        assert m["loss"] == pytest.approx(offline[name]["loss"], rel=1e-6)
        assert m["bits_per_byte"] == pytest.approx(offline[name]["bits_per_byte"], rel=1e-6)
    assert rows[0]["sets"]["web"]["loss"] > rows[-1]["sets"]["web"]["loss"]  # it learns
    train(tiny("cut", **kw), stop_after=3, verbose=False)
    train(tiny("cut", **kw), verbose=False)
    assert (tmp_path / "cut" / "eval.jsonl").read_text() == (tmp_path / "full" / "eval.jsonl").read_text()
    with pytest.raises(UserError, match="eval_every needs data: {mixture: ...}"):
        tiny("syn", eval_every=2).validate()


def test_init_from_starts_from_another_runs_weights(tiny, tmp_path):
    """The annealing set-up: a run seeded with a base run's weights (fresh optimizer and schedule) starts at the
    loss those weights give on its first batch; its own checkpoints win on resume; another model is refused."""
    from gristmill.trainer import checkpoint

    train(tiny("base", steps=10), verbose=False)
    base_ckpt = checkpoint.latest(tmp_path / "base" / "checkpoints")
    model = Transformer(model_config("tiny", vocab_size=256, max_seq_len=SEQ_LEN))
    checkpoint.load_model_weights(base_ckpt, model)
    src = SyntheticSource(256, SEQ_LEN, 4, seed=7)  # the new run's data: seed 7, micro-batches of 4
    with torch.no_grad():
        want = sum(float(model(b[:, :-1], b[:, 1:])) for b in (src.next_batch(), src.next_batch())) / 2
    kw = dict(steps=4, seed=7, init_from=str(tmp_path / "base"))
    rows = train(tiny("anneal", **kw), verbose=False)
    assert rows[0]["loss"] == pytest.approx(want, rel=1e-5)
    fresh = train(tiny("fresh", steps=4, seed=7), verbose=False)
    assert fresh[0]["loss"] > rows[0]["loss"] + 0.2  # the base run had learned something (5.56 vs 5.21)
    train(tiny("cut", **kw), stop_after=2, verbose=False)
    train(tiny("cut", **kw), verbose=False)  # resumes from its own step 2, not from the base weights
    assert metrics(tmp_path, "cut") == metrics(tmp_path, "anneal")
    with pytest.raises(UserError, match=r"init_from .*step-00000010: that run trained another model \(qk_norm: "
                                        r"False -> True\)"):
        train(tiny("other", model={"preset": "tiny", "qk_norm": True}, init_from=str(base_ckpt)), verbose=False)
    with pytest.raises(UserError, match="init_from: .*nowhere is neither a training out_dir nor a checkpoint"):
        train(tiny("other2", init_from=str(tmp_path / "nowhere")), verbose=False)


def test_document_masking_reaches_the_model_in_training(tiny, tmp_path):
    """Rows holding several EOS-separated documents: the first step's loss equals the masked loss of the freshly
    initialised model on the loader's first batches, and differs from the unmasked run's."""
    import numpy as np

    from gristmill.mixtures import build as mixbuild
    from gristmill.mixtures.loader import MixtureLoader
    from gristmill.mixtures.spec import spec_from_dict
    from gristmill.tokenize.shards import ShardWriter, build_manifest, shard_name, write_manifest
    from gristmill.trainer.model import doc_segments, lm_targets

    folder = tmp_path / "docs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 64), ("validation", 8)):
        w = ShardWriter(folder / shard_name(split, 0), SEQ_LEN, 256, pad_id=0)
        for _ in range(n):
            row = 3 + (rng.integers(253) + rng.integers(1, 5) * np.arange(SEQ_LEN)) % 253
            row[[10, 21]] = 2  # three documents per row
            w.write_row(row, [0, 11, 22], 3 * SEQ_LEN)
        splits[split] = [w.close()]
    tok = {"path": "tokenizer.json", "sha256": "ab" * 32, "vocab_size": 256, "bos_id": 1, "eos_id": 2, "pad_id": 0}
    write_manifest(folder, build_manifest(source="docs", domain="web", seq_len=SEQ_LEN, tokenizer=tok,
                                          recipe_sha256="00" * 32, seed=0, splits=splits))
    spec = spec_from_dict({"sources": [{"name": "docs", "manifest": str(folder)}], "budget_tokens": 64 * SEQ_LEN,
                           "seed": 0, "weighting": {"method": "explicit", "proportions": {"docs": 1.0}}}, tmp_path)
    mixture = tmp_path / "mix.json"
    mixbuild.write_mixture(mixbuild.build(spec, mixture), mixture)
    kw = dict(steps=2, data={"mixture": str(mixture)}, eval_every=2, eval_max_sequences=4)
    masked = train(tiny("masked", document_masking=True, **kw), verbose=False)
    plain = train(tiny("plain", **kw), verbose=False)
    torch.manual_seed(0)  # the run's seed; the model is the first thing to draw from torch's RNG
    model = Transformer(model_config("tiny", vocab_size=256, max_seq_len=SEQ_LEN))
    loader = MixtureLoader(mixture, 4)  # micro-batches of 4, two per step
    with torch.no_grad():
        want = sum(float(model(b[:, :-1], lm_targets(b, 0), segments=doc_segments(b[:, :-1], 2)))
                   for b in (loader.next_batch(), loader.next_batch())) / 2
    assert masked[0]["loss"] == pytest.approx(want, rel=1e-5)
    assert abs(masked[0]["loss"] - plain[0]["loss"]) > 1e-4
    evals = [json.loads((tmp_path / n / "eval.jsonl").read_text())["sets"]["web"]["loss"] for n in ("masked", "plain")]
    assert evals[0] != evals[1]  # the evaluation masks too


def test_labelled_progress_prints_a_line_every_tenth_of_the_run(capsys):
    from gristmill.trainer.train import Progress

    bar = Progress(100, True, label="mix-s0")
    for step in range(1, 101):
        bar.update(step, 1.5, 1000.0)
    lines = capsys.readouterr().err.splitlines()
    assert [int(line.split()[2].split("/")[0]) for line in lines] == list(range(10, 101, 10))
    assert lines[0].startswith("mix-s0: step 10/100 (10%) loss 1.5000 1,000 tok/s ETA ")
    assert "ETA" not in lines[-1]
    Progress(100, False, label="mix-s0").update(10, 1.5, 1000.0)
    assert capsys.readouterr().err == ""


def test_steps_far_past_the_mixtures_budget_warn_once_at_the_start(tmp_path, mixture, capsys):
    # budget 200 sequences (web 0.7 epochs, wiki 0.75); 100 steps x 8 = 800 sequences, 4x the budget
    def config(steps):
        path = tmp_path / "run.yaml"
        path.write_text(f"model: tiny\ndata: {{mixture: {mixture}}}\nsteps: {steps}\nbatch_size: 8\nwarmup_steps: 1\n"
                        f"precision: fp32\nout_dir: {tmp_path / str(steps)}\n")
        return load_config(path)

    train(config(100), stop_after=1, verbose=False)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"warning: steps 100 x batch_size 8 x seq_len {SEQ_LEN} = {800 * SEQ_LEN:,} tokens is 4.0x the "
                   f"mixture's budget_tokens {200 * SEQ_LEN:,}: about 3.0 epochs of source 'wiki' (the budget is 25 "
                   "steps at this batch size; `steps` alone sets the run's length)"]
    train(config(100), stop_after=2, verbose=False)  # resumed: said already
    train(config(50), stop_after=1, verbose=False)  # exactly 2x: no warning
    assert capsys.readouterr().err == ""


def test_a_checkpoint_from_before_the_draw_was_recorded(tmp_path, tiny, mixture, pad_mixture, monkeypatch, capsys):
    """A checkpoint of an older gristmill stores a loader position without `draw` (fabricated here by leaving the
    field out). On the PAD-tailed mixture the old draw (rows by proportion) differs from this one: the resume is
    refused with one line, and --allow-draw-change continues with a warning. On full rows the two draws are the
    same, so the old checkpoint resumes silently and gives the uninterrupted run's losses."""
    from gristmill.mixtures.loader import MixtureLoader

    plain = MixtureLoader.state_dict
    old_format = lambda self: {k: v for k, v in plain(self).items() if k != "draw"}  # noqa: E731
    for name, mix in (("pad", pad_mixture), ("full", mixture)):
        monkeypatch.setattr(MixtureLoader, "state_dict", old_format)
        train(tiny(name, data={"mixture": str(mix)}), stop_after=2, verbose=False)
        monkeypatch.setattr(MixtureLoader, "state_dict", plain)
        capsys.readouterr()
        if name == "pad":
            with pytest.raises(UserError, match=r"^cannot resume .*step-00000002 exactly: the loader position was "
                                                r"saved by an older gristmill that drew rows by the proportions "
                                                r"\(web 0.7, wiki 0.3\).*; rerun with --allow-draw-change"):
                train(tiny(name, data={"mixture": str(mix)}), verbose=False)
            rows = train(tiny(name, data={"mixture": str(mix)}), verbose=False, allow_draw_change=True)
            err = capsys.readouterr().err.splitlines()
            assert len(err) == 1 and err[0].startswith("warning: --allow-draw-change: the loader position was saved")
            assert err[0].endswith("continuing from step 2 by this version's draw")
            assert [r["step"] for r in rows] == [3, 4, 5]
        else:
            train(tiny(name, data={"mixture": str(mix)}), verbose=False)
            assert capsys.readouterr().err == ""
            train(tiny("full-uninterrupted", data={"mixture": str(mix)}), verbose=False)
            assert metrics(tmp_path, name) == metrics(tmp_path, "full-uninterrupted")


@pytest.mark.parametrize("damage", ["truncated", "missing", "metadata"])
def test_a_damaged_checkpoint_is_one_line_for_resume_evaluate_and_export(tmp_path, tiny, damage):
    """A checkpoint cut short (a full disk) or copied in part: resuming it was a traceback from DCP, and evaluate
    and export blamed the model ("it holds another model (FileNotFoundError ...)")."""
    from gristmill.trainer.checkpoint import find_run, load_model

    train(tiny("run", steps=2), verbose=False)
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000002"
    data = ckpt / "__0_0.distcp"
    if damage == "truncated":
        data.write_bytes(data.read_bytes()[:1000])
    elif damage == "missing":
        data.unlink()
    else:
        (ckpt / ".metadata").write_bytes(b"junk")
    expected = {"truncated": "is damaged: __0_0.distcp is 1,000 bytes", "missing": "is incomplete: __0_0.distcp is missing",
                "metadata": "is damaged: its .metadata cannot be read"}[damage]
    with pytest.raises(UserError, match=expected):
        train(tiny("run", steps=4), verbose=False)
    with pytest.raises(UserError, match=expected):
        load_model(*find_run(tmp_path / "run"))


def test_a_model_vocab_or_length_other_than_the_datas_is_refused(tiny):
    """They come from the data; a config's own value was replaced without a word."""
    with pytest.raises(UserError, match="config: model: vocab_size 100 differs from the data's 256"):
        train(tiny(model={"preset": "tiny", "vocab_size": 100}), verbose=False)
    with pytest.raises(UserError, match="config: model: max_seq_len 8 differs from the data's 32"):
        train(tiny(model={"preset": "tiny", "max_seq_len": 8}), verbose=False)
    assert len(train(tiny(model={"preset": "tiny", "vocab_size": 256}), stop_after=1, verbose=False)) == 1


def test_a_micro_batch_larger_than_the_budget_trains(tmp_path, tiny, mixture):
    """`steps` alone sets a run's length (the loader is read past the budget), so a budget of fewer rows than
    one micro-batch was refused for no reason ("a budget of 200 sequences gives no step")."""
    rows = train(tiny(data={"mixture": str(mixture)}, batch_size=256, micro_batch_size=256, steps=1, warmup_steps=0,
                      save_checkpoints=False), verbose=False)
    assert len(rows) == 1


def test_resuming_at_a_micro_batch_that_does_not_divide_the_position_names_it(tiny, mixture):
    cfg = dict(data={"mixture": str(mixture)}, batch_size=4, micro_batch_size=4, steps=4, warmup_steps=0)
    train(tiny(**cfg), stop_after=3, verbose=False)  # data position: 3 steps x 4 = sample 12, and 12 % 8 = 4
    with pytest.raises(UserError, match=r"^loader state is at sample 12, not a multiple of the global batch 8 = "
                       r"batch_size 8 x world_size 1 \(for `trainer train`: micro_batch_size 8 x 1 rank\(s\)\); "
                       r"resume with a batch size and world size whose product divides it"):
        train(tiny(**{**cfg, "batch_size": 8, "micro_batch_size": 8}), verbose=False)


def test_a_data_position_of_another_format_is_refused_as_such_before_its_sample_is_judged(mixture):
    """The loader's format check comes first: a state that is no loader position at all is not told to change
    micro_batch_size, however its sample divides."""
    from gristmill.trainer.data import MixtureSource

    source = MixtureSource(str(mixture), 8)
    with pytest.raises(UserError, match=r"^loader state has format 'gristmill.synthetic-position/1', expected"):
        source.load_state_dict({"format": "gristmill.synthetic-position/1", "seed": 0, "sample": 12})


def test_an_out_dir_that_is_a_file_says_so(tmp_path, tiny):
    (tmp_path / "file").write_text("")  # was "cannot create it (File exists)"
    with pytest.raises(UserError, match=r"out_dir: output .*file is a file, not a folder"):
        train(tiny("file"), verbose=False)


def test_a_resume_past_the_steps_or_stop_after_is_refused(tiny):
    """The loop had nothing to do and the run ended with status 0, as if it had trained."""
    train(tiny("r", steps=4), stop_after=3, verbose=False)
    with pytest.raises(UserError, match=r"^steps 2 is before step 3, where .*step-00000003 resumes; nothing to train"):
        train(tiny("r", steps=2), verbose=False)
    with pytest.raises(UserError, match=r"^--stop-after 2 is before step 3"):
        train(tiny("r", steps=4), stop_after=2, verbose=False)
    assert [r["step"] for r in train(tiny("r", steps=4), verbose=False)] == [4]


def test_a_finished_run_run_again_says_there_is_nothing_left(tiny, capsys):
    """Its rerun trains nothing and exits 0 (an ablation reruns its finished runs); it said only its config."""
    train(tiny("r", steps=2), verbose=False)
    capsys.readouterr()
    assert train(tiny("r", steps=2), verbose=True) == []
    err = capsys.readouterr().err
    assert re.search(r"^note: \S*step-00000002 is at step 2 \(steps 2\); nothing left to train", err, re.M)
    train(tiny("r", steps=4), stop_after=3, verbose=True)
    assert "nothing left" not in capsys.readouterr().err
    assert train(tiny("r", steps=4), stop_after=3, verbose=True) == []
    assert re.search(r"^note: \S*step-00000003 is at step 3 \(--stop-after 3\); nothing left", capsys.readouterr().err,
                     re.M)


def test_spike_is_judged_against_the_running_mean_strictly():
    """A window whose mean (2.0) differs from its max and last (3.0) and its min (1.0): factor 3 x mean = 6."""
    high_last = deque([1.0, 3.0] * 10, maxlen=20)
    low_last = deque([3.0, 1.0] * 10, maxlen=20)
    for recent in (high_last, low_last):
        assert sum(recent) / len(recent) == 2.0
        assert _anomaly(7.0, 1.0, recent, 3.0).startswith("loss spike")  # > 3 x mean; < 3 x max = 9
        assert _anomaly(5.0, 1.0, recent, 3.0) is None  # < 3 x mean; > 3 x min = 3
        assert _anomaly(6.0, 1.0, recent, 3.0) is None  # "above" spike_factor x the mean: equal is no spike
    assert "running mean 2" in _anomaly(7.0, 1.0, high_last, 3.0)


def _force_skips(monkeypatch, skipped: set, seen: list | None = None) -> None:
    """Judge the steps in `skipped` (1-based) anomalies whatever their loss; record what _anomaly is given."""
    from gristmill.trainer import train as train_module

    step = iter(range(1, 10 ** 6))

    def judge(loss, norm, recent, factor):
        s = next(step)
        if seen is not None:
            seen.append((s, loss, list(recent), recent.maxlen))
        return "forced" if s in skipped else _anomaly(loss, norm, recent, factor)

    monkeypatch.setattr(train_module, "_anomaly", judge)


def test_max_skips_counts_skips_in_a_row_not_in_total(tiny, monkeypatch):
    """max_skips 1: single skips with applied updates between them never stop the run (mutant: the counter is
    not reset by a successful step, so the second skip stops it); two in a row do."""
    from gristmill.trainer.train import TrainingStopped, train

    _force_skips(monkeypatch, {2, 4, 6})
    rows = train(tiny("apart", steps=7, on_anomaly="skip", max_skips=1, save_checkpoints=False), verbose=False)
    assert [r["skipped"] for r in rows] == [None, "forced", None, "forced", None, "forced", None]
    _force_skips(monkeypatch, {3, 4})
    with pytest.raises(TrainingStopped, match=r"step 4: forced, 2 steps skipped in a row \(max_skips 1\)"):
        train(tiny("row", steps=7, on_anomaly="skip", max_skips=1, save_checkpoints=False), verbose=False)


def test_the_spike_window_holds_the_last_20_applied_losses(tiny, monkeypatch):
    """The running mean is over the losses of the last 20 applied updates: a skipped step's loss (it may be a
    spike, or inf) stays out of it (mutant: appended for every step), and the window is 20 (mutant: 5)."""
    from gristmill.trainer.train import train

    seen: list = []
    _force_skips(monkeypatch, {3}, seen)
    steps = 24
    rows = train(tiny("w", steps=steps, on_anomaly="skip", save_checkpoints=False), verbose=False)
    applied = [r["loss"] for r in rows if r["skipped"] is None]
    assert len(applied) == steps - 1
    for s, loss, recent, maxlen in seen:
        assert maxlen == 20
        before = [r["loss"] for r in rows[:s - 1] if r["skipped"] is None]  # the applied updates before step s
        assert recent == before[-20:], s
    assert seen[3][2] == [rows[0]["loss"], rows[1]["loss"]]  # step 4 sees steps 1 and 2, not skipped step 3
