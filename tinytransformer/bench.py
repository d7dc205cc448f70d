# Generated from the book by `tinytransformer tangle`; edit these chapters, not this file:
#   book/12-fast.md
"""`tinytransformer bench`: training and generation speed, FLOP/s, MFU and memory (chapter 12)."""

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from tinytransformer.data import load_token_data
from tinytransformer.devices import select_device, synchronize
from tinytransformer.generation import tokens_per_second
from tinytransformer.model import GPT, GPTConfig, count_parameters
from tinytransformer.train import PRESETS, TrainConfig, Trainer


def training_flops_per_token(config: GPTConfig) -> int:
    """Forward + backward FLOPs per token: ``6·N + 12·L·T·d`` (N without position embeddings).

    The token embedding matrix counts once: as the output projection it is a real matrix product,
    while the embedding lookup costs no arithmetic.
    """
    model_parameters = count_parameters(config) - config.max_seq_len * config.d_model
    return 6 * model_parameters + 12 * config.n_layers * config.max_seq_len * config.d_model


def cpu_peak_flops(cores: int | None = None) -> tuple[float, str]:
    """Estimate the CPU's float32 peak from its vector width, clock and cores (Linux ``/proc/cpuinfo``).

    Returns:
        ``(FLOP/s, how it was estimated)``; ``(nan, reason)`` where the information is missing.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return float("nan"), f"no /proc/cpuinfo on {platform.system()}: peak unknown"
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    mhz = next((float(line.split(":", 1)[1]) for line in info.splitlines() if line.startswith("cpu MHz")), float("nan"))
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    cores = cores or torch.get_num_threads()
    peak = lanes * 2 * 2 * mhz * 1e6 * cores  # lanes × 2 FMA units × 2 FLOPs per FMA × clock × cores
    return peak, f"{lanes} fp32 lanes × 2 FMA units × 2 × {mhz:.0f} MHz × {cores} cores"


VARIANTS = {
    "book": {"fast_attention": False},  # chapter 1's attention, written out
    "sdpa": {"fast_attention": True},  # torch.nn.functional.scaled_dot_product_attention
    "sdpa+bf16": {"fast_attention": True, "bf16": True},  # bfloat16 autocast around the step
    "sdpa+compile": {"fast_attention": True, "compile": True},  # torch.compile of the model
}
"""Ways to run the same training step; `tinytransformer bench --variants` picks among them."""


def bench_training(model_config: GPTConfig, config: TrainConfig, variants: list[str], steps: int = 20,
                   repeats: int = 3, device: torch.device | str = "cpu") -> dict[str, dict]:
    """Median training speed of ``Trainer.train_step`` in each variant, on the embedded corpus.

    The variants take turns — each one's first timed repeat, then each one's second, and so on — so
    that a machine whose speed drifts slows them all alike.

    Args:
        model_config: The architecture (``vocab_size`` is replaced by the char tokenizer's).
        config: Batch size, accumulation and optimiser settings.
        variants: Keys of ``VARIANTS``.
        steps: Steps per timed repeat.
        repeats: Timed repeats; the median is reported.
        device: Where to run.

    Returns:
        For each variant: ``ms_per_step``, ``tokens_per_s``, ``gflops``, each repeat's ms and the
        parameter count.
    """
    data = load_token_data(None, tokenizer="char")
    model_config = replace(model_config, vocab_size=data.tokenizer.vocab_size)
    trainers = {}
    for variant in variants:
        trainer = Trainer(replace(model_config, fast_attention=VARIANTS[variant]["fast_attention"]), config, data,
                          device=device, progress=False)
        if VARIANTS[variant].get("compile"):
            trainer.training_model = torch.compile(trainer.model)
        time_steps(trainer, 3, VARIANTS[variant])  # warm-up: allocator, kernels, optimiser state (and compilation)
        trainers[variant] = trainer
    timings: dict[str, list[float]] = {variant: [] for variant in variants}
    for _ in range(repeats):
        for variant, trainer in trainers.items():
            timings[variant].append(time_steps(trainer, steps, VARIANTS[variant]))
    tokens_per_step = config.batch_size * config.grad_accum_steps * model_config.max_seq_len
    results = {}
    for variant, trainer in trainers.items():
        seconds = statistics.median(timings[variant])
        tokens_per_s = tokens_per_step / seconds
        results[variant] = {"ms_per_step": 1000 * seconds, "tokens_per_s": tokens_per_s,
                            "gflops": training_flops_per_token(model_config) * tokens_per_s / 1e9,
                            "ms_per_step_repeats": [1000 * t for t in timings[variant]],
                            "parameters": trainer.model.num_parameters()}
    return results


def time_steps(trainer: Trainer, steps: int, options: dict) -> float:
    """Seconds per training step over ``steps`` steps, in bfloat16 autocast if ``options`` ask for it."""
    device = trainer.device
    precision = torch.autocast(device.type, dtype=torch.bfloat16) if options.get("bf16") else contextlib.nullcontext()
    with precision:
        synchronize(device)
        started = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        synchronize(device)
    return (time.perf_counter() - started) / steps


def bench_generation(model_config: GPTConfig, new_tokens: int, repeats: int = 3,
                     device: torch.device | str = "cpu") -> dict[str, float]:
    """Generation speed with and without the KV cache, measured by chapter 10's ``tokens_per_second``.

    Returns:
        The medians of ``repeats`` measurements each, ``{"with_cache": ..., "without_cache": ...}``,
        taken in turns like the training repeats.
    """
    torch.manual_seed(0)
    model = GPT(model_config).to(device).eval()
    runs: dict[str, list[float]] = {"with_cache": [], "without_cache": []}
    for _ in range(repeats):
        runs["with_cache"].append(tokens_per_second(model, new_tokens, use_cache=True))
        runs["without_cache"].append(tokens_per_second(model, new_tokens, use_cache=False))
    return {name: statistics.median(values) for name, values in runs.items()}


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process: the CUDA allocator's peak on a GPU, the resident set size on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource  # Unix only
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # macOS reports bytes, Linux KiB


def run_bench(args: argparse.Namespace) -> int:
    """``tinytransformer bench``: print a table of measurements and write them as JSON."""
    if args.preset not in PRESETS:
        raise ValueError(f"unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
    if args.steps < 1 or args.repeats < 1 or min(args.generate, default=1) < 1:
        raise ValueError(f"--steps ({args.steps}), --repeats ({args.repeats}) and --generate must be at least 1")
    unknown = [variant for variant in args.variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    device = select_device(args.device)
    preset = PRESETS[args.preset]
    architecture = {name: getattr(args, name) for name in ("max_seq_len", "d_model", "n_layers", "n_heads")
                    if getattr(args, name) is not None}
    model_config = GPTConfig(**{**preset.model, "vocab_size": 256, **architecture})
    config = TrainConfig(**{**preset.train, **({} if args.batch_size is None else {"batch_size": args.batch_size})})
    if args.json is not None and not os.access(args.json.parent.resolve(), os.W_OK):
        raise ValueError(f"cannot write {args.json}: its folder does not exist or is not writable; "
                         "choose another --json")
    peak, peak_note = cpu_peak_flops() if device.type == "cpu" else (float("nan"), "GPU: see the vendor's peak")
    results = {"machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
               "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__, "device": str(device),
               "peak_gflops": peak / 1e9, "peak_note": peak_note, "preset": args.preset,
               "model": vars(model_config), "batch_size": config.batch_size, "training": {}, "generation": {}}
    variants = list(dict.fromkeys(args.variants))  # each variant once, in the order given
    training = bench_training(model_config, config, variants, args.steps, args.repeats, device)
    for variant, row in training.items():
        results["training"][variant] = {**row, "mfu": row["gflops"] / results["peak_gflops"]}
    for new_tokens in args.generate:
        results["generation"][new_tokens] = bench_generation(model_config, new_tokens, args.repeats, device)
    results["peak_memory_mb"] = peak_memory_mb(device)
    print(format_results(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def format_results(results: dict) -> str:
    """The measurements as a Markdown table (training) and a list (generation)."""
    lines = [f"{results['machine']}; torch {results['torch']} on {results['device']}; {results['date']}",
             f"peak {results['peak_gflops']:.0f} GFLOP/s ({results['peak_note']})", "",
             "| variant | ms/step | tokens/s | GFLOP/s | MFU |", "|---|---:|---:|---:|---:|"]
    for variant, row in results["training"].items():
        lines.append(f"| {variant} | {row['ms_per_step']:.1f} | {row['tokens_per_s']:,.0f} | "
                     f"{row['gflops']:.1f} | {row['mfu']:.1%} |")
    lines.append("")
    for new_tokens, row in results["generation"].items():
        lines.append(f"generate {new_tokens} tokens: {row['with_cache']:,.0f} tokens/s with the KV cache, "
                     f"{row['without_cache']:,.0f} without ({row['with_cache'] / row['without_cache']:.1f}×)")
    lines.append(f"peak memory {results['peak_memory_mb']:,.0f} MB")
    return "\n".join(lines)


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer bench``."""
    parser = commands.add_parser("bench", help="measure training and generation speed",
                                 description="Time training steps (median of repeats), generation with and "
                                             "without the KV cache, FLOP/s, MFU and peak memory.")
    parser.add_argument("--preset", default="shakespeare-char", help=f"configuration to measure: {', '.join(PRESETS)}")
    for name in ("max_seq_len", "d_model", "n_layers", "n_heads", "batch_size"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, help=f"override the preset's {name}")
    parser.add_argument("--variants", nargs="+", default=["book", "sdpa"],
                        help=f"ways to run the step: {', '.join(VARIANTS)} (default: book sdpa)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed repeat (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported (default 5)")
    parser.add_argument("--generate", type=int, nargs="*", default=[50, 200, 500],
                        help="new tokens to time (default 50 200 500)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.set_defaults(run=run_bench)
