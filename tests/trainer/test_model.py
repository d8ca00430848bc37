"""The model against an external reference: HF transformers' LlamaForCausalLM (and Qwen3 for QK-norm)."""
import pytest
import torch

from gristmill.errors import UserError
from gristmill.trainer.model import PRESETS, ModelConfig, Transformer, model_config

transformers = pytest.importorskip("transformers")


def _hf_weights(model: Transformer, qk_norm: bool) -> dict:
    """Our state dict renamed to the HF LLaMA / Qwen3 layout."""
    sd = {"model.embed_tokens.weight": model.tok_emb.weight, "model.norm.weight": model.norm.weight,
          "lm_head.weight": model.lm_head.weight}
    for i, blk in enumerate(model.layers):
        p = f"model.layers.{i}."
        sd.update({
            p + "input_layernorm.weight": blk.attn_norm.weight,
            p + "post_attention_layernorm.weight": blk.mlp_norm.weight,
            p + "self_attn.q_proj.weight": blk.attn.wq.weight,
            p + "self_attn.k_proj.weight": blk.attn.wk.weight,
            p + "self_attn.v_proj.weight": blk.attn.wv.weight,
            p + "self_attn.o_proj.weight": blk.attn.wo.weight,
            p + "mlp.gate_proj.weight": blk.mlp.w_gate.weight,
            p + "mlp.up_proj.weight": blk.mlp.w_up.weight,
            p + "mlp.down_proj.weight": blk.mlp.w_down.weight,
        })
        if qk_norm:
            sd[p + "self_attn.q_norm.weight"] = blk.attn.q_norm.weight
            sd[p + "self_attn.k_norm.weight"] = blk.attn.k_norm.weight
    return sd


def _hf_model(cfg: ModelConfig):
    common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ffn_hidden,
                  num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                  num_key_value_heads=cfg.n_kv_heads, max_position_embeddings=cfg.max_seq_len,
                  rms_norm_eps=cfg.norm_eps, tie_word_embeddings=cfg.tie_embeddings,
                  rope_theta=cfg.rope_base, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_base},
                  attention_bias=False, attn_implementation="eager")
    if cfg.qk_norm:
        if not hasattr(transformers, "Qwen3Config"):
            pytest.skip("this transformers has no Qwen3 (the QK-norm reference)")
        hf_cfg = transformers.Qwen3Config(head_dim=cfg.head_dim, use_sliding_window=False, **common)
        return transformers.Qwen3ForCausalLM(hf_cfg)
    hf_cfg = transformers.LlamaConfig(mlp_bias=False, **common)
    return transformers.LlamaForCausalLM(hf_cfg)


@pytest.mark.parametrize("qk_norm,tied,kv", [(False, False, 0), (False, True, 0), (True, False, 0), (False, False, 2),
                                             (True, False, 1)])
