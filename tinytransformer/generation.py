# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/10-generation.md
"""Generating text: sampling and the generation loop with its KV cache (chapter 10)."""

import time
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from tinytransformer.attention import KVCache
from tinytransformer.devices import synchronize
from tinytransformer.tokenizer import Tokenizer

# for the type hints only: the model imports this module (GPT.generate)
if TYPE_CHECKING:
    from tinytransformer.model import GPT


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Keep the ``top_k`` largest logits of each row (and any tied with the k-th); drop
    the rest.

    Args:
        logits: Scores of shape ``(B, V)``.
        top_k: How many tokens to keep; at least 1 (more than ``V`` keeps all).

    Returns:
        A copy of ``logits`` with the dropped entries set to ``-inf``.
    """
    kth_largest = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[
        ..., -1:
    ]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least
    ``top_p``.

    Args:
        logits: Scores of shape ``(B, V)``.
        top_p: The probability mass to keep, in ``(0, 1]``.

    Returns:
        A copy of ``logits`` with the dropped entries set to ``-inf``; the most likely
        token is always kept.
    """
    sorted_logits, order = torch.sort(logits, dim=-1)  # ascending: the tail comes first
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, V)
    drop = cumulative <= 1 - top_p  # a tail holding at most 1 - p of the mass
    drop[..., -1] = False  # never drop the most likely token
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


@dataclass(frozen=True)
class SamplingOptions:
    """How each next token is chosen.

    Attributes:
        temperature: Divides the logits before sampling; at least 0, and exactly 0 only
            with ``greedy``.
        top_k: If given, sample only among the ``top_k`` most likely tokens (at least
            1).
        top_p: If given, sample only among the most likely tokens whose probabilities
            reach ``top_p`` together (nucleus sampling); in ``(0, 1]``.
        greedy: Take the most likely token; the other options then change nothing.
        eot_id: End-of-text token. A sequence that produces it is finished and padded
            with it from then on; generation stops early once every sequence is
            finished.

    Raises:
        ValueError: If ``temperature`` is negative, not finite or 0 when sampling,
            ``top_k < 1``, or ``top_p`` is outside ``(0, 1]``.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    eot_id: int | None = None

    def __post_init__(self):
        if not 0 <= self.temperature < float("inf"):  # also refuses NaN
            raise ValueError(
                "temperature must be a finite number of at least 0, got"
                f" {self.temperature!r}; 1 samples the model's own distribution"
            )
        if self.temperature == 0 and not self.greedy:
            raise ValueError(
                "temperature 0 means always taking the most likely token: ask for"
                " greedy decoding instead (greedy=True, or --greedy)"
            )
        top_k = self.top_k
        if top_k is not None and (
            isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1
        ):
            raise ValueError(
                f"top_k must be a positive integer, got {top_k!r}; leave it out to keep"
                " every token"
            )
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(
                f"top_p must be in (0, 1], got {self.top_p!r}; 1 (or leaving it out)"
                " keeps every token"
            )


def sample_next_token(
    logits: Tensor,
    options: SamplingOptions = SamplingOptions(),
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose the next token of each sequence from its logits.

    Args:
        logits: Next-token scores of shape ``(B, V)``.
        options: Temperature, top-k, top-p or greedy.
        generator: Random generator for reproducible draws.

    Returns:
        Token ids of shape ``(B, 1)``.
    """
    if options.greedy:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    # the largest is 0: no overflow
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / options.temperature
    if options.top_k is not None:
        logits = top_k_filter(logits, options.top_k)
    if options.top_p is not None:
        logits = top_p_filter(logits, options.top_p)
    probabilities = torch.softmax(logits, dim=-1)  # (B, V), zero where filtered out
    # (B, 1)
    return torch.multinomial(probabilities, num_samples=1, generator=generator)


