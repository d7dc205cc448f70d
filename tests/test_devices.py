"""Device selection, autocast and NaN hunting (chapter 9)."""

import contextlib

import pytest
import torch
from torch import nn

from tinytransformer.attention import causal_mask, scaled_dot_product_attention
from tinytransformer.devices import (
    NonFiniteError,
    autocast,
    module_outputs,
    select_device,
    watch_for_non_finite,
)
from tinytransformer.model import GPT


def test_auto_picks_cuda_only_when_available():
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cpu_is_always_available():
    assert select_device("cpu") == torch.device("cpu")


def test_unknown_device_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown device 'tpu'; choose one of auto, cpu, cuda, mps"):
        select_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU here; use --device cpu"):
        select_device("cuda")


def test_missing_mps_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="MPS .* is not available here"):
        select_device("mps")


def test_mps_warns_about_its_nan_bugs(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    with pytest.warns(UserWarning, match="107294"):
        assert select_device("mps").type == "mps"


def test_autocast_is_a_no_op_on_cpu():
    assert isinstance(autocast(torch.device("cpu")), contextlib.nullcontext)


def test_injected_nan_is_reported_with_the_module_name(tiny_config):
    model = GPT(tiny_config)
    with torch.no_grad():
        model.blocks[1].attn.qkv_proj.weight[3, 0] = float("nan")
    watch_for_non_finite(model)
    with pytest.raises(
        NonFiniteError, match=r"NaN in the output of module blocks\.1\.attn\.qkv_proj \(batch rows \[0, 1\]\)"
    ):
        model(torch.randint(0, 32, (2, 8)))


class Attend(nn.Module):
    """Returns ``(output, weights)`` like MultiHeadAttention, computed without a child module."""

    def forward(self, x, mask):
        return scaled_dot_product_attention(x, x, x, mask)


class AttendThenProject(nn.Module):
    def __init__(self):
        super().__init__()
        self.attend = Attend()
        self.project = nn.Linear(8, 8)

    def forward(self, x, mask):
        return self.project(self.attend(x, mask)[0])


def test_nan_in_a_tuple_output_is_reported_by_the_module_that_returned_it():
    model = AttendThenProject()
    watch_for_non_finite(model)
    mask = causal_mask(4)
    mask[3] = False  # a fully masked row: NaN in both the output and the weights
    with pytest.raises(NonFiniteError, match=r"^NaN in output 0 of module attend \(batch rows \[0, 1\]\)$"):
        model(torch.randn(2, 4, 8), mask)


def test_tuple_items_that_are_not_floating_point_tensors_are_ignored():
    class Mixed(nn.Module):
        def forward(self, x):
            return x, None, torch.tensor([1, 2]), "label"

    model = Mixed()
    watch_for_non_finite(model)
    assert model(torch.ones(2))[1] is None  # checked without complaint


def test_infinite_gradient_is_reported_with_the_parameter_name(tiny_config):
    model = GPT(tiny_config)
    watch_for_non_finite(model)
    logits = model(torch.randint(0, 32, (2, 8)))
    with pytest.raises(NonFiniteError, match="in the gradient of parameter final_norm"):
        (logits.sum() * float("inf")).backward()


def test_watching_can_be_stopped(tiny_config):
    model = GPT(tiny_config)
    for handle in watch_for_non_finite(model):
        handle.remove()
    with torch.no_grad():
        model.blocks[0].mlp.fc_in.weight.fill_(float("nan"))
    assert model(torch.randint(0, 32, (1, 4))).isnan().all()


def test_module_outputs_keeps_each_module_in_the_order_it_ran_and_removes_its_hooks(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config)
    token_ids = torch.randint(0, tiny_config.vocab_size, (2, 8))
    outputs = module_outputs(model, token_ids)
    names = list(outputs)
    assert names.index("embeddings") < names.index("blocks.0.attn") < names.index("blocks.0")
    assert names[-1] == "model" and torch.equal(outputs["model"], model(token_ids))
    assert outputs["blocks.0.attn"].shape == (2, 8, tiny_config.d_model)  # the first of the tuple
    assert all(not module._forward_hooks for module in model.modules())
