# Generated from the book by `tinytransformer tangle`; edit these chapters, not this file:
#   book/appendix-cli.md
"""The ``tinytransformer`` command line."""

import argparse
import sys
from pathlib import Path

from tinytransformer.bench import add_bench_command
from tinytransformer.export import add_export_command
from tinytransformer.figures import add_figures_command
from tinytransformer.generation import add_generate_command
from tinytransformer.tangle import tangle
from tinytransformer.train import add_train_command


def run_tangle(args: argparse.Namespace) -> int:
    """``tinytransformer tangle``: regenerate the package from the book, or check that it matches."""
    root = args.root
    if not (root / "book").is_dir():
        raise ValueError(f"no book/ folder in {root.resolve()}; run from the repository root or pass --root")
    messages = tangle(root, check=args.check)
    for message in messages:
        print(message)
    if args.check and messages:
        print("the package differs from the book: run `tinytransformer tangle`", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="tinytransformer",
        description="The GPT-style transformer of the book 'Transformer from Scratch'.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tangle_parser = commands.add_parser(
        "tangle",
        help="regenerate the package from the book's code blocks",
        description="Write every tinytransformer/*.py file from the titled code blocks in book/.",
    )
    tangle_parser.add_argument("--check", action="store_true", help="write nothing; list differences and exit 1 if any")
    tangle_parser.add_argument("--root", type=Path, default=Path("."), help="repository root (default: .)")
    tangle_parser.set_defaults(run=run_tangle)
    add_train_command(commands)
    add_generate_command(commands)
    add_bench_command(commands)
    add_figures_command(commands)
    add_export_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 2 on bad input, 1 when a check fails, 130 when interrupted (Ctrl-C).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"tinytransformer {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C where no command catches it (tokenizing, loading): no traceback
        print(f"tinytransformer {args.command}: interrupted", file=sys.stderr)
        return 130
