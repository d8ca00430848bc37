"""Evaluation's arithmetic at its edges, against references worked here: bits per byte by its definition (the
scored targets' nats from torch's cross_entropy / ln 2 / the rows' bytes), document masking against each
document scored on its own (RoPE is relative, so a document alone from position 0 gets the masked logits), the
tokenizer's PAD left out, counts exact past float32's integers, no bytes or no targets, the model's mode, the
progress figures over ranks by a fixed clock, and `trainer evaluate`'s set choice, step and refusals."""
from __future__ import annotations

import json
import math
import shutil
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import spec_from_dict
from gristmill.tokenize.shards import ShardWriter, TokenDataset, build_manifest, shard_name, write_manifest
from gristmill.trainer import ablate
from gristmill.trainer import evaluate as evaluate_module
from gristmill.trainer import progress as progress_module
from gristmill.trainer.checkpoint import find_run, load_model
from gristmill.trainer.config import TrainConfig
from gristmill.trainer.data import SyntheticSource
from gristmill.trainer.evaluate import evaluate, evaluate_run, evaluate_sets
from gristmill.trainer.model import Transformer, model_config
from gristmill.trainer.train import train

SEQ_LEN = 32  # conftest.SEQ_LEN
EOS = 2
CPU = torch.device("cpu")


def rows_of(folder) -> tuple[torch.Tensor, torch.Tensor]:
    ds = TokenDataset(folder, "validation")
    ids = torch.stack([torch.from_numpy(np.asarray(ds[i], dtype=np.int64)) for i in range(len(ds))])
    return ids, torch.tensor([ds.n_bytes(i) for i in range(len(ds))])


def per_document_nats(model, ids: torch.Tensor) -> float:
    """Each document of each row (up to and with its EOS; the row's last up to its end) through the model on its
    own, its next-token predictions summed: what attention kept within the document gives."""
    total = 0.0
    with torch.no_grad():
        for row in ids:
            inputs, targets = row[:-1], row[1:]
            start = 0
            for i in range(len(inputs)):
                if inputs[i] == EOS or i == len(inputs) - 1:
                    logits = model(inputs[start:i + 1][None])[0]
                    total += F.cross_entropy(logits.double(), targets[start:i + 1], reduction="sum").item()
                    start = i + 1
    return total


def plain_nats(model, ids: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    with torch.no_grad():
        logits = model(ids[:, :-1]).double()
    targets = ids[:, 1:]
    keep = torch.ones_like(targets, dtype=torch.bool) if keep is None else keep
    return F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()


@pytest.fixture(scope="module")
def doc_run(tmp_path_factory, tiny_settings):
    """(a run trained 2 steps with document_masking on rows of three EOS-separated documents, its dataset, its
    mixture)."""
    root = tmp_path_factory.mktemp("docs")
    folder = root / "docs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 32), ("validation", 8)):
        w = ShardWriter(folder / shard_name(split, 0), SEQ_LEN, 256, pad_id=0)
        for _ in range(n):
            row = 3 + (rng.integers(253) + rng.integers(1, 5) * np.arange(SEQ_LEN)) % 253
            row[[int(rng.integers(4, 12)), int(rng.integers(16, 26))]] = EOS
            w.write_row(row, [0], 3 * SEQ_LEN)
        splits[split] = [w.close()]
    tok = {"path": "tokenizer.json", "sha256": "ab" * 32, "vocab_size": 256, "bos_id": 1, "eos_id": EOS, "pad_id": 0}
    write_manifest(folder, build_manifest(source="docs", domain="web", seq_len=SEQ_LEN, tokenizer=tok,
                                          recipe_sha256="00" * 32, seed=0, splits=splits))
    spec = spec_from_dict({"sources": [{"name": "docs", "manifest": str(folder)}], "budget_tokens": 32 * SEQ_LEN,
                           "seed": 0, "weighting": {"method": "explicit", "proportions": {"docs": 1.0}}}, root)
    mixture = root / "mix.json"
    mixbuild.write_mixture(mixbuild.build(spec, mixture), mixture)
    run = root / "run"
    train(TrainConfig(**{**tiny_settings, "steps": 2, "document_masking": True, "data": {"mixture": str(mixture)},
                         "out_dir": str(run)}), verbose=False)
    return run, folder, mixture


def test_bits_per_byte_is_nats_over_ln2_and_bytes_with_counts_exact_past_float32():
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    src = SyntheticSource(256, SEQ_LEN, 3, seed=1)
    batches = [(src.next_batch(), torch.full((3,), 2**24 + 1)), (src.next_batch(), torch.tensor([1, 2, 3]))]
    nats = plain_nats(model, torch.cat([b[0] for b in batches]))
    n_bytes = 3 * (2**24 + 1) + 6  # float32 holds no odd integer past 2**24
    got = evaluate(model, batches)
    assert (got["tokens"], got["bytes"]) == (6 * (SEQ_LEN - 1), n_bytes)
    assert got["loss"] == pytest.approx(nats / (6 * (SEQ_LEN - 1)), rel=1e-6)
    assert got["bits_per_byte"] == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-6)


