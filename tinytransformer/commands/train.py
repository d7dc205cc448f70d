# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/08-training.md
#   book/11-lora.md
"""``tinytransformer train`` (chapter 8): flags from the configurations, presets,
resuming, the run folder."""

import argparse
import contextlib
import functools
import inspect
import json
import re
import sys
import time
import typing
from collections.abc import Iterator
from dataclasses import Field, asdict, fields
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from tinytransformer.checkpoint import (
    config_from_checkpoint,
    load_base_model,
    load_checkpoint,
    load_model,
    tokenizer_from_checkpoint,
    weights_sha256,
)
from tinytransformer.commands.options import add_data_arguments, add_device_argument
from tinytransformer.data import TokenData, load_token_data
from tinytransformer.devices import synchronize
from tinytransformer.distributed import Distributed, init_distributed, shutdown
from tinytransformer.files import atomic_write_bytes
from tinytransformer.lora import TARGETS, apply_lora, check_rank, lora_state_dict
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.train import (
    PRESETS,
    TrainConfig,
    Trainer,
    json_safe,
    prepare_out_dir,
    preset_named,
    read_metrics,
)

MODEL_FLAGS = [f for f in fields(GPTConfig) if f.name != "vocab_size"]
TRAIN_FLAGS = list(fields(TrainConfig))


def field_descriptions(config_class: type) -> dict[str, str]:
    """Each field's description, read from the ``Attributes:`` section of the class's
    docstring."""
    attributes = (
        (inspect.getdoc(config_class) or "")
        .split("Attributes:\n", 1)[-1]
        .split("\n\n", 1)[0]
    )
    descriptions: dict[str, str] = {}
    name = ""
    for line in attributes.splitlines():
        match = re.fullmatch(r" {4}(\w+): (.*)", line)
        if match:
            name, descriptions[name] = match.groups()
        elif name:  # a continuation line of the field above
            descriptions[name] += " " + line.strip()
    return {name: text.replace("``", "") for name, text in descriptions.items()}


def _flag_type(config_class: type, name: str) -> type:
    """The field's annotation, without ``| None``: ``int``, ``float``, ``str`` or
    ``bool``."""
    annotation = typing.get_type_hints(config_class)[name]
    return (
        next(t for t in typing.get_args(annotation) if t is not type(None))
        if typing.get_args(annotation)
        else annotation
    )


def _preset_values(flag: Field, part: str) -> str:
    """``presets: default 0.002, seed 0.0001, …`` — the field's value in each preset."""

    def show(value) -> str:
        return (
            "unset"
            if value is None
            else f"{value:g}"
            if isinstance(value, float)
            else str(value).lower()
        )

    values = {
        name: show(getattr(preset, part).get(flag.name, flag.default))
        for name, preset in PRESETS.items()
    }
    if len(set(values.values())) == 1:
        return f"every preset: {values['default']}"
    return "presets: " + ", ".join(f"{name} {value}" for name, value in values.items())


def _add_config_flags(
    group: argparse._ArgumentGroup, config_class: type, flags: list[Field], part: str
) -> None:
    descriptions = field_descriptions(config_class)
    for flag in flags:
        kind = _flag_type(config_class, flag.name)
        description = descriptions[flag.name].rstrip(".")
        help_text = f"{description} ({_preset_values(flag, part)})".replace("%", "%%")
        name = "--" + flag.name.replace("_", "-")
        if kind is bool:
            group.add_argument(
                name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                name, type=kind, metavar=kind.__name__.upper(), help=help_text
            )


PRECEDENCE = (
    "Values are decided in this order, later wins: built-in defaults < --preset < the"
    " checkpoint of --resume < the flags you type. --max-steps replaces a preset's"
    " --epochs, and the other way round."
)


