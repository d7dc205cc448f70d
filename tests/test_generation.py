"""Generation: the KV cache, sampling filters, the generation loop and `tinytransformer generate` (chapter 10)."""

import io
import math

import numpy as np
import pytest
import torch

from tinytransformer.attention import KVCache
from tinytransformer.cli import main
from tinytransformer.commands import generate as generate_command
from tinytransformer.data import TokenData
from tinytransformer.generation import (
    SamplingOptions,
    encode_prompt,
    generate_tokens,
    sample_next_token,
    top_k_filter,
    top_p_filter,
)
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.tokenizer import get_tokenizer
from tinytransformer.train import TrainConfig, Trainer

GREEDY = SamplingOptions(greedy=True)


@pytest.fixture
def model(tiny_config) -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config).eval()


def new_caches(model: GPT) -> list[KVCache]:
    return [KVCache(model.config.max_seq_len) for _ in model.blocks]


def record_last_logits(model: GPT) -> list[torch.Tensor]:
    """Make every forward call of ``model`` also store its last position's logits and input length."""
    records = []
    forward = model.forward

    def recording_forward(token_ids, kv_caches=None):
        logits = forward(token_ids, kv_caches=kv_caches)
        start = kv_caches[0].seq_len - token_ids.shape[1] if kv_caches else 0
        records.append((logits[:, -1].clone(), start + token_ids.shape[1]))
        return logits

    model.forward = recording_forward
    return records


# --- the KV cache -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 2, 5])
@pytest.mark.parametrize("prompt_len", [1, 4])
def test_cached_logits_equal_uncached_logits_step_after_step(model, batch_size, prompt_len):
    token_ids = torch.randint(0, 32, (batch_size, prompt_len + 8), generator=torch.Generator().manual_seed(1))
    caches = new_caches(model)
    with torch.no_grad():
        cached = [model(token_ids[:, :prompt_len], kv_caches=caches)[:, -1]]
        cached += [model(token_ids[:, t : t + 1], kv_caches=caches)[:, -1] for t in range(prompt_len, prompt_len + 8)]
        uncached = [model(token_ids[:, : t + 1])[:, -1] for t in range(prompt_len - 1, prompt_len + 8)]
    assert len(cached) == len(uncached) == 9
    for step, (a, b) in enumerate(zip(cached, uncached)):
        assert a.dtype == torch.float32
        assert torch.allclose(a, b, atol=1e-5, rtol=0), f"step {step}: differ by {(a - b).abs().max():.2e}"


def test_cache_filled_in_chunks_gives_every_position_the_uncached_logits(model):
    token_ids = torch.randint(0, 32, (2, 12), generator=torch.Generator().manual_seed(2))
    caches = new_caches(model)
    with torch.no_grad():
        chunks = [model(token_ids[:, a:b], kv_caches=caches) for a, b in ((0, 3), (3, 7), (7, 8), (8, 12))]
        assert torch.allclose(torch.cat(chunks, dim=1), model(token_ids), atol=1e-5, rtol=0)


def test_cache_holds_every_position_of_every_layer(model, tiny_config):
    caches = new_caches(model)
    with torch.no_grad():
        model(torch.zeros(3, 5, dtype=torch.long), kv_caches=caches)
        model(torch.zeros(3, 1, dtype=torch.long), kv_caches=caches)
    d_head = tiny_config.d_model // tiny_config.n_heads
    for cache in caches:
        assert cache.seq_len == 6
        assert cache.k.shape == cache.v.shape == (3, tiny_config.n_heads, tiny_config.max_seq_len, d_head)
    # The filled positions are the keys the uncached model computes for the same tokens.
    keys = []
    hook = model.blocks[0].attn.qkv_proj.register_forward_hook(lambda module, inputs, output: keys.append(output))
    with torch.no_grad():
        model(torch.zeros(3, 6, dtype=torch.long))
    hook.remove()
    d_model = tiny_config.d_model
    expected = keys[0][..., d_model : 2 * d_model].view(3, 6, tiny_config.n_heads, d_head).transpose(1, 2)
    assert torch.allclose(caches[0].k[:, :, :6], expected, atol=1e-6)


