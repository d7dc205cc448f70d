# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/08-training.md
#   book/11-lora.md
"""Checkpoints: the file format, writing it atomically, reading it back with every check
(chapter 8)."""

import typing
from dataclasses import fields
from pathlib import Path

import torch

from tinytransformer.files import atomic_write
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.tokenizer import Tokenizer, tokenizer_from_dict


def write_checkpoint(state: dict, path: Path) -> None:
    """``torch.save`` through [`atomic_write`][tinytransformer.files.atomic_write]."""
    atomic_write(path, lambda file: torch.save(state, file))


CHECKPOINT_FORMAT = "tinytransformer-checkpoint-1"
CHECKPOINT_FIELDS = {
    "format": str,
    "model_config": dict,
    "train_config": dict,
    "tokenizer": dict,
    "data_source": str,
    "model": dict,
    "optimizer": dict,
    "step": int,
    "max_steps": int,
    "losses": dict,
    "rng": dict,
}


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by the trainer, with only tensors and plain types
    inside.

    Args:
        path: The checkpoint file.

    Returns:
        The checkpoint's contents.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the file is truncated, corrupt, or not a tinytransformer
            checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(
            f"{path} is a folder; pass the checkpoint file in it, e.g."
            f" {path / 'checkpoint.pt'}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; train one with `tinytransformer train"
            " --out DIR`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    # truncated zip, foreign pickle, text, random bytes: all unreadable
    except Exception as error:
        reason = (
            str(error).splitlines()[0][:120] if str(error) else type(error).__name__
        )
        raise ValueError(
            f"{path} is not a readable checkpoint (not written by torch.save, or cut"
            f" short): {reason}"
        ) from None
    missing = [
        key
        for key in CHECKPOINT_FIELDS
        if not isinstance(state, dict) or key not in state
    ]
    if missing:
        raise ValueError(
            f"{path} is not a tinytransformer checkpoint: it lacks {', '.join(missing)}"
        )
    wrong = [
        f"{key} is {type(state[key]).__name__}, not {kind.__name__}"
        for key, kind in CHECKPOINT_FIELDS.items()
        if not isinstance(state[key], kind) or isinstance(state[key], bool)
    ]
    if wrong:
        raise ValueError(f"{path} is damaged: {'; '.join(wrong)}")
    if state["format"] != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} has the format {state['format']!r}, and this version of"
            f" tinytransformer reads {CHECKPOINT_FORMAT!r}: a checkpoint from a newer"
            " version? Upgrade tinytransformer"
        )
    if not 0 <= state["step"] <= state["max_steps"]:
        raise ValueError(
            f"{path} is damaged: step {state['step']} is not between 0 and max_steps"
            f" {state['max_steps']}"
        )
    return state


def config_from_checkpoint(config_class: type, values: dict, path: Path) -> typing.Any:
    """Build ``GPTConfig`` or ``TrainConfig`` from a checkpoint's values, with a message
    for every failure.

    Raises:
        ValueError: For a field this version does not know (a newer checkpoint), or an
            impossible value.
    """
    unknown = sorted(set(values) - {f.name for f in fields(config_class)})
    if unknown:
        raise ValueError(
            f"{path}: {config_class.__name__} has no field"
            f" {', '.join(map(repr, unknown))}; the checkpoint comes from a newer"
            " version of tinytransformer: upgrade it"
        )
    try:
        return config_class(**values)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{path}: the stored {config_class.__name__} is damaged: {error}"
        ) from None


def tokenizer_from_checkpoint(
    state: dict, model_config: GPTConfig, path: Path
) -> Tokenizer:
    """The checkpoint's tokenizer, checked against the model's vocabulary.

    Raises:
        ValueError: If the description is damaged or its vocabulary is not the model's.
    """
    try:
        tokenizer = tokenizer_from_dict(state["tokenizer"])
    except ValueError as error:
        raise ValueError(f"{path}: the stored tokenizer is damaged: {error}") from None
    if tokenizer.vocab_size != model_config.vocab_size:
        raise ValueError(
            f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the model"
            f" {model_config.vocab_size}"
        )
    return tokenizer


def load_model(
    path: str | Path, device: torch.device | str = "cpu", base: str | Path | None = None
) -> tuple[GPT, Tokenizer]:
    """Rebuild the trained model and its tokenizer from a checkpoint (no corpus needed).

    Args:
        path: The checkpoint file.
        device: Where to put the model.
        base: For a checkpoint of LoRA adapters (chapter 11b), the pretrained weights to
            put them on, instead of the source the checkpoint records.

    Returns:
        ``(model, tokenizer)``, the model in evaluation mode.

    Raises:
        FileNotFoundError: If there is no such file.
        ValueError: If the checkpoint is unreadable, or its weights do not fit its
            configuration or are not finite.
    """
    state = load_checkpoint(path)
    if state.get("lora"):  # adapters, and the base weights they adapt (chapter 11b)
        model, tokenizer = load_adapted_model(state, Path(path), base)
    else:
        model_config = config_from_checkpoint(
            GPTConfig, state["model_config"], Path(path)
        )
        tokenizer = tokenizer_from_checkpoint(state, model_config, Path(path))
        model = GPT(model_config)
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as error:
            raise ValueError(
                f"{path}: the weights do not fit the stored configuration: {error}"
            ) from None
    broken = [
        name
        for name, weight in model.state_dict().items()
        if not torch.isfinite(weight).all()
    ]
    if broken:
        raise ValueError(
            f"{path} holds NaN or infinite weights (in {', '.join(broken[:3])}, …): it"
            " comes from a run that diverged; use an earlier checkpoint"
        )
    return model.to(device).eval(), tokenizer


