"""The transformer block (chapter 5)."""

import pytest
import torch
from torch import nn

from tinytransformer.attention import causal_mask
from tinytransformer.block import Block


@pytest.mark.parametrize("pre_norm", [True, False])
def test_output_shape_equals_input_shape(pre_norm):
    block = Block(d_model=32, n_heads=4, d_ff=64, pre_norm=pre_norm)
    assert block(torch.randn(2, 7, 32), causal_mask(7)).shape == (2, 7, 32)


@pytest.mark.parametrize("pre_norm", [True, False])
def test_output_at_t_ignores_tokens_after_t(pre_norm):
    torch.manual_seed(0)
    block = Block(d_model=16, n_heads=2, d_ff=32, pre_norm=pre_norm)
    x = torch.randn(2, 6, 16)
    changed = x.clone()
    changed[:, 3:] = torch.randn(2, 3, 16)
    assert torch.allclose(block(x, causal_mask(6))[:, :3], block(changed, causal_mask(6))[:, :3], atol=1e-6)


def zero_sublayer_outputs(block: Block) -> None:
    for linear in (block.attn.out_proj, block.mlp.fc_out):
        nn.init.zeros_(linear.weight)
        nn.init.zeros_(linear.bias)


def test_pre_ln_block_with_silent_sublayers_is_the_identity():
    block = Block(d_model=16, n_heads=2, d_ff=32)
    zero_sublayer_outputs(block)
    x = torch.randn(2, 5, 16)
    assert torch.equal(block(x, causal_mask(5)), x)


def test_post_ln_block_with_silent_sublayers_normalises():
    block = Block(d_model=16, n_heads=2, d_ff=32, pre_norm=False)
    zero_sublayer_outputs(block)
    x = 3 + 5 * torch.randn(2, 5, 16)
    expected = nn.functional.layer_norm(nn.functional.layer_norm(x, (16,)), (16,))
    assert torch.allclose(block(x, causal_mask(5)), expected, atol=1e-5)


def test_gradient_reaches_input_through_the_residual_path():
    block = Block(d_model=16, n_heads=2, d_ff=32)
    zero_sublayer_outputs(block)
    x = torch.randn(1, 4, 16, requires_grad=True)
    block(x, causal_mask(4)).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_layer_norm_matches_the_formula():
    block = Block(d_model=8, n_heads=2, d_ff=16, layer_norm_eps=1e-5)
    x = torch.randn(3, 8)
    mean, variance = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    assert torch.allclose(block.attn_norm(x), (x - mean) / torch.sqrt(variance + 1e-5), atol=1e-6)


def test_pre_and_post_ln_compute_different_functions():
    torch.manual_seed(0)
    pre = Block(d_model=16, n_heads=2, d_ff=32)
    post = Block(d_model=16, n_heads=2, d_ff=32, pre_norm=False)
    post.load_state_dict(pre.state_dict())
    x = torch.randn(1, 4, 16)
    assert not torch.allclose(pre(x, causal_mask(4)), post(x, causal_mask(4)))


def test_no_bias_option_removes_every_bias():
    block = Block(d_model=16, n_heads=2, d_ff=32, bias=False)
    assert not [name for name, _ in block.named_parameters() if name.endswith("bias")]
