# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/03-feedforward.md
"""The position-wise feed-forward network (chapter 3)."""

from torch import Tensor, nn


class FeedForward(nn.Module):
    """Two linear layers with a GELU between: ``d_model → d_ff → d_model``, then
    dropout.

    Args:
        d_model: Width of the input and output vectors.
        d_ff: Width of the hidden layer (conventionally ``4 * d_model``).
        dropout: Dropout probability applied to the output.
        bias: Whether the linear layers have biases.
        gelu_approximate: ``"tanh"`` for GPT-2's approximation of GELU, ``"none"`` for
            the exact one.
    """

    def __init__(
        self,
        d_model: int,
        d_ff: int,
        dropout: float = 0.0,
        bias: bool = True,
        gelu_approximate: str = "tanh",
    ):
        super().__init__()
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.activation = nn.GELU(approximate=gelu_approximate)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the network to every position independently.

        Args:
            x: Tensor of shape ``(B, T, d_model)`` (any leading dimensions work).

        Returns:
            Tensor of the same shape as ``x``.
        """
        hidden = self.activation(self.fc_in(x))  # (B, T, d_model) -> (B, T, d_ff)
        return self.dropout(self.fc_out(hidden))  # (B, T, d_ff) -> (B, T, d_model)
