"""The position-wise feed-forward network (chapter 3)."""

import math

import torch

from tinytransformer.feedforward import FeedForward


def test_shape_is_preserved():
    assert FeedForward(16, 64)(torch.randn(2, 5, 16)).shape == (2, 5, 16)


def test_network_is_applied_to_each_position_independently():
    torch.manual_seed(0)
    ffn = FeedForward(16, 64)
    x = torch.randn(2, 5, 16)
    per_position = torch.stack([ffn(x[:, t]) for t in range(5)], dim=1)
    assert torch.allclose(ffn(x), per_position, atol=1e-6)


def test_activation_is_gpt2_tanh_gelu():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    expected = 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    assert torch.allclose(FeedForward(4, 8).activation(x), expected)


def test_exact_gelu_is_x_times_the_normal_cdf():
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    expected = x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # x·Φ(x)
    assert torch.allclose(FeedForward(4, 8, gelu_approximate="none").activation(x), expected)


def test_hidden_width_and_parameter_count():
    ffn = FeedForward(d_model=16, d_ff=48)
    assert ffn.fc_in.weight.shape == (48, 16) and ffn.fc_out.weight.shape == (16, 48)
    assert sum(p.numel() for p in ffn.parameters()) == 2 * 16 * 48 + 48 + 16
    assert sum(p.numel() for p in FeedForward(16, 48, bias=False).parameters()) == 2 * 16 * 48


def test_dropout_only_in_training():
    ffn = FeedForward(8, 32, dropout=0.5)
    x = torch.randn(4, 8)
    assert not torch.equal(ffn(x), ffn(x))
    ffn.eval()
    assert torch.equal(ffn(x), ffn(x))