def add_train_command(commands: argparse._SubParsersAction) -> None:
    """Register ``tinytransformer train``."""
    parser = commands.add_parser(
        "train",
        help="train a model on a corpus",
        description=(
            "Train a GPT on the embedded corpus (this book), a named corpus, or your"
            " own text. "
        )
        + PRECEDENCE,
    )
    add_data_arguments(parser)
    parser.add_argument(
        "--preset",
        default="default",
        help=f"starting configuration: {', '.join(PRESETS)} (default: default)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=(
            "run folder for checkpoint.pt, metrics.jsonl and loss.png "
            "(default: runs/PRESET-TIME; with --resume, the checkpoint's folder)"
        ),
    )
    add_device_argument(parser)
    parser.add_argument(
        "--mps",
        action="store_true",
        help="train on the Apple GPU (same as --device mps; see chapter 9)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="synchronise every step and stop at the first NaN/Inf, naming the module",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="CKPT",
        help="continue training from this checkpoint",
    )
    parser.add_argument(
        "--new-data",
        action="store_true",
        help=(
            "with --resume: continue on a corpus other than the checkpoint's, or one"
            " that changed"
        ),
    )
    add_init_arguments(parser)  # --init and --lora (chapter 11b)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--print-config",
        action="store_true",
        help=(
            "print the effective configuration, parameters, tokens per step, steps and"
            " the time of one step on this machine as JSON, then exit without training"
        ),
    )
    _add_config_flags(
        parser.add_argument_group("architecture (see GPTConfig)"),
        GPTConfig,
        MODEL_FLAGS,
        "model",
    )
    _add_config_flags(
        parser.add_argument_group("training (see TrainConfig)"),
        TrainConfig,
        TRAIN_FLAGS,
        "train",
    )
    parser.set_defaults(run=run_train)


def resolve_train_config(base: dict, typed: dict) -> TrainConfig:
    """The training configuration: ``base`` (a preset's or a checkpoint's values) under
    the typed flags.

    Args:
        base: Field values from the preset or the checkpoint.
        typed: Field values of the flags the reader typed.

    Returns:
        The configuration; a typed ``max_steps`` clears the base's ``epochs`` and vice
        versa.

    Raises:
        ValueError: If both ``max_steps`` and ``epochs`` were typed, or a value is out
            of range.
    """
    if "max_steps" in typed and "epochs" in typed:
        raise ValueError(
            "--max-steps and --epochs both set the length of the run; drop one of them"
        )
    if "max_steps" in typed:
        base = {**base, "epochs": None}
    return TrainConfig(**{**base, **typed})


def run_train(args: argparse.Namespace) -> int:
    """``tinytransformer train``: returns the exit status (130 or 143 when stopped by a
    signal)."""
    model_typed = {
        f.name: getattr(args, f.name)
        for f in MODEL_FLAGS
        if getattr(args, f.name) is not None
    }
    train_typed = {
        f.name: getattr(args, f.name)
        for f in TRAIN_FLAGS
        if getattr(args, f.name) is not None
    }
    # before anything is started: an unknown name is refused at once
    preset_named(args.preset)
    distributed, device = init_distributed("mps" if args.mps else args.device)
    try:
        return _train(args, model_typed, train_typed, distributed, device)
    finally:
        shutdown(distributed)


def _resolve(
    args: argparse.Namespace, model_typed: dict, train_typed: dict
) -> tuple[GPTConfig, TrainConfig, TokenData, dict | None, GPT | None, dict | None]:
    """Defaults < preset < checkpoint < typed flags: the configurations, the data, the
    checkpoint, the weights.

    The last three are ``None`` for a fresh run. The weights come from ``--init`` or a
    resumed LoRA run, and the last item names the base weights a LoRA run adapts
    (chapter 11b).
    """
    if args.init is not None or args.lora is not None:
        return _resolve_init(args, model_typed, train_typed)
    if not args.resume:
        preset = preset_named(args.preset)
        data = load_token_data(args.data, tokenizer=args.tokenizer or preset.tokenizer)
        model_config = GPTConfig(
            **{**preset.model, **model_typed, "vocab_size": data.tokenizer.vocab_size}
        )
        return (
            model_config,
            resolve_train_config(preset.train, train_typed),
            data,
            None,
            None,
            None,
        )
    state = load_checkpoint(args.resume)
    if not state["optimizer"]:
        raise ValueError(
            f"{args.resume} holds no optimiser state (`tinytransformer merge` "
            f"wrote it); start a new run from its weights with --init {args.resume}"
        )
    _refuse_changes("architecture", state["model_config"], model_typed, args.resume)
    model_config = config_from_checkpoint(GPTConfig, state["model_config"], args.resume)
    # refuses unknown or damaged fields
    config_from_checkpoint(TrainConfig, state["train_config"], args.resume)
    tokenizer = tokenizer_from_checkpoint(state, model_config, args.resume)
    if args.tokenizer is not None and args.tokenizer != tokenizer.name:
        raise ValueError(
            f"{args.resume} was trained with tokenizer {tokenizer.name!r}, not"
            f" {args.tokenizer!r}; drop --tokenizer or start a new run"
        )
    if args.data is None:
        print(
            f"reading the corpus the checkpoint was trained on: {state['data_source']}",
            file=sys.stderr,
        )
    data = load_token_data(args.data or state["data_source"], tokenizer=tokenizer)
    if (
        state.get("data_sha256", data.corpus_sha256) != data.corpus_sha256
        and not args.new_data
    ):
        raise ValueError(
            f"{data.source} is not the text {args.resume} was trained on (another"
            " corpus, or it changed since); to continue training on it deliberately,"
            " add --new-data"
        )
    # a LoRA run's checkpoint holds adapters: base and adapters come from load_model
    # (chapter 11b)
    adapted = load_model(args.resume)[0] if state.get("lora") else None
    config = resolve_train_config(state["train_config"], train_typed)
    return model_config, config, data, state, adapted, state.get("lora")


