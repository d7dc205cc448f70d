# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/11-lora.md
"""``tinytransformer merge`` (chapter 11b): LoRA adapters folded into a plain
checkpoint."""

import argparse
from pathlib import Path

from tinytransformer.checkpoint import load_checkpoint, load_model, write_checkpoint
from tinytransformer.lora import merge_lora


def run_merge(args: argparse.Namespace) -> int:
    """``tinytransformer merge``: write an adapter checkpoint's merged model to
    ``--out``."""
    path = (
        args.checkpoint / "checkpoint.pt"
        if args.checkpoint.is_dir()
        else args.checkpoint
    )
    if args.out.exists():
        raise ValueError(
            f"--out {args.out} exists; choose a new file name (merge never overwrites)"
        )
    state = load_checkpoint(path)
    if not state.get("lora"):
        raise ValueError(
            f"{path} holds no LoRA adapters: it is a plain checkpoint already"
        )
    model, _ = load_model(path, base=args.base)
    merged = merge_lora(model)
    plain = {key: value for key, value in state.items() if key != "lora"}
    write_checkpoint({**plain, "model": merged.state_dict(), "optimizer": {}}, args.out)
    base = args.base or state["lora"]["base"]
    print(
        f"wrote {args.out}: {merged.num_parameters():,} parameters, the base {base} "
        f"with the adapters of {path} merged in"
    )
    return 0


def add_merge_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer merge`` with the command line's sub-commands."""
    parser = commands.add_parser(
        "merge",
        help="merge a LoRA run's adapters into a plain checkpoint",
        description=(
            "Load a checkpoint of LoRA adapters (tinytransformer train --lora) with the"
            " base weights it names, fold the adapters into them, and write a plain"
            " checkpoint that generate and --init read."
        ),
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        metavar="RUN_OR_CHECKPOINT",
        help="the adapter checkpoint, or the run folder that holds it",
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="PATH",
        help="the new checkpoint file",
    )
    parser.add_argument(
        "--base",
        metavar="SOURCE",
        help="the base weights, when they are no longer where the checkpoint says",
    )
    parser.set_defaults(run=run_merge)
