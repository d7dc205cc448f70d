# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-figures.md
"""``tinytransformer figures`` (appendix): redraw the book's figures."""

import argparse
from pathlib import Path


def run_figures(args: argparse.Namespace) -> int:
    """``tinytransformer figures``: redraw the book's figures."""
    # matplotlib is loaded only by this command
    from tinytransformer.figures import write_figures

    for message in write_figures(args.out, args.names or None):
        print(message)
    return 0


def add_figures_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer figures`` with the command line's sub-commands."""
    parser = commands.add_parser(
        "figures",
        help="redraw the book's figures",
        description=(
            "Draw the book's figures from the package and write them as SVG files "
            "(the figures appendix lists them)."
        ),
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="figures to draw (default: all)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("book/figures"),
        help="folder to write into (default: book/figures)",
    )
    parser.set_defaults(run=run_figures)