def test_no_bytes_or_no_scored_targets_give_none_and_nan_not_a_division_by_zero():
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    ids = SyntheticSource(256, SEQ_LEN, 2, seed=1).next_batch()
    zero = evaluate(model, [(ids, torch.zeros(2, dtype=torch.int64))])
    assert zero["bits_per_byte"] is None and zero["bytes"] == 0
    assert zero["loss"] == pytest.approx(plain_nats(model, ids) / (2 * (SEQ_LEN - 1)), rel=1e-6)
    # one batch without byte counts leaves the whole set without bits per byte, not the other batches' figure
    assert evaluate(model, [(ids, torch.tensor([50, 50])), ids])["bits_per_byte"] is None
    assert evaluate(model, [ids, (ids, torch.tensor([50, 50]))])["bits_per_byte"] is None
    only_pad = torch.zeros(2, SEQ_LEN, dtype=torch.int64)
    only_pad[:, 0] = 7
    empty = evaluate(model, [(only_pad, torch.tensor([3, 3]))], pad_id=0)
    assert empty["tokens"] == 0 and math.isnan(empty["loss"])
    assert empty["bytes"] == 6 and math.isnan(empty["bits_per_byte"])  # no targets: no figure, not a perfect 0.0


def test_evaluation_runs_in_eval_mode_and_leaves_the_mode_it_found():
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    seen = []
    model.register_forward_hook(lambda module, args, out: seen.append(module.training))
    ids = SyntheticSource(256, SEQ_LEN, 2, seed=1).next_batch()
    for training in (True, False):
        model.train(training)
        evaluate(model, [ids])
        assert model.training is training
    assert seen == [False, False]


def test_document_masking_scores_each_document_on_its_own(doc_run):
    run, folder, mixture = doc_run
    model, _ = load_model(*find_run(run))
    ids, n_bytes = rows_of(folder)
    masked, plain = per_document_nats(model, ids), plain_nats(model, ids)
    assert abs(masked - plain) > 1e-3 * plain  # masking matters on these rows, so the checks below can tell
    n = ids.shape[0] * (SEQ_LEN - 1)
    got = evaluate(model, [(ids[:5], n_bytes[:5]), (ids[5:], n_bytes[5:])], eos_id=EOS)
    assert got["loss"] == pytest.approx(masked / n, rel=1e-5)
    assert got["bits_per_byte"] == pytest.approx(masked / math.log(2) / int(n_bytes.sum()), rel=1e-5)
    assert evaluate(model, [(ids, n_bytes)])["loss"] == pytest.approx(plain / n, rel=1e-5)
    # evaluate_sets takes the tokenizer's EOS with document_masking only
    sets = ablate.evaluation_sets([ablate.load_mixture(mixture)], {}, 8)
    tok = json.loads(mixture.read_text())["tokenizer"]
    for masking, want in ((True, masked), (False, plain)):
        scores = evaluate_sets(model, sets, tok, document_masking=masking, batch_size=3, device=CPU)
        assert scores["web"]["loss"] == pytest.approx(want / n, rel=1e-5)
    # `trainer evaluate` of a run trained with document_masking scores as the run does
    assert evaluate_run(run, max_sequences=8)["sets"]["web"]["loss"] == pytest.approx(masked / n, rel=1e-5)


def test_the_tokenizers_pad_is_not_scored_in_the_evaluation_sets(pad_mixture):
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    sets = ablate.evaluation_sets([ablate.load_mixture(pad_mixture)], {}, 16)  # every validation row
    tok = json.loads(pad_mixture.read_text())["tokenizer"]
    scores = evaluate_sets(model, sets, tok, document_masking=False, batch_size=5, device=CPU)
    for name, folder in (("web", "web"), ("reference", "wiki")):
        ids, n_bytes = rows_of(pad_mixture.parent / folder)
        keep = ids[:, 1:] != tok["pad_id"]
        assert 0 < int(keep.sum()) < keep.numel()  # these rows do end in PAD
        nats = plain_nats(model, ids, keep)
        got = scores[name]
        assert (got["tokens"], got["bytes"]) == (int(keep.sum()), int(n_bytes.sum()))
        assert got["loss"] == pytest.approx(nats / int(keep.sum()), rel=1e-6)
        assert got["bits_per_byte"] == pytest.approx(nats / math.log(2) / int(n_bytes.sum()), rel=1e-6)


