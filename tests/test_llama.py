"""Llama's options and Hugging Face Llama checkpoints, against `transformers` (11c).

Every model here is a small, randomly initialised LlamaForCausalLM: no downloads.
"""

import dataclasses
import json
import socket
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from tinytransformer.cli import main  # noqa: E402
from tinytransformer.generation import SamplingOptions  # noqa: E402
from tinytransformer.llama import RMSNorm  # noqa: E402
from tinytransformer.model import GPT, GPTConfig, count_parameters  # noqa: E402
from tinytransformer.pretrained import llama_config_from_hf, load_llama, load_pretrained  # noqa: E402

# LlamaConfig arguments: odd head counts, groups of 1, 2 and 4, tied and untied, a base
SHAPES = {
    "3-heads-group-1-untied": dict(
        num_attention_heads=3, num_key_value_heads=3, hidden_size=24
    ),
    "6-heads-group-2-tied": dict(
        num_attention_heads=6,
        num_key_value_heads=3,
        hidden_size=48,
        tie_word_embeddings=True,
    ),
    "4-heads-group-4-untied": dict(
        num_attention_heads=4,
        num_key_value_heads=1,
        hidden_size=32,
        rope_theta=500_000.0,
    ),
    "5-heads-group-1-tied-3-layers": dict(
        num_attention_heads=5,
        num_key_value_heads=5,
        hidden_size=40,
        num_hidden_layers=3,
        tie_word_embeddings=True,
    ),
}
VOCAB = [
    "<unk>",
    "<s>",
    "</s>",
    *"abcdefghijklmnopqrstuvwxyz ,.",
]  # a character tokenizer's vocabulary


def random_llama(seed: int = 0, **sizes) -> LlamaForCausalLM:
    """A Llama with every parameter random: no unit norms to hide a mix-up of names."""
    torch.manual_seed(seed)
    settings = (
        dict(
            vocab_size=len(VOCAB),
            intermediate_size=37,
            num_hidden_layers=2,
            max_position_embeddings=64,
            tie_word_embeddings=False,
            bos_token_id=1,
            eos_token_id=2,
        )
        | sizes
    )
    theta = settings.pop("rope_theta", 10_000.0)
    model = LlamaForCausalLM(
        LlamaConfig(
            **settings, rope_parameters={"rope_type": "default", "rope_theta": theta}
        )
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model.eval()


def write_tokenizer(directory: Path) -> None:
    """A character-level tokenizer.json, <s> added in front."""
    vocabulary = {token: i for i, token in enumerate(VOCAB)}
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordLevel(vocabulary, unk_token="<unk>")
    )
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Split(
        tokenizers.Regex("."), behavior="isolated"
    )
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", 1)]
    )
    tokenizer.decoder = tokenizers.decoders.Fuse()
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    tokenizer.save(str(directory / "tokenizer.json"))


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_logits_equal_hugging_face_to_1e_5(shape, tmp_path):
    reference = random_llama(**SHAPES[shape])
    reference.save_pretrained(tmp_path)
    ours = load_llama(tmp_path)
    tokens = torch.randint(
        0, len(VOCAB), (2, 30), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        difference = (ours(tokens) - reference(tokens).logits).abs().max().item()
    assert difference < 1e-5
    expected = SHAPES[shape]
    assert ours.config.n_kv_heads == expected["num_key_value_heads"]
    assert ours.config.tie_weights == expected.get("tie_word_embeddings", False)
    assert (
        ours.lm_head.weight is ours.embeddings.token_embedding.weight
    ) == ours.config.tie_weights
    assert (
        ours.num_parameters()
        == sum(p.numel() for p in reference.parameters())
        == count_parameters(ours.config)
    )


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_greedy_tokens_are_the_same_with_and_without_our_cache_and_match_hugging_face(
    shape,
):
    reference = random_llama(**SHAPES[shape])
    ours = load_llama(reference)
    prompt = torch.randint(
        3, len(VOCAB), (2, 5), generator=torch.Generator().manual_seed(2)
    )
    cached = ours.generate(prompt, 20, SamplingOptions(greedy=True), use_cache=True)
    assert torch.equal(
        cached, ours.generate(prompt, 20, SamplingOptions(greedy=True), use_cache=False)
    )
    theirs = reference.generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        max_new_tokens=20,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert torch.equal(cached, theirs)


def test_llama_options_keep_the_formula_and_the_module_count_in_agreement():
    for options in (
        dict(norm="rmsnorm"),
        dict(position="rope"),
        dict(mlp="swiglu"),
        dict(n_kv_heads=2),
        dict(norm="rmsnorm", position="rope", mlp="swiglu", n_kv_heads=1, bias=False),
    ):
        config = GPTConfig(
            vocab_size=50, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, **options
        )
        assert GPT(config).num_parameters() == count_parameters(config), options


def test_our_rmsnorm_equals_torch_in_half_precision_too():
    x = 100 * torch.randn(3, 64, dtype=torch.float16)  # squares beyond float16's range
    ours, reference = RMSNorm(64), torch.nn.RMSNorm(64, eps=1e-6)
    assert torch.isfinite(ours(x)).all()
    assert torch.allclose(ours(x).float(), reference(x.float()), atol=1e-2)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(attention_bias=True), "attention_bias=True is not supported"),
        (dict(mlp_bias=True), "mlp_bias=True is not supported"),
        (dict(hidden_act="gelu"), "hidden_act='gelu' is not supported"),
        (dict(sliding_window=4096), "sliding_window=4096 is not supported"),
        (
            dict(
                rope_parameters={
                    "rope_type": "llama3",
                    "rope_theta": 5e5,
                    "factor": 8.0,
                }
            ),
            "'llama3'",
        ),
        (dict(rope_scaling={"type": "linear", "factor": 2.0}), "'linear'"),
        (dict(model_type="mistral"), "model_type is 'mistral'"),
        (dict(head_dim=16), "head_dim=16 is not supported"),
    ],
)
def test_configurations_our_model_cannot_represent_are_refused(setting, message):
    settings = (
        random_llama(hidden_size=32, num_attention_heads=4).config.to_dict() | setting
    )
    with pytest.raises(ValueError, match=message):
        llama_config_from_hf(settings)


