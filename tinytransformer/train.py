# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/08-training.md
"""Training: loss, AdamW, the learning-rate schedule, the loop, checkpoints,
`tinytransformer train` (chapter 8)."""

import contextlib
import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from tinytransformer.checkpoint import CHECKPOINT_FORMAT, write_checkpoint
from tinytransformer.data import TokenData, get_batch
from tinytransformer.devices import (
    PRECISIONS,
    NonFiniteError,
    autocast,
    synchronize,
    watch_for_non_finite,
)
from tinytransformer.distributed import Distributed, all_reduce_mean, any_rank
from tinytransformer.files import atomic_write, disk_full
from tinytransformer.generation import SamplingOptions
from tinytransformer.model import GPT
from tinytransformer.tokenizer import DEFAULT_TOKENIZER


@dataclass
class TrainConfig:
    """Every hyperparameter of training.

    Attributes:
        batch_size: Sequences per micro-batch, ``B``.
        max_steps: Optimiser steps to train for (unless ``epochs`` is set).
        epochs: Passes over the training tokens, converted to steps from the corpus
            size; replaces ``max_steps``.
        learning_rate: Peak learning rate, reached at the end of the warm-up.
        min_learning_rate: Learning rate at the end of the cosine decay.
        warmup_steps: Steps of linear warm-up.
        weight_decay: AdamW weight decay, applied to matrices only.
        beta1: Adam's decay rate for the gradient average.
        beta2: Adam's decay rate for the squared-gradient average.
        grad_clip: Largest allowed global gradient norm (0 disables clipping).
        grad_accum_steps: Micro-batches whose gradients are summed into one step.
        eval_interval: Evaluate, sample and save a checkpoint every this many steps.
        eval_batches: Random batches averaged for each evaluation.
        sample_tokens: Length of the sample generated at each evaluation (at most
            10,000).
        log_interval: Steps between progress updates and metric writes.
        optimizer: ``"adamw"``, or ``"adam"`` (no weight decay, as in the original
            project).
        seed: Seed for initialisation, batches and dropout.
        dtype: Precision of the forward pass in training and evaluation: ``"auto"``
            (bfloat16 autocast on a CUDA GPU that supports it, else float32),
            ``"float32"`` or ``"bfloat16"`` (chapter 9).
        compile: Run the model through ``torch.compile`` in training and evaluation
            (chapter 12).
    """

    batch_size: int = 16
    max_steps: int = 1000
    epochs: float | None = None
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    eval_interval: int = 250
    eval_batches: int = 20
    sample_tokens: int = 200
    log_interval: int = 10
    optimizer: str = "adamw"
    seed: int = 1337
    dtype: str = "auto"
    compile: bool = False

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        for name in (
            "batch_size",
            "max_steps",
            "grad_accum_steps",
            "eval_interval",
            "eval_batches",
            "log_interval",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be at least 1, got {getattr(self, name)}"
                )
        for name in ("warmup_steps", "sample_tokens", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"{name} must not be negative, got {getattr(self, name)}"
                )
        if self.epochs is not None and self.epochs <= 0:
            raise ValueError(f"epochs must be positive, got {self.epochs}")
        if not 0 < self.min_learning_rate <= self.learning_rate:
            raise ValueError(
                f"need 0 < min_learning_rate ({self.min_learning_rate}) <="
                f" learning_rate ({self.learning_rate})"
            )
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(
                f"beta1 ({self.beta1}) and beta2 ({self.beta2}) must be in [0, 1)"
            )
        if self.sample_tokens > 10_000:
            raise ValueError(
                f"sample_tokens is at most 10,000, got {self.sample_tokens}; "
                "use `tinytransformer generate` for long texts"
            )
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"seed must be in [0, 2**63), got {self.seed}")
        if self.optimizer not in ("adamw", "adam"):
            raise ValueError(
                f"optimizer must be 'adamw' or 'adam', got {self.optimizer!r}"
            )
        if self.dtype not in PRECISIONS:
            raise ValueError(
                f"dtype must be one of {', '.join(PRECISIONS)}, got {self.dtype!r}"
            )


