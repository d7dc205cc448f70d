"""The complete model: configuration, initialisation, parameter count, generation (chapter 6)."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinytransformer.generation import SamplingOptions
from tinytransformer.model import (
    GPT,
    GPTConfig,
    block_gradient_norms,
    count_parameters,
    gpt2_config,
)

GREEDY = SamplingOptions(greedy=True)


@pytest.fixture
def model(tiny_config) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config)


def test_logits_have_shape_batch_time_vocab(model, tiny_config):
    assert model(torch.randint(0, 32, (3, 10))).shape == (3, 10, tiny_config.vocab_size)


def test_logits_at_t_ignore_tokens_after_t(model):
    token_ids = torch.randint(0, 32, (2, 12))
    changed = token_ids.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 32
    assert torch.allclose(model(token_ids)[:, :7], model(changed)[:, :7], atol=1e-6)
    assert not torch.allclose(model(token_ids)[:, 7:], model(changed)[:, 7:])


def test_post_ln_model_is_causal_too(tiny_config):
    model = GPT(GPTConfig(**{**vars(tiny_config), "pre_norm": False}))
    token_ids = torch.randint(0, 32, (1, 10))
    changed = token_ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 3) % 32
    assert torch.allclose(model(token_ids)[:, :5], model(changed)[:, :5], atol=1e-6)


def test_sequence_longer_than_max_seq_len_raises(model):
    with pytest.raises(ValueError, match=r"longer than max_seq_len \(16\)"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_float_token_ids_raise(model):
    with pytest.raises(ValueError, match="integer tensor"):
        model(torch.zeros(1, 4))


def test_weights_are_tied_by_default(model):
    assert model.lm_head.weight is model.embeddings.token_embedding.weight


def test_untied_model_has_its_own_output_matrix(tiny_config):
    model = GPT(GPTConfig(**{**vars(tiny_config), "tie_weights": False}))
    assert model.lm_head.weight is not model.embeddings.token_embedding.weight
    assert model.num_parameters() == count_parameters(model.config)


def test_causal_mask_buffer_is_not_saved(model):
    assert "mask" not in model.state_dict()


def test_initialisation_statistics():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=2000, max_seq_len=128, d_model=256, n_layers=8, n_heads=8)
    model = GPT(config)
    residual_std = 0.02 / math.sqrt(2 * config.n_layers)
    for block in model.blocks:
        assert block.attn.qkv_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.out_proj.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert block.mlp.fc_out.weight.std().item() == pytest.approx(residual_std, rel=0.05)
        assert torch.equal(block.attn.qkv_proj.bias, torch.zeros(3 * 256))
        assert torch.equal(block.attn_norm.weight, torch.ones(256))
    assert model.embeddings.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.embeddings.position_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_xavier_initialisation_statistics():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=1000, max_seq_len=64, d_model=256, n_layers=4,
                       n_heads=8, weight_init="xavier")
    model = GPT(config)
    d = config.d_model
    square = pytest.approx(math.sqrt(1 / d), rel=0.02)
    for query_key_value in model.blocks[0].attn.qkv_proj.weight.chunk(3):  # 3 matrices
        assert query_key_value.std().item() == square
    assert model.blocks[3].attn.out_proj.weight.std().item() == square
    fc_in = model.blocks[0].mlp.fc_in
    assert fc_in.weight.std().item() == pytest.approx(math.sqrt(2 / (5 * d)), rel=0.02)
    token = model.embeddings.token_embedding.weight.std().item()
    assert token == pytest.approx(math.sqrt(2 / (1000 + d)), rel=0.02)
    assert (fc_in.bias == 0).all() and (model.final_norm.weight == 1).all()


def test_initial_loss_is_close_to_log_vocab_size(model):
    token_ids = torch.randint(0, 32, (8, 16), generator=torch.Generator().manual_seed(0))
    loss = F.cross_entropy(model(token_ids[:, :-1]).flatten(0, 1), token_ids[:, 1:].flatten())
    assert loss.item() == pytest.approx(math.log(32), abs=0.1)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_weights": False},
        {"bias": False},
        {"d_ff": 48},
        {"n_layers": 3, "n_heads": 8},
        {"bias": False, "tie_weights": False},
    ],
)
def test_parameter_formula_matches_the_instantiated_model(tiny_config, overrides):
    config = GPTConfig(**{**vars(tiny_config), **overrides})
    assert GPT(config).num_parameters() == count_parameters(config)


def test_gpt2_small_has_its_published_parameter_count():
    assert count_parameters(gpt2_config("small")) == 124_439_808
    assert count_parameters(GPTConfig()) == 124_439_808


@pytest.mark.parametrize(("size", "millions"), [("medium", 354.8), ("large", 774.0), ("xl", 1557.6)])
def test_gpt2_sizes(size, millions):
    assert count_parameters(gpt2_config(size)) / 1e6 == pytest.approx(millions, abs=0.1)


def test_gpt3_formula_gives_175_billion():
    gpt3 = GPTConfig(max_seq_len=2048, d_model=12288, n_layers=96, n_heads=96)
    assert count_parameters(gpt3) / 1e9 == pytest.approx(175, abs=0.5)


def test_unknown_gpt2_size_lists_the_valid_ones():
    with pytest.raises(ValueError, match="small, medium, large, xl"):
        gpt2_config("huge")


def test_d_ff_defaults_to_four_times_d_model():
    assert GPTConfig(d_model=64, n_heads=4).d_ff == 256
    assert GPTConfig(d_model=64, n_heads=4).d_head == 16


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 256, "n_heads": 6}, r"n_heads \(6\) must divide d_model \(256\)"),
        ({"n_layers": 0}, "n_layers must be a positive integer, got 0"),
        ({"vocab_size": -5}, "vocab_size must be a positive integer, got -5"),
        ({"max_seq_len": 2.5}, "max_seq_len must be a positive integer, got 2.5"),
        ({"d_ff": -1}, "d_ff must be a positive integer"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
        ({"dropout": -0.1}, "dropout must be in"),
        ({"gelu_approximate": "erf"}, r"gelu_approximate must be 'tanh' \(GPT-2\) or 'none' \(exact GELU\), got 'erf'"),
        ({"n_heads": True}, "n_heads must be a positive integer, got True"),
        ({"weight_init": "he"}, "weight_init must be 'gpt2' or 'xavier', got 'he'"),
    ],
)
def test_invalid_hyperparameters_raise_value_error_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**overrides)


def test_small_model_memorises_one_batch(tiny_config):
    torch.manual_seed(0)
    model = GPT(tiny_config)
    batch = torch.randint(0, 32, (4, 17), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


def test_generate_appends_max_new_tokens_after_the_prompt(model):
    prompt = torch.randint(0, 32, (2, 5))
    out = model.generate(prompt, max_new_tokens=7)
    assert out.shape == (2, 12) and torch.equal(out[:, :5], prompt)
    assert ((0 <= out) & (out < 32)).all()


def test_generate_runs_past_max_seq_len_by_cropping(model):
    out = model.generate(torch.zeros(1, 3, dtype=torch.long), 40, GREEDY)
    assert out.shape == (1, 43)


def test_greedy_generation_is_deterministic_and_takes_the_argmax(model):
    prompt = torch.randint(0, 32, (1, 4), generator=torch.Generator().manual_seed(2))
    out = model.generate(prompt, 1, GREEDY)
    assert out[0, -1] == model(prompt)[0, -1].argmax()
    assert torch.equal(model.generate(prompt, 10, GREEDY), model.generate(prompt, 10, GREEDY))


def test_seeded_sampling_is_reproducible(model):
    prompt = torch.zeros(3, 2, dtype=torch.long)
    first = model.generate(prompt, 12, SamplingOptions(temperature=1.0), generator=torch.Generator().manual_seed(5))
    again = model.generate(prompt, 12, SamplingOptions(temperature=1.0), generator=torch.Generator().manual_seed(5))
    other = model.generate(prompt, 12, SamplingOptions(temperature=1.0), generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_generate_restores_training_mode(model):
    model.train()
    model.generate(torch.zeros(1, 1, dtype=torch.long), 2)
    assert model.training


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"max_new_tokens": 0}, "max_new_tokens"), ({"max_new_tokens": 3, "temperature": 0.0}, "temperature")],
)
def test_generate_rejects_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 1, dtype=torch.long), kwargs.pop("max_new_tokens"), SamplingOptions(**kwargs))


def test_block_gradient_norms_gives_one_norm_per_block_and_keeps_the_random_state(tiny_config):
    rng_state = torch.get_rng_state()
    norms = block_gradient_norms(tiny_config, batch_size=2)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert norms.shape == (tiny_config.n_layers,) and (norms > 0).all()
    assert torch.equal(norms, block_gradient_norms(tiny_config, batch_size=2))  # seeded: reproducible


def test_fast_attention_model_trains_without_a_mask_tensor(tiny_config, monkeypatch):
    calls, fused = [], F.scaled_dot_product_attention

    def spy(*args, **kwargs):  # records how the fused kernel is called
        calls.append(kwargs)
        return fused(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    GPT(GPTConfig(**{**vars(tiny_config), "fast_attention": True}))(torch.randint(0, 32, (2, 16)))
    assert calls == [{"is_causal": True}] * tiny_config.n_layers


def test_fast_attention_model_gives_the_same_logits_and_gradients(tiny_config):
    torch.manual_seed(0)
    book = GPT(tiny_config)
    fast = GPT(GPTConfig(**{**vars(tiny_config), "fast_attention": True}))
    fast.load_state_dict(book.state_dict())
    token_ids = torch.randint(0, 32, (2, 16))
    assert torch.allclose(book(token_ids), fast(token_ids), atol=1e-5)
    book(token_ids).logsumexp(-1).sum().backward()
    fast(token_ids).logsumexp(-1).sum().backward()
    for (name, a), b in zip(book.named_parameters(), fast.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
