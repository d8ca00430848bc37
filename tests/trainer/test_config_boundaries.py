"""The training config's checks at their edges, against the rules docs/trainer.md states (0 disables clipping,
0 keeps every checkpoint, betas in [0, 1), spike_factor > 1, `steps` default 100, a seed torch and Philox take),
and the batch sources' global order against the rule in gristmill/trainer/data.py, worked by hand."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gristmill.errors import UserError
from gristmill.trainer.cli import main
from gristmill.trainer.config import TrainConfig, load_config
from gristmill.trainer.data import SyntheticSource, open_source, token_dataset_batches

MIX = {"mixture": "/nonexistent/mix.json"}  # validate() checks only that the path is a non-empty string


def refused(match: str, **kw):
    with pytest.raises(UserError, match=match) as e:
        TrainConfig(**kw).validate()
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("kw", [
    dict(grad_clip=0), dict(weight_decay=0), dict(checkpoint_every=0), dict(keep_checkpoints=0), dict(max_skips=0),
    dict(warmup_steps=0), dict(min_lr_ratio=0), dict(min_lr_ratio=1), dict(spike_factor=1.001), dict(lr=1e-12),
    dict(eps=1e-30), dict(betas=(0, 0.999)), dict(betas=[0.5, 0.5]), dict(eval_max_sequences=1),
    dict(steps=1, warmup_steps=1), dict(steps=10, warmup_steps=10),
    dict(schedule="wsd", steps=10, warmup_steps=0, decay_fraction=1),
    dict(schedule="wsd", steps=10, warmup_steps=7, decay_fraction=0.3),  # 7 + 3 == steps
    dict(data={"synthetic": {"vocab_size": 2, "seq_len": 2, "seed": 0}}), dict(data={"synthetic": None}),
    dict(data={"synthetic": {}}), dict(seed=2**64 - 1), dict(data={"synthetic": {"seed": 2**64 - 1}}),
    dict(data=MIX, document_masking=True, eval_every=5), dict(compile=True, kernels="torch"),
])
def test_values_at_the_documented_edges_are_accepted(kw):
    TrainConfig(**kw).validate()


@pytest.mark.parametrize("kw,match", [
    (dict(lr=0), r"^config: lr must be a number > 0, not 0$"),
    (dict(eps=0), r"^config: eps must be a number > 0, not 0$"),
    (dict(spike_factor=1), r"^config: spike_factor must be a number > 1, not 1$"),
    (dict(steps=0), r"^config: steps must be an integer >= 1, not 0$"),
    (dict(batch_size=0), r"^config: batch_size must be an integer >= 1, not 0$"),
    (dict(micro_batch_size=0), r"^config: micro_batch_size must be an integer >= 1, not 0$"),
    (dict(eval_max_sequences=0), r"^config: eval_max_sequences must be an integer >= 1, not 0$"),
    (dict(max_skips=-1), r"^config: max_skips must be an integer >= 0, not -1$"),
    (dict(eval_every=-1), r"^config: eval_every must be an integer >= 0, not -1$"),
    (dict(weight_decay=-0.1), r"^config: weight_decay must be a number >= 0, not -0.1$"),
    (dict(grad_clip=-1), r"^config: grad_clip must be a number >= 0, not -1$"),
    (dict(min_lr_ratio=1.01), r"^config: min_lr_ratio must be a number in \[0, 1\], not 1.01$"),
    (dict(schedule="wsd", decay_fraction=0), r"^config: decay_fraction must be a number in \(0, 1\], not 0$"),
    (dict(schedule="wsd", decay_fraction=1.5), r"decay_fraction must be a number in \(0, 1\], not 1.5$"),
    (dict(compile=1), r"^config: compile must be true or false, not 1$"),  # never 0/1 (docs)
    (dict(document_masking=0), r"document_masking must be true or false, not 0$"),
    (dict(save_checkpoints="yes"), r"save_checkpoints must be true or false"),
    (dict(seed=-1), r"^config: seed must be an integer in \[0, 18446744073709551615\], not -1$"),
    (dict(seed=2**64), r"seed must be an integer in \[0, 18446744073709551615\], not 18446744073709551616$"),
    (dict(data={"synthetic": {"seed": 2**64}}), r"^config: data: synthetic: seed must be an integer in \[0, "),
    (dict(data={"synthetic": {"seed": -1}}), r"^config: data: synthetic: seed must be an integer in \[0, "),
    (dict(data={"synthetic": {"vocab_size": 1}}), r"^config: data: synthetic: vocab_size must be an integer >= 2"),
    (dict(data={"synthetic": {"seq_len": 1}}), r"^config: data: synthetic: seq_len must be an integer >= 2, not 1$"),
    (dict(data={"synthetic": 5}), r"^config: data: synthetic must be a mapping \(of vocab_size, seq_len, seed\)"),
    (dict(data={"mixture": ""}), r"^config: data: mixture must be a non-empty string \(a path\), not ''$"),
    (dict(data={"mixture": "m.json", "synthetic": None}), r"^config: data must have exactly one of"),
    (dict(data={}), r"^config: data must have exactly one of"),
    (dict(init_from=None), r"^config: init_from must be a string \(a path\), not None$"),
    (dict(betas=(0.9, 1.0)), r"^config: betas must be two numbers in \[0, 1\)"),
    (dict(betas=(-0.1, 0.9)), r"^config: betas must be two numbers in \[0, 1\)"),
    (dict(betas=(0.9, 0.95, 0.99)), r"^config: betas must be two numbers"),
    (dict(betas=(0.9, True)), r"^config: betas must be two numbers"),
    (dict(betas=(0.9, float("nan"))), r"^config: betas must be two numbers"),
    (dict(lr=float("nan")), r"^config: lr must be a number > 0, not nan$"),
    (dict(grad_clip=float("inf")), r"^config: grad_clip must be a number >= 0, not inf$"),
    (dict(steps=5, warmup_steps=6), r"^config: warmup_steps 6 exceeds steps 5$"),
    (dict(schedule="wsd", steps=10, warmup_steps=8, decay_fraction=0.3),
     r"^config: warmup_steps 8 \+ decay steps 3 \(decay_fraction 0.3 of 10\) exceed steps$"),
    (dict(document_masking=True), r"^config: document_masking needs data: \{mixture: ...\}"),
    (dict(eval_every=5), r"^config: eval_every needs data: \{mixture: ...\}"),
    (dict(model=["tiny"]), r"^config: model must be a preset name or a mapping of model fields, not \['tiny'\]$"),
])
def test_values_past_the_edges_are_one_line_each(kw, match):
    refused(match, **kw)


@pytest.mark.parametrize("fraction,steps,want", [
    (0.29, 10, 3),   # the nearest step count, not the floor (2)
    (0.01, 10, 1),   # at least one step of decay, not zero
    (0.2, 100, 20), (1, 7, 7),
])
def test_wsd_decay_steps_are_the_rounded_share_and_at_least_one(fraction, steps, want):
    assert TrainConfig(schedule="wsd", steps=steps, warmup_steps=0, decay_fraction=fraction).decay_steps() == want
    # the warmup that fits exactly is accepted; one more step is refused
    TrainConfig(schedule="wsd", steps=steps, warmup_steps=steps - want, decay_fraction=fraction).validate()
    refused("exceed steps", schedule="wsd", steps=steps, warmup_steps=steps - want + 1, decay_fraction=fraction)


def test_accumulation_steps_divide_the_batch_over_micro_batches_and_ranks():
    cfg = TrainConfig(batch_size=48, micro_batch_size=4)
    assert [cfg.accumulation_steps(w) for w in (1, 2, 3, 4, 6, 12)] == [12, 6, 4, 3, 2, 1]
    for w in (5, 8, 24):  # 48 % (4 w) != 0
        with pytest.raises(UserError, match=rf"^config: batch_size 48 is not a multiple of micro_batch_size 4 x {w}"):
            cfg.accumulation_steps(w)


def test_the_documented_default_steps_and_the_defaults_validate():
    cfg = TrainConfig()
    assert cfg.steps == 100  # docs: "`steps` (default 100)"
    assert cfg.validate() is cfg


def write(tmp_path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def test_load_config_resolves_a_relative_mixture_against_the_configs_folder(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    path = write(tmp_path / "cfg", "data: {mixture: mixes/m.json}\n")
    monkeypatch.chdir(tmp_path)  # not against the working directory
    assert load_config(path).data == {"mixture": str((tmp_path / "cfg" / "mixes" / "m.json").resolve())}
    absolute = write(tmp_path, f"data: {{mixture: {tmp_path / 'x.json'}}}\n", "abs.yaml")
    assert load_config(absolute).data == {"mixture": str(tmp_path / "x.json")}


def test_load_config_overrides_replace_the_file_and_none_leaves_it(tmp_path):
    path = write(tmp_path, "steps: 7\nout_dir: from/file\nwarmup_steps: 2\n")
    cfg = load_config(path, out_dir=None, steps=None)
    assert (cfg.out_dir, cfg.steps) == ("from/file", 7)
    assert load_config(path, out_dir="flag", steps=9).out_dir == "flag"


def test_load_config_reads_betas_as_a_tuple_from_yaml_and_json(tmp_path):
    want = TrainConfig(betas=(0.8, 0.9)).to_dict()
    assert load_config(write(tmp_path, "betas: [0.8, 0.9]\n")).to_dict() == want
    assert load_config(write(tmp_path, json.dumps({"betas": [0.8, 0.9]}), "run.json")).to_dict() == want


@pytest.mark.parametrize("content,msg", [
    (b"\xff\xfe\x00garbage\x89PNG", "cannot parse: not UTF-8 text (byte 0)"),  # a binary file given as the config
    ("- steps: 2\n", "expected a mapping at the top level"),
    ("", "expected a mapping at the top level"),
    ("stepz: 3\nbatchsize: 4\n", "unknown key(s) batchsize, stepz"),
])
def test_a_config_file_that_is_not_a_config_mapping_is_exit_2_and_one_line(tmp_path, capsys, content, msg):
    for name in ("run.yaml", "run.json") if isinstance(content, bytes) else ("run.yaml",):
        path = write(tmp_path, content, name)
        assert main(["train", str(path), "--quiet"]) == 2
        assert capsys.readouterr().err == f"error: config {path}: {msg}\n"


@pytest.mark.parametrize("text,hint", [("3e-4", True), ("1e5", True), ("3x", False), ("fast", False)])
def test_the_yaml_exponent_hint_is_given_for_numeric_text_only(text, hint):
    with pytest.raises(UserError) as e:
        TrainConfig(lr=text).validate()
    assert str(e.value).startswith(f"config: lr must be a number > 0, not {text!r}")
    assert ("(YAML reads a number without a dot" in str(e.value)) == hint
    with pytest.raises(UserError) as e:  # an integer field: no hint (3.0e-4 would not be an integer either)
        TrainConfig(steps="100").validate()
    assert str(e.value) == "config: steps must be an integer >= 1, not '100'"


# --- the batch sources

def progression(seed: int, g: int, vocab: int, seq_len: int) -> np.ndarray:
    """Sequence g of a synthetic source: its own Philox stream keyed by (seed, g), start then stride in [1, 8)."""
    r = np.random.Generator(np.random.Philox(key=[seed, g]))
    start, stride = r.integers(vocab), r.integers(1, 8)
    return (start + stride * np.arange(seq_len)) % vocab


def test_synthetic_rows_follow_the_global_order_at_any_world_size():
    """Call t's global batch is samples [t*B*w, (t+1)*B*w) and rank r takes [r*B, (r+1)*B)."""
    B, w, V, L = 3, 2, 11, 5
    for rank in range(w):
        src = SyntheticSource(V, L, B, rank=rank, world_size=w, seed=4)
        for t in range(3):
            want = np.stack([progression(4, t * B * w + rank * B + j, V, L) for j in range(B)])
            np.testing.assert_array_equal(src.next_batch().numpy(), want)
    one = SyntheticSource(V, L, B * w, seed=4)
    ranks = [SyntheticSource(V, L, B, rank=r, world_size=w, seed=4) for r in range(w)]
    for _ in range(2):
        assert torch.equal(one.next_batch(), torch.cat([s.next_batch() for s in ranks]))


