# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-cli.md
"""tinytransformer: the GPT-style decoder-only transformer built in *Transformer from
Scratch*."""

from tinytransformer.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
)
from tinytransformer.block import Block
from tinytransformer.embeddings import Embeddings
from tinytransformer.feedforward import FeedForward
from tinytransformer.gpt2 import load_gpt2
from tinytransformer.model import GPT, GPTConfig, count_parameters, gpt2_config

__all__ = [
    "GPT",
    "Block",
    "Embeddings",
    "FeedForward",
    "GPTConfig",
    "KVCache",
    "MultiHeadAttention",
    "causal_mask",
    "count_parameters",
    "gpt2_config",
    "load_gpt2",
    "scaled_dot_product_attention",
]
