"""Boundaries of the training loop, its metrics rows and its progress lines, each against an independent
reference: a plain PyTorch training loop (torch's AdamW, clip_grad_norm_ and its own LR schedulers), figures by
hand, or a clock the test controls. Each was written for a mutant of train.py / progress.py / parallel.py that
the rest of the suite let through."""
from __future__ import annotations

import json
import math
import resource
import types

import pytest
import torch
import torch.nn.functional as F

from gristmill.trainer import parallel
from gristmill.trainer import progress as progress_module
from gristmill.trainer import train as train_module
from gristmill.trainer.data import SyntheticSource
from gristmill.trainer.model import Transformer, model_config
from gristmill.trainer.progress import Progress
from gristmill.trainer.train import WarmupCosine, _anomaly, _set_aside, _truncate_metrics, json_line, train

SEQ_LEN = 32  # conftest.SEQ_LEN
# Off the defaults, so that an optimizer setting dropped or swapped on its way to AdamW shows in the losses.
OPT = dict(lr=3e-3, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.5, grad_clip=0.5, warmup_steps=2, min_lr_ratio=0.1)


def reference_run(steps: int, skipped: frozenset = frozenset(), *, seed: int = 0,
                  clip: float = OPT["grad_clip"]) -> list[tuple[float, float, float]]:
    """(loss, grad_norm, lr) per step of the TINY config (batch 8 as 2 micro-batches of 4, synthetic data), by
    plain PyTorch: AdamW with weight decay on the matrices only, clip_grad_norm_, and torch's LinearLR warmup
    followed by CosineAnnealingLR to min_lr_ratio at the last update. A step in `skipped` reads its batch and
    computes its gradient, but applies no update and leaves the schedule where it was."""
    torch.manual_seed(seed)
    model = Transformer(model_config("tiny", vocab_size=256, max_seq_len=SEQ_LEN))
    src = SyntheticSource(256, SEQ_LEN, 4, seed=seed)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": matrices, "weight_decay": OPT["weight_decay"]},
                             {"params": vectors, "weight_decay": 0.0}], lr=OPT["lr"], betas=OPT["betas"],
                            eps=OPT["eps"])
    warmup = OPT["warmup_steps"]
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [
        torch.optim.lr_scheduler.LinearLR(opt, start_factor=1 / warmup, end_factor=1.0, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps - 1 - warmup,
                                                   eta_min=OPT["min_lr_ratio"] * OPT["lr"])], milestones=[warmup])
    out = []
    for step in range(1, steps + 1):
        lr = opt.param_groups[0]["lr"]
        loss_total = 0.0
        for _ in range(2):  # equal micro-batches without PAD: the step's loss is the mean of their means
            ids = src.next_batch()
            loss = F.cross_entropy(model(ids[:, :-1]).flatten(0, 1), ids[:, 1:].flatten()) / 2
            loss.backward()
            loss_total += float(loss.detach())
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip))
        if step not in skipped:
            opt.step()
            sched.step()
        opt.zero_grad(set_to_none=True)
        out.append((loss_total, norm, lr))
    return out


def test_training_is_plain_pytorch_adamw_with_clipping_and_the_schedule(tiny):
    """Every optimizer setting reaches AdamW (betas, eps, decoupled weight decay on matrices only), the gradient
    is clipped to grad_clip, and the lr follows torch's LinearLR + CosineAnnealingLR: the same losses, norms and
    lrs as the plain loop (mutants: betas reversed, eps dropped, ZeRO groups, clipping off, schedule shifted)."""
    steps = 6
    rows = train(tiny(steps=steps, save_checkpoints=False, **OPT), verbose=False)
    want = reference_run(steps)
    assert [r["loss"] for r in rows] == pytest.approx([w[0] for w in want], rel=1e-5)
    assert [r["grad_norm"] for r in rows] == pytest.approx([w[1] for w in want], rel=1e-5)
    assert [r["lr"] for r in rows] == pytest.approx([w[2] for w in want], rel=1e-9)
    assert all(w[1] > OPT["grad_clip"] for w in want[:2])  # clipping did act