def generate_tokens(
    model: "GPT",
    token_ids: Tensor,
    max_new_tokens: int,
    options: SamplingOptions = SamplingOptions(),
    *,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Generator[Tensor, None, None]:
    """Generate tokens one step at a time, yielding each step's choice as soon as it is
    made.

    The model is in evaluation mode until the iteration ends, then back in its previous
    mode. When the context reaches ``max_seq_len``, its newest half is kept and the
    cache rebuilt from it. The arguments are checked when the iteration starts.

    Args:
        model: The model.
        token_ids: Prompts of shape ``(B, T)``, ``T >= 1``; only the last
            ``max_seq_len`` are used.
        max_new_tokens: Most steps to take; at least 1.
        options: How each token is chosen, and the end-of-text token that finishes a
            sequence.
        generator: Random generator for reproducible sampling.
        use_cache: Use a KV cache (``False`` recomputes the whole context at every
            step).

    Yields:
        The chosen tokens of each step, shape ``(B, 1)``.

    Raises:
        ValueError: If ``max_new_tokens < 1``, or the prompt is empty or not of shape
            ``(B, T)``.
    """
    if (
        isinstance(max_new_tokens, bool)
        or not isinstance(max_new_tokens, int)
        or max_new_tokens < 1
    ):
        raise ValueError(
            f"max_new_tokens must be a positive integer, got {max_new_tokens!r}"
        )
    if token_ids.ndim != 2 or token_ids.shape[1] == 0:
        raise ValueError(
            "the prompt must have shape (B, T) with T >= 1, got"
            f" {tuple(token_ids.shape)}; to start from nothing, start from the"
            " end-of-text token"
        )
    max_seq_len = model.config.max_seq_len
    context = token_ids[:, -max_seq_len:]  # (B, T)
    kv_caches = None
    finished = torch.zeros(
        token_ids.shape[0], dtype=torch.bool, device=token_ids.device
    )  # (B,)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            # like no_grad, and skips autograd's bookkeeping entirely
            with torch.inference_mode():
                if not use_cache:
                    logits = model(context)  # (B, T, V): the whole context, every step
                # first step, or the context was just cropped: fill the caches
                elif kv_caches is None:
                    kv_caches = [
                        KVCache(model.config.max_seq_len) for _ in model.blocks
                    ]
                    logits = model(context, kv_caches=kv_caches)
                else:
                    # (B, 1, V): only the newest token
                    logits = model(context[:, -1:], kv_caches=kv_caches)
            next_ids = sample_next_token(logits[:, -1], options, generator)  # (B, 1)
            if options.eot_id is not None:
                # finished rows are padded with end-of-text
                next_ids[finished] = options.eot_id
                finished |= next_ids[:, 0] == options.eot_id
            yield next_ids
            if options.eot_id is not None and finished.all():
                return
            context = torch.cat([context, next_ids], dim=1)
            # no position left: keep the newest half, rebuild
            if context.shape[1] > max_seq_len:
                context = context[:, -max(1, max_seq_len // 2) :]
                kv_caches = None
    finally:
        model.train(was_training)


def tokens_per_second(
    model: "GPT",
    max_new_tokens: int,
    use_cache: bool = True,
    prompt_len: int = 1,
    batch_size: int = 1,
) -> float:
    """Measure generation speed: greedy decoding after a prompt of random tokens.

    Args:
        model: The model, on the device to measure.
        max_new_tokens: Tokens to generate per sequence.
        use_cache: Use the KV cache.
        prompt_len: Length of the random prompt.
        batch_size: Sequences generated together.

    Returns:
        New tokens per second, all sequences together.
    """
    device = next(model.parameters()).device
    random_tokens = torch.Generator().manual_seed(0)
    prompt = torch.randint(
        model.config.vocab_size, (batch_size, prompt_len), generator=random_tokens
    ).to(device)
    # warm-up
    model.generate(prompt, 2, SamplingOptions(greedy=True), use_cache=use_cache)
    synchronize(device)
    start = time.perf_counter()
    model.generate(
        prompt, max_new_tokens, SamplingOptions(greedy=True), use_cache=use_cache
    )
    synchronize(device)
    return batch_size * max_new_tokens / (time.perf_counter() - start)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The token ids to start from: the prompt's, or the end-of-text token for an empty
    prompt.

    Args:
        tokenizer: The model's tokenizer.
        prompt: The text to continue.

    Returns:
        At least one token id.

    Raises:
        ValueError: If the prompt is empty and the tokenizer has no end-of-text token,
            or if the tokenizer cannot encode some of its characters (all of them are
            named).
    """
    if not prompt:
        if tokenizer.eot_id is None:
            raise ValueError(
                f"the prompt is empty and the {tokenizer.name} tokenizer has no"
                " end-of-text token to start from; give a prompt of at least one"
                " character"
            )
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode(prompt)
    except ValueError:
        unknown = [
            char for char in dict.fromkeys(prompt) if not _can_encode(tokenizer, char)
        ]
        if not unknown:
            raise
        names = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in unknown)
        raise ValueError(
            f"the prompt has characters that the {tokenizer.name} tokenizer's"
            f" vocabulary of {tokenizer.vocab_size} does not contain: {names}; remove"
            " or replace them"
        ) from None


def _can_encode(tokenizer: Tokenizer, char: str) -> bool:
    try:
        tokenizer.encode(char)
    except ValueError:
        return False
    return True