def weights_sha256(model: torch.nn.Module) -> str:
    """A fingerprint of a model's weights: SHA-256 over each tensor's name, shape, type,
    bytes."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}\n".encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        )
    return digest.hexdigest()


def load_base_model(source: str | Path) -> tuple[GPT, Tokenizer]:
    """Pretrained weights and their tokenizer: what ``train --init`` and adapters start
    from.

    Args:
        source: One of our checkpoints (the file, or the run folder that holds
            ``checkpoint.pt``; an adapter checkpoint comes back merged), a Hugging Face
            GPT-2 pretrained directory (``config.json`` + ``model.safetensors``), or a
            hub name such as ``"gpt2"``.

    Returns:
        ``(model, tokenizer)``: a plain ``GPT`` on the CPU, in evaluation mode.

    Raises:
        ValueError: If ``source`` is none of these, or cannot be read or downloaded.
    """
    from tinytransformer.gpt2 import HUB_NAME, load_gpt2
    from tinytransformer.lora import merge_lora
    from tinytransformer.tokenizer import get_tokenizer

    path = Path(source)
    if (
        path.is_dir() and (path / "checkpoint.pt").is_file()
    ):  # our run folder (its config.json is the run's)
        path = path / "checkpoint.pt"
    elif path.is_dir() and (path / "config.json").is_file():
        try:
            return load_gpt2(path), get_tokenizer("gpt2")
        except FileNotFoundError as error:
            raise ValueError(str(error)) from None
    if path.is_file():
        model, tokenizer = load_model(path)
        return merge_lora(model).eval(), tokenizer
    if not path.exists() and HUB_NAME.fullmatch(str(source)):
        # a hub name: downloaded, or a ValueError that says how to download by hand
        return load_gpt2(str(source)), get_tokenizer("gpt2")
    what = (
        "does not exist"
        if not path.exists()
        else (
            "is a folder with neither config.json (a GPT-2 pretrained directory) "
            "nor checkpoint.pt"
        )
    )
    raise ValueError(
        f"{source} {what}; pass a Hugging Face GPT-2 pretrained directory or hub name, "
        "or a checkpoint written by tinytransformer train"
    )


def load_adapted_model(
    state: dict, path: Path, base: str | Path | None = None
) -> tuple[GPT, Tokenizer]:
    """The model of an adapter checkpoint: its base weights, checked, with the adapters
    on.

    Args:
        state: The checkpoint as ``load_checkpoint`` returns it; ``state["lora"]`` names
            the base.
        path: Where the checkpoint was read from, for the messages.
        base: Pretrained weights to use instead of ``state["lora"]["base"]``.

    Returns:
        ``(model, tokenizer)``: the base, its ``LoRALinear`` layers holding the
        adapters.

    Raises:
        ValueError: If the base cannot be loaded, or is not the one the adapters were
            trained on: other shapes (both named), another configuration, or other
            weights (another fingerprint).
    """
    from tinytransformer.lora import load_lora

    reference = state["lora"]
    if not isinstance(reference, dict) or not all(
        isinstance(reference.get(key), str) for key in ("base", "base_sha256")
    ):
        raise ValueError(
            f"{path} is damaged: its lora entry needs the strings base and base_sha256"
        )
    source = reference["base"] if base is None else base
    try:
        model, _ = load_base_model(source)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(
            f"{path} holds LoRA adapters of the base {source}, which does not load:"
            f" {error}; pass the base's new place (load_model(..., base=...), merge"
            " --base)"
        ) from None
    fingerprint = weights_sha256(model)
    try:
        load_lora(model, state["model"])
    except ValueError as error:
        raise ValueError(
            f"{path} holds LoRA adapters that do not fit the base {source}: {error}"
        ) from None
    stored = config_from_checkpoint(GPTConfig, state["model_config"], path)
    differences = [
        f"{f.name} {stored_value} (trained on) vs {base_value}"
        for f in fields(GPTConfig)
        if (stored_value := getattr(stored, f.name))
        != (base_value := getattr(model.config, f.name))
    ]
    if differences:
        raise ValueError(
            f"{path}: the base {source} is not the model its adapters were trained on: "
            + "; ".join(differences)
        )
    if fingerprint != reference["base_sha256"]:
        raise ValueError(
            f"{path}: the base {source} has the right shapes but other weights than "
            f"the adapters were trained on (sha256 {fingerprint[:12]}…, expected "
            f"{reference['base_sha256'][:12]}…); pass the base they were trained on"
        )
    return model, tokenizer_from_checkpoint(state, stored, path)
