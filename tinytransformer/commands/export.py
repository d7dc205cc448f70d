# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-browser.md
"""``tinytransformer export-web`` (appendix): a trained char model's weights and
manifest for the Explorer page."""

import argparse
from pathlib import Path

from tinytransformer.export import DTYPES, export_checkpoint


def run_export(args: argparse.Namespace) -> int:
    """``tinytransformer export-web``: write a checkpoint's weights and manifest for the
    Explorer page."""
    manifest = export_checkpoint(args.checkpoint, args.out, args.dtype)
    size = (args.out / manifest["weights"]).stat().st_size
    print(
        f"wrote {args.out / 'manifest.json'} and {args.out / manifest['weights']}:"
        f" {manifest['parameters']:,} parameters in {manifest['dtype']},"
        f" {size / 1e6:.2f} MB"
    )
    return 0


def add_export_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer export-web`` with the command line's sub-commands."""
    parser = commands.add_parser(
        "export-web",
        help="export a trained char model for the book's Explorer page",
        description=(
            "Write a checkpoint's weights (weights.bin) and a manifest (manifest.json:"
            " configuration, vocabulary, losses and this command) for the JavaScript"
            " forward pass of the book's Explorer page. The browser runs models with"
            " the char tokenizer and Pre-LN blocks."
        ),
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        required=True,
        metavar="PATH",
        help="a checkpoint.pt written by `tinytransformer train`",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("book/explorer"),
        metavar="DIR",
        help=(
            "folder to write into (default: book/explorer, which the Explorer page"
            " reads)"
        ),
    )
    parser.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default="float16",
        help="float16 (half the size; the default) or float32 (the weights exactly)",
    )
    parser.set_defaults(run=run_export)
    parser.set_defaults(run=run_export)