def _train(
    args: argparse.Namespace,
    model_typed: dict,
    train_typed: dict,
    distributed: Distributed,
    device: torch.device,
) -> int:
    model_config, config, data, state, initial, base = _resolve(
        args, model_typed, train_typed
    )
    if args.print_config:
        print(
            json.dumps(
                _describe_run(args, model_config, config, data, device, initial),
                indent=2,
            )
        )
        return 0
    out_dir = args.out or (
        args.resume.parent if args.resume else _new_run_folder(args.preset)
    )
    with lock_run_folder(out_dir) if distributed.is_main else contextlib.nullcontext():
        if distributed.is_main:
            _check_run_folder(out_dir, args.resume)
        # the initial weights (a resumed run then loads its own)
        torch.manual_seed(config.seed)
        model = (
            _with_adapters(args, initial) if initial is not None else GPT(model_config)
        )
        # a LoRA run's trainer saves only the adapters (chapter 11b)
        make_trainer = (
            Trainer if base is None else functools.partial(LoRATrainer, base=base)
        )
        trainer = make_trainer(
            model,
            config,
            data,
            out_dir=out_dir,
            device=device,
            debug=args.debug,
            progress=not args.no_progress,
            distributed=distributed,
        )
        if state is not None:
            # from the configuration, typed flags included
            planned_steps = trainer.max_steps
            trainer.load_state_dict(state)
            if {"max_steps", "epochs"} & train_typed.keys():
                trainer.max_steps = planned_steps
            if distributed.is_main:
                _forget_metrics_after(out_dir / "metrics.jsonl", trainer.step)
        if distributed.is_main:
            run = json.dumps(_run_record(args, model_config, config, data), indent=2)
            atomic_write_bytes(out_dir / "config.json", run.encode())
            parameters = trainer.model.parameters()
            # LoRA: fewer
            trained = sum(p.numel() for p in parameters if p.requires_grad)
            print(
                f"training {trained:,} parameters on {device} ×"
                f" {distributed.world_size} with {data.source} ({len(data.train):,}"
                f" training tokens, tokenizer {data.tokenizer.name}), global batch"
                f" {trainer.tokens_per_step:,} tokens, into {out_dir}",
                file=sys.stderr,
            )
        losses = trainer.fit()
    if distributed.is_main:
        print(
            json.dumps(
                json_safe(
                    {
                        "step": trainer.step,
                        **losses,
                        "checkpoint": str(out_dir / "checkpoint.pt"),
                    }
                )
            )
        )
    return 128 + trainer.stop_signal if trainer.stop_signal else 0


