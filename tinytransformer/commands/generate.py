# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/10-generation.md
"""``tinytransformer generate`` (chapter 10): prompts in, continuations out, from a
checkpoint or GPT-2."""

import argparse
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TextIO

import torch

from tinytransformer.devices import select_device
from tinytransformer.generation import SamplingOptions, encode_prompt, generate_tokens
from tinytransformer.model import GPT
from tinytransformer.tokenizer import Tokenizer, get_tokenizer


def _write_samples(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: str,
    prompt_ids: list[int],
    max_new_tokens: int,
    num_samples: int,
    stream: bool,
    out: TextIO,
    options: SamplingOptions = SamplingOptions(),
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> None:
    token_ids = torch.tensor(
        [prompt_ids] * num_samples, device=next(model.parameters()).device
    )  # (N, T)
    options = replace(options, eot_id=tokenizer.eot_id)
    steps = generate_tokens(
        model,
        token_ids,
        max_new_tokens,
        options,
        generator=generator,
        use_cache=use_cache,
    )
    start = time.perf_counter()
    if stream and num_samples == 1:
        out.write(prompt)
        new_ids: list[int] = []
        # new_ids[-unshown:] are not written yet: they end in the middle of a character
        unshown = 0
        for next_ids in steps:
            if next_ids.item() == tokenizer.eot_id:
                break
            new_ids.append(int(next_ids.item()))
            # only the tokens not yet shown: no re-decoding
            text = tokenizer.decode(new_ids[-unshown - 1 :])
            unshown += 1
            # hold back half a character until its next token
            if not text.endswith("\ufffd"):
                out.write(text)
                out.flush()
                unshown = 0
        steps.close()  # restores the model's mode if we stopped at end-of-text
        out.write((tokenizer.decode(new_ids[-unshown:]) if unshown else "") + "\n")
        rows = [new_ids]
    else:
        rows = torch.cat(list(steps), dim=1).tolist()  # (N, n)
        rows = [
            row[: row.index(tokenizer.eot_id)] if tokenizer.eot_id in row else row
            for row in rows
        ]
        out.write("---\n".join(prompt + tokenizer.decode(row) + "\n" for row in rows))
    out.flush()
    seconds = time.perf_counter() - start
    count = sum(len(row) for row in rows)
    cache = "on" if use_cache else "off"
    print(
        f"[{count} tokens in {seconds:.2f} s, {count / seconds:.0f} tokens/s, KV cache"
        f" {cache}]",
        file=sys.stderr,
    )


def _decode_line(line: bytes) -> str:
    """A line of standard input as text.

    Raises:
        ValueError: If it is not UTF-8, naming the byte.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"a line of standard input is not UTF-8 text (byte {line[error.start]:#04x}"
            f" at offset {error.start}); it is skipped"
        ) from None


def _read_prompts(prompt: str) -> Iterator[str | bytes]:
    """``prompt`` itself, or, for ``"-"``, each line of standard input as bytes, without
    its line break.

    Raises:
        ValueError: If ``prompt`` is ``"-"`` and standard input is closed.
    """
    if prompt != "-":
        yield prompt
        return
    if sys.stdin is None:  # started with standard input closed, as `... <&-` does
        raise ValueError(
            "--prompt - reads standard input, which is closed; pass --prompt TEXT"
        )
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("prompt> ", end="", file=sys.stderr, flush=True)
        # bytes: a line that is not UTF-8 is reported alone (below)
        line = sys.stdin.buffer.readline()
        if not line:  # end of input (Ctrl-D at a terminal)
            if interactive:
                print(file=sys.stderr)
            return
        yield line.rstrip(b"\r\n")


def run_generate(args: argparse.Namespace) -> int:
    """``tinytransformer generate``: write a continuation of each prompt to standard
    output.

    Args:
        args: The parsed command line (see ``tinytransformer generate --help``).

    Returns:
        0; 2 if a prompt read from standard input could not be encoded (the others are
        answered);
        130 when interrupted with Ctrl-C.

    Raises:
        ValueError: If an option or the prompt is unusable, or the model cannot be
            loaded.
        FileNotFoundError: If the checkpoint does not exist.
    """
    greedy = args.greedy or args.temperature == 0  # temperature 0 is greedy decoding
    options = SamplingOptions(
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=greedy
    )
    if args.max_new_tokens < 1:
        raise ValueError(
            f"max_new_tokens must be a positive integer, got {args.max_new_tokens}"
        )
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {args.num_samples}")
    device = select_device(args.device)
    if args.gpt2 is not None:
        from tinytransformer.gpt2 import load_gpt2

        model, tokenizer = load_gpt2(args.gpt2).to(device), get_tokenizer("gpt2")
    elif args.hf is not None:  # chapter 11c: GPT-2 or Llama, with its own tokenizer
        from tinytransformer.pretrained import load_pretrained

        model, tokenizer = load_pretrained(args.hf)
        model = model.to(device)
    else:
        from tinytransformer.checkpoint import load_model

        model, tokenizer = load_model(args.checkpoint, device)
    if args.dtype is not None:  # chapter 12: weights stored for decoding
        from tinytransformer.decoding import decoding_model

        model = decoding_model(model, args.dtype)
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63), got {args.seed}")
    generator = (
        None if args.seed is None else torch.Generator(device).manual_seed(args.seed)
    )
    stream = sys.stdout.isatty() if args.stream is None else args.stream
    status = 0
    try:
        for line in _read_prompts(args.prompt):
            try:
                prompt = line if isinstance(line, str) else _decode_line(line)
                prompt_ids = encode_prompt(tokenizer, prompt)
            except ValueError as error:
                if args.prompt != "-":
                    raise
                print(f"tinytransformer generate: error: {error}", file=sys.stderr)
                status = 2
                continue
            _write_samples(
                model,
                tokenizer,
                prompt,
                prompt_ids,
                args.max_new_tokens,
                args.num_samples,
                stream,
                sys.stdout,
                options,
                generator,
                not args.no_cache,
            )
    except KeyboardInterrupt:  # Ctrl-C ends an interactive session without a traceback
        print(file=sys.stderr)
        return 130  # the shell's convention for "interrupted"
    return status


def add_generate_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer generate`` with the command line's sub-commands.

    Args:
        commands: The sub-parsers of the ``tinytransformer`` command.
    """
    parser = commands.add_parser(
        "generate",
        help="continue a prompt with a trained model or GPT-2",
        description=(
            "Generate text with a checkpoint written by `tinytransformer train`"
            " (--checkpoint) or with GPT-2's weights (--gpt2). The text goes to"
            " standard output, as it is produced when that is a terminal; the speed"
            " goes to standard error."
        ),
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--checkpoint",
        type=Path,
        metavar="PATH",
        help="a checkpoint.pt written by `tinytransformer train`",
    )
    model.add_argument(
        "--gpt2",
        metavar="NAME|PATH",
        help=(
            "GPT-2 by Hugging Face hub name (gpt2, gpt2-medium, ...) or local"
            " directory; uses the gpt2 tokenizer"
        ),
    )
    model.add_argument(
        "--hf",
        metavar="NAME|PATH",
        help=(
            "a GPT-2 or Llama-family checkpoint by hub name or local directory, "
            "with its own tokenizer.json (chapter 11c)"
        ),
    )
    parser.add_argument(
        "--prompt",
        default="",
        metavar="TEXT",
        help=(
            "the text to continue; '-' reads prompts from standard input, "
            "one per line; empty (the default) starts from the end-of-text token"
        ),
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=200,
        metavar="N",
        help="most tokens per sample (default: 200)",
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        metavar="T",
        help=(
            "below 1 sharpens the distribution, above 1 flattens it; 0 means --greedy"
            " (default: 0.8)"
        ),
    )
    parser.add_argument(
        "--top-k",
        type=int,
        metavar="K",
        help="sample only among the K most likely tokens",
    )
    parser.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help=(
            "sample only among the most likely tokens whose probabilities reach P"
            " together (0 < P <= 1)"
        ),
    )
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="always take the most likely token: no randomness",
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="random seed: the same seed and options give the same text",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=1,
        metavar="N",
        help="samples per prompt, generated as one batch (default: 1)",
    )
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        help=(
            "print tokens as they come (default: when standard output is a terminal;"
            " one sample only)"
        ),
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help=(
            "recompute the whole context for every token instead of using the KV cache"
            " (slower)"
        ),
    )
    parser.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        help=(
            "store the linear weights for decoding (chapter 12): float32 (same numbers,"
            " split so that every thread reads), bfloat16 or int8 (fewer bytes,"
            " slightly different numbers); default: as trained"
        ),
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="NAME",
        help="auto (CUDA if available, else CPU), cpu, cuda or mps (default: auto)",
    )
    parser.set_defaults(run=run_generate)
