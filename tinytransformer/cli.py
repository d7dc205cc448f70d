# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-cli.md
"""The ``tinytransformer`` command line."""

import argparse
import sys

from tinytransformer.commands.bench import add_bench_command
from tinytransformer.commands.export import add_export_command
from tinytransformer.commands.figures import add_figures_command
from tinytransformer.commands.generate import add_generate_command
from tinytransformer.commands.merge import add_merge_command
from tinytransformer.commands.tangle import add_tangle_command
from tinytransformer.commands.train import add_train_command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="tinytransformer",
        description="The GPT-style transformer of the book 'Transformer from Scratch'.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (
        add_tangle_command,
        add_train_command,
        add_generate_command,
        add_bench_command,
        add_figures_command,
        add_export_command,
        add_merge_command,
    ):
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``None`` reads ``sys.argv``.

    Returns:
        The exit status: 0 on success, 2 on bad input, 1 when a check fails, 130 when
        interrupted (Ctrl-C).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"tinytransformer {args.command}: error: {error}", file=sys.stderr)
        return 2
    # Ctrl-C where no command catches it (tokenizing, loading): no traceback
    except KeyboardInterrupt:
        print(f"tinytransformer {args.command}: interrupted", file=sys.stderr)
        return 130
