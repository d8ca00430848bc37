"""`trainer export`: a run's checkpoint as a Hugging Face `transformers` model folder, for downstream evaluation
(lm-evaluation-harness, lighteval) and generation.

    trainer export runs/web80 -o hf/web80                   # the newest checkpoint of that out_dir
    trainer export runs/web80/checkpoints/step-00002000 -o hf/web80-2k --dtype bfloat16

The folder holds config.json (`LlamaForCausalLM`, or `Qwen3ForCausalLM` for a model with QK-norm, which is
Qwen3's layout), model.safetensors, and the run's tokenizer as tokenizer.json + tokenizer_config.json. It loads
with `AutoModelForCausalLM.from_pretrained(folder)` and `AutoTokenizer.from_pretrained(folder)`. transformers is
not needed to export: the safetensors file is written here, following the format's published layout.
Documents were packed as `tokens + <eos>` with no BOS, so the tokenizer adds no special tokens either.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch

from gristmill.errors import UserError, require_file
from gristmill.trainer.checkpoint import find_run, load_model
from gristmill.trainer.model import ModelConfig

DTYPES = {"float32": (torch.float32, "F32"), "bfloat16": (torch.bfloat16, "BF16"), "float16": (torch.float16, "F16")}


def hf_names(cfg: ModelConfig) -> dict[str, str]:
    """Our parameter name -> the transformers LLaMA / Qwen3 name (the tied output head is left out: HF ties it)."""
    out = {"tok_emb.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        out["lm_head.weight"] = "lm_head.weight"
    for i in range(cfg.n_layers):
        ours, hf = f"layers.{i}.", f"model.layers.{i}."
        out.update({
            ours + "attn_norm.weight": hf + "input_layernorm.weight",
            ours + "mlp_norm.weight": hf + "post_attention_layernorm.weight",
            ours + "attn.wq.weight": hf + "self_attn.q_proj.weight",
            ours + "attn.wk.weight": hf + "self_attn.k_proj.weight",
            ours + "attn.wv.weight": hf + "self_attn.v_proj.weight",
            ours + "attn.wo.weight": hf + "self_attn.o_proj.weight",
            ours + "mlp.w_gate.weight": hf + "mlp.gate_proj.weight",
            ours + "mlp.w_up.weight": hf + "mlp.up_proj.weight",
            ours + "mlp.w_down.weight": hf + "mlp.down_proj.weight",
        })
        if cfg.qk_norm:
            out[ours + "attn.q_norm.weight"] = hf + "self_attn.q_norm.weight"
            out[ours + "attn.k_norm.weight"] = hf + "self_attn.k_norm.weight"
    return out


def hf_config(cfg: ModelConfig, dtype: str, special: dict[str, int | None]) -> dict[str, Any]:
    """config.json for transformers: LLaMA, or Qwen3 (the same layout plus per-head q/k RMSNorm)."""
    c: dict[str, Any] = {
        "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model, "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim, "max_position_embeddings": cfg.max_seq_len, "rms_norm_eps": cfg.norm_eps,
        "hidden_act": "silu", "tie_word_embeddings": cfg.tie_embeddings, "attention_bias": False,
        "attention_dropout": 0.0, "initializer_range": cfg.init_std, "use_cache": True,
        "rope_theta": cfg.rope_base, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
        "torch_dtype": dtype,
        "bos_token_id": special.get("bos"), "eos_token_id": special.get("eos"), "pad_token_id": special.get("pad"),
    }
    if cfg.qk_norm:
        c.update(architectures=["Qwen3ForCausalLM"], model_type="qwen3", use_sliding_window=False,
                 sliding_window=None, max_window_layers=cfg.n_layers)
    else:
        c.update(architectures=["LlamaForCausalLM"], model_type="llama", mlp_bias=False, pretraining_tp=1)
    return c


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], tag: str) -> None:
    """The safetensors layout: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
    shape and byte range, padded with spaces to a multiple of 8, then the tensors' bytes in C order. Names are
    sorted, so the same weights give the same bytes."""
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": tag, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


def _tokenizer(saved: dict[str, Any], override: str | None) -> tuple[bytes | None, str, dict[str, int | None]]:
    """(tokenizer.json bytes, where they came from, the special ids the data used): `override`, else the run's
    mixture's tokenizer (local, or a gs:// / s3:// URL for a remote source); (None, "", {}) for a run on
    synthetic data with no override."""
    from gristmill.pipeline import fs

    mixture = (saved.get("train", {}).get("data") or {}).get("mixture")
    mpath = Path(mixture) if mixture else None
    tok: Any = {}
    if mpath and mpath.is_file():
        try:
            manifest = json.loads(mpath.read_text())
        except ValueError as e:  # a damaged manifest was json's traceback; --tokenizer does without it
            if not override:
                raise UserError(f"the run's mixture manifest {mpath} is not valid JSON ({e}); "
                                "pass --tokenizer") from None
            manifest = {}
        tok = manifest.get("tokenizer") if isinstance(manifest, dict) else None
        tok = tok if isinstance(tok, dict) else {}
    special = {"bos": tok.get("bos_id"), "eos": tok.get("eos_id"), "pad": tok.get("pad_id")} if tok else {}
    if override:
        require_file(override, "--tokenizer")  # a folder read "does not exist"
        return Path(override).read_bytes(), override, special
    if mpath is None:
        return None, "", {}
    if not tok:  # a manifest there that names none had read "is gone"
        state = "names no tokenizer" if mpath.is_file() else "is gone, so its tokenizer is unknown"
        raise UserError(f"the run's mixture manifest {mpath} {state}; pass --tokenizer")
    where = str(fs.resolve(mpath.parent, tok.get("path", "")))
    if not tok.get("path") or not fs.is_file(where):
        raise UserError(f"the tokenizer {where} named by {mpath} does not exist; pass --tokenizer")
    data = fs.read_bytes(where)
    if tok.get("sha256") and hashlib.sha256(data).hexdigest() != tok["sha256"]:
        raise UserError(f"{where} is not the tokenizer the run's data was made with (its sha256 differs from "
                        f"{mpath}'s); pass --tokenizer")
    return data, where, special


def _tokenizer_files(data: bytes, out: Path, special: dict[str, int | None], max_len: int) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(data.decode("utf-8"))
    (out / "tokenizer.json").write_bytes(data)
    cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len,
                           "clean_up_tokenization_spaces": False, "add_bos_token": False, "add_eos_token": False}
    for role in ("bos", "eos", "pad"):
        if special.get(role) is not None:
            cfg[f"{role}_token"] = tok.id_to_token(int(special[role]))
    (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def export(path: str | Path, out: str | Path, *, dtype: str = "float32", tokenizer: str | None = None) -> Path:
    """Write the Hugging Face folder for the run or checkpoint at `path` into `out`; returns `out`."""
    if dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    from gristmill.pipeline import fs

    fs.check_output_folder(str(out))
    config_path, ckpt = find_run(Path(path))
    model, saved = load_model(config_path, ckpt)
    cfg = model.config
    tok_data, tok_where, special = _tokenizer(saved, tokenizer)
    if tok_data is not None:
        from tokenizers import Tokenizer

        try:
            size = Tokenizer.from_str(tok_data.decode("utf-8")).get_vocab_size()
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise UserError(f"cannot load tokenizer {tok_where}: {e}") from None
        if size > cfg.vocab_size:
            raise UserError(f"tokenizer {tok_where} has {size} tokens, the model {cfg.vocab_size}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch_dtype, tag = DTYPES[dtype]
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors = {hf: params[ours].to(torch_dtype) for ours, hf in hf_names(cfg).items()}
    write_safetensors(out / "model.safetensors", tensors, tag)
    (out / "config.json").write_text(json.dumps(hf_config(cfg, dtype, special), indent=2, sort_keys=True) + "\n")
    if tok_data is not None:
        _tokenizer_files(tok_data, out, special, cfg.max_seq_len)
    (out / "gristmill.json").write_text(json.dumps({"checkpoint": str(ckpt.resolve()), "dtype": dtype,
                                                    "model": cfg.to_dict()}, indent=2, sort_keys=True) + "\n")
    return out