def test_logits_match_hf_reference(qk_norm, tied, kv):
    torch.manual_seed(0)
    cfg = model_config("tiny", qk_norm=qk_norm, tie_embeddings=tied, rope_base=500.0, n_kv_heads=kv)
    ours = Transformer(cfg).eval()
    with torch.no_grad():  # non-trivial norm weights so a swapped norm would show
        for name, p in ours.named_parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    ref = _hf_model(cfg).eval()
    missing, unexpected = ref.load_state_dict(_hf_weights(ours, qk_norm), strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    idx = torch.randint(0, cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = ours(idx)
        want = ref(idx).logits
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    # the loss path (fused linear cross-entropy) agrees with HF's causal-LM loss
    with torch.no_grad():
        loss = ours(idx[:, :-1], idx[:, 1:])
        ref_loss = ref(idx, labels=idx).loss
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)


def test_param_count_is_exact():
    for cfg in [PRESETS["tiny"], model_config("tiny", qk_norm=True), model_config("tiny", tie_embeddings=True),
                model_config("tiny", n_kv_heads=2, qk_norm=True), model_config("tiny", n_kv_heads=1)]:
        m = Transformer(cfg)
        assert cfg.num_params() == sum(p.numel() for p in m.parameters())


def test_presets_span_10m_to_1b_with_aspect_near_100():
    sizes = {n: c.num_params(embedding=False) for n, c in PRESETS.items() if n != "tiny"}
    for name, n in sizes.items():
        nominal = float(name[:-1]) * (1e6 if name.endswith("m") else 1e9)
        assert 0.8 < n / nominal < 1.25, (name, n)
        cfg = PRESETS[name]
        assert 80 <= cfg.d_model / cfg.n_layers <= 115 and cfg.head_dim == 64
    # SwiGLU hidden is 8/3 d rounded up to a multiple of 64
    assert PRESETS["125m"].ffn_hidden == 2752 and PRESETS["tiny"].ffn_hidden == 192


def test_flops_per_token_is_6n_plus_attention():
    cfg = PRESETS["125m"]
    n = cfg.num_params() - cfg.vocab_size * cfg.d_model  # lm_head is a matmul; the lookup table is not
    assert n == cfg.num_params(embedding=False) + cfg.vocab_size * cfg.d_model
    assert cfg.flops_per_token(2048) == 6 * n + 12 * 10 * 1024 * 2048


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    m = Transformer(ModelConfig(vocab_size=64, d_model=512, n_layers=8, n_heads=8))
    std_wo = m.layers[0].attn.wo.weight.std().item()
    std_wq = m.layers[0].attn.wq.weight.std().item()
    assert abs(std_wq - 0.02) < 1e-3 and abs(std_wo - 0.02 / 4) < 2e-4


def test_bad_model_config_is_a_user_error():
    with pytest.raises(UserError, match="unknown preset"):
        model_config("7b")
    with pytest.raises(UserError, match="unknown field"):
        model_config({"preset": "tiny", "dmodel": 3})
    with pytest.raises(UserError, match="divisible"):
        ModelConfig(d_model=100, n_heads=3)


def test_model_runs_through_the_fused_kernels_when_dispatch_allows():
    """Forcing the Triton path (the interpreter, on CPU): every op the model owns goes through the kernels'
    autograd Functions, and loss and gradients equal the PyTorch path's."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    worker = Path(__file__).with_name("kernel_path_worker.py")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(worker)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    fused = {"RMSNormFunctionBackward", "RoPEFunctionBackward", "SwiGLUFunctionBackward",
             "FusedLinearCrossEntropyFunctionBackward"}
    assert fused <= set(got["triton_nodes"]) and not fused & set(got["torch_nodes"])
    assert got["losses"][0] == pytest.approx(got["losses"][1], rel=1e-6)
    assert got["grad_gap"] < 1e-5


def test_z_loss_adds_the_mean_squared_logsumexp():
    torch.manual_seed(0)
    plain = Transformer(model_config("tiny"))
    with_z = Transformer(model_config("tiny", z_loss=1e-2))
    with_z.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 256, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        lse = torch.logsumexp(plain(idx[:, :-1]).float(), dim=-1)
        ce = plain(idx[:, :-1], idx[:, 1:])
        got = with_z(idx[:, :-1], idx[:, 1:])
    torch.testing.assert_close(got, ce + 1e-2 * lse.pow(2).mean(), atol=1e-6, rtol=1e-6)
    assert got > ce


@pytest.mark.parametrize("kv", [0, 2])
def test_document_masking_scores_each_packed_document_as_if_alone(kv):
    """With RoPE, attention depends on relative positions only, so a document packed after another one, with
    attention kept inside documents, gives the logits it gives alone at position 0 (and not without the mask)."""
    from gristmill.trainer.model import doc_segments

    torch.manual_seed(0)
    model = Transformer(model_config("tiny", n_kv_heads=kv)).eval()
    eos = 2
    a, b = torch.randint(3, 256, (1, 13)), torch.randint(3, 256, (1, 19))
    packed = torch.cat([a, torch.tensor([[eos]]), b], dim=1)  # doc a, its EOS, then doc b
    segments = doc_segments(packed, eos)
    assert segments.tolist() == [[0] * 14 + [1] * 19]
    with torch.no_grad():
        masked = model(packed, segments=segments)
        alone_b, alone_a = model(b), model(torch.cat([a, torch.tensor([[eos]])], dim=1))
        plain = model(packed)
    torch.testing.assert_close(masked[:, 14:], alone_b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[:, :14], alone_a, atol=1e-5, rtol=1e-5)
    assert (plain[:, 14:] - alone_b).abs().max() > 1e-2  # without the mask, b sees a


def test_every_residual_projection_has_the_scaled_init():
    """GPT-2 / nanoGPT: the two projections that write into the residual stream (attention output and MLP down)
    get std 0.02 / sqrt(2 * n_layers); every other matrix, embeddings included, std 0.02; gains are 1."""
    import math

    torch.manual_seed(0)
    n_layers = 8
    m = Transformer(ModelConfig(vocab_size=1024, d_model=512, n_layers=n_layers, n_heads=8))
    scaled = 0.02 / math.sqrt(2 * n_layers)  # 0.005
    for i, blk in enumerate(m.layers):
        for name, p in (("wo", blk.attn.wo.weight), ("w_down", blk.mlp.w_down.weight)):
            assert p.std().item() == pytest.approx(scaled, rel=0.02), (i, name)  # 262k-721k samples: ~0.2% noise
        for name, p in (("wq", blk.attn.wq.weight), ("wk", blk.attn.wk.weight), ("wv", blk.attn.wv.weight),
                        ("w_gate", blk.mlp.w_gate.weight), ("w_up", blk.mlp.w_up.weight)):
            assert p.std().item() == pytest.approx(0.02, rel=0.02), (i, name)
        assert torch.equal(blk.attn_norm.weight, torch.ones(512)) and torch.equal(blk.mlp_norm.weight, torch.ones(512))
    for name, p in (("tok_emb", m.tok_emb.weight), ("lm_head", m.lm_head.weight)):
        assert p.std().item() == pytest.approx(0.02, rel=0.02), name