def test_cache_memory_per_token_is_two_times_layers_times_width_times_bytes(model, tiny_config):
    caches = new_caches(model)
    with torch.no_grad():
        model(torch.zeros(2, 10, dtype=torch.long), kv_caches=caches)  # the caches reserve max_seq_len positions
    measured = sum(cache.k.nbytes + cache.v.nbytes for cache in caches) / (2 * tiny_config.max_seq_len)
    assert measured == 2 * tiny_config.n_layers * tiny_config.d_model * 4


def test_forward_refuses_a_cache_list_of_the_wrong_length(model):
    with pytest.raises(ValueError, match="got 1 KV caches for 2 blocks"):
        model(torch.zeros(1, 3, dtype=torch.long), kv_caches=[KVCache(model.config.max_seq_len)])


def test_cached_positions_count_towards_max_seq_len(model):
    caches = new_caches(model)
    with torch.no_grad():
        model(torch.zeros(1, 12, dtype=torch.long), kv_caches=caches)
        with pytest.raises(ValueError, match=r"sequence of 17 positions is longer than max_seq_len \(16\)"):
            model(torch.zeros(1, 5, dtype=torch.long), kv_caches=caches)


def test_a_naively_shifted_cache_would_give_wrong_logits(model):
    """Why the loop rebuilds the cache: cached keys carry their old positions and context."""
    token_ids = torch.randint(0, 32, (1, 17), generator=torch.Generator().manual_seed(3))
    caches = new_caches(model)
    with torch.no_grad():
        model(token_ids[:, :16], kv_caches=caches)
        for cache in caches:  # forget positions 0..7, move the keys and values of 8..15 to the front
            cache.k[:, :, :8], cache.v[:, :, :8] = cache.k[:, :, 8:16].clone(), cache.v[:, :, 8:16].clone()
            cache.seq_len = 8
        shifted = model(token_ids[:, 16:], kv_caches=caches)[0, -1]
        recomputed = model(token_ids[:, 8:])[0, -1]
    assert not torch.allclose(shifted, recomputed, atol=1e-3)


# --- the generation loop ------------------------------------------------------------------------


def test_generation_past_max_seq_len_rebuilds_the_cache_and_matches_the_uncached_loop(model):
    prompt = torch.randint(0, 32, (3, 5), generator=torch.Generator().manual_seed(4))
    runs = {}
    for use_cache in (True, False):
        records = record_last_logits(model)
        tokens = model.generate(prompt, 48, use_cache=use_cache, generator=torch.Generator().manual_seed(0))
        runs[use_cache] = tokens, records
        del model.forward  # back to the class's forward
    (cached_tokens, cached), (uncached_tokens, uncached) = runs[True], runs[False]
    assert torch.equal(cached_tokens, uncached_tokens)
    assert len(cached) == len(uncached) == 48  # one forward call per new token, in both loops
    for step, ((a, a_len), (b, b_len)) in enumerate(zip(cached, uncached)):
        assert a_len == b_len <= 16, f"step {step}: context lengths {a_len} and {b_len}"
        assert torch.allclose(a, b, atol=1e-5, rtol=0), f"step {step}: differ by {(a - b).abs().max():.2e}"
    lengths = [length for _, length in uncached]
    # the prompt grows to the full context; then its newest half (8 tokens, the new one included) is kept
    assert lengths == list(range(5, 17)) + list(range(8, 17)) * 4


def test_a_prompt_longer_than_the_context_keeps_its_end(model):
    long_prompt = torch.randint(0, 32, (1, 40), generator=torch.Generator().manual_seed(5))
    out = model.generate(long_prompt, 3, GREEDY)
    assert torch.equal(out[:, :40], long_prompt)
    continued = model.generate(long_prompt[:, -16:], 3, GREEDY)
    assert torch.equal(out, torch.cat([long_prompt[:, :24], continued], dim=1))


def test_batched_prompts_give_the_same_tokens_as_one_prompt_at_a_time(model):
    prompts = torch.randint(0, 32, (4, 6), generator=torch.Generator().manual_seed(6))
    together = model.generate(prompts, 20, GREEDY)
    for row in range(4):
        assert torch.equal(together[row : row + 1], model.generate(prompts[row : row + 1], 20, GREEDY))


