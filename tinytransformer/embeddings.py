# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/02-embeddings.md
"""Token and learned positional embeddings (chapter 2)."""

import torch
from torch import Tensor, nn


class Embeddings(nn.Module):
    """Token embedding plus learned positional embedding (GPT-2 style), then dropout.

    Args:
        vocab_size: Number of token ids, ``V``.
        max_seq_len: Number of positions with an embedding; longer inputs are refused.
        d_model: Width of each embedding vector.
        dropout: Dropout probability applied to the sum.
        learned_positions: Add the learned position embedding (GPT-2). ``False``
            embeds the tokens alone, for rotary positions in attention (chapter 11c).
    """

    def __init__(
        self,
        vocab_size: int,
        max_seq_len: int,
        d_model: int,
        dropout: float = 0.0,
        learned_positions: bool = True,
    ):
        super().__init__()
        self.max_seq_len = max_seq_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)  # (V, d_model)
        self.position_embedding: nn.Embedding | None = None  # rotary: none (11c)
        if learned_positions:  # (max_seq_len, d_model)
            self.position_embedding = nn.Embedding(max_seq_len, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, token_ids: Tensor, start_pos: int = 0) -> Tensor:
        """Embed token ids and their positions.

        Args:
            token_ids: Integer tensor of shape ``(B, T)``.
            start_pos: Position of the first token (non-zero when earlier tokens were
                cached, chapter 10).

        Returns:
            Tensor of shape ``(B, T, d_model)``.

        Raises:
            ValueError: If ``token_ids`` is not a 2-D integer tensor, or if positions
                ``start_pos .. start_pos + T - 1`` reach past ``max_seq_len``.
        """
        if (
            token_ids.ndim != 2
            or token_ids.is_floating_point()
            or token_ids.is_complex()
        ):
            raise ValueError(
                "token_ids must be an integer tensor of shape (B, T); got dtype"
                f" {token_ids.dtype} and shape {tuple(token_ids.shape)}"
            )
        seq_len = token_ids.shape[1]
        if start_pos + seq_len > self.max_seq_len:
            raise ValueError(
                f"sequence of {start_pos + seq_len} positions is longer than"
                f" max_seq_len ({self.max_seq_len}); crop the input to its last"
                f" {self.max_seq_len} tokens"
            )
        x = self.token_embedding(token_ids)  # (B, T, d_model)
        if self.position_embedding is not None:  # None with rotary positions (11c)
            end_pos = start_pos + seq_len
            positions = torch.arange(start_pos, end_pos, device=token_ids.device)
            x = x + self.position_embedding(positions)  # (B, T, d_model)
        return self.dropout(x)
