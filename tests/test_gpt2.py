"""Loading Hugging Face GPT-2 checkpoints, checked against `transformers` itself (chapter 11).

Every model here is a small, randomly initialised GPT2LMHeadModel: nothing is downloaded.
"""

import ast
import dataclasses
import json
import socket
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model  # noqa: E402

from tinytransformer.generation import SamplingOptions  # noqa: E402
from tinytransformer.gpt2 import (  # noqa: E402
    checkpoint_shapes,
    config_from_hf,
    gpt2_state_dict,
    load_gpt2,
)
from tinytransformer.model import GPT, count_parameters, gpt2_config  # noqa: E402

SHAPES = {  # GPT2Config arguments: one head, several heads, d_ff != 4·d_model and another epsilon, untied
    "1-layer-1-head": dict(n_layer=1, n_head=1, n_embd=8, vocab_size=11, n_positions=8),
    "2-layers-4-heads": dict(n_layer=2, n_head=4, n_embd=32, vocab_size=97, n_positions=64),
    "3-layers-n_inner-eps": dict(n_layer=3, n_head=3, n_embd=24, vocab_size=50, n_positions=20,
                                 n_inner=40, layer_norm_epsilon=1e-3),
    "untied-lm-head": dict(n_layer=2, n_head=2, n_embd=16, vocab_size=300, n_positions=70, tie_word_embeddings=False),
}


def random_gpt2(seed: int = 0, **sizes) -> GPT2LMHeadModel:
    """A GPT-2 with every parameter random: no zero biases or unit LayerNorm scales to hide a mix-up."""
    torch.manual_seed(seed)
    config = GPT2Config(**sizes, bos_token_id=0, eos_token_id=0, attn_implementation="eager")
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def save_as_bin(model: GPT2LMHeadModel, directory: Path) -> None:
    """Write the older checkpoint format: config.json + pytorch_model.bin (a pickled state dict)."""
    directory.mkdir()
    model.config.to_json_file(directory / "config.json")
    torch.save(model.state_dict(), directory / "pytorch_model.bin")


