"""`trainer export` at its edges, against the libraries that read its output: the safetensors library's own
serializer writes the same bytes, transformers loads every config with no missing or unexpected weight and
gives our logits (also reading the legacy top-level rope_theta alone, as transformers 4 does), float16 is
float16, the special ids in config.json are the ones AutoTokenizer and the tokenizers library find, and each
tokenizer mistake is one line: each test kills a mutation of export.py the rest of the suite let through."""
from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from gristmill.errors import UserError
from gristmill.trainer.export import export, find_run, hf_names, load_model, write_safetensors

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

SEQ_LEN = 32  # the data's; the model takes its max_seq_len from it
SPECIALS = ["<|pad|>", "<|bos|>", "<|eos|>"]
TEXT = ["the quick brown fox , jumps over the lazy dog .", "a stitch in time saves nine !", "to be or not to be ?"]
# not the defaults of transformers' configs (rope_theta 10000, rms_norm_eps 1e-6, initializer_range 0.02)
MODEL = {"preset": "tiny", "rope_base": 10.0, "norm_eps": 1e-3, "init_std": 0.01}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One-step tiny runs on synthetic data: `plain` (the MODEL settings), `tied` and `qk` (Qwen3's layout)."""
    from gristmill.trainer.config import TrainConfig
    from gristmill.trainer.train import train

    root, before = tmp_path_factory.mktemp("runs"), torch.get_num_threads()
    torch.set_num_threads(1)  # as conftest's one_thread, which a module fixture runs before
    for name, extra in (("plain", {}), ("tied", {"tie_embeddings": True}), ("qk", {"qk_norm": True})):
        train(TrainConfig(model={**MODEL, **extra}, steps=1, batch_size=4, micro_batch_size=4, warmup_steps=0,
                          precision="fp32", out_dir=str(root / name),
                          data={"synthetic": {"vocab_size": 256, "seq_len": SEQ_LEN}}), verbose=False)
    torch.set_num_threads(before)
    return root


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A BPE tokenizer with punctuation (75 tokens, under the model's 256), its file, and its sha256."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(TEXT * 20, trainers.BpeTrainer(vocab_size=120, special_tokens=SPECIALS))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return tok, path, hashlib.sha256(path.read_bytes()).hexdigest()


def on_mixture(runs, tmp_path, mixture) -> str:
    """A copy of the plain run whose config names `mixture` (a dict to write, or a path), as a run on a mixture
    does; export reads only the manifest's tokenizer entry."""
    run = tmp_path / "run"
    shutil.copytree(runs / "plain", run)
    if isinstance(mixture, dict):
        (tmp_path / "mixture.json").write_text(json.dumps(mixture))
        mixture = tmp_path / "mixture.json"
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["data"] = {"mixture": str(mixture)}
    (run / "config.json").write_text(json.dumps(cfg))
    return str(run)


def tokenizer_entry(path, sha256, **ids) -> dict:
    return {"tokenizer": {"path": str(path), "sha256": sha256, "vocab_size": 75, **ids}}


def test_our_safetensors_bytes_are_the_safetensors_librarys_own(runs, tmp_path):
    """Kills unsorted names, an unpadded header and a header with no `__metadata__`: safetensors.torch.save
    (the format's reference writer) gives the same bytes, for each dtype and for a whole export."""
    g = torch.Generator().manual_seed(0)
    tensors = {"b.weight": torch.randn(3, 5, generator=g), "a": torch.randn(7, generator=g),
               "model.x.weight": torch.randn(2, 3, 2, generator=g)}  # not in name order; header 171 bytes
    for tag, dtype in (("F32", torch.float32), ("BF16", torch.bfloat16), ("F16", torch.float16)):
        cast = {k: v.to(dtype) for k, v in tensors.items()}
        write_safetensors(tmp_path / "t.safetensors", cast, tag)
        assert (tmp_path / "t.safetensors").read_bytes() == safetensors_torch.save(cast, metadata={"format": "pt"})
    out = export(runs / "plain", tmp_path / "hf")
    got = safetensors_torch.load_file(str(out / "model.safetensors"))
    assert (out / "model.safetensors").read_bytes() == safetensors_torch.save(got, metadata={"format": "pt"})


@pytest.mark.parametrize("name", ["plain", "tied", "qk"])
def test_transformers_finds_every_weight_and_no_other(runs, tmp_path, name):
    """Kills attention_bias or mlp_bias true (transformers zero-initialises the biases it does not find, so the
    logits stay ours), and a tied model's output head written out as a weight of its own."""
    out = export(runs / name, tmp_path / "hf")
    hf, info = transformers.AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}  # missing, unexpected, mismatched keys, error messages
    names = set(safetensors_torch.load_file(str(out / "model.safetensors")))
    assert ("lm_head.weight" in names) is (name != "tied")
    assert names == set(hf_names(load_model(*find_run(runs / name))[0].config).values())


def test_the_config_carries_the_runs_settings_and_rope_theta_alone_gives_our_logits(runs, tmp_path):
    """Kills max_position_embeddings, initializer_range or the top-level rope_theta left at transformers'
    defaults. transformers 4 reads rope_theta alone (it predates rope_parameters): a config.json without
    rope_parameters, which transformers 5 converts from rope_theta, still gives our logits."""
    out = export(runs / "plain", tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    # the run's settings, by hand: SEQ_LEN from the data, MODEL's init_std and norm_eps
    assert (config["max_position_embeddings"], config["initializer_range"], config["rms_norm_eps"]) == (32, 0.01, 1e-3)
    assert (config["rope_theta"], config["rope_parameters"]) == (10.0, {"rope_type": "default", "rope_theta": 10.0})
    del config["rope_parameters"]
    (out / "config.json").write_text(json.dumps(config))
    ours, _ = load_model(*find_run(runs / "plain"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(out), attn_implementation="eager").eval()
    idx = torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf(idx).logits, ours(idx), atol=1e-5, rtol=1e-5)


def test_float16_is_written_tagged_and_loaded_as_float16(runs, tmp_path):
    """Kills float16 written as bfloat16, or its bytes tagged BF16: the safetensors library reads back the fp32
    weights cast to float16, and transformers loads a float16 model."""
    out = export(runs / "plain", tmp_path / "hf", dtype="float16")
    got = safetensors_torch.load_file(str(out / "model.safetensors"))
    state = load_model(*find_run(runs / "plain"))[0].state_dict()
    for ours, hf in hf_names(load_model(*find_run(runs / "plain"))[0].config).items():
        assert got[hf].dtype == torch.float16 and torch.equal(got[hf], state[ours].to(torch.float16)), hf
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "float16"
    assert transformers.AutoModelForCausalLM.from_pretrained(str(out)).dtype == torch.float16
    assert json.loads((out / "gristmill.json").read_text())["dtype"] == "float16"


def test_the_special_ids_are_the_tokenizers_own_and_an_override_keeps_them(runs, tmp_path, tokenizer):
    """Kills bos_token_id or pad_token_id in config.json not the data's, and --tokenizer dropping the data's
    special ids: config.json, AutoTokenizer and the tokenizers library agree on each id. Also the tokenizer's
    model_max_length is the data's seq_len, and (docs/trainer.md) it adds no BOS or EOS: the keys that
    transformers 4's Llama tokenizer reads are written false, though transformers 5 ignores them here."""
    tok, path, sha = tokenizer
    ids = {role: tok.token_to_id(t) for role, t in zip(("pad", "bos", "eos"), SPECIALS)}
    assert ids == {"pad": 0, "bos": 1, "eos": 2}
    mixture = tokenizer_entry(path, sha, **{f"{role}_id": i for role, i in ids.items()})
    run = on_mixture(runs, tmp_path, mixture)
    for out, kw in ((tmp_path / "hf", {}), (tmp_path / "override", {"tokenizer": str(path)})):
        export(run, out, **kw)
        config = json.loads((out / "config.json").read_text())
        hf_tok = transformers.AutoTokenizer.from_pretrained(str(out))
        for role, i in ids.items():
            assert config[f"{role}_token_id"] == getattr(hf_tok, f"{role}_token_id") == i, (out.name, role)
        assert hf_tok.model_max_length == SEQ_LEN
        text = "the quick fox , jumps over the lazy dog ."
        assert hf_tok(text)["input_ids"] == tok.encode(text).ids
        assert hf_tok.decode(tok.encode(text).ids) == tok.decode(tok.encode(text).ids) == text
        written = json.loads((out / "tokenizer_config.json").read_text())
        assert [written[k] for k in ("add_bos_token", "add_eos_token", "clean_up_tokenization_spaces")] == [False] * 3


def test_gristmill_json_names_the_checkpoint_absolutely_and_the_whole_model(runs, tmp_path, monkeypatch):
    """Kills the checkpoint recorded as given (relative to wherever export ran) and the model config left out."""
    shutil.copytree(runs / "plain", tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    export("run/checkpoints/step-00000001", "hf")
    record = json.loads((tmp_path / "hf" / "gristmill.json").read_text())
    assert record["checkpoint"] == str((tmp_path / "run" / "checkpoints" / "step-00000001").resolve())
    # the tiny preset with MODEL's settings, ffn_hidden by LLaMA's rule (64 * ceil(8 * 64 / 3 / 64) = 192)
    assert record["model"] == {"vocab_size": 256, "d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 4,
                               "max_seq_len": 32, "ffn_hidden": 192, "rope_base": 10.0, "norm_eps": 1e-3,
                               "qk_norm": False, "z_loss": 0.0, "tie_embeddings": False, "init_std": 0.01}
    assert record["dtype"] == "float32"


def test_each_tokenizer_mistake_is_one_line_and_writes_nothing(runs, tmp_path, tokenizer):
    """Kills each check of the tokenizer export makes before it writes: the --dtype choice, a tokenizer larger
    than the model, a malformed one, the run's mixture manifest gone, damaged or naming none, its tokenizer gone
    or another (sha256). A damaged manifest, a manifest naming no tokenizer (or a tokenizer entry that is no
    mapping: an AttributeError) and a --tokenizer folder read as a JSON traceback, "is gone" and "does not exist"."""
    from tokenizers import Tokenizer, models

    tok, path, sha = tokenizer
    big = tmp_path / "big.json"  # 300 tokens, the model 256
    Tokenizer(models.WordLevel({f"w{i}": i for i in range(300)}, unk_token="w0")).save(str(big))
    (tmp_path / "bad.json").write_text("not a tokenizer")
    (tmp_path / "folder").mkdir()
    (tmp_path / "damaged.json").write_text("{not json")
    other = tokenizer_entry(path, "0" * 64, eos_id=2)
    gone = tokenizer_entry(tmp_path / "gone.json", sha, eos_id=2)
    m = tmp_path / "mixture.json"
    for mixture, kw, message in [
        (None, {"dtype": "fp16"}, "--dtype must be one of float32, bfloat16, float16, not 'fp16'"),
        (None, {"tokenizer": str(big)}, f"tokenizer {big} has 300 tokens, the model 256"),
        (None, {"tokenizer": str(tmp_path / "folder")}, f"--tokenizer {tmp_path / 'folder'} is a folder"),
        (tmp_path / "nowhere.json", {},
         f"the run's mixture manifest {tmp_path / 'nowhere.json'} is gone, so its tokenizer is unknown; "
         "pass --tokenizer"),
        ({"format": "gristmill.mixture/1"}, {}, f"the run's mixture manifest {m} names no tokenizer; pass --tokenizer"),
        ({"tokenizer": "tokenizer.json"}, {}, f"the run's mixture manifest {m} names no tokenizer; pass --tokenizer"),
        (gone, {}, f"the tokenizer {tmp_path / 'gone.json'} named by {m} does not exist; pass --tokenizer"),
        (other, {}, f"{path} is not the tokenizer the run's data was made with (its sha256 differs from {m}'s); "
                    "pass --tokenizer"),
    ]:
        run = on_mixture(runs, tmp_path, mixture) if mixture else str(runs / "plain")
        with pytest.raises(UserError) as e:
            export(run, tmp_path / "hf", **kw)
        assert str(e.value) == message
        assert not (tmp_path / "hf").exists()
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
    with pytest.raises(UserError, match=rf"^cannot load tokenizer {tmp_path / 'bad.json'}: "):
        export(runs / "plain", tmp_path / "hf", tokenizer=str(tmp_path / "bad.json"))
    run = on_mixture(runs, tmp_path, tmp_path / "damaged.json")
    with pytest.raises(UserError, match=r"^the run's mixture manifest .*damaged\.json is not valid JSON \(Expecting "
                                        r"property name .*\); pass --tokenizer$"):
        export(run, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
    # the remedy each message names works: --tokenizer, with no special ids to take from a damaged manifest
    export(run, tmp_path / "hf", tokenizer=str(path))
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == path.read_bytes()
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] is None
