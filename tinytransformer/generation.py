# Generated from the book by `tinytransformer tangle`; edit these chapters, not this file:
#   book/10-generation.md
"""Generating text: sampling, the generation loop with its KV cache, ``tinytransformer generate`` (chapter 10)."""

import argparse
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TextIO

import torch
from torch import Tensor

from tinytransformer.attention import KVCache
from tinytransformer.devices import select_device, synchronize
from tinytransformer.model import GPT
from tinytransformer.tokenizer import Tokenizer, get_tokenizer


def top_k_filter(logits: Tensor, top_k: int) -> Tensor:
    """Keep the ``top_k`` largest logits of each row (and any tied with the k-th); drop the rest.

    Args:
        logits: Scores of shape ``(B, V)``.
        top_k: How many tokens to keep; at least 1 (more than ``V`` keeps all).

    Returns:
        A copy of ``logits`` with the dropped entries set to ``-inf``.
    """
    kth_largest = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_largest, float("-inf"))


def top_p_filter(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probabilities sum to at least ``top_p``.

    Args:
        logits: Scores of shape ``(B, V)``.
        top_p: The probability mass to keep, in ``(0, 1]``.

    Returns:
        A copy of ``logits`` with the dropped entries set to ``-inf``; the most likely token is
        always kept.
    """
    sorted_logits, order = torch.sort(logits, dim=-1)  # ascending: the tail comes first
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, V)
    drop = cumulative <= 1 - top_p  # a tail holding at most 1 - p of the mass
    drop[..., -1] = False  # never drop the most likely token
    return logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))


def check_generation_options(
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
) -> None:
    """Refuse settings that cannot work, with a message that names the value and the fix.

    Args:
        max_new_tokens: Most tokens to generate; at least 1.
        temperature: At least 0; exactly 0 only with ``greedy``.
        top_k: ``None``, or at least 1.
        top_p: ``None``, or in ``(0, 1]``.
        greedy: Whether decoding is greedy.

    Raises:
        ValueError: If ``max_new_tokens < 1``, ``temperature < 0`` (or 0 when sampling),
            ``top_k < 1``, or ``top_p`` is outside ``(0, 1]``.
    """
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not 0 <= temperature < float("inf"):  # also refuses NaN
        raise ValueError(f"temperature must be a finite number of at least 0, got {temperature!r}; "
                         "1 samples the model's own distribution")
    if temperature == 0 and not greedy:
        raise ValueError("temperature 0 means always taking the most likely token: ask for greedy decoding instead "
                         "(greedy=True, or --greedy)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}; leave it out to keep every token")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}; 1 (or leaving it out) keeps every token")


def sample_next_token(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Choose the next token of each sequence from its logits.

    Args:
        logits: Next-token scores of shape ``(B, V)``.
        temperature: Divides the logits; must be positive unless ``greedy``.
        top_k: If given, keep only the ``top_k`` most likely tokens.
        top_p: If given, keep only the smallest set of most likely tokens reaching ``top_p``.
        greedy: Take the argmax; the other options then change nothing.
        generator: Random generator for reproducible draws.

    Returns:
        Token ids of shape ``(B, 1)``.
    """
    if greedy:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / temperature  # the largest is 0: no overflow
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    probabilities = torch.softmax(logits, dim=-1)  # (B, V), zero where filtered out
    return torch.multinomial(probabilities, num_samples=1, generator=generator)  # (B, 1)


def generate_tokens(
    model: GPT,
    token_ids: Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    eot_id: int | None = None,
    use_cache: bool = True,
) -> Generator[Tensor, None, None]:
    """Generate tokens one step at a time, yielding each step's choice as soon as it is made.

    The model is in evaluation mode until the iteration ends, then back in its previous mode. When
    the context reaches ``max_seq_len``, its newest half is kept and the cache rebuilt from it.
    Options are checked when the iteration starts.

    Args:
        model: The model.
        token_ids: Prompts of shape ``(B, T)``, ``T >= 1``; only the last ``max_seq_len`` are used.
        max_new_tokens: Most steps to take.
        temperature: See [`sample_next_token`][tinytransformer.generation.sample_next_token].
        top_k: See [`sample_next_token`][tinytransformer.generation.sample_next_token].
        top_p: See [`sample_next_token`][tinytransformer.generation.sample_next_token].
        greedy: See [`sample_next_token`][tinytransformer.generation.sample_next_token].
        generator: Random generator for reproducible sampling.
        eot_id: End-of-text token: a row that produces it is finished, and padded with it.
        use_cache: Use a KV cache (``False`` recomputes the whole context at every step).

    Yields:
        The chosen tokens of each step, shape ``(B, 1)``.

    Raises:
        ValueError: If an option cannot work (see
            [`check_generation_options`][tinytransformer.generation.check_generation_options]) or
            the prompt is empty or not of shape ``(B, T)``.
    """
    check_generation_options(max_new_tokens, temperature, top_k, top_p, greedy)
    if token_ids.ndim != 2 or token_ids.shape[1] == 0:
        raise ValueError(f"the prompt must have shape (B, T) with T >= 1, got {tuple(token_ids.shape)}; "
                         "to start from nothing, start from the end-of-text token")
    max_seq_len = model.config.max_seq_len
    context = token_ids[:, -max_seq_len:]  # (B, T)
    kv_caches = None
    finished = torch.zeros(token_ids.shape[0], dtype=torch.bool, device=token_ids.device)  # (B,)
    was_training = model.training
    model.eval()
    try:
        for _ in range(max_new_tokens):
            with torch.inference_mode():  # like no_grad, and skips autograd's bookkeeping entirely
                if not use_cache:
                    logits = model(context)  # (B, T, V): the whole context, every step
                elif kv_caches is None:  # first step, or the context was just cropped: fill the caches
                    kv_caches = [KVCache(model.config.max_seq_len) for _ in model.blocks]
                    logits = model(context, kv_caches)
                else:
                    logits = model(context[:, -1:], kv_caches)  # (B, 1, V): only the newest token
            next_ids = sample_next_token(logits[:, -1], temperature, top_k, top_p, greedy, generator)  # (B, 1)
            if eot_id is not None:
                next_ids[finished] = eot_id  # finished rows are padded with end-of-text
                finished |= next_ids[:, 0] == eot_id
            yield next_ids
            if eot_id is not None and finished.all():
                return
            context = torch.cat([context, next_ids], dim=1)
            if context.shape[1] > max_seq_len:  # no position left: keep the newest half, rebuild
                context = context[:, -max(1, max_seq_len // 2) :]
                kv_caches = None
    finally:
        model.train(was_training)


def tokens_per_second(
    model: GPT, max_new_tokens: int, use_cache: bool = True, prompt_len: int = 1, batch_size: int = 1
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
    prompt = torch.randint(model.config.vocab_size, (batch_size, prompt_len), generator=random_tokens).to(device)
    model.generate(prompt, 2, greedy=True, use_cache=use_cache)  # warm-up
    synchronize(device)
    start = time.perf_counter()
    model.generate(prompt, max_new_tokens, greedy=True, use_cache=use_cache)
    synchronize(device)
    return batch_size * max_new_tokens / (time.perf_counter() - start)


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """The token ids to start from: the prompt's, or the end-of-text token for an empty prompt.

    Args:
        tokenizer: The model's tokenizer.
        prompt: The text to continue.

    Returns:
        At least one token id.

    Raises:
        ValueError: If the prompt is empty and the tokenizer has no end-of-text token, or if the
            tokenizer cannot encode some of its characters (all of them are named).
    """
    if not prompt:
        if tokenizer.eot_id is None:
            raise ValueError(f"the prompt is empty and the {tokenizer.name} tokenizer has no end-of-text token to "
                             "start from; give a prompt of at least one character")
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode(prompt)
    except ValueError:
        unknown = [char for char in dict.fromkeys(prompt) if not _can_encode(tokenizer, char)]
        if not unknown:
            raise
        names = ", ".join(f"{char!r} (U+{ord(char):04X})" for char in unknown)
        raise ValueError(f"the prompt has characters that the {tokenizer.name} tokenizer's vocabulary of "
                         f"{tokenizer.vocab_size} does not contain: {names}; remove or replace them") from None


def _can_encode(tokenizer: Tokenizer, char: str) -> bool:
    try:
        tokenizer.encode(char)
    except ValueError:
        return False
    return True


def _write_samples(model: GPT, tokenizer: Tokenizer, prompt: str, prompt_ids: list[int], max_new_tokens: int,
                   num_samples: int, stream: bool, out: TextIO, **options) -> None:
    token_ids = torch.tensor([prompt_ids] * num_samples, device=next(model.parameters()).device)  # (N, T)
    steps = generate_tokens(model, token_ids, max_new_tokens, eot_id=tokenizer.eot_id, **options)
    start = time.perf_counter()
    if stream and num_samples == 1:
        out.write(prompt)
        new_ids: list[int] = []
        unshown = 0  # new_ids[-unshown:] are not written yet: they end in the middle of a character
        for next_ids in steps:
            if next_ids.item() == tokenizer.eot_id:
                break
            new_ids.append(int(next_ids.item()))
            text = tokenizer.decode(new_ids[-unshown - 1 :])  # only the tokens not yet shown: no re-decoding
            unshown += 1
            if not text.endswith("\ufffd"):  # hold back half a character until its next token
                out.write(text)
                out.flush()
                unshown = 0
        steps.close()  # restores the model's mode if we stopped at end-of-text
        out.write((tokenizer.decode(new_ids[-unshown:]) if unshown else "") + "\n")
        rows = [new_ids]
    else:
        rows = torch.cat(list(steps), dim=1).tolist()  # (N, n)
        rows = [row[: row.index(tokenizer.eot_id)] if tokenizer.eot_id in row else row for row in rows]
        out.write("---\n".join(prompt + tokenizer.decode(row) + "\n" for row in rows))
    out.flush()
    seconds = time.perf_counter() - start
    count = sum(len(row) for row in rows)
    cache = "on" if options.get("use_cache", True) else "off"
    print(f"[{count} tokens in {seconds:.2f} s, {count / seconds:.0f} tokens/s, KV cache {cache}]", file=sys.stderr)


def _decode_line(line: bytes) -> str:
    """A line of standard input as text.

    Raises:
        ValueError: If it is not UTF-8, naming the byte.
    """
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"a line of standard input is not UTF-8 text (byte {line[error.start]:#04x} at offset "
                         f"{error.start}); it is skipped") from None


def _read_prompts(prompt: str) -> Iterator[str | bytes]:
    """``prompt`` itself, or, for ``"-"``, each line of standard input as bytes, without its line break.

    Raises:
        ValueError: If ``prompt`` is ``"-"`` and standard input is closed.
    """
    if prompt != "-":
        yield prompt
        return
    if sys.stdin is None:  # started with standard input closed, as `... <&-` does
        raise ValueError("--prompt - reads standard input, which is closed; pass --prompt TEXT")
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("prompt> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.buffer.readline()  # bytes: a line that is not UTF-8 is reported alone (below)
        if not line:  # end of input (Ctrl-D at a terminal)
            if interactive:
                print(file=sys.stderr)
            return
        yield line.rstrip(b"\r\n")


def run_generate(args: argparse.Namespace) -> int:
    """``tinytransformer generate``: write a continuation of each prompt to standard output.

    Args:
        args: The parsed command line (see ``tinytransformer generate --help``).

    Returns:
        0; 2 if a prompt read from standard input could not be encoded (the others are answered);
        130 when interrupted with Ctrl-C.

    Raises:
        ValueError: If an option or the prompt is unusable, or the model cannot be loaded.
        FileNotFoundError: If the checkpoint does not exist.
    """
    greedy = args.greedy or args.temperature == 0  # temperature 0 is greedy decoding
    check_generation_options(args.max_new_tokens, args.temperature, args.top_k, args.top_p, greedy)
    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be at least 1, got {args.num_samples}")
    device = select_device(args.device)
    if args.gpt2 is not None:
        from tinytransformer.gpt2 import load_gpt2

        model, tokenizer = load_gpt2(args.gpt2).to(device), get_tokenizer("gpt2")
    else:
        from tinytransformer.train import load_model

        model, tokenizer = load_model(args.checkpoint, device)
    if args.seed is not None and not 0 <= args.seed < 2**63:
        raise ValueError(f"--seed must be in [0, 2**63), got {args.seed}")
    generator = None if args.seed is None else torch.Generator(device).manual_seed(args.seed)
    options = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=greedy,
                   generator=generator, use_cache=not args.no_cache)
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
            _write_samples(model, tokenizer, prompt, prompt_ids, args.max_new_tokens, args.num_samples, stream,
                           sys.stdout, **options)
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
        description="Generate text with a checkpoint written by `tinytransformer train` (--checkpoint) or with "
        "GPT-2's weights (--gpt2). The text goes to standard output, as it is produced when that is a terminal; "
        "the speed goes to standard error.",
    )
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument("--checkpoint", type=Path, metavar="PATH",
                       help="a checkpoint.pt written by `tinytransformer train`")
    model.add_argument(
        "--gpt2",
        metavar="NAME|PATH",
        help="GPT-2 by Hugging Face hub name (gpt2, gpt2-medium, ...) or local directory; uses the gpt2 tokenizer",
    )
    parser.add_argument(
        "--prompt",
        default="",
        metavar="TEXT",
        help="the text to continue; '-' reads prompts from standard input, "
        "one per line; empty (the default) starts from the end-of-text token",
    )
    parser.add_argument(
        "--max-new-tokens", type=int, default=200, metavar="N", help="most tokens per sample (default: 200)"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=0.8,
        metavar="T",
        help="below 1 sharpens the distribution, above 1 flattens it; 0 means --greedy (default: 0.8)",
    )
    parser.add_argument("--top-k", type=int, metavar="K", help="sample only among the K most likely tokens")
    parser.add_argument(
        "--top-p",
        type=float,
        metavar="P",
        help="sample only among the most likely tokens whose probabilities reach P together (0 < P <= 1)",
    )
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token: no randomness")
    parser.add_argument(
        "--seed", type=int, metavar="N", help="random seed: the same seed and options give the same text"
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
        help="print tokens as they come (default: when standard output is a terminal; one sample only)",
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the whole context for every token instead of using the KV cache (slower)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        metavar="NAME",
        help="auto (CUDA if available, else CPU), cpu, cuda or mps (default: auto)",
    )
    parser.set_defaults(run=run_generate)
