"""`trainer export` against the libraries that read its output: transformers loads the folder and gives our
model's logits, the safetensors library reads our file as DCP's own converter reads the checkpoint, and
AutoTokenizer encodes as the tokenizers library does."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from gristmill.errors import UserError
from gristmill.mixtures import build as mixbuild
from gristmill.mixtures.spec import spec_from_dict
from gristmill.tokenize.shards import ShardWriter, build_manifest, shard_name, write_manifest
from gristmill.trainer.cli import main
from gristmill.trainer.export import export, find_run, hf_names, load_model
from gristmill.trainer.train import train

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

SEQ_LEN = 32
TEXT = ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine", "to be or not to be"]


@pytest.fixture(scope="module")
def real_mixture(tmp_path_factory):
    """A token dataset and mixture whose tokenizer is a real one (word-level BPE, 120 tokens, 3 specials)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    root = tmp_path_factory.mktemp("export")
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXT * 20, trainers.BpeTrainer(vocab_size=120, special_tokens=["<|pad|>", "<|bos|>",
                                                                                          "<|eos|>"]))
    folder = root / "web"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 64), ("validation", 8)):
        w = ShardWriter(folder / shard_name(split, 0), SEQ_LEN, vocab, pad_id=0)
        for _ in range(n):
            w.write_row(rng.integers(3, vocab, SEQ_LEN), [0], 3 * SEQ_LEN)
        splits[split] = [w.close()]
    info = {"path": "tokenizer.json", "sha256": hashlib.sha256((folder / "tokenizer.json").read_bytes()).hexdigest(),
            "vocab_size": vocab, "bos_id": 1, "eos_id": 2, "pad_id": 0}
    write_manifest(folder, build_manifest(source="web", domain="web", seq_len=SEQ_LEN, tokenizer=info,
                                          recipe_sha256="00" * 32, seed=0, splits=splits))
    spec = {"sources": [{"name": "web", "manifest": str(folder)}], "budget_tokens": 64 * SEQ_LEN, "seed": 0,
            "weighting": {"method": "explicit", "proportions": {"web": 1.0}}}
    path = root / "mixture.json"
    mixbuild.write_mixture(mixbuild.build(spec_from_dict(spec, root), path), path)
    return path, tok


def _train(tiny, name, **model):
    cfg = tiny(name, model={"preset": "tiny", **model}, steps=3)
    train(cfg, verbose=False)
    return cfg.out_dir


@pytest.mark.parametrize("model", [{}, {"tie_embeddings": True}, {"qk_norm": True, "rope_base": 500.0},
                                   {"n_kv_heads": 2}])
def test_transformers_loads_the_export_and_gives_our_logits(tiny, tmp_path, model):
    run = _train(tiny, "run", **model)
    out = export(run, tmp_path / "hf")
    ours, _ = load_model(*find_run(run))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager").eval()
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if model.get("qk_norm") else "LlamaForCausalLM")
    idx = torch.randint(0, ours.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=2e-5, rtol=1e-4)
    assert not (tmp_path / "hf" / "tokenizer.json").exists()  # synthetic data: no tokenizer to ship


def test_exported_weights_are_the_checkpoint_weights(tiny, tmp_path):
    """Read back with the safetensors library, against DCP's own converter of the checkpoint (not our loader)."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from gristmill.trainer import checkpoint

    run = _train(tiny, "run")
    ckpt = checkpoint.latest(tmp_path / "run" / "checkpoints")
    dcp_to_torch_save(str(ckpt), str(tmp_path / "ckpt.pt"))
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=False)["model"]
    ours, _ = load_model(tmp_path / "run" / "config.json", ckpt)
    names = hf_names(ours.config)
    for dtype in ("float32", "bfloat16"):
        out = export(run, tmp_path / dtype, dtype=dtype)
        got = safetensors_torch.load_file(str(out / "model.safetensors"))
        assert sorted(got) == sorted(names.values())
        for our_name, hf_name in names.items():
            assert got[hf_name].dtype == getattr(torch, dtype)
            assert torch.equal(got[hf_name], saved[our_name].to(got[hf_name].dtype)), hf_name
    # the weights moved away from their initialisation: this is a trained model, not a fresh one
    fresh = type(ours)(ours.config).state_dict()
    assert not torch.equal(fresh["layers.0.attn.wq.weight"], saved["layers.0.attn.wq.weight"])
    # the same checkpoint exports to the same bytes
    again = export(run, tmp_path / "again")
    assert (again / "model.safetensors").read_bytes() == (tmp_path / "float32" / "model.safetensors").read_bytes()


def test_the_runs_tokenizer_ships_and_encodes_the_same(tiny, tmp_path, real_mixture, capsys):
    mixture, tok = real_mixture
    run = tiny("run", steps=2, data={"mixture": str(mixture)})
    train(run, verbose=False)
    assert main(["export", run.out_dir, "-o", str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'hf'} (config.json, model.safetensors, tokenizer)")
    hf_tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    for text in TEXT + ["the lazy fox saves time"]:
        assert hf_tok(text)["input_ids"] == tok.encode(text).ids  # no BOS or EOS added: the data had none first
    assert (hf_tok.eos_token, hf_tok.pad_token_id, hf_tok.bos_token) == ("<|eos|>", 0, "<|bos|>")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["eos_token_id"], config["vocab_size"], config["torch_dtype"]) == (2, tok.get_vocab_size(),
                                                                                    "bfloat16")
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    assert hf.dtype == torch.bfloat16
    ids = hf.generate(torch.tensor([tok.encode("the quick").ids]), max_new_tokens=4, do_sample=False)
    assert ids.shape == (1, len(tok.encode("the quick").ids) + 4)


def test_export_errors_are_one_line(tiny, tmp_path, real_mixture, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "-o", str(tmp_path / "hf")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'} is neither a training out_dir nor a checkpoint folder\n"
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no checkpoint"):
        export(tmp_path / "empty", tmp_path / "hf")
    mixture, _ = real_mixture
    run = tiny("run", steps=1, warmup_steps=0, data={"mixture": str(mixture)})
    train(run, verbose=False)
    with pytest.raises(UserError, match="--tokenizer .*missing.json does not exist"):
        export(run.out_dir, tmp_path / "hf", tokenizer=str(tmp_path / "missing.json"))
    (tmp_path / "file").write_text("")  # -o a file, or a folder under one: mkdir's traceback before
    with pytest.raises(UserError, match="output .*file is a file, not a folder"):
        export(run.out_dir, tmp_path / "file")
    with pytest.raises(UserError, match="output .*file/hf cannot be a folder: .*file is a file"):
        export(run.out_dir, tmp_path / "file" / "hf")
    # a checkpoint of another model under a run's config: DCP's complaint, in one line
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    cfg["model"]["d_model"] = 128
    (tmp_path / "run" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="cannot read the model from .*step-00000001: it holds another model"):
        export(run.out_dir, tmp_path / "hf")