def max_logit_difference(model: GPT, reference: GPT2LMHeadModel, token_ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (model(token_ids) - reference(token_ids).logits).abs().max().item()


@pytest.mark.parametrize("checkpoint_format", ["safetensors", "bin"])
@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
def test_logits_equal_hugging_face_to_1e_5(shape, checkpoint_format, tmp_path):
    reference = random_gpt2(**SHAPES[shape])
    if checkpoint_format == "safetensors":
        reference.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").is_file()
    else:
        tmp_path = tmp_path / "bin"
        save_as_bin(reference, tmp_path)
    model = load_gpt2(tmp_path)
    vocab_size, max_seq_len = reference.config.vocab_size, reference.config.n_positions
    generator = torch.Generator().manual_seed(1)
    for batch_size, seq_len in [(3, max_seq_len), (2, max_seq_len // 2 + 1), (1, 1)]:
        token_ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=generator)
        assert max_logit_difference(model, reference, token_ids) < 1e-5


def test_loaded_model_keeps_the_configuration_and_ties(tmp_path):
    reference = random_gpt2(**SHAPES["3-layers-n_inner-eps"])
    reference.save_pretrained(tmp_path)
    model = load_gpt2(tmp_path)
    config = model.config
    assert (config.n_layers, config.n_heads, config.d_model, config.d_ff) == (3, 3, 24, 40)
    assert (config.vocab_size, config.max_seq_len, config.layer_norm_eps) == (50, 20, 1e-3)
    assert all(block.attn_norm.eps == 1e-3 for block in model.blocks) and model.final_norm.eps == 1e-3
    assert model.lm_head.weight is model.embeddings.token_embedding.weight
    assert not model.training
    assert model.num_parameters() == count_parameters(config) == reference.num_parameters()


def test_untied_checkpoint_keeps_its_own_lm_head(tmp_path):
    reference = random_gpt2(**SHAPES["untied-lm-head"])
    reference.save_pretrained(tmp_path)
    model = load_gpt2(tmp_path)
    assert not model.config.tie_weights
    assert model.lm_head.weight is not model.embeddings.token_embedding.weight
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight)


@pytest.mark.parametrize("use_cache", [True, False], ids=["our-kv-cache", "no-cache"])
def test_greedy_generation_gives_the_same_50_tokens(use_cache, tmp_path):
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    reference.save_pretrained(tmp_path)
    model = load_gpt2(tmp_path)
    prompt = torch.randint(1, 97, (3, 4), generator=torch.Generator().manual_seed(2))
    ours = model.generate(prompt, 50, SamplingOptions(greedy=True), use_cache=use_cache)
    theirs = reference.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=50,
                                min_new_tokens=50, do_sample=False, pad_token_id=0)  # with their KV cache
    assert ours.shape == (3, 54)
    assert torch.equal(ours, theirs)
    by_hand = prompt  # and a plain argmax loop over their logits, without any cache
    with torch.no_grad():
        for _ in range(50):
            by_hand = torch.cat([by_hand, reference(by_hand).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(ours, by_hand)


def test_attention_weights_equal_and_are_causal():
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    model = load_gpt2(reference)
    ours = []
    hooks = [block.attn.register_forward_hook(lambda module, args, output: ours.append(output[1]))
             for block in model.blocks]
    token_ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        theirs = reference(token_ids, output_attentions=True).attentions  # one (B, H, T, T) per layer
        model(token_ids)
    for hook in hooks:
        hook.remove()
    future = torch.ones(12, 12, dtype=torch.bool).triu(diagonal=1)
    assert len(ours) == len(theirs) == 2
    for our_weights, their_weights in zip(ours, theirs):
        assert our_weights.shape == their_weights.shape == (2, 4, 12, 12)
        assert torch.allclose(our_weights, their_weights, atol=1e-6)
        assert (our_weights[..., future] == 0).all() and (their_weights[..., future] == 0).all()


def test_changing_future_tokens_leaves_earlier_logits_alone_in_both():
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    model = load_gpt2(reference)
    token_ids = torch.randint(0, 97, (2, 16), generator=torch.Generator().manual_seed(4))
    changed = token_ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % 97
    with torch.no_grad():
        for logits_of in (model, lambda ids: reference(ids).logits):
            assert torch.allclose(logits_of(token_ids)[:, :10], logits_of(changed)[:, :10], atol=1e-6)
            assert not torch.allclose(logits_of(token_ids)[:, 10:], logits_of(changed)[:, 10:])


def test_in_memory_model_loads_without_saving():
    reference = random_gpt2(**SHAPES["3-layers-n_inner-eps"])
    model = load_gpt2(reference)
    token_ids = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(5))
    assert max_logit_difference(model, reference, token_ids) < 1e-5


def test_body_without_lm_head_loads_from_memory():
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    body = GPT2Model(reference.config)
    body.load_state_dict(reference.transformer.state_dict())  # keys without the "transformer." prefix
    model = load_gpt2(body)
    token_ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(6))
    assert max_logit_difference(model, reference, token_ids) < 1e-5


def test_half_precision_checkpoint_loads_into_float32(tmp_path):
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    reference.half().save_pretrained(tmp_path)
    model = load_gpt2(tmp_path)
    assert model.embeddings.token_embedding.weight.dtype == torch.float32
    assert torch.equal(model.blocks[1].mlp.fc_out.weight, reference.transformer.h[1].mlp.c_proj.weight.t().float())


def test_old_checkpoints_causal_mask_buffers_are_ignored():
    reference = random_gpt2(**SHAPES["1-layer-1-head"])
    state = {key.removeprefix("transformer."): value for key, value in reference.state_dict().items()}
    state |= {"h.0.attn.bias": torch.ones(1, 1, 8, 8).tril(), "h.0.attn.masked_bias": torch.tensor(-1e4)}
    converted = gpt2_state_dict(state, config_from_hf(reference.config))
    assert converted.keys() == GPT(config_from_hf(reference.config)).state_dict().keys()


def test_sharded_safetensors_checkpoint_loads(tmp_path):
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    reference.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file() and not (tmp_path / "model.safetensors").exists()
    model = load_gpt2(tmp_path)
    token_ids = torch.randint(0, 97, (1, 64), generator=torch.Generator().manual_seed(7))
    assert max_logit_difference(model, reference, token_ids) < 1e-5


