# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/01-attention.md
#   book/04-multi-head-attention.md
#   book/10-generation.md
"""Attention: scaled dot-product attention (chapter 1) and multi-head attention (chapter
4)."""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Attend from each query to every key: ``softmax(q kᵀ / √d_k) v``.

    ```python
    import torch
    from tinytransformer.attention import scaled_dot_product_attention

    q = k = v = torch.randn(2, 5, 8)  # (B, T, d_k)
    output, attn_weights = scaled_dot_product_attention(q, k, v)
    assert output.shape == (2, 5, 8) and attn_weights.shape == (2, 5, 5)
    ```

    Args:
        q: Queries, shape ``(..., T_q, d_k)``.
        k: Keys, shape ``(..., T_k, d_k)``.
        v: Values, shape ``(..., T_k, d_v)``.
        mask: Optional boolean mask broadcastable to ``(..., T_q, T_k)``; ``True`` where
            a query may attend to a key. Every query must be allowed at least one key.

    Returns:
        ``(output, attn_weights)``: the output, shape ``(..., T_q, d_v)``, and the
        attention weights, shape ``(..., T_q, T_k)``, each row summing to one.

    Raises:
        ValueError: If the shapes of ``q``, ``k`` and ``v`` do not fit together.
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"q {tuple(q.shape)}, k {tuple(k.shape)} and v {tuple(v.shape)} do not fit:"
            " q and k need the same last dimension (d_k), k and v the same number of"
            " positions"
        )
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    attn_weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return attn_weights @ v, attn_weights  # (..., T_q, d_v), (..., T_q, T_k)


