# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/09-devices.md
"""Devices, mixed precision and NaN hunting (chapter 9)."""

import contextlib
import warnings

import torch
from torch import Tensor, nn

DEVICES = ("auto", "cpu", "cuda", "mps")
MPS_WARNING = (
    "training on MPS: PyTorch's Apple-GPU backend has had bugs that turn losses into"
    " NaN (pytorch/pytorch#107294, #109457); if the loss becomes NaN, rerun with"
    " --debug to find the module, and compare with --device cpu"
)


def select_device(name: str = "auto") -> torch.device:
    """Resolve a device name to a ``torch.device`` that exists on this machine.

    Args:
        name: ``"auto"`` (CUDA if available, else CPU; never MPS), ``"cpu"``, ``"cuda"``
            or ``"mps"``.

    Returns:
        The device.

    Raises:
        ValueError: If the name is unknown, or the device is not available here.
    """
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' asked for, but PyTorch sees no CUDA GPU here; use"
            " --device cpu"
        )
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(
                "device 'mps' asked for, but MPS (Apple GPU) is not available here; use"
                " --device cpu"
            )
        warnings.warn(MPS_WARNING, stacklevel=2)
    return torch.device(name)


PRECISIONS = ("auto", "float32", "bfloat16")


def autocast(
    device: torch.device, dtype: str = "auto"
) -> contextlib.AbstractContextManager:
    """The precision to run the forward pass and the loss in.

    Args:
        device: The device the model runs on.
        dtype: ``"auto"`` (bfloat16 autocast on CUDA GPUs that support it, float32
            elsewhere), ``"float32"`` (no autocast) or ``"bfloat16"`` (autocast on any
            device, the CPU included).

    Returns:
        A context manager to wrap the forward pass and the loss in.

    Raises:
        ValueError: If ``dtype`` is not one of ``PRECISIONS``.
    """
    if dtype not in PRECISIONS:
        raise ValueError(f"dtype must be one of {', '.join(PRECISIONS)}, got {dtype!r}")
    if (
        dtype == "bfloat16"
        or dtype == "auto"
        and device.type == "cuda"
        and torch.cuda.is_bf16_supported()
    ):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait until every queued operation on ``device`` has finished (GPUs run
    asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class NonFiniteError(RuntimeError):
    """A NaN or infinity appeared; the message names where."""


def _check_finite(tensor: Tensor, where: str) -> None:
    if not torch.isfinite(tensor).all():
        bad_rows = (
            (~torch.isfinite(tensor)).flatten(1).any(dim=1).nonzero().flatten().tolist()
            if tensor.ndim > 1
            else []
        )
        kind = "NaN" if torch.isnan(tensor).any() else "infinity"
        raise NonFiniteError(
            f"{kind} in {where}" + (f" (batch rows {bad_rows})" if bad_rows else "")
        )


def watch_for_non_finite(model: nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Check every module's output (each tensor of a tuple or list) and every
    parameter's gradient for NaN or infinity.

    Args:
        model: The model to watch.

    Returns:
        The hook handles; call ``.remove()`` on each to stop watching.
    """
    handles = []
    for name, module in model.named_modules():

        def check_output(
            module: nn.Module, inputs: tuple, output, name: str = name or "model"
        ) -> None:
            if isinstance(output, Tensor):
                outputs = {"the output": output}
            # e.g. attention's (output, weights)
            elif isinstance(output, (tuple, list)):
                outputs = {
                    f"output {i}": item
                    for i, item in enumerate(output)
                    if isinstance(item, Tensor)
                }
            else:
                return
            for which, tensor in outputs.items():
                if tensor.is_floating_point():
                    _check_finite(tensor, f"{which} of module {name}")

        handles.append(module.register_forward_hook(check_output))
    for name, parameter in model.named_parameters():

        def check_gradient(gradient: Tensor, name: str = name) -> None:
            _check_finite(gradient, f"the gradient of parameter {name}")

        handles.append(parameter.register_hook(check_gradient))
    return handles


def module_outputs(model: nn.Module, *inputs: Tensor) -> dict[str, Tensor]:
    """Run ``model(*inputs)`` without gradients, keeping every module's output in order.

    Compare two of these dictionaries — the same weights and inputs on the CPU and on a
    suspect device, say — to find the first module whose outputs disagree.

    Args:
        model: The model to run.
        *inputs: Its inputs.

    Returns:
        Module path to its output, on the CPU, as float32, in the order the modules ran;
        for a module that returns a tuple (as attention does), its first tensor. The
        whole model's output is under ``"model"``.
    """
    outputs: dict[str, Tensor] = {}
    handles = []
    for name, module in model.named_modules():

        def keep(module: nn.Module, inputs: tuple, output, name: str = name or "model"):
            tensor = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(tensor, Tensor) and name not in outputs:
                outputs[name] = tensor.detach().float().cpu()

        handles.append(module.register_forward_hook(keep))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return outputs
