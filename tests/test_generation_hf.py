"""Chapter 10's sampling filters against Hugging Face's logits processors, and `generate --gpt2` end to end."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402
from transformers.generation.logits_process import (  # noqa: E402
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from tinytransformer.cli import main  # noqa: E402
from tinytransformer.generation import SamplingOptions, top_k_filter, top_p_filter  # noqa: E402
from tinytransformer.model import GPT  # noqa: E402


def random_logits(batch_size: int, vocab_size: int, seed: int, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(batch_size, vocab_size, generator=torch.Generator().manual_seed(seed)) * scale


NO_INPUT_IDS = torch.zeros(1, 1, dtype=torch.long)  # the warpers ignore the prompt


@pytest.mark.parametrize("vocab_size", [5, 100, 50257])
@pytest.mark.parametrize("top_k", [1, 3, 40, 10**6])
def test_top_k_matches_hugging_face(vocab_size, top_k):
    logits = random_logits(4, vocab_size, seed=top_k)
    assert torch.equal(top_k_filter(logits, top_k), TopKLogitsWarper(top_k)(NO_INPUT_IDS, logits))


def test_top_k_ties_match_hugging_face():
    logits = torch.tensor([[1.0, 3.0, 2.0, 2.0, 0.0], [5.0, 5.0, 5.0, 1.0, 1.0]])
    for top_k in (1, 2, 3, 4):
        assert torch.equal(top_k_filter(logits, top_k), TopKLogitsWarper(top_k)(NO_INPUT_IDS, logits))


@pytest.mark.parametrize("vocab_size", [5, 100, 50257])
@pytest.mark.parametrize("top_p", [1e-6, 0.1, 0.5, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # flat, ordinary and peaked distributions
def test_top_p_matches_hugging_face(vocab_size, top_p, scale):
    logits = random_logits(4, vocab_size, seed=vocab_size, scale=scale)
    assert torch.equal(top_p_filter(logits, top_p), TopPLogitsWarper(top_p)(NO_INPUT_IDS, logits))


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(0.7, 50, 0.9), (1.3, 5, 0.5), (1.0, 1000, 0.99)])
def test_the_chain_temperature_top_k_top_p_matches_hugging_face(temperature, top_k, top_p):
    logits = random_logits(3, 1000, seed=7)
    ours = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    theirs = LogitsProcessorList(
        [TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k), TopPLogitsWarper(top_p)]
    )
    assert torch.allclose(ours, theirs(NO_INPUT_IDS, logits))


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    """A randomly initialised GPT-2 with the real vocabulary, saved as a Hugging Face checkpoint."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=32))
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory)
    return directory


@pytest.mark.pretrained_encodings
def test_generate_with_gpt2_weights_uses_the_gpt2_tokenizer(tiny_gpt2, capsys):
    status = main(
        ["generate", "--gpt2", str(tiny_gpt2), "--prompt", "Hello, world", "--max-new-tokens", "8", "--greedy"]
    )
    out = capsys.readouterr().out
    assert status == 0 and out.startswith("Hello, world")
    from tinytransformer.gpt2 import load_gpt2
    from tinytransformer.tokenizer import get_tokenizer

    tokenizer = get_tokenizer("gpt2")
    prompt = torch.tensor([tokenizer.encode("Hello, world")])
    expected = (
        load_gpt2(tiny_gpt2)
        .generate(prompt, 8, SamplingOptions(greedy=True, eot_id=tokenizer.eot_id))[0, prompt.shape[1] :]
        .tolist()
    )
    if tokenizer.eot_id in expected:
        expected = expected[: expected.index(tokenizer.eot_id)]
    assert out == "Hello, world" + tokenizer.decode(expected) + "\n"


@pytest.mark.pretrained_encodings
def test_an_empty_prompt_starts_gpt2_from_its_end_of_text_token(tiny_gpt2, capsys):
    status = main(["generate", "--gpt2", str(tiny_gpt2), "--max-new-tokens", "5", "--seed", "0"])
    captured = capsys.readouterr()
    assert status == 0 and "<|endoftext|>" not in captured.out and "tokens/s" in captured.err


def test_a_missing_gpt2_directory_exits_2(tmp_path, capsys):
    assert main(["generate", "--gpt2", str(tmp_path / "nowhere"), "--prompt", "a"]) == 2
    assert "not a pretrained directory" in capsys.readouterr().err


def test_our_greedy_generation_matches_hugging_face_with_its_own_cache(tiny_gpt2):
    from tinytransformer.gpt2 import load_gpt2

    ours: GPT = load_gpt2(tiny_gpt2)
    reference = GPT2LMHeadModel.from_pretrained(tiny_gpt2).eval()
    prompt = torch.randint(0, 50257, (2, 5), generator=torch.Generator().manual_seed(0))
    theirs = reference.generate(
        prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=20, do_sample=False, pad_token_id=50256
    )
    assert torch.equal(ours.generate(prompt, 20, SamplingOptions(greedy=True)), theirs)
