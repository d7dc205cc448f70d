"""Chapter 12's decoding path: the plain model's results, within a stated tolerance."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinytransformer.decoding import (
    DECODING_DTYPES,
    DecodingLinear,
    bench_decoding,
    bytes_per_token,
    decoding_model,
    quantize_int8,
)
from tinytransformer.generation import SamplingOptions
from tinytransformer.model import GPT, GPTConfig, gpt2_config

CONFIG = GPTConfig(vocab_size=300, max_seq_len=32, d_model=48, n_layers=2, n_heads=4)
GREEDY = SamplingOptions(greedy=True)


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


def prompt(batch_size: int = 2, length: int = 6) -> torch.Tensor:
    return torch.randint(
        0,
        CONFIG.vocab_size,
        (batch_size, length),
        generator=torch.Generator().manual_seed(1),
    )


# Tolerances on logits of about unit size: float32 reorders the same sums; bfloat16
# keeps 8 significant bits of weights and inputs; int8 rounds each weight to 1/254 of
# its row's range.
TOLERANCE = {"float32": 1e-5, "bfloat16": 0.05, "int8": 0.05}


@pytest.mark.parametrize("dtype", DECODING_DTYPES)
def test_decoding_model_gives_the_plain_logits_within_its_tolerance(model, dtype):
    with torch.no_grad():
        plain, fast = model(prompt()), decoding_model(model, dtype)(prompt())
    assert fast.dtype == torch.float32 and fast.shape == plain.shape
    assert (fast - plain).abs().max() < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DECODING_DTYPES)
def test_decoding_model_generates_the_same_greedy_tokens(model, dtype):
    assert torch.equal(
        decoding_model(model, dtype).generate(prompt(), 20, GREEDY),
        model.generate(prompt(), 20, GREEDY),
    )


def test_the_model_itself_is_unchanged_and_the_copy_has_no_trainable_parameters(model):
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fast = decoding_model(model, "int8")
    assert all(
        torch.equal(before[name], tensor) for name, tensor in model.state_dict().items()
    )
    assert all(isinstance(module, nn.Linear) is False for module in fast.modules())
    assert not any(parameter.requires_grad for parameter in fast.parameters())


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_float32_cuts_each_weight_along_its_input_into_one_slice_per_thread(
    model, threads
):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        fast = decoding_model(model, "float32")
    finally:
        torch.set_num_threads(before)
    qkv, fc_out = fast.blocks[0].attn.qkv_proj, fast.blocks[0].mlp.fc_out
    assert qkv.splits == fc_out.splits == threads  # each divides 48 and 192
    assert qkv.weight.shape == (threads, 48 // threads, 3 * 48)
    assert fc_out.weight.shape == (threads, 4 * 48 // threads, 48)
    assert qkv.weight.is_contiguous() and fc_out.weight.is_contiguous()
    slices = model.blocks[0].attn.qkv_proj.weight.t().reshape(qkv.weight.shape)
    assert torch.equal(qkv.weight, slices)  # the same numbers, only laid out
    lm_head = fast.lm_head.weight
    assert (
        lm_head.data_ptr() != fast.embeddings.token_embedding.weight.data_ptr()
    )  # its own copy
    with torch.no_grad():  # equal to the plain model's, whatever the slicing
        assert (fast(prompt()) - model(prompt())).abs().max() < TOLERANCE["float32"]


def test_float32_keeps_one_slice_when_the_threads_do_not_divide_the_input_or_off_the_cpu():
    before = torch.get_num_threads()
    torch.set_num_threads(5)
    try:
        layer = DecodingLinear(nn.Linear(48, 10), "float32")
    finally:
        torch.set_num_threads(before)
    assert layer.splits == 1 and layer.weight.shape == (1, 48, 10)
    on_another_device = DecodingLinear(nn.Linear(48, 10, device="meta"), "float32")
    assert on_another_device.splits == 1  # CPU threads say nothing about a GPU
    x = torch.randn(3, 2, 48)
    assert torch.allclose(layer(x), F.linear(x, *layer_weights(layer)), atol=1e-6)


def layer_weights(layer: DecodingLinear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (out, in) weight and the bias back from a float32 ``DecodingLinear``."""
    return layer.weight.reshape(layer.in_features, -1).t(), layer.bias


def test_quantize_int8_rounds_each_weight_to_half_a_step_of_its_row():
    weight = (
        torch.randn(20, 30) * torch.logspace(-3, 1, 20)[:, None]
    )  # rows of very different ranges
    weight[3] = 0.0  # an all-zero row must not divide by zero
    q, scales = quantize_int8(weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127 and scales.shape == (20,)
    assert torch.all((scales[:, None] * q - weight).abs() <= scales[:, None] / 2 + 1e-7)
    assert torch.equal(q[3], torch.zeros(30, dtype=torch.int8))


@pytest.mark.parametrize("bias", [True, False])
def test_the_int8_kernel_computes_the_dequantised_product(bias):
    torch.manual_seed(0)
    linear = nn.Linear(64, 40, bias=bias)
    x = torch.randn(2, 3, 64)
    q, scales = quantize_int8(linear.weight.detach())
    dequantised = F.linear(
        x.bfloat16().float(), scales[:, None] * q, linear.bias
    )  # the formula, in float32
    out = DecodingLinear(linear, "int8")(x)
    assert out.shape == (2, 3, 40) and out.dtype == torch.float32
    assert torch.allclose(
        out, dequantised, atol=0.02
    )  # the kernel's output is bfloat16


def test_unknown_dtype_is_refused(model):
    with pytest.raises(ValueError, match="unknown decoding dtype 'float16'"):
        decoding_model(model, "float16")


def test_bytes_per_token_counts_the_linear_weights_and_the_kv_cache():
    config = gpt2_config("small")
    weights = 12 * (4 * 768 * 768 + 2 * 768 * 3072) + 50257 * 768
    assert bytes_per_token(config) == 4 * weights
    assert bytes_per_token(config, "bfloat16") == 2 * weights
    assert (
        bytes_per_token(config, "int8", context_len=10)
        == weights + 2 * 12 * 10 * 768 * 4
    )


def test_bench_decoding_times_every_contestant_and_counts_agreement():
    results = bench_decoding(
        CONFIG, new_tokens=5, repeats=1, dtypes=("float32", "int8")
    )
    assert list(results)[-3:] == ["plain", "float32", "int8"]
    for row in results.values():
        assert (
            row["tokens_per_s"] > 0
            and len(row["seconds"]) == 1
            and 0 <= row["agree"] <= 5
        )
    assert (
        results["plain"]["agree"] == results["float32"]["agree"] == 5
    )  # same greedy tokens as the reference