def test_missing_key_is_named(tmp_path):
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    reference.save_pretrained(tmp_path)
    state = safetensors_torch.load_file(tmp_path / "model.safetensors")
    del state["transformer.h.1.attn.c_proj.bias"]
    del state["transformer.ln_f.weight"]
    safetensors_torch.save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing keys: h\.1\.attn\.c_proj\.bias, ln_f\.weight"):
        load_gpt2(tmp_path)


def test_unexpected_key_is_named():
    reference = random_gpt2(**SHAPES["1-layer-1-head"])
    state = dict(reference.state_dict()) | {"transformer.h.1.ln_1.weight": torch.ones(8)}
    with pytest.raises(ValueError, match=r"unexpected keys: h\.1\.ln_1\.weight"):
        gpt2_state_dict(state, config_from_hf(reference.config))


def test_config_that_disagrees_with_the_weights_names_the_shapes(tmp_path):
    reference = random_gpt2(**SHAPES["2-layers-4-heads"])
    reference.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["vocab_size"] = 100  # the weights have 97 rows
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"wrong shapes: wte\.weight \(97, 32\), expected \(100, 32\)"):
        load_gpt2(tmp_path)


def test_untied_config_without_lm_head_weights_is_refused():
    reference = random_gpt2(**SHAPES["1-layer-1-head"])
    config = config_from_hf(reference.config.to_dict() | {"tie_word_embeddings": False})
    state = {key: value for key, value in reference.state_dict().items() if key != "lm_head.weight"}
    with pytest.raises(ValueError, match=r"missing keys: lm_head\.weight"):
        gpt2_state_dict(state, config)