def test_progress_counts_every_ranks_rows_and_targets_on_rank_0_only(mixture, capsys, monkeypatch):
    """Rank 0 of 2 scores 4 of each set's 8 rows and reports all ranks' rows and targets (31 a row); with a clock
    that reads 2 s at every batch, the rates are those counts / 2: 8 rows and 248 targets give 4.0 and 124."""
    torch.manual_seed(0)
    model = Transformer(model_config("tiny", max_seq_len=SEQ_LEN))
    sets = ablate.evaluation_sets([ablate.load_mixture(mixture)], {}, 8)
    tok = json.loads(mixture.read_text())["tokenizer"]
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))
    monkeypatch.setattr(evaluate_module, "time", types.SimpleNamespace(perf_counter=lambda: 2.0))
    with pytest.raises(ValueError, match=r"^progress must be None, 'lines' or 'terminal', not 'bar'$"):
        evaluate_sets(model, sets, tok, document_masking=False, batch_size=2, device=CPU, progress="bar")
    capsys.readouterr()
    kw = dict(document_masking=False, batch_size=2, device=CPU, world_size=2, progress="lines")
    evaluate_sets(model, sets, tok, rank=0, **kw)
    want = []
    for name in ("reference", "web"):  # two batches of 2 rows on each of 2 ranks; the ETA is the fixed clock's
        want += [f"[{'#' * 15}{'.' * 15}] eval {name}: sequences 4/8 2.0 seq/s 62 tok/s ETA 0:00:00",
                 f"[{'#' * 30}] eval {name}: sequences 8/8 4.0 seq/s 124 tok/s"]
    assert capsys.readouterr().err.splitlines() == want
    evaluate_sets(model, sets, tok, rank=1, **kw)
    assert capsys.readouterr().err == ""


def test_trainer_evaluate_without_mixture_sets_and_of_another_vocabulary(doc_run, mixture, tiny_settings, tmp_path):
    run, folder, _ = doc_run
    web = mixture.parent / "web"
    both = evaluate_run(run, {"again": str(web)}, max_sequences=4)
    only = evaluate_run(run, {"again": str(web)}, max_sequences=4, mixture_sets=False)
    assert list(only["sets"]) == ["again"] and sorted(both["sets"]) == ["again", "web"]
    assert only["sets"]["again"] == both["sets"]["again"] and only["sets"]["again"]["sequences"] == 4
    assert (only["step"], only["checkpoint"]) == (2, str(run / "checkpoints" / "step-00000002"))
    # a checkpoint folder copied under another name keeps its step (the name was parsed: ValueError 'best')
    best = tmp_path / "copy" / "checkpoints" / "best"
    shutil.copytree(run, tmp_path / "copy")
    (tmp_path / "copy" / "checkpoints" / "step-00000002").rename(best)
    renamed = evaluate_run(best, {"again": str(web)}, max_sequences=4, mixture_sets=False)
    assert renamed == {**only, "checkpoint": str(best)}
    with pytest.raises(UserError) as e:
        evaluate_run(run, mixture_sets=False)
    assert str(e.value) == "--no-mixture-sets leaves nothing to evaluate: add --eval NAME=DIR"
    # a run of a 300-token vocabulary whose config names this mixture (as an edited config.json would)
    other = tmp_path / "v300"
    synthetic = {"synthetic": {"vocab_size": 300, "seq_len": SEQ_LEN}}
    train(TrainConfig(**{**tiny_settings, "steps": 1, "warmup_steps": 0, "data": synthetic, "out_dir": str(other)}),
          verbose=False)
    saved = json.loads((other / "config.json").read_text())
    saved["train"]["data"] = {"mixture": str(mixture)}
    (other / "config.json").write_text(json.dumps(saved))
    with pytest.raises(UserError) as e:
        evaluate_run(other)
    assert str(e.value) == f"{mixture} has vocabulary 256, the checkpoint's model 300"


def test_trainer_evaluate_json_is_strict_with_no_scored_target(tmp_path, monkeypatch, capsys):
    """A set with no scored target has NaN loss and bits per byte: --json writes them as null, as eval.jsonl does,
    since json.dumps' default NaN is rejected by strict parsers (json.loads with parse_constant raising here)."""
    from gristmill.trainer.cli import main

    nan = float("nan")
    monkeypatch.setattr(evaluate_module, "evaluate_run", lambda *a, **k: {
        "checkpoint": "c", "step": 3, "sets": {"pad": {"kind": "extra", "sequences": 2, "tokens": 0, "bytes": 6,
                                                       "loss": nan, "bits_per_byte": nan}}})
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(tmp_path), "--json", str(out)]) == 0
    assert "nan" in capsys.readouterr().out

    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    got = json.loads(out.read_text(), parse_constant=refuse)
    assert got["sets"]["pad"] == {"kind": "extra", "sequences": 2, "tokens": 0, "bytes": 6, "loss": None,
                                  "bits_per_byte": None}
