"""Scaled dot-product attention, the causal mask and multi-head attention (chapters 1 and 4)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinytransformer.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)


def random_qkv(*shape: int, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*shape, generator=generator, dtype=dtype) for _ in range(3))


@pytest.mark.parametrize("shape", [(5, 8), (2, 5, 8), (2, 3, 5, 8)])
def test_output_and_weight_shapes_follow_leading_dimensions(shape):
    q, k, v = random_qkv(*shape)
    output, attn_weights = scaled_dot_product_attention(q, k, v)
    assert output.shape == shape
    assert attn_weights.shape == (*shape[:-1], shape[-2])


def test_keys_and_values_may_differ_in_width_and_length_from_queries():
    q = torch.randn(2, 3, 8)
    k, v = torch.randn(2, 7, 8), torch.randn(2, 7, 5)
    output, attn_weights = scaled_dot_product_attention(q, k, v)
    assert output.shape == (2, 3, 5) and attn_weights.shape == (2, 3, 7)


def test_attention_rows_sum_to_one():
    _, attn_weights = scaled_dot_product_attention(*random_qkv(2, 6, 8))
    assert torch.allclose(attn_weights.sum(dim=-1), torch.ones(2, 6))
    assert (attn_weights >= 0).all()


def test_masked_positions_get_exactly_zero_weight():
    q, k, v = random_qkv(6, 8)
    mask = torch.rand(6, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    mask[:, 0] = True  # every query keeps at least one key
    _, attn_weights = scaled_dot_product_attention(q, k, v, mask)
    assert (attn_weights[~mask] == 0).all()
    assert torch.allclose(attn_weights.sum(dim=-1), torch.ones(6))


def test_causal_mask_is_lower_triangular():
    mask = causal_mask(5)
    assert mask.dtype == torch.bool
    assert torch.equal(mask, torch.tril(torch.ones(5, 5)).bool())


def test_first_position_attends_only_to_itself():
    _, attn_weights = scaled_dot_product_attention(*random_qkv(4, 8), causal_mask(4))
    assert attn_weights[0, 0] == 1.0


def test_output_at_t_ignores_inputs_after_t():
    q, k, v = random_qkv(1, 8, 16)
    changed = [tensor.clone() for tensor in (q, k, v)]
    for tensor in changed:
        tensor[:, 5:] = torch.randn(1, 3, 16)
    before, _ = scaled_dot_product_attention(q, k, v, causal_mask(8))
    after, _ = scaled_dot_product_attention(*changed, causal_mask(8))
    assert torch.allclose(before[:, :5], after[:, :5])
    assert not torch.allclose(before[:, 5:], after[:, 5:])


@pytest.mark.parametrize("shape", [(1, 1, 1, 4), (2, 4, 9, 16), (3, 2, 17, 8)])
@pytest.mark.parametrize("causal", [False, True])
def test_matches_torch_scaled_dot_product_attention(shape, causal):
    q, k, v = random_qkv(*shape, dtype=torch.float64)
    mask = causal_mask(shape[-2]) if causal else None
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    reference = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert torch.allclose(ours, reference, atol=1e-12)


def test_matches_torch_with_an_arbitrary_boolean_mask():
    q, k, v = random_qkv(2, 2, 6, 8, dtype=torch.float64)
    mask = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[..., 0] = True
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    assert torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-12)


def test_gradients_pass_gradcheck():
    q, k, v = (t.requires_grad_() for t in random_qkv(2, 4, 3, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda q, k, v: scaled_dot_product_attention(q, k, v, causal_mask(4))[0], (q, k, v))


def test_scaling_keeps_score_variance_near_one():
    generator = torch.Generator().manual_seed(0)
    q, k = torch.randn(20_000, 256, generator=generator), torch.randn(20_000, 256, generator=generator)
    scores = (q * k).sum(dim=-1)
    assert 200 < scores.var() < 312  # ≈ d_k unscaled
    assert 0.9 < (scores / 16).var() < 1.1  # ≈ 1 after dividing by √d_k


def test_mismatched_shapes_raise_value_error_naming_them():
    with pytest.raises(ValueError, match=r"q \(2, 3, 8\), k \(2, 3, 4\)"):
        scaled_dot_product_attention(torch.randn(2, 3, 8), torch.randn(2, 3, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="same number of positions"):
        scaled_dot_product_attention(torch.randn(3, 8), torch.randn(3, 8), torch.randn(4, 8))


def copy_into_torch_mha(ours: MultiHeadAttention) -> nn.MultiheadAttention:
    reference = nn.MultiheadAttention(ours.d_model, ours.n_heads, batch_first=True).to(ours.qkv_proj.weight.dtype)
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.qkv_proj.weight)
        reference.in_proj_bias.copy_(ours.qkv_proj.bias)
        reference.out_proj.weight.copy_(ours.out_proj.weight)
        reference.out_proj.bias.copy_(ours.out_proj.bias)
    return reference


@pytest.mark.parametrize(("d_model", "n_heads", "seq_len"), [(8, 1, 3), (32, 4, 7), (48, 6, 12)])
def test_multi_head_attention_matches_torch_multihead_attention(d_model, n_heads, seq_len):
    torch.manual_seed(0)
    ours = MultiHeadAttention(d_model, n_heads).double()
    reference = copy_into_torch_mha(ours)
    x = torch.randn(2, seq_len, d_model, dtype=torch.float64)
    mask = causal_mask(seq_len)
    our_output, our_weights = ours(x, mask)
    ref_output, ref_weights = reference(x, x, x, attn_mask=~mask, average_attn_weights=False)
    assert torch.allclose(our_output, ref_output, atol=1e-12)
    assert torch.allclose(our_weights, ref_weights, atol=1e-12)


def test_multi_head_attention_shapes():
    attention = MultiHeadAttention(d_model=32, n_heads=4)
    output, attn_weights = attention(torch.randn(3, 5, 32), causal_mask(5))
    assert output.shape == (3, 5, 32) and attn_weights.shape == (3, 4, 5, 5)


def test_multi_head_attention_is_causal():
    torch.manual_seed(0)
    attention = MultiHeadAttention(d_model=16, n_heads=2)
    x = torch.randn(1, 6, 16)
    changed = x.clone()
    changed[:, 4:] += 1.0
    before, _ = attention(x, causal_mask(6))
    after, _ = attention(changed, causal_mask(6))
    assert torch.allclose(before[:, :4], after[:, :4], atol=1e-6)


def test_each_head_attends_with_its_own_slice_of_the_projection():
    torch.manual_seed(0)
    attention = MultiHeadAttention(d_model=12, n_heads=3)
    x = torch.randn(2, 5, 12)
    output, attn_weights = attention(x, causal_mask(5))
    q, k, v = attention.qkv_proj(x).split(12, dim=-1)  # the three roles, (B, T, d_model) each
    heads = []
    for h in range(3):
        features = slice(4 * h, 4 * h + 4)  # head h: features 4h .. 4h+3 of each role
        head, weights = scaled_dot_product_attention(q[..., features], k[..., features], v[..., features],
                                                     causal_mask(5))
        assert torch.allclose(attn_weights[:, h], weights, atol=1e-6)
        heads.append(head)
    assert torch.allclose(output, attention.out_proj(torch.cat(heads, dim=-1)), atol=1e-6)


@pytest.mark.parametrize("n_heads", [1, 2, 8])
def test_parameter_count_does_not_depend_on_heads(n_heads):
    attention = MultiHeadAttention(d_model=16, n_heads=n_heads)
    assert sum(p.numel() for p in attention.parameters()) == 4 * (16 * 16 + 16)


@pytest.mark.parametrize(("d_model", "n_heads"), [(32, 5), (32, 0), (10, 4)])
def test_heads_that_do_not_divide_d_model_raise(d_model, n_heads):
    with pytest.raises(ValueError, match=rf"n_heads \({n_heads}\).*d_model \({d_model}\)"):
        MultiHeadAttention(d_model, n_heads)


@pytest.mark.parametrize(
    "x", [torch.randn(5, 16), torch.randn(2, 5, 8), torch.randint(0, 3, (2, 5, 16))], ids=["rank-2", "width", "integer"]
)
def test_wrong_input_raises_value_error_naming_shape_and_dtype(x):
    with pytest.raises(ValueError, match=r"shape \(B, T, 16\); got dtype"):
        MultiHeadAttention(d_model=16, n_heads=2)(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fast_path_equals_the_book_path(dtype):
    torch.manual_seed(0)
    book = MultiHeadAttention(d_model=32, n_heads=4).to(dtype)
    fast = MultiHeadAttention(d_model=32, n_heads=4, fast_attention=True).to(dtype)
    fast.load_state_dict(book.state_dict())
    x = torch.randn(3, 9, 32, dtype=dtype, requires_grad=True)
    expected, _ = book(x, causal_mask(9), need_weights=False)
    output, attn_weights = fast(x, causal_mask(9), need_weights=False)
    assert attn_weights is None  # the fused kernel never forms the weights
    tolerance = 1e-12 if dtype == torch.float64 else 1e-6
    assert torch.allclose(output, expected, atol=tolerance)
    (grad_fast,) = torch.autograd.grad(output.sum(), x)
    (grad_book,) = torch.autograd.grad(expected.sum(), x)
    assert torch.allclose(grad_fast, grad_book, atol=tolerance * 10)


def test_fast_path_still_returns_weights_when_asked():
    attention = MultiHeadAttention(d_model=16, n_heads=2, fast_attention=True)
    _, attn_weights = attention(torch.randn(1, 4, 16), causal_mask(4))
    assert attn_weights.shape == (1, 2, 4, 4)


def test_causal_hint_lets_the_fused_kernel_mask_by_itself_with_the_same_result(monkeypatch):
    torch.manual_seed(0)
    book = MultiHeadAttention(d_model=32, n_heads=4)
    fast = MultiHeadAttention(d_model=32, n_heads=4, fast_attention=True)
    fast.load_state_dict(book.state_dict())
    calls, fused = [], F.scaled_dot_product_attention

    def spy(*args, **kwargs):  # records how the fused kernel is called
        calls.append(kwargs)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    x = torch.randn(2, 7, 32)
    expected, _ = book(x, causal_mask(7))
    output, _ = fast(x, causal_mask(7), need_weights=False, is_causal=True)
    assert calls[-1] == {"is_causal": True}  # no mask tensor: FlashAttention stays possible on CUDA
    assert torch.allclose(output, expected, atol=1e-6)
    cache = KVCache(max_seq_len=7)  # with cached positions first, the hint is not enough: the mask is used
    fast(x[:, :5], causal_mask(5), cache, need_weights=False, is_causal=True)
    output, _ = fast(x[:, 5:], causal_mask(7)[5:], cache, need_weights=False, is_causal=True)
    assert "attn_mask" in calls[-1] and torch.allclose(output, expected[:, 5:], atol=1e-6)
