# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/06-model.md
"""The complete GPT model: configuration, initialisation, parameter count, generation
(chapter 6)."""

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinytransformer.attention import KVCache, causal_mask
from tinytransformer.block import Block, norm_layer
from tinytransformer.embeddings import Embeddings

if TYPE_CHECKING:  # for the type hints only: chapter 10's module imports this one
    from tinytransformer.generation import SamplingOptions

MAX_SEQ_LEN = 16_384
"""The longest context the model accepts: its causal mask is a (T, T) table of booleans,
256 MiB at this length."""


@dataclass
class GPTConfig:
    """Every hyperparameter of the architecture. The defaults are GPT-2 small.

    Attributes:
        vocab_size: Number of token ids, ``V``.
        max_seq_len: Longest context the model accepts (number of learned positions).
        d_model: Width of the residual stream.
        n_layers: Number of blocks.
        n_heads: Attention heads per block; must divide ``d_model``.
        d_ff: Hidden width of the feed-forward networks; 0 (or ``None``) means ``4 *
            d_model`` (``8 * d_model // 3`` with ``mlp="swiglu"``, chapter 11c).
        dropout: Dropout probability (embeddings, attention output, feed-forward
            output).
        bias: Whether linear layers and LayerNorms have biases (GPT-2: yes).
        tie_weights: Share the token embedding matrix with the output projection (GPT-2:
            yes).
        pre_norm: Pre-LN blocks (GPT-2) when ``True``, Post-LN (original transformer)
            when ``False``.
        layer_norm_eps: Epsilon of every LayerNorm.
        fast_attention: Compute attention with PyTorch's fused kernel instead of chapter
            1's code (chapter 12); the outputs are the same, the training presets turn
            it on for speed.
        gelu_approximate: ``"tanh"`` for GPT-2's approximate GELU, ``"none"`` for the
            exact GELU (nanoGPT's; faster on a CPU, chapter 12).
        weight_init: ``"gpt2"`` for GPT-2's initialisation, ``"xavier"`` for the Xavier
            initialisation the original transformer used (see ``GPT.init_weights``).
        norm: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (Llama; chapter 11c).
        position: ``"learned"`` position embeddings (GPT-2) or ``"rope"``, rotary
            embeddings (Llama; chapter 11c).
        mlp: ``"gelu"`` feed-forward (GPT-2) or ``"swiglu"`` (Llama; chapter 11c).
        n_kv_heads: Key-value heads per block; fewer than ``n_heads`` is
            grouped-query attention (chapter 11c); 0 (or ``None``) means ``n_heads``.
        rope_theta: Base of the rotary embeddings' wavelengths (``position="rope"``).

    Raises:
        ValueError: If a size is not a positive integer, ``n_heads`` does not divide
            ``d_model``, ``dropout`` is outside ``[0, 1)``, ``gelu_approximate`` is
            neither ``"tanh"`` nor ``"none"``, ``weight_init`` is neither ``"gpt2"`` nor
            ``"xavier"``, or an option of chapter 11c is unknown or does not fit
            (``n_kv_heads`` must divide ``n_heads``; rotary embeddings need an even
            ``d_head``).
    """

    vocab_size: int = 50257
    max_seq_len: int = 1024
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    d_ff: int = 0
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    pre_norm: bool = True
    layer_norm_eps: float = 1e-5
    fast_attention: bool = False
    gelu_approximate: str = "tanh"
    weight_init: str = "gpt2"
    norm: str = "layernorm"
    position: str = "learned"
    mlp: str = "gelu"
    n_kv_heads: int = 0
    rope_theta: float = 10_000.0

    def __post_init__(self):
        if not self.d_ff:  # the ⅔ rule of chapter 11c keeps a SwiGLU network's size
            swiglu = self.mlp == "swiglu"
            self.d_ff = 8 * self.d_model // 3 if swiglu else 4 * self.d_model
        if not self.n_kv_heads:
            self.n_kv_heads = self.n_heads
        sizes = ("vocab_size", "max_seq_len", "d_model", "n_layers", "n_heads", "d_ff")
        for name in (*sizes, "n_kv_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        # checked before the (T, T) causal mask is allocated
        if self.max_seq_len > MAX_SEQ_LEN:
            raise ValueError(
                f"max_seq_len is at most {MAX_SEQ_LEN:,} (the causal mask alone would"
                f" take {self.max_seq_len**2 / 2**30:.1f} GiB), got"
                f" {self.max_seq_len:,}"
            )
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 < self.layer_norm_eps < float("inf"):
            raise ValueError(
                "layer_norm_eps must be a small positive number, got"
                f" {self.layer_norm_eps!r}"
            )
        if self.gelu_approximate not in ("tanh", "none"):
            raise ValueError(
                "gelu_approximate must be 'tanh' (GPT-2) or 'none' (exact GELU), "
                f"got {self.gelu_approximate!r}"
            )
        if self.weight_init not in ("gpt2", "xavier"):
            raise ValueError(
                f"weight_init must be 'gpt2' or 'xavier', got {self.weight_init!r}"
            )
        self._check_llama_options()

    def _check_llama_options(self) -> None:
        """Refuse an unknown or unfitting value of chapter 11c's options."""
        options = {
            "norm": ("layernorm", "rmsnorm"),
            "position": ("learned", "rope"),
            "mlp": ("gelu", "swiglu"),
        }
        for name, choices in options.items():
            if getattr(self, name) not in choices:
                allowed = ", ".join(map(repr, choices))
                raise ValueError(
                    f"{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        if self.n_heads % self.n_kv_heads != 0:
            raise ValueError(
                f"n_kv_heads ({self.n_kv_heads}) must divide n_heads ({self.n_heads})"
            )
        if self.position == "rope" and self.d_head % 2:
            raise ValueError(
                "rotary embeddings turn pairs of features: d_head "
                f"({self.d_head}) must be even"
            )
        if not 1.0 < self.rope_theta < float("inf"):
            raise ValueError(f"rope_theta must be above 1, got {self.rope_theta!r}")

    @property
    def d_head(self) -> int:
        """Width of one attention head, ``d_model // n_heads``."""
        return self.d_model // self.n_heads


class GPT(nn.Module):
    """A GPT-style decoder-only transformer.

    Args:
        config: The architecture; see [`GPTConfig`][tinytransformer.model.GPTConfig].
    """

    # the causal mask, (max_seq_len, max_seq_len): a buffer, saved with the model but
    # not trained
    mask: Tensor

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        rotary = config.position == "rope"  # chapter 11c: positions enter in attention
        self.embeddings = Embeddings(
            config.vocab_size,
            config.max_seq_len,
            config.d_model,
            config.dropout,
            learned_positions=not rotary,
        )
        self.blocks = nn.ModuleList(
            Block(
                d_model=config.d_model,
                n_heads=config.n_heads,
                d_ff=config.d_ff,
                dropout=config.dropout,
                bias=config.bias,
                pre_norm=config.pre_norm,
                layer_norm_eps=config.layer_norm_eps,
                fast_attention=config.fast_attention,
                gelu_approximate=config.gelu_approximate,
                norm=config.norm,
                mlp=config.mlp,  # these three: chapter 11c
                n_kv_heads=config.n_kv_heads,
                rope_theta=config.rope_theta if rotary else None,
            )
            for _ in range(config.n_layers)
        )
        self.final_norm = norm_layer(
            config.norm, config.d_model, config.layer_norm_eps, config.bias
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.embeddings.token_embedding.weight
        self.register_buffer("mask", causal_mask(config.max_seq_len), persistent=False)
        self.init_weights()

    def forward(
        self,
        token_ids: Tensor,
        targets: Tensor | None = None,
        kv_caches: list[KVCache] | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Compute next-token logits at every position, and with ``targets`` the loss
        (chapter 8).

        Args:
            token_ids: Integer tensor of shape ``(B, T)`` with ``T <= max_seq_len``.
            targets: The tokens that should come next, ``(B, T)``: ``token_ids`` shifted
                by one.
            kv_caches: When generating (chapter 10), one
                [`KVCache`][tinytransformer.attention.KVCache] per block; ``token_ids``
                then continues the positions already in the caches.

        Returns:
            Logits of shape ``(B, T, vocab_size)``; position ``t`` scores the token at
            ``t + 1``. Given ``targets``, the pair ``(logits, loss)``: the loss is the
            mean cross-entropy over every position, computed in float32.

        Raises:
            ValueError: If ``token_ids`` is not a 2-D integer tensor, if it is longer
                than ``max_seq_len`` (counting cached positions), or if ``kv_caches``
                does not hold one cache per block.
        """
        start_pos = 0
        if kv_caches is not None:
            if len(kv_caches) != len(self.blocks):
                raise ValueError(
                    f"got {len(kv_caches)} KV caches for {len(self.blocks)} blocks;"
                    " pass one per block"
                )
            start_pos = kv_caches[0].seq_len  # positions already cached
        x = self.embeddings(token_ids, start_pos)  # (B, T) -> (B, T, d_model)
        end_pos = start_pos + token_ids.shape[1]
        # (T, T_k): new positions see every earlier one; a single new token sees all, so
        # needs no mask (chapter 10)
        mask = (
            None if token_ids.shape[1] == 1 else self.mask[start_pos:end_pos, :end_pos]
        )
        caches: list[KVCache | None] = (
            list(kv_caches) if kv_caches is not None else [None] * len(self.blocks)
        )
        # the mask is the plain triangle: the fused kernel may mask by itself (chapter
        # 4)
        is_causal = start_pos == 0
        for block, kv_cache in zip(self.blocks, caches):
            x = block(x, mask, kv_cache, is_causal)  # (B, T, d_model)
        logits = self.lm_head(self.final_norm(x))  # (B, T, d_model) -> (B, T, V)
        if targets is None:
            return logits
        # (B·T, V) against (B·T,)
        return logits, F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def init_weights(self) -> None:
        """Initialise the parameters as ``config.weight_init`` says.

        Biases start at 0 and LayerNorm scales at 1. ``"gpt2"``: weights from
        N(0, 0.02²), the residual projections' divided by √(2·n_layers). ``"xavier"``:
        every weight matrix from N(0, 2 / (fan_in + fan_out)), the fused
        query/key/value matrix as the three square matrices it holds.
        """
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layers)
        for name, parameter in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(parameter)
            elif name.endswith("bias"):
                nn.init.zeros_(parameter)
            elif self.config.weight_init == "xavier":
                with torch.no_grad():
                    fused = 3 if name.endswith("qkv_proj.weight") else 1
                    for matrix in parameter.chunk(fused):
                        nn.init.xavier_normal_(matrix)  # (fan_out, fan_in)
            elif name.endswith(("attn.out_proj.weight", "mlp.fc_out.weight")):
                nn.init.normal_(parameter, mean=0.0, std=residual_std)
            else:  # embeddings and the other linear weights
                nn.init.normal_(parameter, mean=0.0, std=0.02)

    @torch.no_grad()
    def generate(
        self,
        token_ids: Tensor,
        max_new_tokens: int,
        options: "SamplingOptions | None" = None,
        *,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
    ) -> Tensor:
        """Extend ``token_ids`` by up to ``max_new_tokens`` tokens, one at a time.

        The model is in evaluation mode (no dropout) while generating, then restored.
        The loop is [`generate_tokens`][tinytransformer.generation.generate_tokens],
        which yields the tokens as they come, for streaming.

        Args:
            token_ids: Prompts of shape ``(B, T)`` with ``T >= 1``, one row per
                sequence.
            max_new_tokens: Most tokens to append; at least 1.
            options: How each token is chosen — temperature, top-k, top-p, greedy — and
                the end-of-text token that finishes a row (chapter 10's
                [`SamplingOptions`][tinytransformer.generation.SamplingOptions]);
                ``None`` samples the model's own distribution.
            generator: Random generator for reproducible sampling.
            use_cache: Reuse the keys and values of earlier positions (the KV cache).
                ``False`` recomputes the whole context at every step, with the same
                result, more slowly.

        Returns:
            Tensor of shape ``(B, T + n)``: the prompts followed by ``n`` new tokens,
            where ``n = max_new_tokens`` unless every row reached the end-of-text token
            sooner.

        Raises:
            ValueError: If the prompt is empty or not ``(B, T)``, or ``max_new_tokens <
                1``.
        """
        # chapter 10, on first use
        from tinytransformer.generation import SamplingOptions, generate_tokens

        new_tokens = generate_tokens(
            self,
            token_ids,
            max_new_tokens,
            options or SamplingOptions(),
            generator=generator,
            use_cache=use_cache,
        )
        return torch.cat([token_ids, *new_tokens], dim=1)  # (B, T + n)

    def num_parameters(self) -> int:
        """Number of trainable parameters, counting tied weights once."""
        return sum(parameter.numel() for parameter in self.parameters())


def count_parameters(config: GPTConfig) -> int:
    """Parameter count of a [`GPT`][tinytransformer.model.GPT] built from ``config``, by
    formula.

    Args:
        config: The architecture.

    Returns:
        The number of parameters, equal to ``GPT(config).num_parameters()``.
    """
    d, d_ff, bias = config.d_model, config.d_ff, int(config.bias)
    # Chapter 11c's options: fewer key-value heads, rotary positions, SwiGLU, RMSNorm.
    d_kv = config.n_kv_heads * config.d_head  # d unless grouped-query attention
    positions = config.max_seq_len if config.position == "learned" else 0
    embeddings = (config.vocab_size + positions) * d
    attention = 2 * d * (d + d_kv) + 2 * (d + d_kv) * bias  # 4d² + 4d when d_kv = d
    inputs = 2 if config.mlp == "swiglu" else 1  # SwiGLU has a gate beside fc_in
    feed_forward = (inputs + 1) * d * d_ff + (inputs * d_ff + d) * bias
    norm = d * (1 + bias) if config.norm == "layernorm" else d  # RMSNorm has no bias
    layer_norms = 2 * norm
    final_norm = norm
    lm_head = 0 if config.tie_weights else config.vocab_size * d
    return (
        embeddings
        + config.n_layers * (attention + feed_forward + layer_norms)
        + final_norm
        + lm_head
    )


GPT2_SIZES: dict[str, dict[str, Any]] = {
    "small": dict(n_layers=12, n_heads=12, d_model=768),
    "medium": dict(n_layers=24, n_heads=16, d_model=1024),
    "large": dict(n_layers=36, n_heads=20, d_model=1280),
    "xl": dict(n_layers=48, n_heads=25, d_model=1600),
}


def gpt2_config(size: str = "small") -> GPTConfig:
    """The configuration of a published GPT-2 model.

    Args:
        size: One of ``"small"``, ``"medium"``, ``"large"``, ``"xl"``.

    Returns:
        The [`GPTConfig`][tinytransformer.model.GPTConfig] with GPT-2's vocabulary and
        context.

    Raises:
        ValueError: If ``size`` is not one of the four names.
    """
    if size not in GPT2_SIZES:
        raise ValueError(
            f"unknown GPT-2 size {size!r}; choose one of {', '.join(GPT2_SIZES)}"
        )
    return GPTConfig(**GPT2_SIZES[size])


def block_gradient_norms(
    config: GPTConfig, batch_size: int = 8, seed: int = 0
) -> Tensor:
    """Gradient norm of each block's first feed-forward weight in a freshly initialised
    model.

    One forward and backward pass of the next-token loss on random tokens. The global
    random state is left as it was.

    Args:
        config: The architecture to measure.
        batch_size: Number of random sequences, each ``max_seq_len + 1`` tokens long.
        seed: Seeds the initialisation and the tokens.

    Returns:
        Tensor of shape ``(n_layers,)``: the norm of the gradient of
        ``blocks[l].mlp.fc_in.weight``.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(config)
    tokens = torch.randint(
        0,
        config.vocab_size,
        (batch_size, config.max_seq_len + 1),
        generator=torch.Generator().manual_seed(seed),
    )
    _, loss = model(tokens[:, :-1], tokens[:, 1:])
    loss.backward()
    weights = [
        model.get_parameter(f"blocks.{i}.mlp.fc_in.weight")
        for i in range(config.n_layers)
    ]
    return torch.stack(
        [weight.grad.norm() for weight in weights if weight.grad is not None]
    )
