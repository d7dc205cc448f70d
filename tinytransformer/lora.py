# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/11-lora.md
"""Low-rank adapters (LoRA): fine-tune a GPT by training two thin matrices per
projection (chapter 11b)."""

import math
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn

from tinytransformer.model import GPT

TARGETS = ("qkv_proj", "out_proj", "fc_in", "fc_out")
"""The projections of every block that LoRA can adapt: attention's two (chapter 4) and
the MLP's two (chapter 3)."""


def check_rank(rank: int) -> None:
    """Raise ``ValueError`` unless ``rank`` is a positive integer."""
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"the LoRA rank must be a positive integer, got {rank!r}")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = W x + b + (alpha /
    r) · B A x``.

    Args:
        base: The layer to adapt; its weight ``W`` is ``(d_out, d_in)``.
        rank: ``r``, the inner width of the update ``B A``.
        alpha: The update is scaled by ``alpha / rank``.

    Raises:
        ValueError: If ``rank`` is not a positive integer or ``alpha`` is not a positive
            number.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 8.0):
        super().__init__()
        check_rank(rank)
        if not 0 < alpha < math.inf:
            raise ValueError(f"the LoRA alpha must be a positive number, got {alpha!r}")
        self.base = base
        self.rank, self.alpha, self.scale = rank, float(alpha), alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.A = nn.Parameter(
            torch.empty(rank, base.in_features, device=device, dtype=dtype)
        )  # (r, d_in)
        self.B = nn.Parameter(
            torch.zeros(base.out_features, rank, device=device, dtype=dtype)
        )  # (d_out, r): B A = 0
        # nn.Linear's own initialisation of a (r, d_in) weight
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        # (B, T, d_in) -> (B, T, r) -> (B, T, d_out)
        update = (x @ self.A.t()) @ self.B.t()
        return self.base(x) + self.scale * update

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` computing the same function: weight ``W + (alpha / r) ·
        B A``."""
        base = self.base
        linear = nn.Linear(
            base.in_features,
            base.out_features,
            bias=base.bias is not None,
            device=base.weight.device,
            dtype=base.weight.dtype,
        )
        with torch.no_grad():
            # (d_out, r) @ (r, d_in)
            linear.weight.copy_(base.weight + self.scale * (self.B @ self.A))
            if base.bias is not None:
                linear.bias.copy_(base.bias)
        return linear


def lora_targets(model: GPT, targets: Iterable[str] = TARGETS) -> list[str]:
    """The names of the plain ``nn.Linear`` layers of ``model`` that LoRA would adapt,
    e.g. ``blocks.0.attn.qkv_proj``.

    Raises:
        ValueError: If ``targets`` is empty or names a projection not in ``TARGETS``, or
            if the model already has adapters.
    """
    targets = tuple(targets)
    unknown = [name for name in targets if name not in TARGETS]
    if unknown or not targets:
        raise ValueError(
            f"unknown LoRA targets {unknown}: choose one or more of"
            f" {', '.join(TARGETS)}"
        )
    if any(isinstance(module, LoRALinear) for module in model.modules()):
        raise ValueError(
            "the model already has LoRA adapters; merge them (merge_lora) before adding"
            " new ones"
        )
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rpartition(".")[2] in targets
    ]


def apply_lora(
    model: GPT, rank: int, alpha: float = 8.0, targets: Iterable[str] = TARGETS
) -> GPT:
    """Freeze every parameter of ``model`` and wrap the chosen projections of every
    block in a ``LoRALinear``.

    Args:
        model: The pretrained model; changed in place.
        rank: ``r`` of every adapter.
        alpha: Every update is scaled by ``alpha / rank``.
        targets: Which projections to adapt, from ``TARGETS``.

    Returns:
        ``model``, whose only trainable parameters are now the adapters' ``A`` and
        ``B``.

    Raises:
        ValueError: For a rank that is not a positive integer, or targets
            ``lora_targets`` rejects.
    """
    check_rank(rank)
    names = lora_targets(model, targets)
    model.requires_grad_(False)
    for name in names:
        parent, _, child = name.rpartition(".")
        linear = model.get_submodule(name)
        assert isinstance(linear, nn.Linear)  # lora_targets names only those
        setattr(model.get_submodule(parent), child, LoRALinear(linear, rank, alpha))
    return model


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """The adapted layers of ``model``, by name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, LoRALinear)
    }


def merge_lora(model: GPT) -> GPT:
    """Replace every ``LoRALinear`` of ``model`` by its merged ``nn.Linear`` and make
    every parameter trainable again.

    The result is a plain ``GPT``: its ``state_dict`` has the keys of one that never had
    adapters.
    """
    for name, layer in lora_layers(model).items():
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.merged())
    return model.requires_grad_(True)


def lora_state_dict(model: GPT) -> dict[str, Tensor]:
    """What fine-tuning with LoRA learned: each adapter's ``A`` and ``B``, and ``alpha``
    (``lora_alpha``).

    Raises:
        ValueError: If ``model`` has no adapters.
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError("the model has no LoRA adapters; apply_lora adds them")
    state = {"lora_alpha": torch.tensor(next(iter(layers.values())).alpha)}
    for name, layer in layers.items():
        state[f"{name}.A"], state[f"{name}.B"] = (
            layer.A.detach().clone(),
            layer.B.detach().clone(),
        )
    return state


def load_lora(model: GPT, state: Mapping[str, Tensor]) -> GPT:
    """Put the adapters of ``state`` (from ``lora_state_dict``) onto ``model``, a plain
    GPT of the same shape.

    Raises:
        ValueError: If ``state`` is not an adapter state for this model: a layer it
            names is missing, the model has layers to adapt that it does not name, or a
            shape differs (both shapes named). ``model`` is unchanged then.
    """
    if "lora_alpha" not in state:
        raise ValueError(
            "not a LoRA adapter state: it has no lora_alpha (make one with"
            " lora_state_dict)"
        )
    layers = sorted({key.rpartition(".")[0] for key in state if key != "lora_alpha"})
    if set(state) != {
        "lora_alpha",
        *(f"{name}.{matrix}" for name in layers for matrix in "AB"),
    }:
        raise ValueError(
            "not a LoRA adapter state: every layer needs its A and B, and nothing else"
        )
    targets = {name.rpartition(".")[2] for name in layers}
    expected = lora_targets(model, targets) if layers else []
    if not layers or sorted(expected) != layers:
        missing, extra = (
            sorted(set(layers) - set(expected)),
            sorted(set(expected) - set(layers)),
        )
        raise ValueError(
            "the adapters do not fit this model: adapters for layers it lacks"
            f" {missing[:3]}, no adapters for its layers {extra[:3]}"
        )
    rank = state[f"{layers[0]}.A"].shape[0]
    for name in layers:
        weight, a, b = (
            model.get_parameter(f"{name}.weight"),
            state[f"{name}.A"],
            state[f"{name}.B"],
        )
        d_out, d_in = weight.shape
        if a.shape != (rank, d_in) or b.shape != (d_out, rank):
            raise ValueError(
                f"{name}: adapters of shapes A {tuple(a.shape)}, B {tuple(b.shape)} do"
                f" not fit the base weight {tuple(weight.shape)}, which needs A"
                f" {(rank, d_in)}, B {(d_out, rank)}"
            )
    apply_lora(model, rank, float(state["lora_alpha"]), targets)
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            layer.A.copy_(state[f"{name}.A"])
            layer.B.copy_(state[f"{name}.B"])
    return model
