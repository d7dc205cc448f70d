# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-figures.md
"""The book's figures, drawn from the package by ``tinytransformer figures``."""

import copy
import functools
import io
import itertools
import json
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.style
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import nn

from tinytransformer.attention import causal_mask, scaled_dot_product_attention
from tinytransformer.block import Block, stack_gradient_norms
from tinytransformer.data import TokenData, book_chapters, load_token_data
from tinytransformer.decoding import bytes_per_token
from tinytransformer.files import atomic_write_bytes
from tinytransformer.generation import top_k_filter, top_p_filter
from tinytransformer.lora import apply_lora
from tinytransformer.model import GPT, GPTConfig, block_gradient_norms, gpt2_config
from tinytransformer.tokenizer import CharTokenizer, Tokenizer
from tinytransformer.train import TrainConfig, Trainer

FIGURES: dict[str, Callable[[], Figure]] = {}

STYLE: dict[str, Any] = {
    # fixed ids inside the SVG: the same bytes on every run
    "svg.hashsalt": "tinytransformer",
    # text as outlines: the figure looks the same without our fonts
    "svg.fonttype": "path",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.facecolor": "white",  # stays readable on the site's dark theme
}


def figure(name: str) -> Callable[[Callable[[], Figure]], Callable[[], Figure]]:
    """Register a drawing function as the figure ``book/figures/<name>.svg``.

    Args:
        name: The file name without ``.svg``; a chapter shows the figure as
            ``figures/<name>.svg``.

    Returns:
        A decorator that adds the function to ``FIGURES`` and returns it unchanged.
    """

    def register(draw: Callable[[], Figure]) -> Callable[[], Figure]:
        FIGURES[name] = draw
        return draw

    return register


def render_figure(name: str) -> bytes:
    """Draw one registered figure in the book's style.

    Args:
        name: A key of ``FIGURES``.

    Returns:
        The figure as an SVG document; the same bytes on every call with the same
        installation.

    Raises:
        ValueError: If no figure has that name.
    """
    if name not in FIGURES:
        raise ValueError(
            f"no figure named {name!r}; the figures are: {', '.join(sorted(FIGURES))}"
        )
    with matplotlib.style.context(STYLE):
        buffer = io.BytesIO()
        FIGURES[name]().savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def write_figures(out_dir: Path, names: list[str] | None = None) -> list[str]:
    """Draw figures and save each as ``out_dir/<name>.svg``.

    Args:
        out_dir: The folder to write into; created if missing (its parent must exist).
        names: The figures to draw; ``None`` means all of ``FIGURES``.

    Returns:
        One message per figure, saying whether its file was written or is unchanged.

    Raises:
        ValueError: If a name is unknown or the parent of ``out_dir`` does not exist.
    """
    if not out_dir.parent.is_dir():
        raise ValueError(
            f"{out_dir.parent} does not exist; run from the repository root, or pass"
            " --out"
        )
    svgs = {name: render_figure(name) for name in names or sorted(FIGURES)}
    out_dir.mkdir(exist_ok=True)
    messages = []
    for name, svg in svgs.items():
        path = out_dir / f"{name}.svg"
        if path.exists() and path.read_bytes() == svg:
            messages.append(f"unchanged {path}")
        else:
            atomic_write_bytes(path, svg)
            messages.append(f"wrote {path}")
    return messages