def test_generate_tokens_yields_one_column_per_step(model):
    steps = list(generate_tokens(model, torch.zeros(2, 3, dtype=torch.long), 7, GREEDY))
    assert len(steps) == 7 and all(step.shape == (2, 1) for step in steps)
    assert torch.equal(
        torch.cat(steps, dim=1), model.generate(torch.zeros(2, 3, dtype=torch.long), 7, GREEDY)[:, 3:]
    )


def test_rows_stop_at_end_of_text_and_are_padded_with_it(model):
    prompts = torch.randint(0, 32, (4, 3), generator=torch.Generator().manual_seed(7))
    free = model.generate(prompts, 30, generator=torch.Generator().manual_seed(1))[:, 3:]
    eot_id = free[0, 4].item()  # some token that row 0 produces at step 4
    out = model.generate(prompts, 30, SamplingOptions(eot_id=eot_id), generator=torch.Generator().manual_seed(1))[:, 3:]
    first = (free == eot_id).int().argmax(dim=1).tolist()
    for row in range(4):
        if eot_id in free[row]:
            end = first[row]
            assert torch.equal(out[row, : end + 1], free[row, : end + 1])  # same tokens up to the end-of-text
            assert (out[row, end:] == eot_id).all()  # then only padding
    if all(eot_id in row for row in free):
        assert out.shape[1] == max(first) + 1  # stopped once every row had finished


def test_generation_stops_when_every_row_has_finished(model):
    prompt = torch.zeros(1, 2, dtype=torch.long)
    eot_id = model.generate(prompt, 1, GREEDY)[0, -1].item()  # the very first greedy token
    assert model.generate(prompt, 50, SamplingOptions(greedy=True, eot_id=eot_id)).shape == (1, 3)


def test_an_end_of_text_token_in_the_prompt_does_not_stop_generation(model):
    for eot_id in range(10, 32):  # an end-of-text id that starts the prompt, but that the model never picks
        prompt = torch.tensor([[eot_id, 5, 9]])
        expected = model.generate(prompt, 4, GREEDY)  # (1, 7), no end-of-text handling
        if eot_id not in expected[0, 3:].tolist():
            break
    else:
        pytest.fail("every id was picked by the model; no case to test")
    stopping = SamplingOptions(greedy=True, eot_id=eot_id)
    assert torch.equal(model.generate(prompt, 4, stopping), expected)  # all 4 new tokens


def test_seeded_sampling_is_reproducible_with_and_without_the_cache(model):
    prompt = torch.randint(0, 32, (3, 4), generator=torch.Generator().manual_seed(8))
    options = SamplingOptions(temperature=0.9, top_k=10, top_p=0.9)
    first = model.generate(prompt, 25, options, generator=torch.Generator().manual_seed(3))
    again = model.generate(prompt, 25, options, generator=torch.Generator().manual_seed(3))
    uncached = model.generate(prompt, 25, options, generator=torch.Generator().manual_seed(3), use_cache=False)
    other = model.generate(prompt, 25, options, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and torch.equal(first, uncached)
    assert not torch.equal(first, other)


def test_greedy_decoding_ignores_temperature_and_filters(model):
    prompt = torch.zeros(2, 3, dtype=torch.long)
    plain = model.generate(prompt, 10, GREEDY)
    assert torch.equal(
        plain, model.generate(prompt, 10, SamplingOptions(greedy=True, temperature=5.0, top_k=3, top_p=0.2))
    )


def test_generation_restores_the_training_mode_even_when_stopped_early(model):
    model.train()
    steps = generate_tokens(model, torch.zeros(1, 1, dtype=torch.long), 10, GREEDY)
    next(steps)
    assert not model.training  # dropout off while generating
    steps.close()
    assert model.training


def test_generation_builds_no_autograd_graph(model):
    steps = list(generate_tokens(model, torch.zeros(1, 2, dtype=torch.long), 3))
    assert not any(step.requires_grad for step in steps)


# --- sampling filters against hand-computed expectations -------------------------------------------

PROBABILITIES = torch.tensor([[0.07, 0.5, 0.03, 0.25, 0.15]])  # sorted: 0.5, 0.25, 0.15, 0.07, 0.03


def kept(filtered: torch.Tensor) -> list[int]:
    return filtered[0].isfinite().nonzero().flatten().tolist()


@pytest.mark.parametrize(
    ("k", "expected"), [(1, [1]), (2, [1, 3]), (3, [1, 3, 4]), (5, [0, 1, 2, 3, 4]), (99, [0, 1, 2, 3, 4])]
)
def test_top_k_keeps_the_k_most_likely_tokens(k, expected):
    assert kept(top_k_filter(PROBABILITIES.log(), k)) == expected


def test_top_k_keeps_every_token_tied_with_the_kth():
    assert kept(top_k_filter(torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0]]), 2)) == [1, 2, 3]


