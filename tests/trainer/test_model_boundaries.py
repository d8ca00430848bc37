"""The model at its edges, each against an outside reference: HF transformers with the same weights, LLaMA's
own FFN rule, the presets table of docs/trainer.md, sum(p.numel()) of the built model, and torch's own functions."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gristmill.errors import UserError
from gristmill.trainer.model import PRESETS, ModelConfig, Transformer, model_config

transformers = pytest.importorskip("transformers")

DOCS = Path(__file__).resolve().parents[2] / "docs" / "trainer.md"


def _reference():
    """test_model.py's HF helpers (_hf_model, _hf_weights); pytest imports tests by path, not from sys.path."""
    spec = importlib.util.spec_from_file_location("test_model_reference", Path(__file__).with_name("test_model.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REF = _reference()


def _assert_matches_hf(ours: Transformer, ref, idx: torch.Tensor) -> None:
    missing, unexpected = ref.load_state_dict(REF._hf_weights(ours, ours.config.qk_norm), strict=False)
    assert not unexpected and all("rotary" in m for m in missing), (missing, unexpected)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(idx), ref.eval()(idx).logits, atol=2e-5, rtol=1e-4)


def _ids(batch: int, t: int, vocab: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, t), generator=torch.Generator().manual_seed(seed))


def test_the_defaults_are_hf_llamas_rope_base_and_llama_2s_norm_eps():
    """A config that leaves rope_base and norm_eps alone equals LlamaForCausalLM left at HF's default rope_theta
    (10000, RoFormer / LLaMA) with Llama 2/3's published rms_norm_eps 1e-5 (HF's own default is 1e-6)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, max_seq_len=64)
    hf_cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=cfg.ffn_hidden,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                      max_position_embeddings=64, rms_norm_eps=1e-5, tie_word_embeddings=False,
                                      attention_bias=False, mlp_bias=False, attn_implementation="eager")
    theta = getattr(hf_cfg, "rope_theta", None) or hf_cfg.rope_parameters["rope_theta"]
    assert theta == 10000.0  # nothing passed: this is HF's default in play
    _assert_matches_hf(Transformer(cfg), transformers.LlamaForCausalLM(hf_cfg), _ids(2, 32))


def test_norm_eps_reaches_every_rmsnorm_the_qk_norms_included():
    """With an eps far from the default, the block, final and per-head q/k norms all use it (Qwen3 reference).
    0.01 is near the mean square of q and k per head at init, so a q or k norm left at 1e-5 moves the logits ~1e-3."""
    torch.manual_seed(0)
    cfg = model_config("tiny", qk_norm=True, norm_eps=0.01)
    _assert_matches_hf(Transformer(cfg), REF._hf_model(cfg), _ids(2, 24))


def test_a_sequence_of_exactly_max_seq_len_matches_hf_and_one_more_token_is_refused():
    """The rotary table holds positions 0 .. max_seq_len - 1: a full-length row uses all of them (as HF does), and a
    longer one is one clear UserError rather than a shape error from inside RoPE."""
    torch.manual_seed(0)
    cfg = model_config("tiny", max_seq_len=16)
    model = Transformer(cfg)
    _assert_matches_hf(model, REF._hf_model(cfg), _ids(2, 16))
    with pytest.raises(UserError, match="sequence length 17 exceeds the model's max_seq_len 16"):
        model(_ids(1, 17))


def test_ffn_hidden_is_llamas_rule_at_multiple_of_64():
    """Meta's LLaMA FeedForward: hidden = int(2 * 4d / 3), then rounded up to a multiple of multiple_of (64 here),
    for every even d_model up to 4096 (1b's 2048 is where rounding to nearest or to 32 would differ)."""
    for d in range(2, 4097, 2):
        hidden = int(2 * (4 * d) / 3)
        want = 64 * ((hidden + 64 - 1) // 64)
        assert ModelConfig(vocab_size=2, d_model=d, n_layers=1, n_heads=1).ffn_hidden == want, d


def _docs_presets_table() -> dict[str, list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### Presets"):]
    assert "(vocab 32768, seq 2048)" in section[:section.index("| preset |")]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in PRESETS:
            rows[cells[0]] = cells[1:]
        elif rows and not line.startswith("|"):
            break
    return rows


def test_presets_are_the_table_docs_trainer_md_prints():
    """Shape, FFN, non-embedding and total parameters and GFLOPs/token (vocab 32768, seq 2048), row by row; and,
    as `trainer plan --preset` relies on, a preset's own vocabulary is 32768 (tiny's, for tests, 256)."""
    rows = _docs_presets_table()
    assert list(rows) == list(PRESETS)
    assert "(`--preset` alone assumes 32768)" in DOCS.read_text(encoding="utf-8")
    assert {n: c.vocab_size for n, c in PRESETS.items()} == {n: 256 if n == "tiny" else 32768 for n in PRESETS}
    for name, (d, layers, heads, ffn, d_per_l, nonemb, total, gflops) in rows.items():
        cfg = model_config(name, vocab_size=32768)
        assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_hidden) == (int(d), int(layers), int(heads), int(ffn))
        assert round(cfg.d_model / cfg.n_layers) == int(d_per_l), name
        assert f"{cfg.num_params(embedding=False) / 1e6:.1f}M" == nonemb, name
        assert f"{cfg.num_params() / 1e6:.1f}M" == total, name
        assert f"{cfg.flops_per_token(2048) / 1e9:.3f}" == gflops, name


def test_overriding_a_presets_width_or_heads_rederives_ffn_and_kv_heads():
    """docs/trainer.md: the FFN is 8/3 d_model rounded up to 64, and n_kv_heads 0 is multi-head: a new d_model
    gets its own FFN and a new n_heads its own multi-head count, unless the override gives them too."""
    assert model_config("125m", d_model=512, n_heads=8).ffn_hidden == 1408  # 8/3 * 512 = 1365.3 -> 1408
    assert model_config("125m", d_model=512, n_heads=8, ffn_hidden=1000).ffn_hidden == 1000
    assert model_config("tiny", n_heads=2).n_kv_heads == 2
    assert model_config("tiny", n_heads=8, n_kv_heads=2).n_kv_heads == 2


def test_init_std_sets_both_the_plain_and_the_scaled_init():
    """GPT-2's rule with another base std: matrices N(0, std), residual projections N(0, std / sqrt(2 n_layers))."""
    torch.manual_seed(0)
    std, n_layers = 0.05, 2
    m = Transformer(ModelConfig(vocab_size=256, d_model=256, n_layers=n_layers, n_heads=4, init_std=std))
    for blk in m.layers:
        assert blk.attn.wq.weight.std().item() == pytest.approx(std, rel=0.03)
        assert blk.mlp.w_up.weight.std().item() == pytest.approx(std, rel=0.03)
        assert blk.attn.wo.weight.std().item() == pytest.approx(std / math.sqrt(2 * n_layers), rel=0.03)
        assert blk.mlp.w_down.weight.std().item() == pytest.approx(std / math.sqrt(2 * n_layers), rel=0.03)
    assert m.tok_emb.weight.std().item() == pytest.approx(std, rel=0.03)


@pytest.mark.parametrize("override,message", [
    # RoPE's inverse frequencies are base^(-2i/d): base 0 gives infinities
    ({"rope_base": 0.0}, "model: rope_base must be a number > 0, not 0.0"),
    # RMSNorm divides by sqrt(mean(x^2) + eps): eps 0 is 0/0 on a zero vector (a padded or zeroed row)
    ({"norm_eps": 0.0}, "model: norm_eps must be a number > 0, not 0.0"),
    # N(0, 0) makes every matrix zero: nothing breaks the symmetry between units
    ({"init_std": 0.0}, "model: init_std must be a number > 0, not 0.0"),
    # a negative coefficient on logsumexp^2 rewards ever larger logits
    ({"z_loss": -1e-4}, "model: z_loss must be a number >= 0, not -0.0001"),
    ({"max_seq_len": 0}, "model: max_seq_len must be an integer >= 1, not 0"),
    # grouped-query attention needs whole groups; rotate-half RoPE needs pairs of dimensions
    ({"n_kv_heads": 3}, "model: n_heads 4 is not a multiple of n_kv_heads 3"),
    ({"n_kv_heads": 8}, "model: n_heads 4 is not a multiple of n_kv_heads 8"),
    ({"d_model": 60}, "model: head dim 15 must be even for RoPE"),
])
def test_a_model_field_past_its_edge_is_one_user_error_line(override, message):
    with pytest.raises(UserError) as e:
        model_config("tiny", **override)
    assert str(e.value) == message


def test_the_loss_reductions_are_torchs_cross_entropy_and_a_typo_is_refused():
    """With PAD targets: reduction="sum" is F.cross_entropy's sum over the scored targets, "mean" that over their
    count; any other reduction is a ValueError rather than a silent mean."""
    torch.manual_seed(0)
    model = Transformer(model_config("tiny")).eval()
    ids = _ids(2, 20)
    targets = ids[:, 1:].clone()
    targets[0, 10:] = -100
    with torch.no_grad():
        logits = model(ids[:, :-1]).flatten(0, 1).double()
        want_sum = F.cross_entropy(logits, targets.flatten(), ignore_index=-100, reduction="sum")
        got_sum = model(ids[:, :-1], targets, reduction="sum")
        got_mean = model(ids[:, :-1], targets)
        with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum', not 'none'"):
            model(ids[:, :-1], targets, reduction="none")
    assert float(got_sum) == pytest.approx(float(want_sum), rel=1e-5)
    assert float(got_mean) == pytest.approx(float(want_sum) / int((targets != -100).sum()), rel=1e-5)