def learning_rate(step: int, config: TrainConfig, max_steps: int) -> float:
    """Linear warm-up to ``config.learning_rate``, then cosine decay to
    ``config.min_learning_rate``.

    Args:
        step: The optimiser step about to be taken, from 0.
        config: Supplies the peak and minimum rates and the warm-up length.
        max_steps: Step at which the decay reaches its minimum.

    Returns:
        The learning rate for this step.
    """
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = min(
        1.0, (step - config.warmup_steps) / max(1, max_steps - config.warmup_steps)
    )
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_learning_rate + cosine * (
        config.learning_rate - config.min_learning_rate
    )


def configure_optimizer(
    model: GPT, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """AdamW with weight decay on matrices only (or plain Adam, for the original
    project's preset).

    Only parameters with ``requires_grad`` are optimised, so a model whose weights are
    frozen — LoRA's adapters around a pretrained model (chapter 11b) — hands the
    optimiser just what trains.

    Args:
        model: The model whose parameters to optimise.
        config: Learning rate, betas, weight decay and the optimiser's name.
        device: Where the parameters live (decides whether the fused kernel is
            available).

    Returns:
        The optimiser.
    """
    betas = (config.beta1, config.beta2)
    fused = device.type in ("cpu", "cuda")
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        return torch.optim.Adam(
            trainable, lr=config.learning_rate, betas=betas, fused=fused
        )
    matrices = [p for p in trainable if p.ndim >= 2]  # linear and embedding weights
    others = [p for p in trainable if p.ndim < 2]  # biases, LayerNorm scales and shifts
    groups = [
        {"params": matrices, "weight_decay": config.weight_decay},
        {"params": others, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=betas, fused=fused)


class Trainer:
    """Trains a [`GPT`][tinytransformer.model.GPT] it is handed on tokenised data.

    The caller builds or loads the model — freshly initialised, from a checkpoint, or
    GPT-2's weights (chapter 11) — and the trainer owns what happens to it:
    optimisation, evaluation, logging and checkpoints. It moves the model to ``device``
    and trains it in place.

    Args:
        model: The model to train; its ``config.vocab_size`` must equal the tokenizer's.
        config: The training hyperparameters.
        data: Training and validation tokens with their tokenizer (chapter 7).
        out_dir: Folder for ``checkpoint.pt``, ``metrics.jsonl`` and ``loss.png``;
            ``None`` writes nothing.
        device: Where to train (see
            [`select_device`][tinytransformer.devices.select_device]).
        debug: Check every module's output and gradient for NaN/Inf and synchronise
            every step.
        progress: Show a progress bar on standard error.
        distributed: This process's place in a torchrun job (chapter 13); the default is
            a single process.

    Raises:
        ValueError: If the configuration does not fit the data or the output folder is
            not usable.
    """

    def __init__(
        self,
        model: GPT,
        config: TrainConfig,
        data: TokenData,
        out_dir: Path | None = None,
        device: torch.device | str = "cpu",
        debug: bool = False,
        progress: bool = True,
        distributed: Distributed | None = None,
    ):
        model_config = model.config
        if model_config.vocab_size != data.tokenizer.vocab_size:
            raise ValueError(
                f"vocab_size ({model_config.vocab_size}) must equal the tokenizer's "
                f"({data.tokenizer.vocab_size})"
            )
        for split, tokens in (("training", data.train), ("validation", data.val)):
            if len(tokens) < model_config.max_seq_len + 1:
                raise ValueError(
                    f"the {split} split has {len(tokens)} tokens, fewer than one window"
                    f" of max_seq_len + 1 = {model_config.max_seq_len + 1}; use more"
                    " text or a smaller --max-seq-len"
                )
        self.model_config, self.config, self.data = model_config, config, data
        self.distributed = distributed or Distributed()
        self.device, self.debug = torch.device(device), debug
        self.progress = progress and self.distributed.is_main
        self.out_dir = (
            prepare_out_dir(out_dir)
            if out_dir is not None and self.distributed.is_main
            else None
        )
        self.tokens_per_step = (
            config.batch_size
            * self.distributed.world_size
            * model_config.max_seq_len
            * config.grad_accum_steps
        )  # the whole job's
        self.steps_per_epoch = max(1, len(data.train) // self.tokens_per_step)
        self.max_steps = (
            math.ceil(config.epochs * self.steps_per_epoch)
            if config.epochs
            else config.max_steps
        )
        self.model = model.to(self.device)
        # the model wrapped for a torchrun job (chapter 13)
        self.ddp: DistributedDataParallel | None = None
        if self.distributed.enabled:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=device_ids)
        # what the step runs
        self.training_model: Callable[..., Any] = self.ddp or self.model
        self.evaluation_model: Callable[..., Any] = self.model
        if config.compile:  # compiled on first use (chapter 12)
            self.training_model = torch.compile(self.training_model)
            self.evaluation_model = torch.compile(self.model)
        self.optimizer = configure_optimizer(self.model, config, self.device)
        self.batch_generator = torch.Generator().manual_seed(config.seed)
        self.step = 0
        self.losses = {
            "train": float("nan"),
            "val": float("nan"),
            "average": float("nan"),
        }
        # the global gradient norm of the last step, before clipping
        self.grad_norm = torch.zeros(())
        self.stop_signal: int | None = None
        if debug:
            watch_for_non_finite(self.model)

    def train_step(self) -> torch.Tensor:
        """Take one optimiser step (``grad_accum_steps`` micro-batches).

        Returns:
            The step's mean training loss, a 0-dimensional tensor on the device.

        Raises:
            NonFiniteError: In debug mode, naming the module, step and micro-batch of
                the first NaN/Inf.
        """
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, config, self.max_steps)
        step_loss = torch.zeros((), device=self.device)
        rank, world_size = self.distributed.rank, self.distributed.world_size
        for micro_batch in range(config.grad_accum_steps):
            x, y = get_batch(
                self.data.train,
                config.batch_size * world_size,
                self.model_config.max_seq_len,
                self.batch_generator,
                self.device,
            )  # the global batch, (N·B, T) each
            x, y = (
                t[rank * config.batch_size : (rank + 1) * config.batch_size]
                for t in (x, y)
            )  # this rank's (B, T)
            last = micro_batch == config.grad_accum_steps - 1
            no_sync = (
                self.ddp.no_sync()
                if self.ddp is not None and not last
                else contextlib.nullcontext()
            )
            try:
                with no_sync, autocast(self.device, config.dtype):
                    # the mean next-token loss (chapter 6's forward)
                    _, loss = self.training_model(x, y)
                (loss / config.grad_accum_steps).backward()
            except NonFiniteError as error:
                raise NonFiniteError(
                    f"{error} at step {self.step}, micro-batch {micro_batch}"
                ) from None
            step_loss += loss.detach() / config.grad_accum_steps
        # inf: measure, never clip
        max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
        self.grad_norm = torch.nn.utils.clip_grad_norm_(
            self.model.parameters(), max_norm
        )  # before clipping
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.debug:
            synchronize(self.device)
        self.step += 1
        return step_loss

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss over ``eval_batches`` random batches of each split.

        Returns:
            ``{"train": loss, "val": loss}``; empty if a stop was requested (Ctrl-C)
            during the evaluation.
        """
        # independent of training
        generator = torch.Generator().manual_seed(self.config.seed + self.step)
        self.model.eval()
        losses = {}
        for split, tokens in (("train", self.data.train), ("val", self.data.val)):
            total = torch.zeros((), device=self.device)
            for _ in range(self.config.eval_batches):
                if self.stop_signal:  # answer Ctrl-C within one batch
                    self.model.train()
                    return {}
                x, y = get_batch(
                    tokens,
                    self.config.batch_size,
                    self.model_config.max_seq_len,
                    generator,
                    self.device,
                )
                with autocast(self.device, self.config.dtype):
                    total += self.evaluation_model(x, y)[1]
            losses[split] = total.item() / self.config.eval_batches
        self.model.train()
        return losses

    def sample(self, prompt_tokens: int = 8, temperature: float = 0.8) -> str:
        """Continue the first ``prompt_tokens`` tokens of the validation split.

        Returns:
            The prompt and its continuation, decoded (shorter if a stop was requested
            meanwhile).
        """
        tokens = torch.tensor(
            [self.data.val[:prompt_tokens].tolist()], device=self.device
        )  # (1, T)
        generator = torch.Generator(device=self.device).manual_seed(
            self.config.seed + self.step
        )
        wanted = tokens.shape[1] + max(1, self.config.sample_tokens)
        # in pieces, so that Ctrl-C is answered
        while tokens.shape[1] < wanted and not self.stop_signal:
            piece = min(64, wanted - tokens.shape[1])
            tokens = self.model.generate(
                tokens,
                piece,
                SamplingOptions(temperature=temperature),
                generator=generator,
            )
        return self.data.tokenizer.decode(tokens[0].tolist())

    def state_dict(self) -> dict:
        """Everything needed to resume: weights, optimiser, step, losses, configs,
        tokenizer, RNG states."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.config),
            "tokenizer": self.data.tokenizer.to_dict(),
            "data_source": self.data.source,
            "data_sha256": self.data.corpus_sha256,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "max_steps": self.max_steps,
            "losses": dict(self.losses),
            "rng": {
                "torch": torch.get_rng_state(),
                "batches": self.batch_generator.get_state(),
            },
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state saved by ``state_dict`` into this trainer (same
        architecture).

        Raises:
            ValueError: If the state does not fit: other shapes, or a damaged optimiser
                or random state.
        """
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
            self.batch_generator.set_state(state["rng"]["batches"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as error:
            raise ValueError(
                "the checkpoint does not fit this model, or is damaged:"
                f" {str(error)[:300]}"
            ) from None
        self.step, self.max_steps, self.losses = (
            state["step"],
            state["max_steps"],
            dict(state["losses"]),
        )

    def save_checkpoint(self) -> Path:
        """Write ``out_dir/checkpoint.pt`` atomically; returns its path.

        Raises:
            ValueError: If the trainer was made without an ``out_dir``.
        """
        if self.out_dir is None:
            raise ValueError(
                "this Trainer has no out_dir to save a checkpoint in; pass"
                " out_dir=FOLDER"
            )
        path = self.out_dir / "checkpoint.pt"
        write_checkpoint(self.state_dict(), path)
        return path

    def fit(self, steps: int | None = None) -> dict[str, float]:
        """Train until ``max_steps`` (or for ``steps`` more), evaluating and
        checkpointing on the way.

        Args:
            steps: Stop after this many steps even if ``max_steps`` is not reached.

        Returns:
            The latest losses: ``train`` (last evaluation), ``val`` and ``average``
            (running training loss).
        """
        end = (
            self.max_steps if steps is None else min(self.max_steps, self.step + steps)
        )
        handlers = self._catch_stop_signals()
        bar = tqdm(
            total=end,
            initial=self.step,
            file=sys.stderr,
            disable=not self.progress,
            unit="step",
            dynamic_ncols=True,
        )
        pending, started, stop = [], time.perf_counter(), 0
        try:
            while self.step < end and not stop:
                # sets this step's learning rate, then takes the step
                loss = self.train_step()
                pending.append(
                    (
                        self.step - 1,
                        self.optimizer.param_groups[0]["lr"],
                        loss,
                        self.grad_norm,
                    )
                )
                end_of_epoch = (
                    self.config.epochs is not None
                    and self.step % self.steps_per_epoch == 0
                )
                at_checkpoint = (
                    self.step % self.config.eval_interval == 0
                    or end_of_epoch
                    or self.step == end
                )
                at_log = self.step % self.config.log_interval == 0 or at_checkpoint
                if at_log:
                    tokens_per_second = (
                        len(pending)
                        * self.tokens_per_step
                        / (time.perf_counter() - started)
                    )
                    self._log_steps(pending, tokens_per_second, bar)
                    pending, started = [], time.perf_counter()
                if at_checkpoint:
                    # cut short, and nothing saved, if a stop was asked for
                    self._evaluate_and_save(bar)
                # ranks of a job agree at logging steps
                if at_log or not self.distributed.enabled:
                    stop = any_rank(
                        self.stop_signal or 0, self.distributed, self.device
                    )
            self.stop_signal = stop or None
            if stop and self.out_dir is not None:
                self._log_steps(pending, float("nan"), bar)
                path = self.save_checkpoint()
                print(
                    f"stopped by signal {self.stop_signal} at step {self.step}; saved"
                    f" {path}; continue with --resume {path}",
                    file=sys.stderr,
                )
        finally:
            bar.close()
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        return dict(self.losses)

    def _catch_stop_signals(self) -> dict:
        """Make SIGINT/SIGTERM request a clean stop; returns the previous handlers to
        restore."""
        if threading.current_thread() is not threading.main_thread():
            return {}  # signal handlers can only be installed from the main thread

        def request_stop(signum: int, frame) -> None:
            self.stop_signal = signum

        return {
            signum: signal.signal(signum, request_stop)
            for signum in (signal.SIGINT, signal.SIGTERM)
        }

    def _log_steps(self, pending: list, tokens_per_second: float, bar: tqdm) -> None:
        if not pending:
            return
        values = torch.stack(
            [torch.stack([loss, norm.to(loss.device)]) for _, _, loss, norm in pending]
        )  # (n, 2)
        # one sync
        losses, grad_norms = zip(*all_reduce_mean(values, self.distributed).tolist())
        for (step, _, _, _), loss in zip(pending, losses):
            if not math.isfinite(loss):
                raise ValueError(
                    f"training diverged: the loss of step {step + 1} is {loss} (running"
                    f" average before it: {self.losses['average']:.4f}); the last"
                    " checkpoint is from before it. Try a lower --learning-rate or"
                    " --grad-clip, or --debug to find the module where it starts"
                )
            average = self.losses["average"]
            self.losses["average"] = (
                loss if math.isnan(average) else 0.95 * average + 0.05 * loss
            )
        bar.update(len(pending))
        bar.set_postfix(
            loss=f"{losses[-1]:.3f}",
            avg=f"{self.losses['average']:.3f}",
            tok_s=f"{tokens_per_second:,.0f}",
        )
        records = [
            {
                "step": step + 1,
                "loss": loss,
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": tokens_per_second,
            }
            for (step, lr, _, _), loss, grad_norm in zip(pending, losses, grad_norms)
        ]
        self._append_metrics(records)

    def _append_metrics(self, records: list[dict]) -> None:
        if self.out_dir is None:
            return
        try:
            with open(self.out_dir / "metrics.jsonl", "a", encoding="utf-8") as file:
                file.writelines(
                    json.dumps(json_safe(record)) + "\n" for record in records
                )
        except OSError as error:
            if disk_full(error):
                raise ValueError(
                    f"no space left in {self.out_dir} while appending to metrics.jsonl;"
                    " free some space and continue with --resume from the last"
                    " checkpoint"
                ) from None
            raise

    def _evaluate_and_save(self, bar: tqdm) -> None:
        losses = self.evaluate()
        if not losses:
            # stopped during the evaluation: the loop saves the checkpoint and stops
            return
        self.losses.update(losses)
        epoch = self.step / self.steps_per_epoch
        self._append_metrics(
            [
                {
                    "step": self.step,
                    "epoch": epoch,
                    "train_loss": losses["train"],
                    "val_loss": losses["val"],
                }
            ]
        )
        if self.distributed.is_main:
            bar.write(
                f"step {self.step} (epoch {epoch:.2f}): train loss"
                f" {losses['train']:.4f}, val loss {losses['val']:.4f}, val perplexity"
                f" {math.exp(losses['val']):.2f}",
                file=sys.stderr,
            )
            if self.config.sample_tokens > 0:
                bar.write("sample: " + repr(self.sample()), file=sys.stderr)
        if self.out_dir is not None:
            self.save_checkpoint()
            plot_losses(self.out_dir / "metrics.jsonl", self.out_dir / "loss.png")


def prepare_out_dir(out_dir: Path) -> Path:
    """Create the run folder and make sure it can be written to.

    Raises:
        ValueError: If the folder cannot be created or written to.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        # a probe with a unique name, removed on closing
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as error:
        raise ValueError(
            f"output folder {out_dir} is not writable ({error.strerror}); choose"
            " another with --out"
        ) from None
    return out_dir


def json_safe(record: dict) -> dict:
    """The record with NaN and infinite floats replaced by ``None`` (JSON's ``null``;
    JSON has no NaN)."""
    return {
        key: None if isinstance(value, float) and not math.isfinite(value) else value
        for key, value in record.items()
    }


def read_metrics(path: Path, up_to_step: int | None = None) -> list[dict]:
    """The records of a ``metrics.jsonl``, skipping a line torn by a crash in the middle
    of a write.

    Args:
        path: The file.
        up_to_step: Keep only records of this step or earlier (those a checkpoint of
            that step has seen).

    Returns:
        The records, in the order they were written.
    """
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # torn by a crash, or by a full disk
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    return [r for r in records if up_to_step is None or r["step"] <= up_to_step]


def plot_losses(metrics_path: Path, image_path: Path) -> None:
    """Draw training and validation loss, and the gradient norm, from ``metrics.jsonl``
    into a PNG."""
    from matplotlib.figure import Figure  # drawn straight into a file: no window

    records = read_metrics(metrics_path)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_loss" in r]
    figure = Figure(figsize=(7, 6))
    axes, norm_axes = figure.subplots(2, 1, sharex=True, height_ratios=(2, 1))
    # fixed margins: fitting them to the labels took a quarter of each plot's time
    figure.subplots_adjust(left=0.11, right=0.97, bottom=0.08, top=0.95, hspace=0.08)
    axes.plot(
        [r["step"] for r in steps],
        [r["loss"] for r in steps],
        lw=0.8,
        alpha=0.6,
        label="train (per step)",
    )
    axes.plot(
        [r["step"] for r in evals],
        [r["train_loss"] for r in evals],
        "o-",
        label="train (evaluation)",
    )
    axes.plot(
        [r["step"] for r in evals],
        [r["val_loss"] for r in evals],
        "o-",
        label="validation",
    )
    axes.set(ylabel="cross-entropy loss (nats)", title="Training progress")
    axes.legend()
    norms = [r for r in steps if r.get("grad_norm") is not None]  # older logs have none
    norm_axes.plot([r["step"] for r in norms], [r["grad_norm"] for r in norms], lw=0.8)
    norm_axes.set(xlabel="step", ylabel="gradient norm", yscale="log")
    atomic_write(image_path, lambda file: figure.savefig(file, format="png", dpi=100))


@dataclass(frozen=True)
class Preset:
    """A named starting configuration: tokenizer, architecture (without ``vocab_size``)
    and training."""

    tokenizer: str
    model: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


NANOGPT_CHAR_MODEL = dict(
    max_seq_len=64,
    d_model=128,
    n_layers=4,
    n_heads=4,
    dropout=0.0,
    bias=False,
    fast_attention=True,
    gelu_approximate="none",
)
"""nanoGPT's character-level model for tiny Shakespeare on a CPU (``vocab_size`` comes
from the tokenizer)."""

PRESETS = {
    "default": Preset(
        tokenizer=DEFAULT_TOKENIZER,
        model=dict(
            max_seq_len=128,
            d_model=128,
            n_layers=4,
            n_heads=4,
            bias=False,
            dropout=0.1,
            fast_attention=True,
        ),
        train=dict(
            batch_size=16,
            max_steps=800,
            learning_rate=2e-3,
            min_learning_rate=2e-4,
            warmup_steps=50,
            eval_interval=200,
            eval_batches=10,
        ),
    ),
    "seed": Preset(
        tokenizer="p50k_base",
        model=dict(
            max_seq_len=128, d_model=256, n_layers=6, n_heads=4, fast_attention=True
        ),
        train=dict(
            batch_size=8,
            epochs=3,
            learning_rate=1e-4,
            min_learning_rate=1e-4,
            warmup_steps=0,
            optimizer="adam",
            grad_clip=0.0,
            weight_decay=0.0,
            beta2=0.999,
        ),
    ),
    "shakespeare-char": Preset(
        tokenizer="char",
        model=NANOGPT_CHAR_MODEL,
        train=dict(
            batch_size=12,
            max_steps=2000,
            learning_rate=1e-3,
            min_learning_rate=1e-4,
            warmup_steps=100,
            weight_decay=0.1,
            beta2=0.99,
            grad_clip=1.0,
            eval_interval=250,
            eval_batches=20,
        ),
    ),
    "speedrun": Preset(  # the same model, trained differently (chapter 12)
        tokenizer="char",
        # in bfloat16, chapter 1's attention is the faster one on a CPU (chapter 12)
        model=NANOGPT_CHAR_MODEL | dict(fast_attention=False),
        train=dict(
            dtype="bfloat16",
            batch_size=16,
            max_steps=1000,
            learning_rate=6e-3,
            min_learning_rate=6e-4,
            warmup_steps=100,
            weight_decay=0.1,
            beta2=0.99,
            grad_clip=1.0,
            eval_interval=1000,
            eval_batches=20,
        ),
    ),
}
"""The named presets of `tinytransformer train --preset`: ``default``, ``seed``,
``shakespeare-char``, ``speedrun``."""


def preset_named(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        ValueError: If there is none, listing the presets.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