def test_grad_clip_0_trains_unclipped(tiny):
    """grad_clip 0 turns clipping off: the plain loop without clipping (mutant: 0 taken as a norm of 0, every
    gradient scaled to nothing and only the weight decay moving the weights)."""
    rows = train(tiny(steps=4, save_checkpoints=False, **{**OPT, "grad_clip": 0.0}), verbose=False)
    want = reference_run(4, clip=math.inf)
    assert [r["loss"] for r in rows] == pytest.approx([w[0] for w in want], rel=1e-5)
    assert [r["grad_norm"] for r in rows] == pytest.approx([w[1] for w in want], rel=1e-5)


def test_a_skipped_steps_gradient_is_not_carried_into_the_next_update(tiny, monkeypatch):
    """A skipped step's gradient is thrown away with the step: the next step's norm is that of its own batch
    alone (mutant: zero_grad only after applied updates, so step 4 would add step 3's gradient to its own)."""
    judged = iter(range(1, 10 ** 6))
    monkeypatch.setattr(train_module, "_anomaly", lambda loss, norm, recent, factor:
                        "forced" if next(judged) == 3 else _anomaly(loss, norm, recent, factor))
    steps = 6
    rows = train(tiny(steps=steps, on_anomaly="skip", save_checkpoints=False, **OPT), verbose=False)
    want = reference_run(steps, frozenset({3}))
    assert [r["skipped"] for r in rows] == [None, None, "forced", None, None, None]
    assert [r["grad_norm"] for r in rows] == pytest.approx([w[1] for w in want], rel=1e-5)
    assert [r["loss"] for r in rows] == pytest.approx([w[0] for w in want], rel=1e-5)
    assert [r["lr"] for r in rows] == pytest.approx([w[2] for w in want], rel=1e-9)


def test_warmup_cosine_with_no_decay_steps_left(tiny):
    """steps = warmup + 1: the cosine has no length (its start and its end are the one last update), taken as 1,
    so that update runs at the peak (mutant: the length not raised to 1 divides by zero). Warmup 0: the first
    update is at the peak and the last at min_lr_ratio."""
    assert [WarmupCosine(2, 3, 0.1)(s) for s in range(3)] == pytest.approx([0.5, 1.0, 1.0])
    assert WarmupCosine(0, 3, 0.1)(0) == 1.0 and WarmupCosine(0, 3, 0.1)(2) == pytest.approx(0.1)
    rows = train(tiny(steps=3, warmup_steps=2, save_checkpoints=False), verbose=False)
    assert [r["lr"] / 3e-3 for r in rows] == pytest.approx([0.5, 1.0, 1.0], rel=1e-12)


def test_stop_after_past_the_steps_ends_at_the_steps(tiny, tmp_path):
    """--stop-after beyond `steps` trains `steps` (mutant: stop_after alone set the end, training past the
    schedule's last update)."""
    rows = train(tiny(steps=3), stop_after=10, verbose=False)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-00000003"]


