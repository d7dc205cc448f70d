# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/12-fast.md
"""`tinytransformer bench`: training and generation speed, FLOP/s, MFU and memory
(chapter 12)."""

import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from tinytransformer.data import load_token_data
from tinytransformer.devices import synchronize
from tinytransformer.generation import tokens_per_second
from tinytransformer.model import GPT, GPTConfig, count_parameters
from tinytransformer.train import TrainConfig, Trainer


def training_flops_per_token(config: GPTConfig) -> int:
    """Forward + backward FLOPs per token: ``6·N + 12·L·T·d`` (N without position
    embeddings).

    The token embedding matrix counts once: as the output projection it is a real matrix
    product, while the embedding lookup costs no arithmetic.
    """
    model_parameters = count_parameters(config) - config.max_seq_len * config.d_model
    return (
        6 * model_parameters
        + 12 * config.n_layers * config.max_seq_len * config.d_model
    )


def cpu_peak_flops(cores: int | None = None) -> tuple[float, str]:
    """Estimate the CPU's float32 peak from its vector width, clock and cores (Linux
    ``/proc/cpuinfo``).

    Returns:
        ``(FLOP/s, how it was estimated)``; ``(nan, reason)`` where the information is
        missing.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return float("nan"), f"no /proc/cpuinfo on {platform.system()}: peak unknown"
    flags = next(
        (
            line.split(":", 1)[1].split()
            for line in info.splitlines()
            if line.startswith("flags")
        ),
        [],
    )
    mhz = next(
        (
            float(line.split(":", 1)[1])
            for line in info.splitlines()
            if line.startswith("cpu MHz")
        ),
        float("nan"),
    )
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = cores or torch.get_num_threads()
    # lanes × 2 FMA units × 2 FLOPs per FMA × clock × cores
    peak = lanes * 2 * 2 * mhz * 1e6 * cores
    return peak, f"{lanes} fp32 lanes × 2 FMA units × 2 × {mhz:.0f} MHz × {cores} cores"


VARIANTS: dict[str, dict[str, Any]] = {
    "book": {"fast_attention": False},  # chapter 1's attention, written out
    # torch.nn.functional.scaled_dot_product_attention
    "sdpa": {"fast_attention": True},
    # bfloat16 autocast around the step
    "sdpa+bf16": {"fast_attention": True, "dtype": "bfloat16"},
    "book+bf16": {"fast_attention": False, "dtype": "bfloat16"},
    # torch.compile of the model
    "sdpa+compile": {"fast_attention": True, "compile": True},
}
"""Ways to run the same training step; `tinytransformer bench --variants` picks among
them. Each sets the model's ``fast_attention`` and, for the others, the
[`TrainConfig`][tinytransformer.train.TrainConfig]
fields of the same names."""


def bench_training(
    model_config: GPTConfig,
    config: TrainConfig,
    variants: list[str],
    steps: int = 20,
    repeats: int = 3,
    device: torch.device | str = "cpu",
) -> dict[str, dict]:
    """Median training speed of ``Trainer.train_step`` in each variant, on the embedded
    corpus.

    The variants take turns — each one's first timed repeat, then each one's second, and
    so on — so that a machine whose speed drifts slows them all alike.

    Args:
        model_config: The architecture (``vocab_size`` is replaced by the char
            tokenizer's).
        config: Batch size, accumulation and optimiser settings.
        variants: Keys of ``VARIANTS``.
        steps: Steps per timed repeat.
        repeats: Timed repeats; the median is reported.
        device: Where to run.

    Returns:
        For each variant: ``ms_per_step``, ``tokens_per_s``, ``gflops``, each repeat's
        ms and the parameter count.
    """
    data = load_token_data(None, tokenizer="char")
    model_config = replace(model_config, vocab_size=data.tokenizer.vocab_size)
    trainers = {}
    for variant in variants:
        torch.manual_seed(config.seed)  # every variant starts from the same weights
        options = dict(VARIANTS[variant])
        model = GPT(replace(model_config, fast_attention=options.pop("fast_attention")))
        trainer = Trainer(
            model, replace(config, **options), data, device=device, progress=False
        )
        # warm-up: allocator, kernels, optimiser state (and compilation)
        time_steps(trainer, 3)
        trainers[variant] = trainer
    timings: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(repeats):
        for variant, trainer in trainers.items():
            timings[variant].append(time_steps(trainer, steps))
    tokens_per_step = (
        config.batch_size * config.grad_accum_steps * model_config.max_seq_len
    )
    results = {}
    for variant, trainer in trainers.items():
        seconds = statistics.median(timings[variant])
        tokens_per_s = tokens_per_step / seconds
        results[variant] = {
            "ms_per_step": 1000 * seconds,
            "tokens_per_s": tokens_per_s,
            "gflops": training_flops_per_token(model_config) * tokens_per_s / 1e9,
            "ms_per_step_repeats": [1000 * t for t in timings[variant]],
            "parameters": trainer.model.num_parameters(),
        }
    return results


def time_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per training step over ``steps`` steps."""
    synchronize(trainer.device)
    started = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    synchronize(trainer.device)
    return (time.perf_counter() - started) / steps


def bench_generation(
    model_config: GPTConfig,
    new_tokens: int,
    repeats: int = 3,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Generation speed with and without the KV cache, measured by chapter 10's
    ``tokens_per_second``.

    Returns:
        The medians of ``repeats`` measurements each, ``{"with_cache": ...,
        "without_cache": ...}``, taken in turns like the training repeats.
    """
    torch.manual_seed(0)
    model = GPT(model_config).to(device).eval()
    runs: dict[str, list[float]] = {"with_cache": [], "without_cache": []}
    for _ in range(repeats):
        runs["with_cache"].append(tokens_per_second(model, new_tokens, use_cache=True))
        runs["without_cache"].append(
            tokens_per_second(model, new_tokens, use_cache=False)
        )
    return {name: statistics.median(values) for name, values in runs.items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's peak on a GPU, the resident set
    size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource  # Unix only
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # macOS reports bytes, Linux KiB
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10