def test_synthetic_position_resumes_and_refuses_another_seed():
    src = SyntheticSource(64, 8, 2, rank=1, world_size=3, seed=5)
    src.next_batch(), src.next_batch()
    state = src.state_dict()
    assert state["sample"] == 2 * 2 * 3
    again = SyntheticSource(64, 8, 2, rank=1, world_size=3, seed=5)
    assert again.load_state_dict(state) is None
    assert torch.equal(again.next_batch(), src.next_batch())
    with pytest.raises(UserError, match="data position was saved with seed 5, this run has seed 6"):
        SyntheticSource(64, 8, 2, seed=6).load_state_dict(state)


def test_synthetic_source_refuses_a_vocabulary_or_length_below_two():
    SyntheticSource(2, 2, 1)
    for v, n in ((1, 8), (8, 1)):
        with pytest.raises(UserError, match="synthetic data needs vocab_size >= 2 and seq_len >= 2"):
            SyntheticSource(v, n, 1)


def test_open_source_defaults_are_the_configs_and_the_seed_is_the_runs():
    """`synthetic:` alone takes the defaults: TrainConfig's own data (256 x 32), seeded by the run's seed."""
    default = TrainConfig().data["synthetic"]
    for syn in (None, {}):
        src = open_source({"synthetic": syn}, 2, rank=0, world_size=1, seed=9)
        assert (src.vocab_size, src.seq_len, src.seed) == (default["vocab_size"], default["seq_len"], 9)
    assert open_source({"synthetic": {"seed": 3}}, 2, rank=0, world_size=1, seed=9).seed == 3