def test_an_older_config_with_rope_theta_at_the_top_level_is_read():
    settings = random_llama(hidden_size=32, num_attention_heads=4).config.to_dict()
    del settings["rope_parameters"]
    settings |= {"rope_theta": 1e6, "rope_scaling": None}
    assert llama_config_from_hf(settings).rope_theta == 1e6


def test_a_missing_tensor_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    random_llama(hidden_size=32, num_attention_heads=4).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc_in\.weight"):
        load_llama(tmp_path)


def test_an_unexpected_tensor_is_named():
    reference = random_llama(hidden_size=32, num_attention_heads=4)
    reference.model.layers[0].self_attn.register_buffer("extra", torch.zeros(2))
    with pytest.raises(ValueError, match=r"model\.layers\.0\.self_attn\.extra"):
        load_llama(reference)


@pytest.fixture()
def llama_dir(tmp_path):
    directory = tmp_path / "tiny-llama"
    random_llama(
        hidden_size=32, num_attention_heads=4, num_key_value_heads=2
    ).save_pretrained(directory)
    write_tokenizer(directory)
    return directory


def test_generate_hf_runs_a_local_llama_with_its_own_tokenizer(llama_dir, capsys):
    status = main(
        [
            "generate",
            "--hf",
            str(llama_dir),
            "--prompt",
            "to be",
            "--max-new-tokens",
            "6",
            "--greedy",
            "--no-stream",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0 and out.startswith("to be")
    model, tokenizer = load_pretrained(llama_dir)
    prompt_ids = tokenizer.encode("to be")
    assert prompt_ids[0] == 1  # <s>, added by the tokenizer.json's post-processor
    new = model.generate(
        torch.tensor([prompt_ids]), 6, SamplingOptions(greedy=True, eot_id=2)
    )[0, len(prompt_ids) :]
    new_ids = new.tolist()
    if 2 in new_ids:
        new_ids = new_ids[: new_ids.index(2)]
    assert out == "to be" + tokenizer.decode(new_ids) + "\n"


def test_generate_hf_picks_gpt2_by_model_type(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(
            n_embd=16,
            n_layer=1,
            n_head=2,
            n_positions=16,
            vocab_size=len(VOCAB),
            eos_token_id=2,
        )
    ).save_pretrained(tmp_path)
    write_tokenizer(tmp_path)
    model, _ = load_pretrained(tmp_path)
    assert model.config.position == "learned" and model.config.norm == "layernorm"
    assert (
        main(
            [
                "generate",
                "--hf",
                str(tmp_path),
                "--prompt",
                "ab",
                "--max-new-tokens",
                "3",
                "--greedy",
            ]
        )
        == 0
    )


def test_generate_hf_refuses_other_model_types_and_a_missing_tokenizer(
    llama_dir, capsys
):
    (llama_dir / "tokenizer.json").unlink()
    assert main(["generate", "--hf", str(llama_dir), "--prompt", "a"]) == 2
    assert "tokenizer.json not found" in capsys.readouterr().err
    write_tokenizer(llama_dir)
    settings = json.loads((llama_dir / "config.json").read_text()) | {
        "model_type": "qwen2"
    }
    (llama_dir / "config.json").write_text(json.dumps(settings))
    assert main(["generate", "--hf", str(llama_dir), "--prompt", "a"]) == 2
    assert "model_type 'qwen2'" in capsys.readouterr().err


def test_generate_hf_offline_exits_2_and_says_how_to_download(
    monkeypatch, tmp_path, capsys
):
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(
        huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache")
    )
    monkeypatch.chdir(tmp_path)
    assert (
        main(["generate", "--hf", "HuggingFaceTB/SmolLM2-135M", "--prompt", "a"]) == 2
    )
    err = capsys.readouterr().err
    assert "could not get 'HuggingFaceTB/SmolLM2-135M' from the Hugging Face Hub" in err
    assert "--local-dir SmolLM2-135M" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("norm", "batchnorm", "norm must be one of"),
        ("position", "alibi", "position must be one of"),
        ("mlp", "relu", "mlp must be one of"),
        ("n_kv_heads", 3, r"n_kv_heads \(3\) must divide n_heads \(4\)"),
    ],
)
def test_unknown_or_unfitting_options_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(d_model=32, n_heads=4, **{field: value})