def test_filters_leave_the_kept_logits_unchanged_and_set_the_rest_to_minus_infinity():
    logits = PROBABILITIES.log()
    for filtered in (top_k_filter(logits, 2), top_p_filter(logits, 0.6)):
        assert torch.equal(filtered[0, [1, 3]], logits[0, [1, 3]])
        assert (filtered[0, [0, 2, 4]] == float("-inf")).all()


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.4, [1]),  # 0.5 alone reaches 0.4
        (0.6, [1, 3]),  # 0.5 < 0.6: 0.25 crosses and is kept
        (0.8, [1, 3, 4]),  # 0.75 < 0.8: 0.15 crosses and is kept
        (0.95, [0, 1, 3, 4]),  # 0.9 < 0.95: 0.07 crosses
        (0.99, [0, 1, 2, 3, 4]),  # 0.97 < 0.99: the last one too
        (1.0, [0, 1, 2, 3, 4]),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p_including_the_crossing_token(p, expected):
    assert kept(top_p_filter(PROBABILITIES.log(), p)) == expected


@pytest.mark.parametrize(("p", "count"), [(1e-9, 1), (0.0005, 1), (0.0105, 11), (0.3005, 301)])
def test_top_p_on_a_flat_distribution_keeps_just_enough_tokens_and_never_none(p, count):
    flat = torch.zeros(1, 1000)  # every token has probability 0.001
    assert len(kept(top_p_filter(flat, p))) == count
    assert kept(top_p_filter(PROBABILITIES.log(), min(p, 0.4))) == [1]


def test_top_p_treats_each_row_of_a_batch_on_its_own():
    logits = torch.stack([PROBABILITIES[0], PROBABILITIES[0].roll(1), torch.tensor([0.3, 0.1, 0.45, 0.1, 0.05])]).log()
    filtered = top_p_filter(logits, 0.6)
    assert [row.isfinite().nonzero().flatten().tolist() for row in filtered] == [[1, 3], [2, 4], [0, 2]]


def test_top_p_after_top_k_renormalises_over_the_kept_tokens():
    # top-k 3 leaves 0.5, 0.25, 0.15, renormalised to 0.556, 0.278, 0.167; 0.556 + 0.278 = 0.833 reaches 0.8
    logits = top_k_filter(PROBABILITIES.log(), 3)
    assert kept(top_p_filter(logits, 0.8)) == [1, 3]
    assert kept(top_p_filter(logits, 0.85)) == [1, 3, 4]


def test_sampling_draws_only_kept_tokens_with_renormalised_frequencies():
    logits = PROBABILITIES.log().expand(40_000, 5)
    tokens = sample_next_token(logits, SamplingOptions(top_p=0.8), generator=torch.Generator().manual_seed(0)).flatten()
    frequencies = torch.bincount(tokens, minlength=5) / len(tokens)
    expected = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.15]) / 0.9
    assert (frequencies - expected).abs().max() < 0.01


def test_temperature_divides_the_logits_before_the_softmax():
    logits = torch.tensor([[0.0, math.log(3.0)]]).expand(40_000, 2)  # probabilities 1/4 and 3/4
    for temperature, p_second in ((1.0, 0.75), (2.0, math.sqrt(3) / (1 + math.sqrt(3))), (0.5, 0.9)):
        tokens = sample_next_token(
            logits, SamplingOptions(temperature=temperature), generator=torch.Generator().manual_seed(0)
        )
        assert tokens.float().mean().item() == pytest.approx(p_second, abs=0.01)