@pytest.mark.parametrize("setting, message", [
    ({"activation_function": "gelu"}, "activation_function 'gelu' is not supported"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True is not supported"),
    ({"model_type": "llama"}, "model_type is 'llama'"),
    ({"n_embd": 30, "n_head": 4}, r"n_heads \(4\) must divide d_model \(30\)"),
])
def test_configurations_our_model_cannot_represent_are_refused(setting, message):
    with pytest.raises(ValueError, match=message):
        config_from_hf({"n_embd": 32, "n_head": 4, "n_layer": 1} | setting)


def test_config_from_hf_maps_every_size():
    hf_config = GPT2Config(vocab_size=123, n_positions=45, n_embd=60, n_layer=7, n_head=5, n_inner=100,
                           layer_norm_epsilon=1e-6, resid_pdrop=0.2, bos_token_id=0, eos_token_id=0)
    config = config_from_hf(hf_config)
    assert (config.vocab_size, config.max_seq_len, config.d_model, config.n_layers) == (123, 45, 60, 7)
    assert (config.n_heads, config.d_ff, config.layer_norm_eps, config.dropout) == (5, 100, 1e-6, 0.2)
    assert config_from_hf(hf_config.to_dict()) == config  # a config.json reads the same


def test_gpt2_small_configs_agree():
    ours = config_from_hf(GPT2Config())
    assert ours.d_ff == 3072 and ours.tie_weights and ours.layer_norm_eps == 1e-5
    assert ours == dataclasses.replace(gpt2_config("small"), dropout=0.1)  # GPT-2 trained with dropout 0.1


@pytest.mark.parametrize("size", ["small", "medium", "large", "xl"])
def test_parameter_count_equals_hugging_face(size):
    config = gpt2_config(size)
    hf_config = GPT2Config(n_embd=config.d_model, n_layer=config.n_layers, n_head=config.n_heads)
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        reference = GPT2LMHeadModel(hf_config)
        ours = GPT(config)
    assert ours.num_parameters() == count_parameters(config) == reference.num_parameters()
    assert sum(torch.Size(shape).numel() for shape in checkpoint_shapes(config).values()) == count_parameters(config)
    if size == "small":
        assert count_parameters(config) == 124_439_808


def test_missing_directory_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a pretrained directory"):
        load_gpt2(tmp_path / "nowhere")


def test_directory_without_weights_says_which_files_it_needs(tmp_path):
    GPT2Config(n_layer=1, n_embd=8, n_head=1).to_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="expected model.safetensors or pytorch_model.bin"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_gpt2(tmp_path)


def test_corrupt_files_are_value_errors_naming_the_file(tmp_path):
    reference = random_gpt2(**SHAPES["1-layer-1-head"])
    reference.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text("{")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_gpt2(tmp_path)


def test_other_objects_are_refused():
    with pytest.raises(ValueError, match="cannot load GPT-2 from a int"):
        load_gpt2(3)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Offline mode with an empty cache; any socket connection fails the test."""
    huggingface_hub = pytest.importorskip("huggingface_hub")

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.chdir(tmp_path)  # so that no ./gpt2 directory is found first


def test_hub_name_offline_explains_how_to_download_once(no_network):
    with pytest.raises(ValueError, match=r"could not get 'gpt2' from the Hugging Face Hub") as error:
        load_gpt2("gpt2")
    assert "hf download gpt2 config.json model.safetensors --local-dir gpt2" in str(error.value)
    assert "load_gpt2('gpt2')" in str(error.value)


def test_hub_name_without_huggingface_hub_says_what_to_install(no_network, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # makes the import fail
    with pytest.raises(ValueError, match=r"needs huggingface_hub \(pip install \"tinytransformer\[gpt2\]\"\)"):
        load_gpt2("openai-community/gpt2-medium")


def test_local_directory_wins_over_a_hub_name(no_network, tmp_path):
    random_gpt2(**SHAPES["1-layer-1-head"]).save_pretrained(tmp_path / "gpt2")
    assert load_gpt2("gpt2").config.d_model == 8  # read from ./gpt2, no download attempted


def import_time_imports(node: ast.AST):
    """Modules imported by ``node`` outside function bodies, i.e. when its module is imported."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        yield node.module or ""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from import_time_imports(child)


def test_package_never_imports_hugging_face_at_import_time():
    package = Path(__file__).resolve().parents[1] / "tinytransformer"
    optional = {"transformers", "huggingface_hub", "safetensors"}
    for path in package.glob("*.py"):
        imported = {name.split(".")[0] for name in import_time_imports(ast.parse(path.read_text(encoding="utf-8")))}
        assert not imported & optional, f"{path.name} imports {imported & optional} when the package is imported"


def test_a_config_json_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not the object of settings"):
        load_gpt2(tmp_path)


def test_the_trainer_trains_a_loaded_gpt2_and_generate_reads_its_checkpoint(tmp_path, capsys):
    import numpy as np

    from tinytransformer.cli import main
    from tinytransformer.data import TokenData
    from tinytransformer.tokenizer import get_tokenizer
    from tinytransformer.train import TrainConfig, Trainer

    text = "to be or not to be, that is the question. " * 40
    tokenizer = get_tokenizer("char", text)
    tokens = np.array(tokenizer.encode(text), dtype=np.uint16)
    data = TokenData(train=tokens[:1500], val=tokens[1500:], tokenizer=tokenizer, source="test text")
    random_gpt2(vocab_size=tokenizer.vocab_size, n_positions=16, n_embd=32, n_layer=2, n_head=4).save_pretrained(
        tmp_path / "pretrained")
    model = load_gpt2(tmp_path / "pretrained")
    loaded = {name: weight.clone() for name, weight in model.state_dict().items()}
    config = TrainConfig(batch_size=8, max_steps=20, warmup_steps=2, learning_rate=3e-3, eval_interval=20,
                         eval_batches=2, sample_tokens=0)
    trainer = Trainer(model, config,
                      data, out_dir=tmp_path / "run", progress=False)
    before = trainer.evaluate()["val"]
    losses = trainer.fit()
    assert trainer.model is model and not torch.equal(model.state_dict()["blocks.0.mlp.fc_in.weight"],
                                                      loaded["blocks.0.mlp.fc_in.weight"])  # trained in place
    assert losses["val"] < before - 0.1
    assert main(["generate", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"), "--prompt", "to be",
                 "--max-new-tokens", "5", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("to be")
