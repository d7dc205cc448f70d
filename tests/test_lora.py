"""LoRA (chapter 11b): adapters start at the base model, merge exactly, train alone, save and load, reject misfits."""

import pytest
import torch

from tinytransformer.lora import (
    TARGETS,
    LoRALinear,
    apply_lora,
    load_lora,
    lora_state_dict,
    merge_lora,
)
from tinytransformer.model import GPT, GPTConfig

TINY = {"vocab_size": 23, "max_seq_len": 16, "d_model": 16, "n_layers": 2, "n_heads": 2}


def tiny_gpt(seed: int = 0, **sizes) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**TINY, **sizes})).eval()


def randomize_adapters(model: GPT, seed: int = 1) -> None:
    """Give every B a non-zero value, as training would: a B of zeros would hide a wrong merge."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoRALinear):
                module.B.normal_(0.0, 0.5)


def token_ids(seed: int = 2) -> torch.Tensor:
    return torch.randint(0, TINY["vocab_size"], (3, 10), generator=torch.Generator().manual_seed(seed))


def test_zero_b_is_exactly_the_base_model():
    model, ids = tiny_gpt(), token_ids()
    with torch.no_grad():
        before = model(ids)
        after = apply_lora(model, rank=4)(ids)
    assert torch.equal(before, after)
    assert sum(isinstance(module, LoRALinear) for module in model.modules()) == 4 * TINY["n_layers"]


@pytest.mark.parametrize("targets", [TARGETS, ("qkv_proj",), ("fc_in", "out_proj")])
def test_merged_equals_unmerged_in_float64(targets):
    model = apply_lora(tiny_gpt().double(), rank=3, alpha=6.0, targets=targets)
    randomize_adapters(model)
    ids = token_ids()
    with torch.no_grad():
        unmerged = model(ids)
        merged = merge_lora(model)(ids)
    assert not any(isinstance(module, LoRALinear) for module in model.modules())
    assert set(model.state_dict()) == set(tiny_gpt().state_dict())
    assert (unmerged - merged).abs().max().item() < 1e-10
    assert (unmerged - tiny_gpt().double()(ids)).abs().max().item() > 1e-3  # the adapters did change the model


def test_only_adapter_parameters_get_gradients():
    model = apply_lora(tiny_gpt(), rank=2, targets=("qkv_proj", "fc_out"))
    randomize_adapters(model)
    ids = token_ids()
    _, loss = model(ids[:, :-1], ids[:, 1:])
    loss.backward()
    with_gradient = {name for name, p in model.named_parameters() if p.grad is not None}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    expected = {f"blocks.{i}.{part}.{m}" for i in range(2) for part in ("attn.qkv_proj", "mlp.fc_out") for m in "AB"}
    assert with_gradient == trainable == expected
    assert all(model.get_parameter(name).grad.abs().sum() > 0 for name in expected)


def test_saved_adapters_on_a_fresh_base_reproduce_the_fine_tuned_logits(tmp_path):
    tuned = apply_lora(tiny_gpt(), rank=4, alpha=2.0, targets=("qkv_proj", "fc_in"))
    optimizer = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=1e-2)
    ids = token_ids()
    for _ in range(3):
        _, loss = tuned(ids[:, :-1], ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.save(lora_state_dict(tuned), tmp_path / "adapters.pt")
    state = torch.load(tmp_path / "adapters.pt", weights_only=True)
    assert set(state) == {"lora_alpha"} | {f"blocks.{i}.{p}.{m}" for i in range(2)
                                            for p in ("attn.qkv_proj", "mlp.fc_in") for m in "AB"}
    fresh = load_lora(tiny_gpt(), state)
    with torch.no_grad():
        assert torch.equal(fresh(ids), tuned(ids))
        assert not torch.equal(fresh(ids), tiny_gpt()(ids))
    layer = fresh.get_submodule("blocks.0.attn.qkv_proj")
    assert isinstance(layer, LoRALinear) and layer.rank == 4 and layer.scale == 0.5


@pytest.mark.parametrize("rank", [0, -1, 1.5, True])
def test_a_rank_that_is_not_a_positive_integer_is_rejected(rank):
    model = tiny_gpt()
    with pytest.raises(ValueError, match=f"rank must be a positive integer, got {rank!r}"):
        apply_lora(model, rank=rank)
    assert not any(isinstance(module, LoRALinear) for module in model.modules())
    assert all(p.requires_grad for p in model.parameters())  # untouched


@pytest.mark.parametrize("targets", [("qkv_proj", "c_attn"), ("lm_head",), ()])
def test_an_unknown_target_is_rejected_with_the_known_ones(targets):
    with pytest.raises(ValueError, match="unknown LoRA targets .*choose one or more of qkv_proj, out_proj"):
        apply_lora(tiny_gpt(), rank=2, targets=targets)


def test_adapters_twice_are_rejected():
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        apply_lora(apply_lora(tiny_gpt(), rank=2), rank=2)


def test_adapters_onto_a_base_of_other_shapes_name_both_shapes():
    state = lora_state_dict(apply_lora(tiny_gpt(), rank=4))
    other = tiny_gpt(d_model=24)
    message = (r"blocks.0.attn.out_proj: adapters of shapes A \(4, 16\), B \(16, 4\) do not fit the base weight "
               r"\(24, 24\), which needs A \(4, 24\), B \(24, 4\)")
    with pytest.raises(ValueError, match=message):
        load_lora(other, state)
    assert not any(isinstance(module, LoRALinear) for module in other.modules())


def test_adapters_onto_a_base_with_other_layers_are_rejected():
    state = lora_state_dict(apply_lora(tiny_gpt(), rank=4))
    with pytest.raises(ValueError, match=r"do not fit this model: adapters for layers it lacks \['blocks.1"):
        load_lora(tiny_gpt(n_layers=1), state)
    with pytest.raises(ValueError, match="no lora_alpha"):
        load_lora(tiny_gpt(), {key: value for key, value in state.items() if key != "lora_alpha"})
    with pytest.raises(ValueError, match="has no LoRA adapters"):
        lora_state_dict(tiny_gpt())
