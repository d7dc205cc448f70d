"""``tinytransformer export-web``: the files the Explorer page reads (appendix "The model in your browser").

The browser side (the page computes the same logits from these files) is in ``test_explorer.py``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tinytransformer.checkpoint import load_model
from tinytransformer.cli import main
from tinytransformer.data import TokenData
from tinytransformer.export import export_model, load_web_export
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    get_tokenizer,
    train_bpe,
)
from tinytransformer.train import NANOGPT_CHAR_MODEL, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "book" / "explorer"
TEXT = "the quick brown fox jumps over the lazy dog. " * 60


def write_checkpoint(out_dir: Path, **config) -> Path:
    """A checkpoint of an untrained model with the char tokenizer of ``TEXT``, as `tinytransformer train` writes."""
    tokenizer = get_tokenizer("char", TEXT)
    tokens = np.array(tokenizer.encode(TEXT), dtype=np.uint16)
    data = TokenData(train=tokens[:2000], val=tokens[2000:], tokenizer=tokenizer, source="/somewhere/fox.txt")
    model_config = GPTConfig(vocab_size=tokenizer.vocab_size, max_seq_len=16, d_model=32, n_layers=2, n_heads=4,
                             **config)
    trainer = Trainer(GPT(model_config), TrainConfig(batch_size=2), data, out_dir=out_dir, progress=False)
    return trainer.save_checkpoint()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """Biases, GPT-2's tanh GELU and an untied output projection: the paths the preset does not take."""
    return write_checkpoint(tmp_path_factory.mktemp("run"), bias=True, gelu_approximate="tanh", tie_weights=False)


def test_cli_export_round_trips_and_the_manifest_says_where_the_model_comes_from(checkpoint, tmp_path, capsys):
    out = tmp_path / "web"
    assert main(["export-web", "--checkpoint", str(checkpoint), "--out", str(out), "--dtype", "float32"]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["command"] == f"tinytransformer export-web --checkpoint {checkpoint} --out {out} --dtype float32"
    assert manifest["checkpoint"]["step"] == 0 and manifest["checkpoint"]["val_loss"] is None  # never evaluated
    assert manifest["checkpoint"]["data"] == "fox.txt"  # the file name only: no path of the machine it ran on
    original, tokenizer = load_model(checkpoint)
    exported, exported_tokenizer = load_web_export(out)
    assert exported_tokenizer.chars == tokenizer.chars
    ids = torch.tensor([tokenizer.encode("the lazy dog")])
    assert torch.equal(exported(ids), original(ids))  # float32: the weights exactly


def test_float16_halves_the_file_and_changes_the_logits_little(checkpoint, tmp_path):
    assert main(["export-web", "--checkpoint", str(checkpoint), "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["dtype"] == "float16" and not manifest["command"].endswith("float32")
    assert (tmp_path / "weights.bin").stat().st_size == 2 * manifest["parameters"]
    original, tokenizer = load_model(checkpoint)
    exported, _ = load_web_export(tmp_path)
    ids = torch.tensor([tokenizer.encode("the quick brown")])
    assert 0 < (exported(ids) - original(ids)).abs().max() < 1e-3


def test_a_tied_output_projection_is_stored_once(tmp_path):
    tokenizer = CharTokenizer("ab")
    for tie_weights, names in ((True, 0), (False, 1)):
        model = GPT(GPTConfig(vocab_size=2, max_seq_len=4, d_model=8, n_layers=1, n_heads=2, tie_weights=tie_weights))
        manifest = export_model(model, tokenizer, tmp_path)
        assert [t["name"] for t in manifest["tensors"]].count("lm_head.weight") == names
        assert manifest["parameters"] == model.num_parameters()


def test_what_the_browser_cannot_run_is_refused_by_name(tmp_path):
    config = GPTConfig(vocab_size=260, max_seq_len=4, d_model=8, n_layers=1, n_heads=2)
    with pytest.raises(ValueError, match="only the char tokenizer, and this model uses bpe:260"):
        export_model(GPT(config), BPETokenizer(train_bpe(TEXT, 260)), tmp_path)
    chars = CharTokenizer("ab")
    config = GPTConfig(vocab_size=2, max_seq_len=4, d_model=8, n_layers=1, n_heads=2, pre_norm=False)
    with pytest.raises(ValueError, match="Pre-LN"):
        export_model(GPT(config), chars, tmp_path)
    model = GPT(GPTConfig(vocab_size=2, max_seq_len=4, d_model=8, n_layers=1, n_heads=2))
    with torch.no_grad():
        model.final_norm.weight[0] = 70_000.0
    with pytest.raises(ValueError, match="beyond float16's range.*--dtype float32"):
        export_model(model, chars, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written for a refused model
    export_model(model, chars, tmp_path, "float32")  # float32 holds it


@pytest.mark.parametrize(("args", "message"), [
    (["--checkpoint", "missing.pt"], "does not exist"),
    (["--checkpoint", "CHECKPOINT", "--out", "CHECKPOINT"], "not writable"),
])
def test_cli_bad_input_exits_2_with_a_message(checkpoint, args, message, capsys):
    args = [str(checkpoint) if arg == "CHECKPOINT" else arg for arg in args]
    assert main(["export-web", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_unknown_dtype_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export-web", "--checkpoint", "x.pt", "--dtype", "int8"])
    assert exit_info.value.code == 2 and "invalid choice: 'int8'" in capsys.readouterr().err


def test_weights_that_do_not_fit_their_manifest_are_refused(tmp_path):
    model = GPT(GPTConfig(vocab_size=2, max_seq_len=4, d_model=8, n_layers=1, n_heads=2))
    export_model(model, CharTokenizer("ab"), tmp_path)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(weights.read_bytes()[:-2])
    with pytest.raises(ValueError, match="do not fit their manifest"):
        load_web_export(tmp_path)
    with pytest.raises(FileNotFoundError, match="export-web"):
        load_web_export(tmp_path / "nothing")


def test_the_committed_export_is_small_and_says_where_it_comes_from():
    manifest = json.loads((COMMITTED / "manifest.json").read_text(encoding="utf-8"))
    assert (COMMITTED / "weights.bin").stat().st_size == 2 * manifest["parameters"] <= 2_000_000
    assert sorted(path.name for path in COMMITTED.iterdir()) == ["manifest.json", "weights.bin"]
    assert manifest["command"].startswith("tinytransformer export-web --checkpoint ")
    assert manifest["checkpoint"]["step"] == 2000 and manifest["checkpoint"]["val_loss"] < 2.0
    assert {key: manifest["config"][key] for key in NANOGPT_CHAR_MODEL} == NANOGPT_CHAR_MODEL
    model, tokenizer = load_web_export(COMMITTED)
    assert tokenizer.vocab_size == 65 and model.num_parameters() == manifest["parameters"]
