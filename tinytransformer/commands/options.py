# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/07-tokens.md
#   book/09-devices.md
"""Command-line flags shared by several commands: the corpus and tokenizer (chapter 7),
the device (chapter 9)."""

import argparse

from tinytransformer.data import DOWNLOADS
from tinytransformer.tokenizer import DEFAULT_TOKENIZER, tokenizer_name


def _tokenizer_argument(spec: str) -> str:
    try:
        return tokenizer_name(spec)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--data`` and ``--tokenizer`` to a command's parser (both default to
    ``None``)."""
    parser.add_argument(
        "--data",
        metavar="PATH|NAME",
        help=(
            "the corpus: a UTF-8 text file, a folder of .txt/.md files, or a named"
            " corpus: book (this book, shipped with the package; the default) or"
            f" {', '.join(DOWNLOADS)} (downloaded once)"
        ),
    )
    parser.add_argument(
        "--tokenizer",
        metavar="SPEC",
        type=_tokenizer_argument,
        help=(
            f"char, bpe (= {DEFAULT_TOKENIZER}), bpe:VOCAB_SIZE (char and bpe are"
            " trained on the corpus), or a tiktoken encoding such as p50k_base or gpt2"
            " (downloaded once; set TIKTOKEN_CACHE_DIR to use a cache)"
        ),
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--device``, resolved by
    [`select_device`][tinytransformer.devices.select_device]."""
    parser.add_argument(
        "--device",
        default="auto",
        help=(
            "auto (CUDA if available, else the CPU; never MPS, see chapter 9), cpu,"
            " cuda or mps"
        ),
    )
