# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/12-fast.md
"""``tinytransformer bench`` (chapter 12): training and generation speed, as a table and
as JSON."""

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from tinytransformer.bench import (
    VARIANTS,
    bench_generation,
    bench_training,
    cpu_peak_flops,
    peak_memory_mb,
)
from tinytransformer.commands.options import add_device_argument
from tinytransformer.decoding import (
    DECODING_DTYPES,
    bench_decoding,
    bytes_per_token,
    memory_bandwidth,
)
from tinytransformer.devices import select_device
from tinytransformer.model import GPTConfig
from tinytransformer.train import PRESETS, TrainConfig, preset_named


def run_bench(args: argparse.Namespace) -> int:
    """``tinytransformer bench``: print a table of measurements, write them as JSON."""
    if args.steps < 1 or args.repeats < 1 or min(args.generate, default=1) < 1:
        raise ValueError(
            f"--steps ({args.steps}), --repeats ({args.repeats}) and --generate must be"
            " at least 1"
        )
    unknown = [variant for variant in args.variants if variant not in VARIANTS]
    if unknown:
        raise ValueError(
            f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}"
        )
    unknown = [dtype for dtype in args.dtypes if dtype not in DECODING_DTYPES]
    if unknown:
        choices = ", ".join(DECODING_DTYPES)
        raise ValueError(f"unknown --dtypes {unknown[0]!r}; choose from {choices}")
    device = select_device(args.device)
    preset = preset_named(args.preset)
    architecture = {
        name: getattr(args, name)
        for name in ("max_seq_len", "d_model", "n_layers", "n_heads")
        if getattr(args, name) is not None
    }
    model_config = GPTConfig(**{**preset.model, "vocab_size": 256, **architecture})
    config = TrainConfig(
        **{
            **preset.train,
            **({} if args.batch_size is None else {"batch_size": args.batch_size}),
        }
    )
    if args.json is not None and not os.access(args.json.parent.resolve(), os.W_OK):
        raise ValueError(
            f"cannot write {args.json}: its folder does not exist or is not writable; "
            "choose another --json"
        )
    peak, peak_note = (
        cpu_peak_flops()
        if device.type == "cpu"
        else (float("nan"), "GPU: see the vendor's peak")
    )
    results = {
        "machine": (
            f"{platform.processor() or platform.machine()}, {torch.get_num_threads()}"
            " threads"
        ),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "device": str(device),
        "peak_gflops": peak / 1e9,
        "peak_note": peak_note,
        "preset": args.preset,
        "model": vars(model_config),
        "batch_size": config.batch_size,
        "training": {},
        "generation": {},
    }
    if args.decode:  # the section "Decoding is memory-bound": ours against Hugging Face
        decoding_config = replace(model_config, vocab_size=args.vocab_size)
        results |= decoding_results(
            decoding_config, args.generate, args.repeats, args.dtypes
        )
        print(format_decoding(results))
    else:
        variants = list(dict.fromkeys(args.variants))  # each once, in the order given
        training = bench_training(
            model_config, config, variants, args.steps, args.repeats, device
        )
        for variant, row in training.items():
            mfu = row["gflops"] / results["peak_gflops"]
            results["training"][variant] = {**row, "mfu": mfu}
        for new_tokens in args.generate:
            results["generation"][new_tokens] = bench_generation(
                model_config, new_tokens, args.repeats, device
            )
        results["peak_memory_mb"] = peak_memory_mb(device)
        print(format_results(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


def format_results(results: dict) -> str:
    """The measurements as a Markdown table (training) and a list (generation)."""
    lines = [
        (
            f"{results['machine']}; torch {results['torch']} on {results['device']};"
            f" {results['date']}"
        ),
        f"peak {results['peak_gflops']:.0f} GFLOP/s ({results['peak_note']})",
        "",
        "| variant | ms/step | tokens/s | GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant, row in results["training"].items():
        lines.append(
            f"| {variant} | {row['ms_per_step']:.1f} | {row['tokens_per_s']:,.0f} | "
            f"{row['gflops']:.1f} | {row['mfu']:.1%} |"
        )
    lines.append("")
    for new_tokens, row in results["generation"].items():
        lines.append(
            f"generate {new_tokens} tokens: {row['with_cache']:,.0f} tokens/s with the"
            f" KV cache, {row['without_cache']:,.0f} without"
            f" ({row['with_cache'] / row['without_cache']:.1f}×)"
        )
    lines.append(f"peak memory {results['peak_memory_mb']:,.0f} MB")
    return "\n".join(lines)


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer bench``."""
    parser = commands.add_parser(
        "bench",
        help="measure training and generation speed",
        description=(
            "Time training steps (median of repeats), generation with and "
            "without the KV cache, FLOP/s, MFU and peak memory."
        ),
    )
    parser.add_argument(
        "--preset",
        default="shakespeare-char",
        help=f"configuration to measure: {', '.join(PRESETS)}",
    )
    for name in ("max_seq_len", "d_model", "n_layers", "n_heads", "batch_size"):
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=int,
            help=f"override the preset's {name}",
        )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["book", "sdpa"],
        help=f"ways to run the step: {', '.join(VARIANTS)} (default: book sdpa)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=20,
        help="training steps per timed repeat (default 20)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed repeats; the median is reported (default 5)",
    )
    parser.add_argument(
        "--generate",
        type=int,
        nargs="*",
        default=[50, 200, 500],
        help="new tokens to time (default 50 200 500)",
    )
    parser.add_argument(
        "--decode",
        action="store_true",
        help=(
            "instead of training, time greedy decoding on the CPU: "
            "Hugging Face's generate (if transformers is installed) "
            "against ours, plain and prepared by decoding_model in each "
            "of --dtypes"
        ),
    )
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=list(DECODING_DTYPES),
        help=f"with --decode: any of {', '.join(DECODING_DTYPES)} (default: all)",
    )
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=50257,
        help="with --decode: the vocabulary (default 50257, GPT-2's)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--json", type=Path, help="also write the results to this JSON file"
    )
    parser.set_defaults(run=run_bench)


def decoding_results(
    config: GPTConfig, new_tokens: list[int], repeats: int, dtypes: list[str]
) -> dict:
    """Memory bandwidth, then ``bench_decoding`` for each length, with each ceiling."""
    bandwidth = memory_bandwidth()
    prompt_len = 8
    runs = {}
    for count in new_tokens:
        chosen = tuple(dict.fromkeys(dtypes))  # each once, in the order given
        rows = bench_decoding(config, count, repeats, chosen, prompt_len)
        for name, row in rows.items():
            dtype = name if name in DECODING_DTYPES else "float32"
            context_len = prompt_len + count // 2  # the cache's mean length
            row["mb_per_token"] = bytes_per_token(config, dtype, context_len) / 1e6
            row["ceiling_tokens_per_s"] = bandwidth / 1e6 / row["mb_per_token"]
        runs[count] = rows
    return {
        "bandwidth_gb_s": bandwidth / 1e9,
        "decoding_model": vars(config),
        "decoding": runs,
    }


def format_decoding(results: dict) -> str:
    """The decoding measurements as one Markdown table per length."""
    config = results["decoding_model"]
    lines = [
        f"{results['machine']}; torch {results['torch']}; {results['date']}",
        f"memory bandwidth {results['bandwidth_gb_s']:.1f} GB/s (sum of 256 MB)",
        (
            f"model: {config['n_layers']} layers, d_model {config['d_model']}, "
            f"vocabulary {config['vocab_size']:,}; greedy, after an 8-token prompt"
        ),
    ]
    for count, rows in results["decoding"].items():
        reference = next(iter(rows))
        lines += [
            "",
            f"{count} new tokens:",
            "",
            (
                f"| decoder | MB/token | ceiling tok/s | tok/s | × {reference} "
                f"| identical to {reference} |"
            ),
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, row in rows.items():
            speed_up = row["tokens_per_s"] / rows[reference]["tokens_per_s"]
            lines.append(
                f"| {name} | {row['mb_per_token']:,.1f} "
                f"| {row['ceiling_tokens_per_s']:,.0f} "
                f"| {row['tokens_per_s']:,.1f} | {speed_up:.2f} "
                f"| {row['agree']}/{count} |"
            )
    return "\n".join(lines)
