"""RoPE: the Triton kernels against the PyTorch reference, and rope_cache + reference against transformers' LLaMA."""
import pytest
import torch

from gristmill.kernels import apply_rope, rope_cache, use_backend
from gristmill.kernels.rope import apply_rope_reference


def _qk(batch, seq, q_heads, k_heads, head_dim, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, seq, q_heads, head_dim, generator=gen),
            torch.randn(batch, seq, k_heads, head_dim, generator=gen))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("dims", [(2, 7, 3, 1, 16), (1, 5, 4, 4, 10)])  # GQA; head_dim 10 has half 5
def test_triton_matches_reference_fp32(dims, inplace, values_and_grads):
    q, k = _qk(*dims)
    cos, sin = rope_cache(dims[1], dims[4], base=500.0)

    def triton_path(q, k):
        with use_backend("triton"):
            # In place needs non-leaf tensors, as any in-place op under autograd does.
            return apply_rope(q * 1, k * 1, cos, sin, inplace=inplace) if inplace else apply_rope(q, k, cos, sin)

    out, grads = values_and_grads(triton_path, q, k)
    ref_out, ref_grads = values_and_grads(lambda q, k: apply_rope_reference(q, k, cos, sin), q, k)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)


def test_in_place_overwrites_inputs():
    q, k = _qk(2, 6, 2, 1, 8)
    cos, sin = rope_cache(6, 8)
    expected = apply_rope_reference(q, k, cos, sin)
    with use_backend("triton"):
        q_out, k_out = apply_rope(q, k, cos, sin, inplace=True)
    assert q_out is q and k_out is k
    torch.testing.assert_close((q, k), expected)


def test_strided_q_and_k(values_and_grads):
    # q and k as views into a fused qkv projection: heads are not adjacent in memory.
    qkv = torch.randn(2, 5, 3 * 4 * 8, generator=torch.Generator().manual_seed(3))
    cos, sin = rope_cache(5, 8)

    def split(x):
        return x[..., :32].view(2, 5, 4, 8), x[..., 32:64].view(2, 5, 4, 8)

    def triton_path(x):
        with use_backend("triton"):
            return apply_rope(*split(x), cos, sin)

    out, grads = values_and_grads(triton_path, qkv)
    ref_out, ref_grads = values_and_grads(lambda x: apply_rope_reference(*split(x), cos, sin), qkv)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)


def test_in_place_on_views_under_autograd(values_and_grads):
    # q and k as the model makes them: views of a projection's output, q also transposed from (b, h, s, d) and
    # k sliced in its last dimension (so rotated through a copy); in place must give what out of place gives.
    cos, sin = rope_cache(5, 8)
    gen = torch.Generator().manual_seed(4)
    q_bhsd, k_wide = torch.randn(2, 3, 5, 8, generator=gen), torch.randn(2, 5, 1, 16, generator=gen)

    def views(q, k):
        return (q * 1).transpose(1, 2), (k * 1)[..., ::2]

    def in_place(q, k):
        with use_backend("triton"):
            q_view, k_view = views(q, k)
            q_out, k_out = apply_rope(q_view, k_view, cos, sin, inplace=True)
            assert q_out is q_view and k_out is k_view
            return q_out, k_out

    def out_of_place(q, k):
        with use_backend("triton"):
            return apply_rope(*views(q, k), cos, sin)

    out, grads = values_and_grads(in_place, q_bhsd, k_wide)
    ref_out, ref_grads = values_and_grads(lambda q, k: apply_rope_reference(*views(q, k), cos, sin), q_bhsd, k_wide)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(grads, ref_grads)
    assert all(torch.equal(a, b) for a, b in zip(out + grads, sum(values_and_grads(out_of_place, q_bhsd, k_wide), [])))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_matches_transformers_llama(dtype):
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    config = LlamaConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2, rope_theta=10000.0,
                         max_position_embeddings=32)
    q, k = _qk(2, 9, 4, 2, 16, seed=4)
    q, k = q.to(dtype), k.to(dtype)
    positions = torch.arange(9)[None].expand(2, 9)
    hf_cos, hf_sin = llama.LlamaRotaryEmbedding(config)(q, positions)
    cos, sin = rope_cache(9, 16, base=10000.0, dtype=dtype)
    assert torch.equal(cos, hf_cos[0]) and torch.equal(sin, hf_sin[0])
    # transformers' layout is (batch, heads, seq, head_dim).
    hf_q, hf_k = llama.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), hf_cos, hf_sin)
    ours = apply_rope_reference(q, k, cos, sin)
    assert torch.equal(ours[0], hf_q.transpose(1, 2)) and torch.equal(ours[1], hf_k.transpose(1, 2))


def test_rejects_bad_shapes():
    q, k = _qk(1, 4, 2, 2, 8)
    with pytest.raises(ValueError, match="cos and sin"):
        apply_rope(q, k, *rope_cache(5, 8))
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_cache(4, 7)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_realistic(dtype, values_and_grads, assert_no_worse_than_eager):
    q, k = _qk(2, 2048, 32, 8, 128, seed=5)
    cos, sin = rope_cache(2048, 128, base=500000.0, device="cuda")
    q, k = q.cuda().to(dtype), k.cuda().to(dtype)
    out, grads = values_and_grads(lambda q, k: apply_rope(q, k, cos, sin), q, k)
    eager_out, eager_grads = values_and_grads(lambda q, k: apply_rope_reference(q, k, cos, sin), q, k)
    if dtype == torch.float32:
        torch.testing.assert_close(out, eager_out)
        torch.testing.assert_close(grads, eager_grads)
    else:
        exact_out, exact_grads = values_and_grads(
            lambda q, k: apply_rope_reference(q, k, cos.double(), sin.double()), q.double(), k.double())
        assert_no_worse_than_eager(out + grads, eager_out + eager_grads, exact_out + exact_grads)