def test_greedy_step_is_the_argmax():
    logits = torch.randn(6, 40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample_next_token(logits, GREEDY), logits.argmax(dim=-1, keepdim=True))


# --- bad input ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer, got 0"),
        ({"max_new_tokens": -3}, "max_new_tokens must be a positive integer, got -3"),
        ({"max_new_tokens": 2.5}, "max_new_tokens must be a positive integer, got 2.5"),
        ({"max_new_tokens": True}, "max_new_tokens must be a positive integer, got True"),
        ({"temperature": -0.5}, r"temperature must be a finite number of at least 0, got -0.5"),
        ({"temperature": float("nan")}, "temperature must be a finite number of at least 0, got nan"),
        ({"temperature": 0.0}, "ask for greedy decoding"),
        ({"top_k": 0}, "top_k must be a positive integer, got 0"),
        ({"top_k": -2}, "top_k must be a positive integer, got -2"),
        ({"top_k": 1.5}, "top_k must be a positive integer, got 1.5"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\], got 0.0"),
        ({"top_p": -0.1}, r"top_p must be in \(0, 1\], got -0.1"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\], got 1.5"),
        ({"top_p": float("nan")}, r"top_p must be in \(0, 1\], got nan"),
    ],
)
def test_unusable_options_raise_value_errors_naming_them(model, options, message):
    max_new_tokens = options.pop("max_new_tokens", 5)
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 1, dtype=torch.long), max_new_tokens, SamplingOptions(**options))


def test_temperature_zero_is_allowed_with_greedy_decoding():
    assert SamplingOptions(temperature=0.0, greedy=True).greedy


@pytest.mark.parametrize("shape", [(1, 0), (3, 0), (4,)])
def test_an_empty_or_one_dimensional_prompt_is_refused(model, shape):
    with pytest.raises(ValueError, match="the prompt must have shape"):
        model.generate(torch.zeros(shape, dtype=torch.long), 3)


@pytest.mark.pretrained_encodings
def test_an_empty_prompt_starts_from_end_of_text_when_the_tokenizer_has_one():
    assert encode_prompt(get_tokenizer("gpt2"), "") == [50256]
    assert encode_prompt(get_tokenizer("gpt2"), "Hello") == get_tokenizer("gpt2").encode("Hello")


def test_an_empty_prompt_without_end_of_text_token_is_refused():
    with pytest.raises(ValueError, match="the prompt is empty and the char tokenizer has no end-of-text token"):
        encode_prompt(get_tokenizer("char", "abc"), "")


def test_characters_outside_a_char_vocabulary_are_all_named():
    tokenizer = get_tokenizer("char", "abc ")
    with pytest.raises(ValueError, match=r"does not contain: 'é' \(U\+00E9\), 'z' \(U\+007A\)"):
        encode_prompt(tokenizer, "abé cz é")


# --- the command --------------------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small, untrained model with a char tokenizer, saved as `tinytransformer train` saves it."""
    tokenizer = get_tokenizer("char", TEXT)
    tokens = np.array(tokenizer.encode(TEXT), dtype=np.uint16)
    data = TokenData(train=tokens[:1500], val=tokens[1500:], tokenizer=tokenizer, source="test text")
    config = GPTConfig(vocab_size=tokenizer.vocab_size, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)
    trainer = Trainer(
        GPT(config), TrainConfig(batch_size=2, max_steps=1), data, tmp_path_factory.mktemp("run"), progress=False
    )
    return trainer.save_checkpoint()