def _run_record(
    args: argparse.Namespace,
    model_config: GPTConfig,
    config: TrainConfig,
    data: TokenData,
) -> dict:
    """What a run is: where it started from, its data and tokenizer, and both
    configurations."""
    lora = (
        {"rank": args.lora, "alpha": args.lora_alpha, "targets": args.lora_targets}
        if args.lora
        else None
    )
    return {
        "preset": args.preset,
        "resume": str(args.resume) if args.resume else None,
        "init": str(args.init) if args.init else None,
        "lora": lora,
        "data": data.source,
        "tokenizer": data.tokenizer.name,
        "model": asdict(model_config),
        "train": asdict(config),
    }


def _describe_run(
    args: argparse.Namespace,
    model_config: GPTConfig,
    config: TrainConfig,
    data: TokenData,
    device: torch.device,
    initial: GPT | None = None,
) -> dict:
    """The effective configuration, and the size and speed of a step measured on this
    machine."""
    torch.manual_seed(config.seed)
    model = _with_adapters(args, initial) if initial is not None else GPT(model_config)
    trainer = Trainer(model, config, data, device=device, progress=False)
    trainer.train_step()  # warm-up
    started = time.perf_counter()
    trainer.train_step()
    synchronize(trainer.device)
    return {
        **_run_record(args, model_config, config, data),
        "parameters": trainer.model.num_parameters(),
        "tokens_per_step": trainer.tokens_per_step,
        "steps": trainer.max_steps,
        "seconds_per_step": round(time.perf_counter() - started, 4),
    }


