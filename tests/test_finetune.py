"""``tinytransformer train --init`` and ``--lora`` (chapter 11b): fine-tuning pretrained weights."""

import json
from pathlib import Path

import pytest
import torch

from tinytransformer.checkpoint import load_checkpoint, load_model
from tinytransformer.cli import main

TEXT = "to be or not to be, that is the question. whether tis nobler in the mind to suffer. " * 40
TRAIN = ["--no-progress", "--batch-size", "4", "--eval-interval", "3", "--eval-batches", "1", "--sample-tokens", "0",
         "--warmup-steps", "1", "--learning-rate", "0.003"]


@pytest.fixture(autouse=True)
def token_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTRANSFORMER_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def base(tmp_path, corpus, capsys) -> Path:
    """A small checkpoint of our own, trained for 2 steps on the corpus with the char tokenizer."""
    assert main(["train", "--data", str(corpus), "--tokenizer", "char", "--max-seq-len", "16", "--d-model", "32",
                 "--n-layers", "2", "--n-heads", "4", *TRAIN, "--max-steps", "2", "--out", str(tmp_path / "base")]) == 0
    capsys.readouterr()
    return tmp_path / "base" / "checkpoint.pt"


def gpt2_dir(tmp_path: Path) -> Path:
    pytest.importorskip("transformers")
    from tests.test_gpt2 import random_gpt2

    directory = tmp_path / "gpt2"
    random_gpt2(vocab_size=50257, n_positions=16, n_embd=32, n_layer=2, n_head=4).save_pretrained(directory)
    return directory


def test_init_from_our_checkpoint_trains_and_generate_reads_it(tmp_path, corpus, base, capsys):
    out = tmp_path / "tuned"
    assert main(["train", "--init", str(base), "--data", str(corpus), *TRAIN, "--max-steps", "3",
                 "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["model_config"] == load_checkpoint(base)["model_config"]  # the architecture of the weights
    assert not torch.equal(state["model"]["blocks.0.mlp.fc_in.weight"],
                           load_checkpoint(base)["model"]["blocks.0.mlp.fc_in.weight"])
    assert json.loads((out / "config.json").read_text())["init"] == str(base)
    assert main(["generate", "--checkpoint", str(out / "checkpoint.pt"), "--prompt", "to be",
                 "--max-new-tokens", "5", "--greedy"]) == 0
    assert capsys.readouterr().out.startswith("to be")


def test_init_accepts_the_run_folder(tmp_path, corpus, base, capsys):
    assert main(["train", "--init", str(base.parent), "--data", str(corpus), *TRAIN, "--max-steps", "1",
                 "--out", str(tmp_path / "tuned")]) == 0


@pytest.mark.pretrained_encodings
def test_init_from_a_gpt2_directory_trains_and_saves(tmp_path, corpus, capsys):
    out = tmp_path / "tuned"
    assert main(["train", "--init", str(gpt2_dir(tmp_path)), "--data", str(corpus), *TRAIN, "--max-steps", "2",
                 "--out", str(out)]) == 0
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["step"] == 2 and state["tokenizer"]["name"] == "gpt2"
    assert state["model_config"]["d_model"] == 32 and state["model_config"]["vocab_size"] == 50257
    model, tokenizer = load_model(out / "checkpoint.pt")
    assert tokenizer.name == "gpt2"


@pytest.mark.pretrained_encodings
def test_a_tokenizer_other_than_gpt2s_is_refused(tmp_path, corpus, capsys):
    directory = gpt2_dir(tmp_path)
    assert main(["train", "--init", str(directory), "--data", str(corpus), "--tokenizer", "char",
                 "--out", str(tmp_path / "tuned")]) == 2
    assert "trained with tokenizer 'gpt2', not 'char'" in capsys.readouterr().err
    assert not (tmp_path / "tuned").exists()


def test_lora_changes_only_the_adapted_weights(tmp_path, corpus, base, capsys):
    out = tmp_path / "lora"
    assert main(["train", "--init", str(base), "--data", str(corpus), *TRAIN, "--max-steps", "3",
                 "--lora", "2", "--lora-targets", "qkv_proj,fc_out", "--out", str(out)]) == 0
    merged, before = load_checkpoint(out / "checkpoint.pt"), load_checkpoint(base)
    assert merged["lora"] == {"rank": 2, "alpha": 8.0, "targets": ["fc_out", "qkv_proj"]}
    assert merged["model"].keys() == before["model"].keys()  # a plain GPT: generate reads it
    for name, weight in before["model"].items():
        adapted = name.endswith(("qkv_proj.weight", "fc_out.weight"))
        assert torch.equal(merged["model"][name], weight) != adapted, name
    assert main(["generate", "--checkpoint", str(out / "checkpoint.pt"), "--prompt", "to",
                 "--max-new-tokens", "3"]) == 0
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--max-steps", "4"]) == 2
    assert "comes from a LoRA run" in capsys.readouterr().err


def test_print_config_counts_only_the_adapters(tmp_path, corpus, base, capsys):
    assert main(["train", "--init", str(base), "--data", str(corpus), *TRAIN, "--lora", "1", "--print-config"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["lora"]["rank"] == 1 and described["init"] == str(base)


def test_configure_optimizer_skips_frozen_parameters():
    from tinytransformer.lora import apply_lora
    from tinytransformer.model import GPT, GPTConfig
    from tinytransformer.train import TrainConfig, configure_optimizer

    model = apply_lora(GPT(GPTConfig(vocab_size=10, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)), rank=2)
    optimizer = configure_optimizer(model, TrainConfig(), torch.device("cpu"))
    optimised = [p for group in optimizer.param_groups for p in group["params"]]
    assert optimised and all(p.requires_grad for p in optimised)
    assert len(optimised) == sum(p.requires_grad for p in model.parameters())
    assert [group["weight_decay"] for group in optimizer.param_groups][0] > 0  # adapters are matrices: decayed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init", "{tmp}/nothing"], "does not exist"),
        (["--init", "{tmp}/empty"], "neither config.json"),
        (["--init", "{base}", "--lora", "0"], "rank must be a positive integer"),
        (["--lora", "2"], "add --init"),
        (["--init", "{base}", "--lora", "2", "--lora-targets", "wte"], "--lora-targets 'wte'"),
        (["--init", "{base}", "--resume", "{base}"], "use one"),
        (["--init", "{base}", "--d-model", "64"], "the weights fix the architecture; drop --d-model"),
        (["--init", "{base}", "--tokenizer", "bpe:300"], "trained with tokenizer 'char', not 'bpe:300'"),
    ],
    ids=["nothing", "neither", "rank-0", "lora-without-init", "bad-targets", "with-resume", "architecture",
         "tokenizer"],
)
def test_bad_input_is_exit_2_and_writes_nothing(tmp_path, corpus, base, capsys, flags, message):
    (tmp_path / "empty").mkdir()
    flags = [flag.format(tmp=tmp_path, base=base) for flag in flags]
    out = tmp_path / "tuned"
    assert main(["train", "--data", str(corpus), *flags, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