def causal_mask(seq_len: int, device: torch.device | None = None) -> Tensor:
    """The causal (lower-triangular) attention mask.

    Args:
        seq_len: Number of positions, ``T``.
        device: Where to create the mask.

    Returns:
        Boolean tensor of shape ``(T, T)``; entry ``[i, j]`` is ``True`` when position
        ``i`` may attend to position ``j``, that is when ``j <= i``.
    """
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention: project to Q, K, V, attend per head, merge, project
    out.

    Args:
        d_model: Width of the input and output vectors.
        n_heads: Number of heads; must divide ``d_model``.
        dropout: Dropout probability applied to the output.
        bias: Whether the projections have biases.
        fast_attention: Compute attention with PyTorch's fused
            ``torch.nn.functional.scaled_dot_product_attention`` when the weights are
            not requested (chapter 12); the result is the same.
        n_kv_heads: Heads of keys and values; fewer than ``n_heads`` is
            grouped-query attention (chapter 11c). ``None`` means ``n_heads``.
        rope_theta: With a value, rotate queries and keys by their positions, with
            this base (rotary embeddings, chapter 11c); ``None`` (GPT-2) leaves them.

    Raises:
        ValueError: If ``n_heads`` does not divide ``d_model``, or ``n_kv_heads``
            does not divide ``n_heads``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        fast_attention: bool = False,
        n_kv_heads: int | None = None,
        rope_theta: float | None = None,
    ):
        super().__init__()
        if n_heads < 1 or d_model % n_heads != 0:
            raise ValueError(
                f"n_heads ({n_heads}) must be positive and divide d_model ({d_model})"
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads  # fewer: grouped-query (chapter 11c)
        if self.n_kv_heads < 1 or n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"n_kv_heads ({self.n_kv_heads}) must be positive "
                f"and divide n_heads ({n_heads})"
            )
        self.d_head = d_model // n_heads
        self.fast_attention = fast_attention
        qkv_width = (n_heads + 2 * self.n_kv_heads) * self.d_head  # 3 * d_model or less
        self.qkv_proj = nn.Linear(d_model, qkv_width, bias=bias)  # W_Q, W_K, W_V
        self.rotary: nn.Module | None = None
        if rope_theta is not None:  # rotary position embeddings (chapter 11c)
            from tinytransformer.llama import RotaryEmbedding

            self.rotary = RotaryEmbedding(self.d_head, rope_theta)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        kv_cache: "KVCache | None" = None,
        need_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend from every position to the positions ``mask`` allows.

        Args:
            x: Input of shape ``(B, T, d_model)``.
            mask: Optional boolean mask broadcastable to ``(B, H, T, T_k)``, ``True``
                where attending is allowed (e.g.
                [`causal_mask`][tinytransformer.attention.causal_mask]).
            kv_cache: Keys and values of earlier positions, used when generating
                (chapter 10). The new keys and values are appended to it, and the
                queries attend to all ``T_k = T_past + T`` of them. Without a cache,
                ``T_k = T``.
            need_weights: Return the attention weights. Without them, a model built with
                ``fast_attention`` uses the fused kernel, which never forms the weights.
            is_causal: A promise that ``mask`` is the plain causal triangle
                (``causal_mask(T)``, no cached positions before it). The fused kernel
                then masks by itself (``is_causal=True``) instead of reading ``mask``;
                the result is the same.

        Returns:
            ``(output, attn_weights)`` of shapes ``(B, T, d_model)`` and ``(B, H, T,
            T_k)``;
            ``attn_weights`` is ``None`` when the fused kernel ran.

        Raises:
            ValueError: If ``x`` is not a floating-point tensor of shape ``(B, T,
                d_model)``.
        """
        if x.ndim != 3 or x.shape[-1] != self.d_model or not x.is_floating_point():
            raise ValueError(
                f"x must be a floating-point tensor of shape (B, T, {self.d_model});"
                f" got dtype {x.dtype} and shape {tuple(x.shape)}"
            )
        batch_size, seq_len, _ = x.shape
        n_qkv_heads = self.n_heads + 2 * self.n_kv_heads  # 3H unless grouped (11c)
        qkv = self.qkv_proj(x).view(batch_size, seq_len, n_qkv_heads, self.d_head)
        sizes = [self.n_heads, self.n_kv_heads, self.n_kv_heads]  # H, H_kv, H_kv
        q, k, v = qkv.transpose(1, 2).split(sizes, dim=1)  # 3 × (B, H, T, d_head)
        if self.rotary is not None:  # chapter 11c: turn queries and keys by position
            start = 0 if kv_cache is None else kv_cache.seq_len  # positions cached
            positions = torch.arange(start, start + seq_len, device=x.device)  # (T,)
            q, k = self.rotary(q, positions), self.rotary(k, positions)
        # chapter 10: put the cached keys and values of earlier positions first
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # (B, H, T_k, d_head)
        if self.n_kv_heads < self.n_heads:  # chapter 11c: a key-value head per group
            group = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        attn_weights: Tensor | None = None  # the fused kernel never forms them
        # chapter 12: the same result from a fused kernel
        if self.fast_attention and not need_weights:
            # no mask tensor: keeps FlashAttention available on CUDA
            if is_causal and k.shape[-2] == seq_len:
                heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                heads = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            # (B, H, T, d_head)
            heads, attn_weights = scaled_dot_product_attention(q, k, v, mask)
        # (B, T, d_model)
        merged = heads.transpose(1, 2).reshape(batch_size, seq_len, self.d_model)
        return self.dropout(self.out_proj(merged)), attn_weights


class KVCache:
    """The keys and values that one attention layer has computed so far, kept while
    generating.

    [`MultiHeadAttention`][tinytransformer.attention.MultiHeadAttention], given a cache,
    writes the keys and values of its new positions into it and attends over all of
    them, so earlier positions are never computed twice. Room for ``max_seq_len``
    positions is reserved at the first update.

    Args:
        max_seq_len: Most positions the cache can hold: the model's ``max_seq_len``.

    Attributes:
        k: Keys, shape ``(B, H, max_seq_len, d_head)``, of which the first ``seq_len``
            positions are filled; ``None`` until the first update.
        v: Values, same shape as ``k``.
        seq_len: Number of positions filled.
    """

    def __init__(self, max_seq_len: int):
        self.max_seq_len = max_seq_len
        self.seq_len = 0
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append the keys and values of new positions.

        Args:
            k: Keys of the new positions, shape ``(B, H, T, d_head)``.
            v: Their values, same shape.

        Returns:
            ``(k, v)`` for every position so far, each of shape ``(B, H, seq_len + T,
            d_head)``: views of the cache, not copies.
        """
        # reserve every position once, instead of growing (copying) at each step
        if self.k is None or self.v is None:
            batch_size, n_heads, _, d_head = k.shape
            self.k = k.new_empty(batch_size, n_heads, self.max_seq_len, d_head)
            self.v = v.new_empty(batch_size, n_heads, self.max_seq_len, d_head)
        start, self.seq_len = self.seq_len, self.seq_len + k.shape[2]
        self.k[:, :, start : self.seq_len] = k  # write only the new positions
        self.v[:, :, start : self.seq_len] = v
        return self.k[:, :, : self.seq_len], self.v[:, :, : self.seq_len]