@figure("causal-mask")
def draw_causal_mask() -> Figure:
    """Chapter 1: ``causal_mask(6)`` and the attention weights it allows, for random
    vectors."""
    tokens = ["The", "cat", "sat", "on", "the", "mat"]
    seq_len = len(tokens)
    mask = causal_mask(seq_len)
    x = torch.randn(seq_len, 8, generator=torch.Generator().manual_seed(0))
    _, attn_weights = scaled_dot_product_attention(x, x, x, mask)  # (T, T)

    fig = Figure(figsize=(8, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    grid = dict(edgecolors="white", linewidth=2)
    left.pcolormesh(mask.int(), cmap=ListedColormap(["#eeeeee", "#5c6bc0"]), **grid)
    left.set_title("causal_mask(6): may position i attend to j?")
    mesh = right.pcolormesh(attn_weights, cmap="Blues", vmin=0, vmax=1, **grid)
    right.set_title("attention weights: each row sums to 1")
    fig.colorbar(mesh, ax=right, shrink=0.8)
    for i in range(seq_len):
        for j in range(seq_len):
            left.text(
                j + 0.5,
                i + 0.5,
                "yes" if mask[i, j] else "no",
                ha="center",
                va="center",
                color="white" if mask[i, j] else "#888888",
            )
            if mask[i, j]:
                weight = attn_weights[i, j].item()
                right.text(
                    j + 0.5,
                    i + 0.5,
                    f"{weight:.2f}",
                    ha="center",
                    va="center",
                    color="white" if weight > 0.6 else "black",
                    fontsize=8,
                )
    for ax in (left, right):
        ax.set_aspect("equal")
        ax.invert_yaxis()  # row 0 at the top, as the matrix prints
        ax.set_xticks([j + 0.5 for j in range(seq_len)], tokens)
        ax.set_yticks([i + 0.5 for i in range(seq_len)], tokens)
        ax.set_xlabel("key position j")
        ax.set_ylabel("query position i")
        ax.tick_params(length=0)
    return fig


@figure("gelu-relu")
def draw_gelu_relu() -> Figure:
    """Chapter 3: GELU (GPT-2's tanh form) against ReLU, and their derivatives."""
    x = torch.linspace(-4, 4, 801, requires_grad=True)
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    values, slopes = fig.subplots(1, 2, sharex=True)
    activations = {
        "ReLU": (nn.ReLU(), "--"),
        "GELU": (nn.GELU(approximate="tanh"), "-"),
    }
    for label, (activation, style) in activations.items():
        y = activation(x)
        (slope,) = torch.autograd.grad(y.sum(), x)
        values.plot(x.detach(), y.detach(), style, label=label, linewidth=2)
        slopes.plot(x.detach(), slope, style, label=label, linewidth=2)
        if label == "GELU":
            lowest = y.argmin()
            values.annotate(
                f"minimum {y[lowest]:.2f} at x = {x[lowest]:.2f}",
                (x[lowest].item(), y[lowest].item()),
                xytext=(-3.9, 1.5),
                arrowprops=dict(arrowstyle="->", color="#555555"),
            )
    values.set_title("activation(x)")
    slopes.set_title("its slope, d activation / dx")
    for ax in (values, slopes):
        ax.axhline(0, color="#bbbbbb", linewidth=0.8, zorder=0)
        ax.axvline(0, color="#bbbbbb", linewidth=0.8, zorder=0)
        ax.set_xlabel("x")
        ax.legend(loc="upper left", frameon=False)
    return fig


@figure("gradient-norms")
def draw_gradient_norms() -> Figure:
    """Chapter 6: per-block gradient norms of a fresh 12-layer model, Pre-LN against
    Post-LN."""
    fig = Figure(figsize=(6.5, 3.4), layout="constrained")
    ax = fig.subplots()
    arrangements = {
        "Pre-LN (GPT-2)": (True, "o"),
        "Post-LN (original transformer)": (False, "s"),
    }
    for label, (pre_norm, marker) in arrangements.items():
        config = GPTConfig(
            vocab_size=256,
            max_seq_len=64,
            d_model=128,
            n_layers=12,
            n_heads=4,
            pre_norm=pre_norm,
        )
        norms = block_gradient_norms(config)
        ax.plot(
            range(1, config.n_layers + 1),
            norms,
            marker=marker,
            label=label,
            linewidth=2,
        )
    ax.set_yscale("log")
    ax.set_xticks(range(1, 13))
    ax.set_xlabel("block (1 = nearest the embeddings)")
    ax.set_ylabel("gradient norm of fc_in.weight")
    ax.set_title("12-layer model at initialisation, one batch of random tokens")
    ax.legend(frameon=False)
    return fig


SAMPLING_WORDS = [
    "mat",
    "floor",
    "sofa",
    "bed",
    "roof",
    "chair",
    "table",
    "moon",
    "idea",
    "banana",
]
# (1, V)
SAMPLING_LOGITS = torch.tensor([[3.0, 2.2, 1.9, 1.5, 1.0, 0.6, 0.4, -0.8, -1.6, -2.5]])


@figure("temperature")
def draw_temperature() -> Figure:
    """Chapter 10: one next-token distribution at three temperatures."""
    fig = Figure(figsize=(9, 3), layout="constrained")
    for ax, temperature in zip(fig.subplots(1, 3, sharey=True), (0.5, 1.0, 2.0)):
        ax.bar(
            SAMPLING_WORDS,
            torch.softmax(SAMPLING_LOGITS[0] / temperature, dim=-1).tolist(),
            color="#5c6bc0",
        )
        ax.set_title(f"temperature {temperature}")
        ax.tick_params(axis="x", labelrotation=90)
        ax.set_ylim(0, 0.75)
    fig.axes[0].set_ylabel("probability")
    return fig


@figure("top-k-top-p")
def draw_top_k_top_p() -> Figure:
    """Chapter 10: the tokens top-k (k = 3) and top-p (p = 0.9) keep, for a peaked and a
    flat distribution."""
    cases = {
        "confident model": SAMPLING_LOGITS * 2.5,
        "unsure model": SAMPLING_LOGITS * 0.4,
    }
    filters = {
        "top-k, k = 3": lambda z: top_k_filter(z, 3),
        "top-p, p = 0.9": lambda z: top_p_filter(z, 0.9),
    }
    fig = Figure(figsize=(9, 5.4), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    for row, (case, logits) in enumerate(cases.items()):
        probabilities = torch.softmax(logits[0], dim=-1).tolist()
        for column, (name, keep) in enumerate(filters.items()):
            kept = keep(logits)[0].isfinite().tolist()
            ax = axes[row, column]
            ax.bar(
                SAMPLING_WORDS,
                probabilities,
                color=["#3949ab" if k else "#c5cae9" for k in kept],
            )
            ax.set_title(f"{case}, {name}: keeps {sum(kept)}")
            ax.tick_params(axis="x", labelrotation=90)
    axes[0, 0].set_ylabel("probability")
    axes[1, 0].set_ylabel("probability")
    return fig


@functools.cache
def trained_model() -> tuple[GPT, Tokenizer, list[tuple[int, float, float]]]:
    """A small char-level model trained on the book, with its evaluations ``(step,
    train, val)``."""
    threads = torch.get_num_threads()
    # one thread: the same sums in the same order, the same figure
    torch.set_num_threads(1)
    try:
        data = load_token_data(None, tokenizer="char")
        model_config = GPTConfig(
            vocab_size=data.tokenizer.vocab_size,
            max_seq_len=64,
            d_model=64,
            n_layers=2,
            n_heads=4,
            fast_attention=True,
        )
        config = TrainConfig(
            batch_size=8,
            max_steps=300,
            learning_rate=3e-3,
            min_learning_rate=3e-4,
            warmup_steps=30,
            eval_batches=4,
            seed=0,
        )
        torch.manual_seed(config.seed)
        trainer = Trainer(GPT(model_config), config, data, progress=False)
        evaluations = []
        for step in range(config.max_steps + 1):
            if step % 50 == 0:
                losses = trainer.evaluate()
                evaluations.append((step, losses["train"], losses["val"]))
            if step < config.max_steps:
                trainer.train_step()
    finally:
        torch.set_num_threads(threads)
    return trainer.model.eval(), data.tokenizer, evaluations


@figure("loss-curves")
def draw_loss_curves() -> Figure:
    """Chapter 8: training and validation loss of the small model, from ln V down."""
    _, tokenizer, evaluations = trained_model()
    steps, train, val = zip(*evaluations)
    fig = Figure(figsize=(6.5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(steps, train, marker="o", label="training split")
    ax.plot(steps, val, marker="s", label="validation split")
    ln_v = math.log(tokenizer.vocab_size)
    ax.axhline(ln_v, color="gray", linestyle=":", label=f"ln V = {ln_v:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per character)")
    ax.set_title("2-layer char model trained on this book")
    ax.legend(frameon=False)
    return fig


@figure("attention-heads")
def draw_attention_heads() -> Figure:
    """Chapter 4: the four heads of the trained model's last block on one sentence."""
    model, tokenizer, _ = trained_model()
    text = "The attention weights of each head."
    token_ids = torch.tensor([tokenizer.encode(text)])  # (1, T)
    seq_len = token_ids.shape[1]
    with torch.no_grad():
        x = model.embeddings(token_ids)
        for block in model.blocks[:-1]:
            x = block(x, model.mask[:seq_len, :seq_len])
        last = typing.cast(Block, model.blocks[-1])
        # (1, H, T, T)
        _, attn_weights = last.attn(last.attn_norm(x), model.mask[:seq_len, :seq_len])
    fig = Figure(figsize=(10, 3), layout="constrained")
    labels = [c if c != " " else "␣" for c in text]
    for head, ax in enumerate(fig.subplots(1, model.config.n_heads)):
        ax.imshow(attn_weights[0, head].numpy(), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"head {head}")
        ax.set_xticks(range(seq_len), labels, fontsize=5)
        ax.set_yticks(range(seq_len), labels, fontsize=5)
    fig.supxlabel("key (attended-to character)")
    fig.supylabel("query")
    return fig


@figure("position-similarity")
def draw_position_similarity() -> Figure:
    """Chapter 2: cosine similarity between the learned position embeddings of the
    trained model."""
    model, _, _ = trained_model()
    table = typing.cast(torch.nn.Embedding, model.embeddings.position_embedding)
    positions = torch.nn.functional.normalize(table.weight.detach(), dim=-1)
    fig = Figure(figsize=(4.2, 3.6), layout="constrained")
    ax = fig.subplots()
    # (T, T)
    image = ax.imshow((positions @ positions.T).numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(image, ax=ax, label="cosine similarity")
    ax.set_xlabel("position")
    ax.set_ylabel("position")
    ax.set_title("learned position embeddings")
    return fig


@figure("residual-ablation")
def draw_residual_ablation() -> Figure:
    """Chapter 5: ‖∂L/∂x‖ at every depth of 24 fresh blocks, with parts removed."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    variants = {
        "x + F(LN(x)): residual and LayerNorm": (True, True, "o"),
        "F(LN(x)): LayerNorm, no residual": (False, True, "s"),
        "F(x): neither": (False, False, "^"),
    }
    for label, (residual, norm, marker) in variants.items():
        norms = stack_gradient_norms(residual, norm)
        ax.plot(
            range(len(norms)),
            norms,
            marker=marker,
            markersize=4,
            label=label,
            linewidth=2,
        )
    ax.set_yscale("log")
    ax.set_xlabel("depth (0 = the stack's input, 24 = its output)")
    ax.set_ylabel("‖∂L/∂x‖")
    ax.set_title("24 fresh blocks, the same gradient arriving at the top")
    ax.legend(frameon=False)
    return fig


WARMUP_GRID: dict[str, tuple[Any, ...]] = {
    "n_layers": (6, 12),
    "learning_rate": (1e-3, 3e-3, 1e-2),
    "warmup_steps": (0, 30),
    "pre_norm": (True, False),
    "seed": (0, 1),
}
"""The grid of chapter 8: every combination of these values is one training run."""
WARMUP_GRID_FILE = (
    Path(__file__).parents[1] / "book" / "measurements" / "warmup-grid.json"
)


def train_grid_point(
    data: TokenData,
    n_layers: int,
    learning_rate: float,
    warmup_steps: int,
    pre_norm: bool,
    seed: int,
    steps: int = 150,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Train one Xavier-initialised char model of the warm-up grid; record how it went.

    Args:
        data: The corpus, tokenized by characters.
        n_layers: Depth of the model (``d_model`` 64, 4 heads, context 64).
        learning_rate: Peak learning rate; the cosine decay ends at a tenth of it.
        warmup_steps: Steps of linear warm-up (0: none).
        pre_norm: Pre-LN when ``True``, Post-LN when ``False``.
        seed: Seeds the initialisation and the batches.
        steps: Optimiser steps.
        batch_size: Sequences per step.

    Returns:
        The arguments, the training loss every 10 steps and after the last, the
        largest gradient norm (there is no clipping), and the validation loss at the
        end (``None`` if it is not finite).
    """
    model_config = GPTConfig(
        vocab_size=data.tokenizer.vocab_size,
        max_seq_len=64,
        d_model=64,
        n_layers=n_layers,
        n_heads=4,
        pre_norm=pre_norm,
        weight_init="xavier",
        fast_attention=True,
        gelu_approximate="none",
    )
    config = TrainConfig(
        batch_size=batch_size,
        max_steps=steps,
        learning_rate=learning_rate,
        min_learning_rate=learning_rate / 10,
        warmup_steps=warmup_steps,
        grad_clip=0.0,
        eval_batches=8,
        seed=seed,
    )
    torch.manual_seed(seed)
    trainer = Trainer(GPT(model_config), config, data, progress=False)
    losses, grad_norms = [], []
    for _ in range(steps):
        losses.append(trainer.train_step().item())
        grad_norms.append(trainer.grad_norm.item())
    val_loss = trainer.evaluate()["val"]
    return {
        "n_layers": n_layers,
        "learning_rate": learning_rate,
        "warmup_steps": warmup_steps,
        "pre_norm": pre_norm,
        "seed": seed,
        "losses": losses[::10] + losses[-1:],
        "max_grad_norm": max(grad_norms),
        "val_loss": val_loss if math.isfinite(val_loss) else None,
    }


def frequency_loss(data: TokenData) -> float:
    """The validation loss of a model that knows only how often each token occurs.

    The frequencies are counted on the training split, each count plus one (so that a
    token the training split lacks is not impossible).
    """
    counts = {
        split: (
            torch.bincount(
                torch.as_tensor(tokens.astype("int64")),
                minlength=data.tokenizer.vocab_size,
            ).double()
        )
        for split, tokens in (("train", data.train), ("val", data.val))
    }
    predicted = (counts["train"] + 1) / (counts["train"] + 1).sum()
    return -(counts["val"] * predicted.log()).sum().item() / counts["val"].sum().item()


def record_warmup_grid(data: str | None, path: Path = WARMUP_GRID_FILE) -> None:
    """Train every point of ``WARMUP_GRID`` on one thread; write the runs to ``path``.

    Args:
        data: The corpus, as ``load_token_data`` takes it (the book: tiny Shakespeare).
        path: Where to write the JSON: the corpus, PyTorch's version, the loss of
            [`frequency_loss`][tinytransformer.figures.frequency_loss] and the runs.
    """
    token_data = load_token_data(data, tokenizer="char")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = []
        for values in itertools.product(*WARMUP_GRID.values()):
            runs.append(train_grid_point(token_data, **dict(zip(WARMUP_GRID, values))))
            print(json.dumps(runs[-1]), flush=True)
    finally:
        torch.set_num_threads(threads)
    record = {
        "corpus": data,
        "torch": torch.__version__,
        "frequency_loss": frequency_loss(token_data),
        "runs": runs,
    }
    atomic_write_bytes(path, (json.dumps(record, indent=1) + "\n").encode())


@figure("warmup-grid")
def draw_warmup_grid() -> Figure:
    """Chapter 8: the warm-up grid's last validation losses, from the recorded file."""
    record = json.loads(WARMUP_GRID_FILE.read_text(encoding="utf-8"))
    fig = Figure(figsize=(8, 3.6), layout="constrained")
    panels = fig.subplots(1, len(WARMUP_GRID["n_layers"]), sharey=True)
    rates = WARMUP_GRID["learning_rate"]
    styles = {
        (True, 0): ("Pre-LN, no warm-up", "#3949ab", "o", "-"),
        (True, 30): ("Pre-LN, 30 warm-up steps", "#3949ab", "o", "--"),
        (False, 0): ("Post-LN, no warm-up", "#e65100", "s", "-"),
        (False, 30): ("Post-LN, 30 warm-up steps", "#e65100", "s", "--"),
    }
    for ax, n_layers in zip(panels, WARMUP_GRID["n_layers"]):
        for (pre_norm, warmup_steps), (label, color, marker, line) in styles.items():
            means = []
            for rate in rates:
                cell = (n_layers, rate, warmup_steps, pre_norm)
                losses = [
                    run["val_loss"]
                    for run in record["runs"]
                    if run["val_loss"] is not None
                    and cell == tuple(run[key] for key in WARMUP_GRID if key != "seed")
                ]
                ax.scatter(
                    [rate] * len(losses),
                    losses,
                    color=color,
                    marker=marker,
                    s=14,
                    alpha=0.6,
                )
                means.append(sum(losses) / len(losses) if losses else float("nan"))
            ax.plot(rates, means, color=color, linestyle=line, label=label)
        ax.axhline(
            record["frequency_loss"],
            color="gray",
            linestyle=":",
            label="character frequencies only",
        )
        ax.set_xscale("log")
        ax.set_xticks(rates, [f"{rate:g}" for rate in rates])
        ax.minorticks_off()
        ax.set_title(f"{n_layers} layers, Xavier initialisation")
        ax.set_xlabel("peak learning rate")
    panels[0].set_ylabel("validation loss after 150 steps")
    panels[-1].legend(frameon=False, fontsize=8)
    return fig


def _batch(
    ids: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """16 random windows of 32 tokens and their next tokens, ``(16, 32)`` each."""
    starts = torch.randint(0, len(ids) - 33, (16,), generator=generator)
    return (
        torch.stack([ids[i : i + 32] for i in starts]),
        torch.stack([ids[i + 1 : i + 33] for i in starts]),
    )


@torch.no_grad()
def _mean_loss(model: GPT, ids: torch.Tensor) -> float:
    generator = torch.Generator().manual_seed(99)
    return sum(model(*_batch(ids, generator))[1].item() for _ in range(4)) / 4


def _fine_tune(
    model: GPT,
    ids: torch.Tensor,
    steps: int,
    lr: float,
    measure: Callable[[GPT], tuple[float, float]] | None = None,
) -> list[tuple[float, float]]:
    """Train ``model`` on ``ids`` with AdamW; ``measure`` it at step 0 and every 10
    steps."""
    generator = torch.Generator().manual_seed(1)
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0
    )
    curve = [measure(model)] if measure else []
    for step in range(1, steps + 1):
        _, loss = model(*_batch(ids, generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if measure and step % 10 == 0:
            curve.append(measure(model))
    return curve


@figure("lora-loss-curves")
def draw_lora_loss_curves() -> Figure:
    """Chapter 11b: loss on the new text (held out) and the old one, full vs LoRA."""
    texts = {path.name: path.read_text(encoding="utf-8") for path in book_chapters()}
    old_text, new_text = texts["01-attention.md"], texts["bibliography.md"]
    tokenizer = CharTokenizer(old_text + new_text)
    old, new = (
        torch.tensor(tokenizer.encode(old_text)),
        torch.tensor(tokenizer.encode(new_text)),
    )
    new_train, new_val = new[: int(0.9 * len(new))], new[int(0.9 * len(new)) :]

    def measure(model: GPT) -> tuple[float, float]:
        return _mean_loss(model, new_val), _mean_loss(model, old)

    threads = torch.get_num_threads()
    torch.set_num_threads(
        1
    )  # one thread: the same sums in the same order, the same figure
    try:
        torch.manual_seed(0)
        base = GPT(
            GPTConfig(
                vocab_size=tokenizer.vocab_size,
                max_seq_len=32,
                d_model=64,
                n_layers=2,
                n_heads=4,
            )
        )
        _fine_tune(base, old, steps=200, lr=3e-3)
        lora = apply_lora(copy.deepcopy(base), rank=4)
        curves = {
            "full fine-tuning (lr 1e-3)": _fine_tune(
                copy.deepcopy(base), new_train, 60, 1e-3, measure
            ),
            "LoRA r=4 (lr 1e-2)": _fine_tune(lora, new_train, 60, 1e-2, measure),
        }
    finally:
        torch.set_num_threads(threads)
    fig = Figure(figsize=(9, 3.4), layout="constrained")
    new_ax, old_ax = fig.subplots(1, 2, sharey=True)
    for (name, curve), marker in zip(curves.items(), "os"):
        steps = range(0, 10 * len(curve), 10)
        new_ax.plot(
            steps,
            [new_loss for new_loss, _ in curve],
            marker=marker,
            markersize=3,
            label=name,
        )
        old_ax.plot(
            steps,
            [old_loss for _, old_loss in curve],
            marker=marker,
            markersize=3,
            label=name,
        )
    new_ax.set_title("the new text: bibliography, held out")
    old_ax.set_title("the old text: chapter 1 (forgetting)")
    for ax in (new_ax, old_ax):
        ax.set_xlabel("fine-tuning step")
    new_ax.set_ylabel("cross-entropy (nats per character)")
    new_ax.legend(frameon=False)
    return fig


@figure("lora-parameters")
def draw_lora_parameters() -> Figure:
    """Chapter 11b: GPT-2 small's trainable parameters under LoRA, r = 1 … 64."""
    with torch.device("meta"):
        gpt2 = GPT(gpt2_config("small"))
    ranks = [1, 2, 4, 8, 16, 32, 64]
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for targets, marker in [
        (("qkv_proj", "out_proj", "fc_in", "fc_out"), "o"),
        (("qkv_proj",), "s"),
    ]:
        counts = [
            sum(
                p.numel()
                for p in apply_lora(
                    copy.deepcopy(gpt2), rank, targets=targets
                ).parameters()
                if p.requires_grad
            )
            for rank in ranks
        ]
        ax.plot(ranks, counts, marker=marker, label=f"LoRA on {' + '.join(targets)}")
    full = gpt2.num_parameters()
    ax.axhline(
        full,
        color="gray",
        linestyle="--",
        label=f"full fine-tuning: {full / 1e6:.1f} M",
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ranks, [str(rank) for rank in ranks])
    ax.set_xlabel("rank r")
    ax.set_ylabel("trainable parameters")
    ax.set_title("GPT-2 small: what fine-tuning trains")
    ax.legend(frameon=False, fontsize=8)
    return fig


@figure("rope-offset")
def draw_rope_offset() -> Figure:
    """Chapter 11c: a rotary score against the offset, at four absolute positions."""
    from tinytransformer.llama import RotaryEmbedding

    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 16, generator=generator)
    k = torch.randn(1, 16, generator=generator)
    rotary = RotaryEmbedding(d_head=16)
    offsets = torch.arange(65)
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.subplots()
    for start, style in zip((64, 200, 1000, 5000), ("-", "--", ":", "-.")):
        queries = rotary(q.expand(len(offsets), 16), start + offsets)  # start + offset
        key = rotary(k, torch.tensor([start]))  # at start
        scores = (queries @ key.T)[:, 0].numpy()
        ax.plot(offsets.numpy(), scores, style, label=f"key at position {start}")
    ax.set_xlabel("offset m − n (query position minus key position)")
    ax.set_ylabel("score q·k")
    ax.set_title("rotary embeddings: the score depends only on the offset")
    ax.legend(frameon=False, fontsize=8)
    return fig


# chapter 12's table, from `tinytransformer bench --decode`
DECODING_RUN: dict[str, Any] = {
    "run": "GPT-2 small, 100 greedy tokens, 2 threads, 2-core VM alone, 2026-11-29",
    "bandwidth_gb_s": 25.9,  # measured in the same run
    "peak_gflops": 332.3,  # cpu_peak_flops(): 16 lanes × 2 FMA × 2 × 2596 MHz × 2 cores
    "decoders": [  # (who, weights, tokens per second)
        ("Hugging Face generate", "float32", 20.5),
        ("ours, plain", "float32", 19.9),
        ("ours, decoding_model", "float32", 41.2),
        ("ours, decoding_model", "bfloat16", 38.4),
        ("ours, decoding_model", "int8", 70.9),
    ],
}


@figure("decoding-roofline")
def draw_decoding_roofline() -> Figure:
    """Chapter 12: decoding GPT-2 small under the memory roof, per weight precision."""
    config = gpt2_config("small")
    weights = bytes_per_token(config, "int8")  # one byte each: the number of weights
    bandwidth, peak = DECODING_RUN["bandwidth_gb_s"], DECODING_RUN["peak_gflops"]
    fig = Figure(figsize=(6.5, 4.4), layout="constrained")
    ax = fig.subplots()
    intensity = [2.0**e for e in range(-3, 11)]  # FLOPs per byte of weights read
    ax.loglog(
        intensity,
        [min(peak, bandwidth * i) for i in intensity],
        "k-",
        label=f"roof: {bandwidth:.1f} GB/s × intensity, ≤ {peak:.0f} GFLOP/s",
    )
    for (who, dtype, tokens_per_s), marker in zip(DECODING_RUN["decoders"], "sDo^v"):
        per_token = bytes_per_token(config, dtype)
        achieved = tokens_per_s * 2 * weights / 1e9  # 2 FLOPs per weight: GFLOP/s
        share = tokens_per_s / (bandwidth * 1e9 / per_token)  # of the roof's tokens/s
        label = f"{who}, {dtype}: {tokens_per_s:.1f} tokens/s, {share:.0%} of the roof"
        ax.loglog(
            [2 * weights / per_token],
            [achieved],
            marker=marker,
            linestyle="none",
            label=label,
        )
    ax.set_xlabel("arithmetic intensity (FLOPs per byte of weights)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(DECODING_RUN["run"], fontsize=8)
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    return fig


SPEEDRUN_FILE = (
    Path(__file__).parents[1] / "book" / "measurements" / "speedrun-curves.json"
)


@figure("speedrun-curves")
def draw_speedrun_curves() -> Figure:
    """Chapter 12: training loss against seconds, our speedrun's seeds and nanoGPT."""
    record = json.loads(SPEEDRUN_FILE.read_text(encoding="utf-8"))
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for name, points in record["curves"].items():
        seconds, losses = zip(*points)
        reference = name.startswith("nanoGPT")
        label = f"{name}: validation {record['final_val_loss'][name]:.3f}"
        ax.plot(
            seconds,
            losses,
            color="#e65100" if reference else "#3949ab",
            linestyle="--" if reference else "-",
            linewidth=1,
            label=label,
        )
    ax.axhline(1.886, color="k", linewidth=0.6, linestyle=":")
    ax.axvline(60, color="k", linewidth=0.6, linestyle=":")
    ax.set_ylim(1.4, 3.0)
    ax.set_xlabel("seconds in the training loop")
    ax.set_ylabel("training loss (mean of 50 steps)")
    ax.set_title(record["run"], fontsize=8)
    ax.legend(frameon=False, fontsize=7)
    return fig