def generate(capsys, *args: str) -> tuple[int, str, str]:
    status = main(["generate", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_command_prints_the_prompt_and_its_continuation_and_the_speed(checkpoint, capsys):
    status, out, err = generate(
        capsys, "--checkpoint", str(checkpoint), "--prompt", "the ", "--max-new-tokens", "12", "--seed", "0"
    )
    assert status == 0
    assert out.startswith("the ") and len(out) == len("the ") + 12 + 1  # char tokens, then a line break
    assert "12 tokens in" in err and "tokens/s, KV cache on" in err


def test_command_is_reproducible_with_a_seed_and_the_same_without_the_cache(checkpoint, capsys):
    args = [
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "the ",
        "--max-new-tokens",
        "30",
        "--seed",
        "3",
        "--top-k",
        "5",
    ]
    first = generate(capsys, *args)[1]
    assert generate(capsys, *args)[1] == first
    assert generate(capsys, *args, "--no-cache")[1] == first
    assert generate(capsys, *args, "--stream")[1] == first  # streaming changes when text appears, not what
    assert generate(capsys, *args[:-4], "--seed", "4")[1] != first


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int8"])
def test_dtype_decodes_the_same_greedy_text(checkpoint, capsys, dtype):
    args = ["--checkpoint", str(checkpoint), "--prompt", "the ", "--max-new-tokens", "20",
            "--greedy"]
    assert generate(capsys, *args, "--dtype", dtype)[1] == generate(capsys, *args)[1]


def test_temperature_zero_means_greedy(checkpoint, capsys):
    args = ["--checkpoint", str(checkpoint), "--prompt", "the ", "--max-new-tokens", "20"]
    assert generate(capsys, *args, "--temperature", "0")[1] == generate(capsys, *args, "--greedy")[1]


def test_several_samples_are_separated_by_a_line(checkpoint, capsys):
    status, out, _ = generate(
        capsys,
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "fox",
        "--max-new-tokens",
        "5",
        "--num-samples",
        "3",
        "--seed",
        "0",
    )
    samples = out.split("---\n")
    assert status == 0 and len(samples) == 3 and all(sample.startswith("fox") for sample in samples)


def test_prompts_from_standard_input_one_per_line(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", stdin(b"the \nlazy\n"))
    status, out, err = generate(
        capsys, "--checkpoint", str(checkpoint), "--prompt", "-", "--max-new-tokens", "4", "--greedy"
    )
    lines = out.splitlines()
    assert status == 0 and len(lines) == 2
    assert lines[0].startswith("the ") and lines[1].startswith("lazy")
    assert err.count("tokens/s") == 2


def test_a_bad_line_on_standard_input_is_reported_and_the_others_answered(checkpoint, capsys, monkeypatch):
    latin1_line = "café".encode("latin-1")  # not UTF-8
    monkeypatch.setattr("sys.stdin", stdin("the \nnaïve\n\n".encode() + latin1_line + b"\nfox\n"))
    status, out, err = generate(capsys, "--checkpoint", str(checkpoint), "--prompt", "-", "--max-new-tokens", "3")
    assert status == 2
    assert [line[:3] for line in out.splitlines()] == ["the", "fox"]
    assert "'ï' (U+00EF)" in err and "the prompt is empty" in err
    assert "a line of standard input is not UTF-8 text (byte 0xe9 at offset 3)" in err


def stdin(data: bytes) -> io.TextIOWrapper:
    """Standard input holding ``data``, with the binary buffer underneath that the real one has."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")


def test_a_closed_standard_input_is_an_error_that_says_so(checkpoint, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", None)
    status, out, err = generate(capsys, "--checkpoint", str(checkpoint), "--prompt", "-")
    assert status == 2 and "reads standard input, which is closed" in err


@pytest.mark.pretrained_encodings
def test_streaming_never_prints_half_a_character(capsys, monkeypatch):
    tokenizer = get_tokenizer("gpt2")
    text = "snow ☃ and 🙂 smiles"
    ids = tokenizer.encode(text)
    assert any(tokenizer.decode([i]).endswith("\ufffd") for i in ids)  # some tokens hold half a character

    def fake_generate_tokens(model, token_ids, max_new_tokens, options, **loop):
        yield from (torch.tensor([[i]]) for i in ids)

    monkeypatch.setattr(generate_command, "generate_tokens", fake_generate_tokens)
    writes = []

    class Recorder(io.StringIO):
        def write(self, piece):
            writes.append(piece)
            return super().write(piece)

    out = Recorder()
    model = GPT(GPTConfig(vocab_size=8, max_seq_len=4, d_model=8, n_layers=1, n_heads=1))
    generate_command._write_samples(model, tokenizer, "Look: ", [1], len(ids), 1, True, out, use_cache=True)
    assert out.getvalue() == "Look: " + text + "\n"
    assert len(writes) > 3 and not any("\ufffd" in piece for piece in writes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-new-tokens", "0"], "max_new_tokens must be a positive integer, got 0"),
        (["--temperature", "-1"], "temperature must be a finite number of at least 0, got -1.0"),
        (["--temperature", "inf"], "temperature must be a finite number of at least 0, got inf"),
        (["--seed", str(2**70)], r"--seed must be in [0, 2**63), got 1180591620717411303424"),
        (["--top-k", "0"], "top_k must be a positive integer, got 0"),
        (["--top-p", "0"], r"top_p must be in (0, 1], got 0.0"),
        (["--top-p", "1.01"], r"top_p must be in (0, 1], got 1.01"),
        (["--num-samples", "0"], "--num-samples must be at least 1, got 0"),
        (["--prompt", ""], "the prompt is empty and the char tokenizer has no end-of-text token"),
        (["--prompt", "Größe"], "'G' (U+0047), 'ö' (U+00F6), 'ß' (U+00DF)"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_prints_no_text(checkpoint, capsys, args, message):
    status, out, err = generate(capsys, "--checkpoint", str(checkpoint), "--prompt", "the", *args)
    assert status == 2 and out == ""
    assert err.startswith("tinytransformer generate: error:") and message in err


def test_missing_checkpoint_exits_2(tmp_path, capsys):
    status, out, err = generate(capsys, "--checkpoint", str(tmp_path / "nope.pt"), "--prompt", "a")
    assert status == 2 and out == "" and "does not exist" in err


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", None])
def test_corrupt_or_truncated_checkpoint_exits_2(checkpoint, tmp_path, capsys, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(checkpoint.read_bytes()[:500] if content is None else content)
    status, out, err = generate(capsys, "--checkpoint", str(bad), "--prompt", "a")
    assert status == 2 and out == "" and "not a readable checkpoint" in err


def test_a_model_is_required(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--prompt", "a"])
    assert exit_info.value.code == 2
    assert "one of the arguments --checkpoint --gpt2 --hf is required" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    for option in (
        "--checkpoint",
        "--gpt2",
        "--prompt",
        "--max-new-tokens",
        "--temperature",
        "--top-k",
        "--top-p",
        "--greedy",
        "--seed",
        "--num-samples",
        "--stream",
        "--no-cache",
        "--dtype",
        "--device",
    ):
        assert option in text


def test_a_tiny_temperature_samples_like_greedy_instead_of_failing(checkpoint, capsys):
    status, sampled, _ = generate(
        capsys,
        "--checkpoint",
        str(checkpoint),
        "--prompt",
        "the",
        "--temperature",
        "1e-40",
        "--max-new-tokens",
        "12",
        "--seed",
        "1",
    )
    assert status == 0
    status, greedy, _ = generate(
        capsys, "--checkpoint", str(checkpoint), "--prompt", "the", "--greedy", "--max-new-tokens", "12"
    )
    assert status == 0 and sampled == greedy


@pytest.mark.parametrize("make", ["folder", "text file"])
def test_a_folder_or_a_text_file_given_as_checkpoint_is_named_as_such(tmp_path, capsys, make):
    path = tmp_path / "thing"
    path.mkdir() if make == "folder" else path.write_text("hello, I am text")
    status, out, err = generate(capsys, "--checkpoint", str(path), "--prompt", "a")
    expected = "is a folder; pass the checkpoint file in it" if make == "folder" else "is not a readable checkpoint"
    assert status == 2 and expected in err and "please file an issue" not in err and "Traceback" not in err


def test_streaming_decodes_each_token_about_once(checkpoint, monkeypatch):
    from tinytransformer.checkpoint import load_model

    model, tokenizer = load_model(checkpoint)
    decoded = []
    original = tokenizer.decode
    monkeypatch.setattr(tokenizer, "decode", lambda ids: decoded.append(len(ids)) or original(ids))
    out = io.StringIO()
    generate_command._write_samples(model, tokenizer, "the", tokenizer.encode("the"), 200, 1, True, out, GREEDY)
    assert len(out.getvalue()) > 200 and sum(decoded) <= 2 * 200  # re-decoding everything would be ~20,000
