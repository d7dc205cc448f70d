# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/05-block.md
"""The transformer block: attention and feed-forward sub-layers with residuals (chapter
5)."""

import torch
from torch import Tensor, nn

from tinytransformer.attention import KVCache, MultiHeadAttention, causal_mask
from tinytransformer.feedforward import FeedForward


def norm_layer(kind: str, d_model: int, eps: float, bias: bool) -> nn.Module:
    """A LayerNorm over ``d_model`` features; for ``kind="rmsnorm"``, an RMSNorm.

    Args:
        kind: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (Llama, chapter 11c).
        d_model: Number of features normalised.
        eps: Added to the variance (or mean square) before the square root.
        bias: Whether a LayerNorm has a bias (an RMSNorm never has).

    Returns:
        The normalisation module.
    """
    if kind == "rmsnorm":  # chapter 11c, on first use
        from tinytransformer.llama import RMSNorm

        return RMSNorm(d_model, eps)
    return nn.LayerNorm(d_model, eps=eps, bias=bias)


class Block(nn.Module):
    """One transformer block: multi-head self-attention, then a feed-forward network.

    Args:
        d_model: Width of the residual stream.
        n_heads: Number of attention heads; must divide ``d_model``.
        d_ff: Hidden width of the feed-forward network.
        dropout: Dropout probability inside both sub-layers.
        bias: Whether linear layers and LayerNorms have biases.
        pre_norm: ``True`` for Pre-LN (GPT-2: ``x + F(LN(x))``), ``False`` for Post-LN
            (the original
            transformer: ``LN(x + F(x))``).
        layer_norm_eps: Epsilon of the LayerNorms.
        fast_attention: Let attention use PyTorch's fused kernel (chapter 12); same
            result.
        gelu_approximate: The feed-forward network's GELU: ``"tanh"`` (GPT-2) or
            ``"none"`` (exact).
        norm: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (chapter 11c).
        mlp: ``"gelu"``, chapter 3's network, or ``"swiglu"`` (chapter 11c).
        n_kv_heads: Key-value heads (grouped-query attention, chapter 11c);
            ``None`` means ``n_heads``.
        rope_theta: Base of rotary position embeddings (chapter 11c); ``None``: none.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        bias: bool = True,
        pre_norm: bool = True,
        layer_norm_eps: float = 1e-5,
        fast_attention: bool = False,
        gelu_approximate: str = "tanh",
        norm: str = "layernorm",
        mlp: str = "gelu",
        n_kv_heads: int | None = None,
        rope_theta: float | None = None,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.attn_norm = norm_layer(norm, d_model, layer_norm_eps, bias)
        self.attn = MultiHeadAttention(
            d_model, n_heads, dropout, bias, fast_attention, n_kv_heads, rope_theta
        )
        self.mlp_norm = norm_layer(norm, d_model, layer_norm_eps, bias)
        self.mlp: nn.Module = FeedForward(
            d_model, d_ff, dropout, bias, gelu_approximate
        )
        if mlp == "swiglu":  # chapter 11c, on first use
            from tinytransformer.llama import SwiGLU

            self.mlp = SwiGLU(d_model, d_ff, dropout, bias)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        kv_cache: KVCache | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """Apply attention then the feed-forward network, each with a residual
        connection.

        Args:
            x: Residual stream of shape ``(B, T, d_model)``.
            mask: Boolean attention mask, ``True`` where attending is allowed (see
                [`causal_mask`][tinytransformer.attention.causal_mask]).
            kv_cache: This block's cache of earlier keys and values, when generating
                (chapter 10).
            is_causal: ``mask`` is the plain causal triangle; lets the fused kernel mask
                by itself (chapter 4).

        Returns:
            The updated residual stream, same shape as ``x``.
        """
        if self.pre_norm:
            attended, _ = self.attn(
                self.attn_norm(x),
                mask,
                kv_cache,
                need_weights=False,
                is_causal=is_causal,
            )
            x = x + attended  # (B, T, d_model)
            return x + self.mlp(self.mlp_norm(x))
        attended, _ = self.attn(
            x, mask, kv_cache, need_weights=False, is_causal=is_causal
        )
        x = self.attn_norm(x + attended)
        return self.mlp_norm(x + self.mlp(x))


def stack_gradient_norms(
    residual: bool = True,
    norm: bool = True,
    n_layers: int = 24,
    d_model: int = 64,
    seed: int = 0,
) -> Tensor:
    """The gradient's norm at every depth of a fresh stack of blocks, parts removed.

    Each block computes ``x + F(LN(x))`` for its attention, then for its feed-forward
    network (the Pre-LN ``Block.forward``); ``residual=False`` drops the ``x +``,
    ``norm=False`` the ``LN``. The input is random, ``(4, 16, d_model)``, and the loss
    is the output's dot product with a fixed random tensor. The computation runs in
    float32; the norms are taken in float64, so that squaring tiny gradients does not
    round them to zero. The global random state is left as it was.

    Args:
        residual: Keep the identity path.
        norm: Keep the LayerNorms.
        n_layers: Number of blocks.
        d_model: Width of the stream; 4 heads, ``d_ff = 4 * d_model``.
        seed: Seeds the blocks (PyTorch's default initialisation), input and loss.

    Returns:
        Tensor of shape ``(n_layers + 1,)``, float64: ``‖∂L/∂x‖`` at the stack's input
        (index 0) and after each block (index ``l``).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        blocks = [
            Block(d_model=d_model, n_heads=4, d_ff=4 * d_model) for _ in range(n_layers)
        ]
        x = torch.randn(4, 16, d_model, requires_grad=True)  # (B, T, d_model)
        target = torch.randn(4, 16, d_model)
    mask = causal_mask(16)
    streams = [x]
    for block in blocks:

        def attend(h: Tensor, block: Block = block) -> Tensor:
            return block.attn(h, mask, need_weights=False)[0]

        sublayers = ((block.attn_norm, attend), (block.mlp_norm, block.mlp))
        for layer_norm, sublayer in sublayers:
            update = sublayer(layer_norm(x) if norm else x)
            x = x + update if residual else update
        x.retain_grad()  # keep ∂L/∂x for this depth
        streams.append(x)
    (x * target).sum().backward()
    return torch.stack([s.grad.double().norm() for s in streams if s.grad is not None])