def test_rotary_embeddings_need_an_even_head_width():
    with pytest.raises(ValueError, match=r"d_head \(3\) must be even"):
        GPTConfig(d_model=12, n_heads=4, position="rope")


def test_a_sentencepiece_style_tokenizer_decodes_pieces_with_their_spaces(tmp_path):
    from tinytransformer.pretrained import PretrainedTokenizer

    vocabulary = {"<unk>": 0, "▁the": 1, "▁cat": 2, "▁sat": 3, "▁a": 4}
    tokenizer = tokenizers.Tokenizer(
        tokenizers.models.WordLevel(vocabulary, unk_token="<unk>")
    )
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace()
    tokenizer.decoder = tokenizers.decoders.Metaspace()
    assert tokenizer.decode([1, 2]) == "the cat"  # the first word's space is dropped
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    ours = PretrainedTokenizer(tmp_path / "tokenizer.json", eot_id=None)
    ids = ours.encode("the cat sat")
    assert ids == [1, 2, 3]
    assert "the" + ours.decode(ids[1:]) == "the cat sat"  # a continuation keeps it
    assert (
        "".join(ours.decode([i]) for i in ids) == " the cat sat"
    )  # streamed one by one


def test_the_browser_export_refuses_a_llama_form_model(tmp_path):
    from tinytransformer.export import export_model
    from tinytransformer.tokenizer import CharTokenizer

    config = GPTConfig(vocab_size=2, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)
    model = GPT(dataclasses.replace(config, position="rope"))
    with pytest.raises(ValueError, match="'position': 'rope'"):
        export_model(model, CharTokenizer("ab"), tmp_path / "web")
    assert not (tmp_path / "web").exists()
