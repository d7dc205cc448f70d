# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/11-to-llama.md
"""Llama's building blocks: RMSNorm, rotary position embeddings, SwiGLU (chapter 11c).

The existing modules build these when ``GPTConfig`` asks for them (``norm="rmsnorm"``,
``position="rope"``, ``mlp="swiglu"``); it imports nothing else from the package.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Root-mean-square normalisation with a learned gain (Llama's norm).

    Args:
        d_model: Number of features normalised, the last dimension.
        eps: Added to the mean square before the square root.
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))  # the gain, γ

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each position's features to a root mean square of one, then scale.

        Args:
            x: Tensor of shape ``(..., d_model)``.

        Returns:
            Tensor of the same shape and dtype; computed in float32.
        """
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embeddings: turn pairs of features by angles set by position.

    Feature ``i`` of the first half pairs with feature ``i`` of the second half
    (Hugging Face's layout); pair ``i`` turns by ``position * theta ** (-2i / d_head)``
    radians.

    Args:
        d_head: Features per head; must be even.
        theta: The base of the wavelengths (10,000 in Llama 1 and 2).

    Raises:
        ValueError: If ``d_head`` is odd.
    """

    def __init__(self, d_head: int, theta: float = 10_000.0):
        super().__init__()
        if d_head % 2:
            raise ValueError(
                f"rotary embeddings turn pairs of features: d_head ({d_head}) "
                "must be even"
            )
        self.d_head = d_head
        self.theta = theta

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate each vector by its position.

        Args:
            x: Queries or keys, shape ``(..., T, d_head)``.
            positions: The position of each of the ``T`` vectors, shape ``(T,)``;
                any integers, negative ones rotating backwards.

        Returns:
            Tensor of the same shape and dtype as ``x``.
        """
        pairs = torch.arange(0, self.d_head, 2, device=x.device, dtype=torch.float32)
        frequencies = 1.0 / self.theta ** (
            pairs / self.d_head
        )  # (d_head / 2,): radians per position
        angles = positions.to(torch.float32)[:, None] * frequencies  # (T, d_head / 2)
        cos, sin = angles.cos(), angles.sin()
        first, second = x.float().chunk(
            2, dim=-1
        )  # (..., T, d_head / 2) each: the pairs' two coordinates
        turned = torch.cat(
            [first * cos - second * sin, first * sin + second * cos], dim=-1
        )
        return turned.to(x.dtype)


class SwiGLU(nn.Module):
    """Gated feed-forward network, ``fc_out(silu(fc_gate(x)) * fc_in(x))``, dropout.

    Args:
        d_model: Width of the input and output vectors.
        d_ff: Width of the hidden layer (``8 * d_model // 3`` keeps GELU's count).
        dropout: Dropout probability applied to the output.
        bias: Whether the linear layers have biases (Llama: no).
    """

    def __init__(
        self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = False
    ):
        super().__init__()
        self.fc_gate = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to every position independently.

        Args:
            x: Tensor of shape ``(B, T, d_model)`` (any leading dimensions work).

        Returns:
            Tensor of the same shape as ``x``.
        """
        hidden = F.silu(self.fc_gate(x)) * self.fc_in(x)  # (B, T, d_ff)
        return self.dropout(self.fc_out(hidden))  # (B, T, d_model)