def test_log_every_writes_every_nth_row_and_the_last(tiny, tmp_path):
    """log_every 2 over 5 steps: metrics.jsonl holds steps 2, 4 and the run's last, 5; train() returns all five
    (mutants: the last step not written; the count off by one)."""
    rows = train(tiny(log_every=2, save_checkpoints=False), verbose=False)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [2, 4, 5]
    assert [r["loss"] for r in logged] == [rows[1]["loss"], rows[3]["loss"], rows[4]["loss"]]
    # stopped early: the stop's own step is the run's last row, then the resume goes on from it
    train(tiny("cut", log_every=2), stop_after=3, verbose=False)
    train(tiny("cut", log_every=2), verbose=False)
    assert [json.loads(x)["step"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == [2, 3, 4, 5]


class _PadFirstStep(SyntheticSource):
    """Synthetic rows with PAD id 0, whose first two micro-batches (the first step) are PAD after one token."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.pad_id, self.drawn = 0, 0

    def next_batch(self):
        batch = super().next_batch()
        self.drawn += 1
        if self.drawn <= 2:
            batch[:, 1:] = 0
        return batch


def test_a_step_whose_every_target_is_pad_is_zero_not_a_skip(tiny, monkeypatch):
    """A global batch of only PAD targets scores nothing: its loss and gradient are 0 and the update is applied,
    not 0/0 = NaN judged a non-finite loss and skipped (mutant: the scored count not clamped to 1)."""
    monkeypatch.setattr(train_module, "open_source", lambda data, batch, *, rank, world_size, seed, batches=None:
                        _PadFirstStep(256, SEQ_LEN, batch, rank=rank, world_size=world_size, seed=seed))
    rows = train(tiny(steps=3, save_checkpoints=False), verbose=False)
    assert rows[0]["loss"] == 0.0 and rows[0]["grad_norm"] == 0.0 and rows[0]["skipped"] is None
    assert all(r["skipped"] is None and r["loss"] > 1 for r in rows[1:])


def test_mfu_is_flops_per_target_times_throughput_over_the_peak(tiny, monkeypatch):
    """A clock of 0.5 s a step and a peak of 1e8 FLOP/s: tokens/s = 8 x 31 / 0.5 = 496, and mfu = FLOPs per
    token x 496 / 1e8, the FLOPs by hand (PaLM accounting at the 31 positions a row trains: 6 x (the built
    model's parameters less the token embedding) + 12 x layers x d_model x 31) (mutant: FLOPs at seq_len 32)."""
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(train_module, "time", types.SimpleNamespace(perf_counter=lambda: 0.5 * next(ticks)))
    monkeypatch.setattr(train_module, "peak_flops", lambda device: 1e8)
    rows = train(tiny(steps=2, save_checkpoints=False), verbose=False)
    model = Transformer(model_config("tiny", vocab_size=256, max_seq_len=SEQ_LEN))
    matmul = sum(p.numel() for n, p in model.named_parameters() if n != "tok_emb.weight")
    cfg = model.cfg if hasattr(model, "cfg") else model_config("tiny", vocab_size=256, max_seq_len=SEQ_LEN)
    flops = 6 * matmul + 12 * cfg.n_layers * cfg.d_model * 31
    for r in rows:
        assert (r["step_time_s"], r["tokens_per_s"]) == (0.5, 496.0)
        assert r["mfu"] == round(flops * 496 / 1e8, 4)


@pytest.mark.parametrize("name,peak", [("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
                                       ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                                       ("NVIDIA A100-SXM4-80GB", 312e12), ("NVIDIA GeForce RTX 4090", None)])
def test_peak_flops_by_device_name_most_specific_first(monkeypatch, name, peak):
    """NVIDIA's dense bf16 figures: H100 PCIe 756 TFLOP/s and NVL 835, not the SXM's 989 (mutant: "H100" listed
    before them, so it matched every H100); an unknown device has none."""
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert train_module.peak_flops(torch.device("cuda", 0)) == peak
    assert train_module.peak_flops(torch.device("cpu")) is None


def test_cpu_peak_memory_is_the_processs_max_rss_in_gb(tiny):
    """On CPU, peak_mem_gb is ru_maxrss (KiB on Linux) x 1024 / 1e9 (mutant: read as bytes, 1024x too small)."""
    rows = train(tiny(steps=2, save_checkpoints=False), verbose=False)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    assert 0.5 * after <= rows[-1]["peak_mem_gb"] <= after + 1e-3


def test_json_line_writes_every_non_finite_number_as_null():
    """Infinity too (mutant: only NaN replaced, so json.dumps(allow_nan=False) raised on an infinite grad norm),
    and inside lists as inside dicts."""
    assert json.loads(json_line({"loss": math.inf, "norm": -math.inf, "x": math.nan, "ok": 1.5})) == {
        "loss": None, "norm": None, "x": None, "ok": 1.5}
    assert json.loads(json_line({"recent": [1.0, math.nan, (math.inf, 2.0)]})) == {"recent": [1.0, None, [None, 2.0]]}


def test_a_resume_of_a_run_whose_config_lacks_a_newer_model_field(tiny, tmp_path):
    """A config.json written before a model field existed (here: init_std removed) is compared on the fields it
    has: the resume goes on (mutant: every field of the new model looked up in the old, a KeyError)."""
    train(tiny(), stop_after=2, verbose=False)
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    del saved["model"]["init_std"]
    path.write_text(json.dumps(saved))
    assert [r["step"] for r in train(tiny(), verbose=False)] == [3, 4, 5]


def test_init_from_may_change_init_std_and_z_loss(tiny, tmp_path):
    """init_std only shapes a fresh initialisation, which init_from replaces, so it may differ from the base
    run's, as z_loss may (mutant: init_std no longer exempt, refused as another architecture)."""
    train(tiny("base", steps=2), verbose=False)
    rows = train(tiny("seeded", steps=2, init_from=str(tmp_path / "base"),
                      model={"preset": "tiny", "init_std": 0.05, "z_loss": 1e-4}), verbose=False)
    assert len(rows) == 2


def test_set_aside_numbers_past_every_folder_of_the_same_second(tmp_path, monkeypatch):
    """Three replacements within one second: replaced-STAMP, -2 exist, so the third is -3 (mutant: checked once,
    so it was renamed onto -2)."""
    monkeypatch.setattr(train_module.time, "strftime", lambda fmt, t=None: "20260101-000000")
    for name in ("replaced-20260101-000000", "replaced-20260101-000000-2"):
        (tmp_path / name / "checkpoints").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    dest = _set_aside(tmp_path, [tmp_path / "metrics.jsonl", tmp_path / "absent.json"])
    assert dest == tmp_path / "replaced-20260101-000000-3" and (dest / "metrics.jsonl").read_text() == "{}\n"
    assert _set_aside(tmp_path, [tmp_path / "absent.json"]) is None


def test_truncate_metrics_keeps_rows_up_to_the_step_and_skips_blank_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n   \n{"step": 3}\n')
    _truncate_metrics(path, 2)
    assert path.read_text() == '{"step": 1}\n{"step": 2}\n'
    _truncate_metrics(tmp_path / "absent.jsonl", 2)
    assert not (tmp_path / "absent.jsonl").exists()


class _Clock:
    """perf_counter for the progress module: each reading is one second after the last."""

    def __init__(self):
        self.now = -1.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def test_a_resumed_runs_eta_counts_only_the_steps_it_trained(tiny, monkeypatch, capsys):
    """Resumed at step 5 of 10, the ETA extrapolates from the steps this process ran: with one clock second per
    step, 4, 3, 2 and 1 s remain after steps 6 to 9 (mutants: the bar started at 0, or the rate taken over all
    steps, gave 0 s)."""
    train(tiny(steps=10, save_checkpoints=True), stop_after=5, verbose=False)
    monkeypatch.setattr(progress_module, "time", _Clock())
    capsys.readouterr()
    train(tiny(steps=10), verbose=False, progress="run")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ETA ")[-1] if " ETA " in line else None for line in lines] == [
        "0:00:04", "0:00:03", "0:00:02", "0:00:01", None]
    assert lines[0].startswith("run: step 6/10 (60%) loss ")


def test_progress_eta_is_hours_minutes_seconds_of_the_work_left(monkeypatch, capsys):
    """128 of 1152 done in 464 clock seconds (3.625 s each, exact in binary): the 1024 left take 3712 s = 1:01:52
    (mutants: the rate applied to the whole total, 4176 s; minutes not taken mod 60, 1:61:52)."""
    clock = types.SimpleNamespace(perf_counter=lambda: 0.0)
    monkeypatch.setattr(progress_module, "time", clock)
    bar = Progress(1152, True, label="x")
    clock.perf_counter = lambda: 464.0
    bar.show(128, "d")
    bar.show(1152, "d")
    assert capsys.readouterr().err == "x: step 128/1152 (11%) d ETA 1:01:52\nx: step 1152/1152 (100%) d\n"


def test_progress_plain_bar_floors_its_fill_and_a_zero_total_is_silent(capsys):
    """Off a terminal, the bar of 30 cells fills floor(30 x done / total) (29 of 30 at 59/60, not rounded to a
    full bar before the end); a total of 0 prints nothing (mutant: enabled anyway, 0/0 percent)."""
    bar = Progress(60, True)
    bar.show(59, "d")
    bar.show(60, "d")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ETA")[0] for line in lines] == ["[" + "#" * 29 + "." + "] step 59/60 d",
                                                          "[" + "#" * 30 + "] step 60/60 d"]
    Progress(0, True, label="x").show(0, "d")
    Progress(0, True).show(0, "d")
    assert capsys.readouterr().err == ""


def test_init_distributed_takes_the_gpu_of_the_local_rank(monkeypatch):
    """Under torchrun on a second node, RANK 3 is LOCAL_RANK 1 there: the device is cuda:1 (mutant: RANK chose
    cuda:3, which a 2-GPU node does not have)."""
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: chosen.append(d))
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert parallel.init_distributed() == (3, 1, torch.device("cuda", 1)) and chosen == [1]


def test_a_metrics_row_cut_short_by_a_crash_is_dropped_on_resume(tiny, tmp_path):
    """The run died while writing step 4's row: the torn last line (no newline) is dropped and the resumed run's
    metrics are the uninterrupted run's (it was a JSONDecodeError traceback). A damaged line before the end is
    not a crash's: one line naming the file and the line."""
    from gristmill.errors import UserError

    def rows(name):
        return [{k: v for k, v in json.loads(x).items() if k not in ("tokens_per_s", "step_time_s", "peak_mem_gb")}
                for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]

    train(tiny("full"), verbose=False)
    train(tiny("cut", checkpoint_every=3), stop_after=3, verbose=False)
    path = tmp_path / "cut" / "metrics.jsonl"
    path.write_text(path.read_text() + '{"step": 4, "lo')
    train(tiny("cut", checkpoint_every=3), verbose=False)
    assert rows("cut") == rows("full")
    path.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(UserError, match=r"metrics.jsonl: line 2 is not a metrics row; move the file aside to "
                                        r"resume$"):
        train(tiny("cut", checkpoint_every=3, steps=6), verbose=False)


def test_resume_drops_evaluations_logged_after_the_checkpoint(tiny, mixture, tmp_path):
    """The run evaluated step 3 and died before its checkpoint: the resume from step 2 drops that eval row, so
    eval.jsonl is the uninterrupted run's, each step once (mutant: eval.jsonl not truncated, step 3 twice)."""
    import shutil

    kw = dict(steps=4, data={"mixture": str(mixture)}, eval_every=1, eval_max_sequences=2, checkpoint_every=2)
    train(tiny("full", **kw), verbose=False)
    train(tiny("cut", **kw), stop_after=3, verbose=False)
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-00000003")
    train(tiny("cut", **kw), verbose=False)
    lines = (tmp_path / "cut" / "eval.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2, 3, 4]
    assert lines == (tmp_path / "full" / "eval.jsonl").read_text().splitlines()


def test_the_last_step_is_evaluated_when_eval_every_does_not_divide_the_steps(tiny, mixture, tmp_path):
    """steps 3, eval_every 2: evaluations at step 2 and at the run's end, step 3 (mutant: only multiples)."""
    train(tiny(steps=3, data={"mixture": str(mixture)}, eval_every=2, eval_max_sequences=2, save_checkpoints=False),
          verbose=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 3] and rows[1]["tokens"] == 3 * 8 * (SEQ_LEN - 1)


def test_a_seeded_runs_resume_needs_only_its_own_checkpoint(tiny, tmp_path):
    """init_from seeds a run that has no checkpoint yet; once it has one, a resume reads that alone: the base run
    may be gone (mutant: the base weights loaded again on every resume, so its removal failed the resume)."""
    import shutil

    train(tiny("base", steps=2), verbose=False)
    kw = dict(steps=4, init_from=str(tmp_path / "base"))
    full = train(tiny("full", **kw), verbose=False)
    train(tiny("cut", **kw), stop_after=2, verbose=False)
    shutil.rmtree(tmp_path / "base")
    rows = train(tiny("cut", **kw), verbose=False)
    assert [r["loss"] for r in rows] == [r["loss"] for r in full[2:]]


def test_unlabelled_progress_off_a_terminal_prints_every_twentieth(capsys):
    """No label, not a terminal: a plain line at each 5% of the run, 20 lines for 100 steps (mutant: every 10%)."""
    bar = Progress(100, True)
    for step in range(1, 101):
        bar.update(step, 1.0, 10.0)
    lines = capsys.readouterr().err.splitlines()
    assert [int(line.split("] step ")[1].split("/")[0]) for line in lines] == list(range(5, 101, 5))