class Rows:
    """A TokenDataset stand-in: row i is [i, i, i], of 10 + i bytes."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full(3, i)

    def n_bytes(self, i):
        return 10 + i

    def check_ids(self, rows, idx):
        pass


@pytest.mark.parametrize("n,w,limit,batch", [(10, 3, None, 2), (10, 3, 7, 4), (9, 2, 100, 3), (5, 1, 3, 5)])
def test_token_dataset_batches_give_each_rank_an_equal_contiguous_block(n, w, limit, batch):
    rows = min(n, limit if limit is not None else n)
    per = rows // w
    for rank in range(w):
        got = list(token_dataset_batches(Rows(n), batch, rank=rank, world_size=w, limit=limit))
        assert all(len(ids) <= batch for ids, _ in got)
        ids = torch.cat([i for i, _ in got]) if got else torch.empty(0, 3, dtype=torch.int64)
        want = list(range(rank * per, (rank + 1) * per))
        assert ids[:, 0].tolist() == want and ids.dtype == torch.int64
        assert torch.cat([b for _, b in got]).tolist() == [10 + i for i in want]


def test_a_mixture_source_reads_pad_and_eos_from_the_tokenizer(mixture):
    from gristmill.trainer.data import MixtureSource

    tok = json.loads((mixture.parent / "web" / "manifest.json").read_text())["tokenizer"]
    src = MixtureSource(str(mixture), 2, batches=1)
    assert (src.pad_id, src.eos_id) == (tok["pad_id"], tok["eos_id"]) == (0, 2)  # conftest's tokenizer
