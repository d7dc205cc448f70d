# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-cli.md
"""``tinytransformer tangle`` (appendix): regenerate the package from the book, or check
that it matches."""

import argparse
import sys
from pathlib import Path

from tinytransformer.tangle import tangle


def run_tangle(args: argparse.Namespace) -> int:
    """``tinytransformer tangle``: regenerate the package from the book, or check that
    it matches."""
    root = args.root
    if not (root / "book").is_dir():
        raise ValueError(
            f"no book/ folder in {root.resolve()}; run from the repository root or pass"
            " --root"
        )
    messages = tangle(root, check=args.check)
    for message in messages:
        print(message)
    if args.check and messages:
        print(
            "the package differs from the book: run `tinytransformer tangle`",
            file=sys.stderr,
        )
        return 1
    return 0


def add_tangle_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer tangle``."""
    parser = commands.add_parser(
        "tangle",
        help="regenerate the package from the book's code blocks",
        description=(
            "Write every tinytransformer/*.py file from the titled code blocks in"
            " book/."
        ),
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; list differences and exit 1 if any",
    )
    parser.add_argument(
        "--root", type=Path, default=Path("."), help="repository root (default: .)"
    )
    parser.set_defaults(run=run_tangle)