@contextlib.contextmanager
def lock_run_folder(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder (``.lock`` inside it) for as long as the
    block runs.

    Raises:
        ValueError: If another run holds it.
    """
    prepare_out_dir(out_dir)
    lock = FileLock(out_dir / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ValueError(
            f"another run is using {out_dir} (it holds {out_dir / '.lock'}); wait for"
            " it to finish, or choose another --out"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _new_run_folder(preset: str) -> Path:
    """``runs/PRESET-TIME``, with ``-2``, ``-3``, … when a run started in the same
    second took it."""
    name = Path("runs") / f"{preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    candidate, suffix = name, 1
    while True:
        try:
            candidate.mkdir(parents=True)  # atomic: exactly one run creates each name
            return candidate
        except FileExistsError:
            suffix += 1
            candidate = name.with_name(f"{name.name}-{suffix}")


def _forget_metrics_after(path: Path, step: int) -> None:
    """Drop the records a killed run logged after its last checkpoint (and a torn last
    line)."""
    if path.exists():
        kept = "".join(
            json.dumps(record) + "\n" for record in read_metrics(path, up_to_step=step)
        )
        atomic_write_bytes(path, kept.encode())


def _check_run_folder(out_dir: Path, resume: Path | None) -> None:
    """A new run needs a folder without a run in it; a resumed run, the checkpoint's own
    folder or an empty one."""
    existing = [
        name for name in ("checkpoint.pt", "metrics.jsonl") if (out_dir / name).exists()
    ]
    if resume is not None and out_dir.resolve() == resume.resolve().parent:
        return
    if existing:
        what = (
            "continue it with --resume, or choose another --out"
            if resume is None
            else (
                f"resume into {resume.parent} (the checkpoint's folder) or into an"
                " empty --out"
            )
        )
        raise ValueError(
            f"{out_dir} already holds {' and '.join(existing)} of another run; {what}"
        )


def _refuse_changes(what: str, stored: dict, requested: dict, path: Path) -> None:
    differences = [
        f"{name} {stored[name]} (checkpoint) vs {value} (asked)"
        for name, value in requested.items()
        if stored.get(name) != value
    ]
    if differences:
        raise ValueError(
            f"--resume {path}: the {what} differs: {'; '.join(differences)}; resume"
            " without those flags"
        )


def add_init_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--init``, ``--lora``, ``--lora-alpha`` and ``--lora-targets`` to
    ``tinytransformer train``."""
    group = parser.add_argument_group("fine-tuning (see chapter 11b)")
    group.add_argument(
        "--init",
        metavar="SOURCE",
        help=(
            "start from these weights instead of random ones: a Hugging Face GPT-2 hub"
            " name (gpt2, ...) or pretrained directory, or one of our checkpoints; they"
            " fix the architecture and the tokenizer"
        ),
    )
    group.add_argument(
        "--lora",
        type=int,
        metavar="RANK",
        help=(
            "with --init: freeze the weights and train LoRA adapters of this rank; each"
            " checkpoint holds the adapters and names the base (tinytransformer merge"
            " makes a plain checkpoint)"
        ),
    )
    group.add_argument(
        "--lora-alpha",
        type=float,
        default=8.0,
        metavar="FLOAT",
        help="with --lora: scale each update by alpha / rank (default: 8)",
    )
    group.add_argument(
        "--lora-targets",
        default=",".join(TARGETS),
        metavar="NAMES",
        help=(
            "with --lora: the projections to adapt, comma-separated from"
            f" {', '.join(TARGETS)} (default: all of them)"
        ),
    )


def _lora_target_names(text: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in TARGETS]
    if unknown or not names:
        raise ValueError(
            f"--lora-targets {text!r}: choose one or more of {', '.join(TARGETS)},"
            " comma-separated"
        )
    return names


def _resolve_init(
    args: argparse.Namespace, model_typed: dict, train_typed: dict
) -> tuple[GPTConfig, TrainConfig, TokenData, None, GPT, dict | None]:
    """``--init``: the weights with their architecture and tokenizer, the preset's
    training configuration, and for ``--lora`` the reference to the base that
    checkpoints record.
    """
    if args.init is None:
        raise ValueError(
            "--lora adapts pretrained weights: add --init SOURCE (a GPT-2 directory or"
            " a checkpoint)"
        )
    if args.resume is not None:
        raise ValueError(
            "--init starts a new run from a model's weights and --resume continues a"
            " run: use one"
        )
    if model_typed:
        flags = ", ".join("--" + name.replace("_", "-") for name in model_typed)
        raise ValueError(
            f"--init {args.init}: the weights fix the architecture; drop {flags}"
        )
    if args.lora is not None:
        check_rank(args.lora)
        if not 0 < args.lora_alpha < float("inf"):
            raise ValueError(
                f"--lora-alpha must be a positive number, got {args.lora_alpha}"
            )
        _lora_target_names(args.lora_targets)
    preset = preset_named(args.preset)
    try:
        model, tokenizer = load_base_model(args.init)
    except (ValueError, FileNotFoundError) as error:
        raise ValueError(f"--init {error}") from None
    if args.tokenizer is not None and args.tokenizer != tokenizer.name:
        raise ValueError(
            f"{args.init} was trained with tokenizer {tokenizer.name!r}, not"
            f" {args.tokenizer!r}; drop --tokenizer: the weights only fit the token ids"
            " they were trained on"
        )
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(
            f"{args.init} has {model.config.vocab_size} token embeddings but its"
            f" tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens; it"
            " cannot be fine-tuned here"
        )
    data = load_token_data(args.data, tokenizer=tokenizer)
    base = None
    if args.lora is not None:
        source = (
            str(Path(args.init).resolve()) if Path(args.init).exists() else args.init
        )  # else a hub name
        base = {"base": source, "base_sha256": weights_sha256(model)}
    return (
        model.config,
        resolve_train_config(preset.train, train_typed),
        data,
        None,
        model,
        base,
    )


def _with_adapters(args: argparse.Namespace, model: GPT) -> GPT:
    """The loaded model in training mode, with LoRA adapters when ``--lora`` asks for
    them."""
    model.train()
    if args.lora is not None:
        apply_lora(
            model, args.lora, args.lora_alpha, _lora_target_names(args.lora_targets)
        )
    return model


class LoRATrainer(Trainer):
    """A trainer whose checkpoints hold only the adapters, and name the weights they
    adapt.

    Args:
        *args: As for ``Trainer``; the model has ``LoRALinear`` layers (``apply_lora``).
        base: ``{"base": source, "base_sha256": fingerprint}`` of the pretrained
            weights.
        **kwargs: As for ``Trainer``.
    """

    def __init__(self, *args, base: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.base = base

    def state_dict(self) -> dict:
        return {
            **super().state_dict(),
            "model": lora_state_dict(self.model),
            "lora": dict(self.base),
        }

    def load_state_dict(self, state: dict) -> None:
        adapters = {
            name: tensor
            for name, tensor in state["model"].items()
            if name != "lora_alpha"
        }
        super().load_state_dict(
            {**state, "model": {**self.model.state_dict(), **adapters}}
        )
