# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-browser.md
"""The model in the browser: ``tinytransformer export-web`` writes a checkpoint for the
Explorer page (appendix)."""

import json
import math
import shlex
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from tinytransformer.checkpoint import load_checkpoint, load_model
from tinytransformer.files import atomic_write_bytes
from tinytransformer.lora import merge_lora
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.tokenizer import CharTokenizer, Tokenizer
from tinytransformer.train import json_safe, prepare_out_dir

WEB_FORMAT = "tinytransformer-web-1"
# little-endian
DTYPES: dict[str, np.dtype] = {"float16": np.dtype("<f2"), "float32": np.dtype("<f4")}
FLOAT16_MAX = 65504.0  # the largest finite float16


def export_model(
    model: GPT,
    tokenizer: Tokenizer,
    out_dir: Path,
    dtype: str = "float16",
    about: dict | None = None,
) -> dict:
    """Write ``weights.bin`` and ``manifest.json``, which the Explorer page's JavaScript
    reads.

    Args:
        model: The model: Pre-LN blocks (the only kind the JavaScript runs).
        tokenizer: Its tokenizer: a char tokenizer (the only kind the JavaScript has).
        out_dir: The folder to write into; created if missing.
        dtype: ``"float16"`` (half the size) or ``"float32"`` (the weights exactly).
        about: Where the model comes from, added to the manifest.

    Returns:
        The manifest.

    Raises:
        ValueError: If the model or tokenizer is of a kind the browser cannot run, a
            weight does not fit in ``dtype``, or ``out_dir`` cannot be written.
    """
    if not isinstance(tokenizer, CharTokenizer):
        raise ValueError(
            "the browser has only the char tokenizer, and this model uses"
            f" {tokenizer.name}; export a model trained with --tokenizer char (e.g."
            " --preset shakespeare-char)"
        )
    if not model.config.pre_norm:
        raise ValueError(
            "the browser runs Pre-LN blocks (GPT-2's), and this model is Post-LN"
            " (pre_norm false)"
        )
    gpt2_options = {
        "norm": "layernorm",
        "position": "learned",
        "mlp": "gelu",
        "n_kv_heads": model.config.n_heads,
    }  # chapter 11c's options
    other = {
        name: getattr(model.config, name)
        for name, value in gpt2_options.items()
        if getattr(model.config, name) != value
    }
    if other:
        raise ValueError(
            "the browser runs GPT-2's architecture, and this model has "
            f"{other}; export a model without chapter 11c's options"
        )
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    tensors, arrays, offset = [], [], 0
    # a tied output projection is listed once: as the embedding
    for name, parameter in model.named_parameters():
        array = parameter.detach().cpu().float().numpy()
        if dtype == "float16" and np.abs(array).max() > FLOAT16_MAX:
            raise ValueError(
                f"{name} holds values beyond float16's range (±65504); export with"
                " --dtype float32"
            )
        # offset in numbers
        tensors.append({"name": name, "shape": list(array.shape), "offset": offset})
        arrays.append(array.astype(DTYPES[dtype]).ravel())
        offset += array.size
    manifest = {
        "format": WEB_FORMAT,
        "config": asdict(model.config),
        "vocabulary": tokenizer.chars,
        "dtype": dtype,
        "parameters": offset,
        "weights": "weights.bin",
        "tensors": tensors,
        **(about or {}),
    }
    text = json.dumps(manifest, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    out_dir = prepare_out_dir(out_dir)
    atomic_write_bytes(out_dir / "weights.bin", np.concatenate(arrays).tobytes())
    atomic_write_bytes(out_dir / "manifest.json", text.encode("utf-8"))
    return manifest


def load_web_export(folder: Path) -> tuple[GPT, CharTokenizer]:
    """Rebuild a model and its tokenizer from what ``export_model`` wrote.

    Args:
        folder: The folder holding ``manifest.json`` and the weights.

    Returns:
        ``(model, tokenizer)``, the model in evaluation mode, its weights those of the
        file (float16 ones widened to float32).

    Raises:
        FileNotFoundError: If there is no manifest.
        ValueError: If the files are not an export, or do not fit together.
    """
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; write it with `tinytransformer export-web`"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest, dict) or manifest.get("format") != WEB_FORMAT:
        raise ValueError(
            f"{path} is not a manifest written by `tinytransformer export-web`"
        )
    model = GPT(GPTConfig(**manifest["config"]))
    weights = np.fromfile(
        Path(folder) / manifest["weights"], dtype=DTYPES[manifest["dtype"]]
    )
    parameters = dict(model.named_parameters())
    names = [tensor["name"] for tensor in manifest["tensors"]]
    if sorted(names) != sorted(parameters) or weights.size != manifest["parameters"]:
        raise ValueError(
            f"the weights in {folder} do not fit their manifest; export them again"
        )
    with torch.no_grad():
        for tensor in manifest["tensors"]:
            start, size = tensor["offset"], math.prod(tensor["shape"])
            values = (
                weights[start : start + size]
                .astype(np.float32)
                .reshape(tensor["shape"])
            )
            parameters[tensor["name"]].copy_(torch.from_numpy(values))
    return model.eval(), CharTokenizer(manifest["vocabulary"])


def export_checkpoint(checkpoint: Path, out_dir: Path, dtype: str = "float16") -> dict:
    """Export a checkpoint written by ``tinytransformer train``, with where it comes
    from.

    Args:
        checkpoint: The checkpoint file.
        out_dir: The folder to write into.
        dtype: ``"float16"`` or ``"float32"``.

    Returns:
        The manifest.

    Raises:
        FileNotFoundError: If the checkpoint does not exist.
        ValueError: If it cannot be read or exported (see ``export_model``).
    """
    model, tokenizer = load_model(checkpoint)
    # a LoRA run's checkpoint: its adapters folded in (chapter 11b)
    model = merge_lora(model)
    state = load_checkpoint(checkpoint)
    # NaN (never evaluated) becomes null: JSON has no NaN
    losses = json_safe(state["losses"])
    command = [
        "tinytransformer",
        "export-web",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out_dir),
    ]
    about = {
        "checkpoint": {
            "step": state["step"],
            "train_loss": losses.get("train"),
            "val_loss": losses.get("val"),
            "data": Path(state["data_source"]).name,
            "data_sha256": state.get("data_sha256"),
        },
        "command": shlex.join(
            command + (["--dtype", dtype] if dtype != "float16" else [])
        ),
    }
    return export_model(model, tokenizer, out_dir, dtype, about)
