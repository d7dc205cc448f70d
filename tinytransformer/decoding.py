# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/12-fast.md
"""Decoding near the memory-bandwidth limit: weights laid out, or narrowed, for one
token at a time (chapter 12)."""

import copy
import functools
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tinytransformer.generation import SamplingOptions
from tinytransformer.gpt2 import load_gpt2
from tinytransformer.model import GPT, GPTConfig

DECODING_DTYPES = {"float32": 4, "bfloat16": 2, "int8": 1}
"""How ``decoding_model`` can store the linear weights, and the bytes of each weight."""


def memory_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """Measure how fast this machine reads memory: the median time to sum a tensor.

    Args:
        megabytes: Size of the float32 tensor; far larger than the caches, so it comes
            from memory.
        repeats: Timed sums; the median is reported.

    Returns:
        Bytes per second.
    """
    data = torch.ones(megabytes * 2**20 // 4)
    data.sum()  # warm-up: the pages are touched once before timing
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        data.sum()
        seconds.append(time.perf_counter() - started)
    return data.numel() * 4 / statistics.median(seconds)


def bytes_per_token(
    config: GPTConfig, dtype: str = "float32", context_len: int = 0
) -> int:
    """Bytes one decoding step reads: linear weights, cached keys and values.

    Biases, LayerNorms and the embedding rows looked up are left out (under 0.2 % for
    GPT-2 small).

    Args:
        config: The architecture.
        dtype: How the linear weights are stored, a key of ``DECODING_DTYPES``.
        context_len: Positions in the KV cache (float32 keys and values, every layer).

    Returns:
        The number of bytes.
    """
    d, d_ff = config.d_model, config.d_ff
    block_weights = 3 * d * d + d * d + 2 * d * d_ff  # qkv, out, fc_in, fc_out
    weights = config.n_layers * block_weights + config.vocab_size * d  # + lm_head
    kv_cache = 2 * config.n_layers * context_len * d * 4
    return weights * DECODING_DTYPES[dtype] + kv_cache


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Symmetric int8 quantisation with one scale per output channel (row).

    Args:
        weight: A linear weight, shape ``(out, in)``.

    Returns:
        ``(q, scales)``: int8 integers of shape ``(out, in)`` in ``[-127, 127]`` and
        float32 scales of shape ``(out,)``, with ``weight ≈ scales[:, None] * q``.
    """
    largest = weight.abs().amax(dim=1).float()  # (out,)
    scales = largest.clamp(min=torch.finfo(torch.float32).tiny) / 127  # a zero row: any
    q = torch.round(weight.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class DecodingLinear(nn.Module):
    """A linear layer whose weight is stored for decoding: laid out, or narrowed.

    Args:
        linear: The layer to copy (its weight is ``(out, in)``).
        dtype: ``"float32"``: the same numbers, stored ``(in, out)`` and cut along
            the input into one slice per CPU thread (``torch.get_num_threads()`` when
            this layer is made, if it divides ``in``; one slice for a weight on a GPU);
            ``"bfloat16"``: weight and input rounded to bfloat16; ``"int8"``:
            per-channel int8 weights (``quantize_int8``) with a bfloat16 input. A key of
            ``DECODING_DTYPES``.

    The output is float32 in every case.
    """

    def __init__(self, linear: nn.Linear, dtype: str):
        super().__init__()
        weight = linear.weight.detach()
        self.dtype = dtype
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scales = None
        self.splits = 1
        if dtype == "float32":  # (splits, in / splits, out): one slice per CPU thread
            threads = torch.get_num_threads() if weight.device.type == "cpu" else 1
            self.splits = threads if self.in_features % threads == 0 else 1
            weight = weight.t().reshape(self.splits, -1, self.out_features)
            weight = weight.contiguous()
        elif dtype == "bfloat16":
            weight = weight.to(torch.bfloat16)
        else:
            weight, scales = quantize_int8(weight)
            scales = scales.to(torch.bfloat16)  # the kernel wants the input's dtype
        self.weight: Tensor  # buffers, not parameters: never trained, moved by .to()
        self.scales: Tensor | None
        self.bias: Tensor | None
        self.register_buffer("weight", weight)
        self.register_buffer("scales", scales)
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias)

    def forward(self, x: Tensor) -> Tensor:
        """``x @ W.T + b`` for ``x`` of shape ``(..., in)``: float32, ``(..., out)``."""
        if self.dtype == "float32":  # a product per slice of the input, then their sum
            rows = x.reshape(-1, self.splits, self.in_features // self.splits)
            y = torch.bmm(rows.transpose(0, 1), self.weight).sum(0)  # (rows, out)
            y = y.view(*x.shape[:-1], self.out_features)
        elif self.scales is None:  # bfloat16
            y = F.linear(x.to(torch.bfloat16), self.weight)
        else:  # int8: the kernel takes a (rows, in) matrix
            rows = x.reshape(-1, self.in_features).to(torch.bfloat16)
            y = torch._weight_int8pack_mm(rows, self.weight, self.scales)
            y = y.view(*x.shape[:-1], self.out_features)
        y = y.float()  # no copy when it already is
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"dtype={self.dtype}, splits={self.splits}"
        )


def decoding_model(model: GPT, dtype: str = "float32") -> GPT:
    """A copy of ``model`` for generation, its linear layers made ``DecodingLinear``.

    The tied ``lm_head`` gets its own copy of the embedding matrix in the new layout,
    while the embedding lookup keeps the original. The copy is for inference only.

    Args:
        model: The model; it is not changed.
        dtype: How to store the linear weights: ``"float32"`` (same numbers up to
            rounding, split so that every thread reads), ``"bfloat16"`` or ``"int8"``.

    Returns:
        The copy, in evaluation mode.

    Raises:
        ValueError: If ``dtype`` is not one of ``DECODING_DTYPES``.
    """
    if dtype not in DECODING_DTYPES:
        choices = ", ".join(DECODING_DTYPES)
        raise ValueError(f"unknown decoding dtype {dtype!r}; choose one of {choices}")
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    for module in list(fast.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, DecodingLinear(child, dtype))
    return fast


def bench_decoding(
    config: GPTConfig,
    new_tokens: int = 200,
    repeats: int = 3,
    dtypes: tuple[str, ...] = tuple(DECODING_DTYPES),
    prompt_len: int = 8,
    seed: int = 0,
) -> dict[str, dict]:
    """Greedy decoding speed of ours and of Hugging Face's ``generate``, same weights.

    The contestants take turns, a warm-up first, then ``repeats`` rounds; all run on the
    CPU with the same threads, from the same random prompt, for exactly ``new_tokens``.

    Args:
        config: The architecture. With ``transformers`` installed, the weights are those
            of a random ``GPT2LMHeadModel`` of this shape (tanh GELU, biases, tied
            embeddings).
        new_tokens: Tokens generated per run.
        repeats: Timed rounds; the median is reported.
        dtypes: The ``decoding_model`` precisions to time.
        prompt_len: Length of the random prompt.
        seed: Seeds the weights and the prompt.

    Returns:
        For each contestant (``"hugging face"`` when available, ``"plain"``, then each
        dtype): ``tokens_per_s`` (median), ``seconds`` (every round) and ``agree``, the
        number of leading new tokens identical to the reference's (Hugging Face's, else
        ``"plain"``).
    """
    torch.manual_seed(seed)
    random_tokens = torch.Generator().manual_seed(seed)
    prompt = torch.randint(config.vocab_size, (1, prompt_len), generator=random_tokens)
    runs: dict[str, Callable[[int], Tensor]] = {}  # new tokens -> (1, prompt_len + n)
    eot_id = config.vocab_size - 1  # GPT-2's end-of-text is its last token
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        model = GPT(config).eval()
    else:
        hf_config = GPT2Config(
            vocab_size=config.vocab_size,
            n_positions=config.max_seq_len,
            n_embd=config.d_model,
            n_layer=config.n_layers,
            n_head=config.n_heads,
            n_inner=config.d_ff,
            activation_function="gelu_new",
            bos_token_id=eot_id,
            eos_token_id=eot_id,
        )
        reference = GPT2LMHeadModel(hf_config).eval()
        model = load_gpt2(reference)
        runs["hugging face"] = lambda n: reference.generate(  # exactly n: no early stop
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=eot_id,
        )
    greedy = SamplingOptions(greedy=True)
    runs["plain"] = functools.partial(model.generate, prompt, options=greedy)
    for dtype in dtypes:
        fast = decoding_model(model, dtype)
        runs[dtype] = functools.partial(fast.generate, prompt, options=greedy)
    # the first run of each is also its warm-up
    tokens = {name: run(new_tokens)[0, prompt_len:] for name, run in runs.items()}
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run(new_tokens)
            seconds[name].append(time.perf_counter() - started)
    expected = tokens[next(iter(runs))]
    results = {}
    for name, times in seconds.items():
        differs = (tokens[name] != expected).nonzero()
        results[name] = {
            "tokens_per_s": new_tokens / statistics.median(times),
            "seconds": times,
            "agree": int(differs[0, 0]) if len(differs) else new_tokens,
        }
    return results
