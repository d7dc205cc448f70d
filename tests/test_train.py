"""Training: schedule, optimiser, trainer, checkpoints, resume, signals and the train command (chapter 8)."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tinytransformer.checkpoint import load_checkpoint, load_model, write_checkpoint
from tinytransformer.cli import build_parser, main
from tinytransformer.commands.train import _new_run_folder, lock_run_folder
from tinytransformer.data import TokenData
from tinytransformer.devices import NonFiniteError
from tinytransformer.files import atomic_write
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.tokenizer import get_tokenizer
from tinytransformer.train import (
    PRESETS,
    TrainConfig,
    Trainer,
    configure_optimizer,
    json_safe,
    learning_rate,
    read_metrics,
)

TEXT = "the quick brown fox jumps over the lazy dog. " * 60


def new_trainer(model_config: GPTConfig, config: TrainConfig, data: TokenData, *args, **options) -> Trainer:
    """A trainer of a model freshly initialised from ``config.seed``, as `tinytransformer train` builds one."""
    torch.manual_seed(config.seed)
    return Trainer(GPT(model_config), config, data, *args, **options)


@pytest.fixture
def data() -> TokenData:
    tokenizer = get_tokenizer("char", TEXT)
    tokens = np.array(tokenizer.encode(TEXT), dtype=np.uint16)
    split = int(0.9 * len(tokens))
    return TokenData(train=tokens[:split], val=tokens[split:], tokenizer=tokenizer, source="test text")


@pytest.fixture
def model_config(data) -> GPTConfig:
    return GPTConfig(
        vocab_size=data.tokenizer.vocab_size, max_seq_len=16, d_model=32, n_layers=2, n_heads=4, dropout=0.1
    )


@pytest.fixture
def config() -> TrainConfig:
    return TrainConfig(
        batch_size=4, max_steps=12, warmup_steps=3, eval_interval=4, eval_batches=2, sample_tokens=5, log_interval=2
    )


@pytest.fixture
def corpus(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_learning_rate_warms_up_linearly_then_decays_to_the_minimum():
    config = TrainConfig(learning_rate=1e-3, min_learning_rate=1e-4, warmup_steps=10)
    rates = [learning_rate(step, config, max_steps=100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[55] == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert learning_rate(100, config, 100) == pytest.approx(1e-4)


def test_weight_decay_applies_to_matrices_only(model_config):
    from tinytransformer.model import GPT

    model = GPT(model_config)
    optimizer = configure_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.ndim == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"grad_accum_steps": 0}, "grad_accum_steps must be at least 1"),
        ({"learning_rate": 1e-4, "min_learning_rate": 1e-3}, "min_learning_rate"),
        ({"epochs": 0}, "epochs must be positive"),
        ({"optimizer": "sgd"}, "optimizer must be 'adamw' or 'adam'"),
        ({"warmup_steps": -1}, "warmup_steps must not be negative"),
    ],
)
def test_impossible_training_hyperparameters_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**overrides)


def test_context_longer_than_the_data_is_refused(data):
    config = GPTConfig(vocab_size=data.tokenizer.vocab_size, max_seq_len=512, d_model=16, n_layers=1, n_heads=2)
    with pytest.raises(
        ValueError, match=r"validation split has \d+ tokens, fewer than one window of max_seq_len \+ 1 = 513"
    ):
        new_trainer(config, TrainConfig(), data, progress=False)


def test_vocab_size_must_match_the_tokenizer(data):
    with pytest.raises(ValueError, match="vocab_size"):
        new_trainer(GPTConfig(vocab_size=7, max_seq_len=8, d_model=16, n_layers=1, n_heads=2), TrainConfig(), data)


def test_training_lowers_the_validation_loss(data, model_config):
    trainer = new_trainer(
        model_config, TrainConfig(batch_size=8, max_steps=80, learning_rate=3e-3, warmup_steps=5), data, progress=False
    )
    before = trainer.evaluate()["val"]
    for _ in range(80):
        trainer.train_step()
    assert trainer.evaluate()["val"] < before - 1.0


def test_gradient_accumulation_equals_one_large_batch(data, model_config):
    model_config = GPTConfig(**{**vars(model_config), "dropout": 0.0})
    big = new_trainer(model_config, TrainConfig(batch_size=8, max_steps=3, grad_clip=0), data, progress=False)
    small = new_trainer(
        model_config, TrainConfig(batch_size=4, grad_accum_steps=2, max_steps=3, grad_clip=0), data, progress=False
    )
    big_losses = [big.train_step().item() for _ in range(3)]
    small_losses = [small.train_step().item() for _ in range(3)]
    assert small_losses == pytest.approx(big_losses, abs=1e-5)
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_resumed_run_reproduces_the_uninterrupted_losses_bit_for_bit(tmp_path, data, model_config, config):
    straight = new_trainer(model_config, config, data, progress=False)
    expected = [straight.train_step().item() for _ in range(12)]
    first = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    first.fit(steps=7)
    resumed = new_trainer(model_config, config, data, progress=False)
    resumed.load_state_dict(load_checkpoint(tmp_path / "checkpoint.pt"))
    assert resumed.step == 7
    assert [resumed.train_step().item() for _ in range(5)] == expected[7:]


def test_fit_writes_metrics_plot_and_checkpoint(tmp_path, data, model_config, config):
    losses = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == list(range(1, 13))
    assert [r["step"] for r in records if "val_loss" in r] == [4, 8, 12]
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 12
    assert math.isfinite(losses["val"])


def test_checkpoint_loads_with_weights_only_and_rebuilds_model_and_tokenizer(tmp_path, data, model_config, config):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    trainer.train_step()
    path = trainer.save_checkpoint()
    state = torch.load(path, weights_only=True)  # raises if anything but tensors and plain types is inside
    assert state["model_config"] == vars(model_config) and state["step"] == 1
    model, tokenizer = load_model(path)
    assert tokenizer.decode(tokenizer.encode("lazy dog")) == "lazy dog"
    x = torch.randint(0, tokenizer.vocab_size, (2, 16))
    trainer.model.eval()
    assert torch.equal(model(x), trainer.model(x))


def test_crash_while_saving_leaves_the_previous_checkpoint_loadable(tmp_path, data, model_config, config, monkeypatch):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    trainer.train_step()
    trainer.save_checkpoint()
    trainer.train_step()

    def die_halfway(state, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is killed mid-write

    monkeypatch.setattr(torch, "save", die_halfway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint()
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


def test_sigint_saves_a_checkpoint_before_stopping(tmp_path, data, model_config, config):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    original_step = trainer.train_step

    def step_then_interrupt():
        loss = original_step()
        if trainer.step == 3:  # not a logging step (log_interval=2): the stop must not wait for one
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives during step 3
        return loss

    trainer.train_step = step_then_interrupt
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs in a background job
    trainer.fit()
    assert trainer.stop_signal == signal.SIGINT and trainer.step == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored


def test_debug_mode_names_module_step_and_micro_batch(data, model_config):
    trainer = new_trainer(model_config, TrainConfig(batch_size=2, grad_accum_steps=2), data, debug=True, progress=False)
    trainer.train_step()
    with torch.no_grad():
        trainer.model.blocks[1].mlp.fc_in.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"module blocks\.1\.mlp\.fc_in .* at step 1, micro-batch 0"):
        trainer.train_step()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "not a readable checkpoint"),
        (b"PK\x03\x04truncated", "not a readable checkpoint"),
        (b"garbage" * 10, "not a readable checkpoint"),
    ],
    ids=["empty", "truncated", "garbage"],
)
def test_corrupt_checkpoint_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_model(path)


def test_foreign_checkpoint_names_what_is_missing(tmp_path):
    write_checkpoint({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a tinytransformer checkpoint: it lacks format, model_config"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope.pt")


def test_presets_include_the_original_and_the_reference_configurations():
    assert PRESETS["seed"].model == dict(max_seq_len=128, d_model=256, n_layers=6, n_heads=4, fast_attention=True)
    assert PRESETS["seed"].tokenizer == "p50k_base" and PRESETS["seed"].train["optimizer"] == "adam"
    reference = PRESETS["shakespeare-char"]
    assert (
        reference.model["n_layers"] == 4 and reference.model["d_model"] == 128 and reference.train["batch_size"] == 12
    )
    # the speedrun changes the training, and how attention is computed, not the model
    assert PRESETS["speedrun"].model == reference.model | dict(fast_attention=False)
    assert PRESETS["speedrun"].train["dtype"] == "bfloat16"
    for preset in PRESETS.values():  # every preset builds valid configurations
        GPTConfig(vocab_size=100, **preset.model)
        TrainConfig(**preset.train)


def cli_train(*args: str) -> int:
    return main(["train", "--no-progress", *args])


def test_cli_trains_and_resumes(tmp_path, corpus, capsys):
    common = ["--data", str(corpus), "--tokenizer", "char", "--max-seq-len", "16", "--d-model", "32", "--n-layers",
              "1", "--n-heads", "2", "--batch-size", "4", "--eval-interval", "3", "--eval-batches", "1",
              "--sample-tokens", "4"]
    assert cli_train(*common, "--max-steps", "3", "--out", str(tmp_path / "run")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["step"] == 3
    assert cli_train("--resume", str(tmp_path / "run" / "checkpoint.pt"), "--max-steps", "6") == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 6


def test_new_run_never_overwrites_an_existing_checkpoint(tmp_path, corpus, capsys):
    args = ["--data", str(corpus), "--max-seq-len", "16", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--max-steps", "1", "--eval-batches", "1", "--sample-tokens", "0", "--out", str(tmp_path)]
    assert cli_train(*args) == 0
    before = (tmp_path / "checkpoint.pt").read_bytes()
    assert cli_train(*args) == 2
    assert (
        "already holds checkpoint.pt and metrics.jsonl of another run; continue it with --resume"
        in capsys.readouterr().err
    )
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'; choose one of default, seed, shakespeare-char, speedrun"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--batch-size", "0"], "batch_size must be at least 1"),
        (["--max-seq-len", "0"], "max_seq_len must be a positive integer, got 0"),
        (["--d-model", "30", "--n-heads", "4"], r"n_heads \(4\) must divide d_model \(30\)"),
        (["--max-seq-len", "4096"], "fewer than one window"),
        (["--learning-rate", "inf"], "learning_rate must be a finite number, got inf"),
        (["--weight-decay", "nan"], "weight_decay must be a finite number, got nan"),
        (["--grad-clip", "nan"], "grad_clip must be a finite number, got nan"),
        (["--epochs", "inf"], "epochs must be a finite number, got inf"),
        (["--layer-norm-eps", "-1"], "layer_norm_eps must be a small positive number, got -1.0"),
        (["--layer-norm-eps", "nan"], "layer_norm_eps must be a small positive number, got nan"),
        (["--beta2", "1"], r"beta2 \(1.0\) must be in \[0, 1\)"),
        (["--seed", str(2**70)], r"seed must be in \[0, 2\*\*63\)"),
        (["--max-steps", "5", "--epochs", "1"], "--max-steps and --epochs both set the length of the run; drop one"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(corpus, tmp_path, capsys, args, message):
    assert cli_train("--data", str(corpus), "--out", str(tmp_path / "run"), *args) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_cli_mps_where_absent_exits_2(corpus, capsys, monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cli_train("--data", str(corpus), "--mps") == 2
    assert "MPS (Apple GPU) is not available here" in capsys.readouterr().err


def test_cli_unwritable_out_dir_exits_2(corpus, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert (
        cli_train("--data", str(corpus), "--out", str(blocker / "run"), "--max-steps", "1", "--max-seq-len", "16") == 2
    )
    assert "is not writable" in capsys.readouterr().err


def test_cli_resume_refuses_another_architecture_or_tokenizer(tmp_path, corpus, data, model_config, config, capsys):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    path = trainer.save_checkpoint()
    assert cli_train("--resume", str(path), "--data", str(corpus), "--d-model", "64") == 2
    assert "the architecture differs: d_model 32 (checkpoint) vs 64 (asked)" in capsys.readouterr().err
    assert cli_train("--resume", str(path), "--data", str(corpus), "--tokenizer", "bpe") == 2
    assert "was trained with tokenizer 'char', not 'bpe:1024'" in capsys.readouterr().err


def test_cli_corrupt_resume_checkpoint_exits_2_and_is_left_alone(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"PK\x03\x04broken")
    assert cli_train("--resume", str(path)) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert path.read_bytes() == b"PK\x03\x04broken"


def test_train_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--data",
        "--tokenizer",
        "--preset",
        "--epochs",
        "--max-steps",
        "--out",
        "--device",
        "--mps",
        "--debug",
        "--resume",
        "--seed",
        "--d-model",
        "--learning-rate",
    ):
        assert flag in text


def test_progress_goes_to_stderr_and_only_the_result_to_stdout(tmp_path, corpus, capsys):
    args = ["--data", str(corpus), "--max-seq-len", "16", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--max-steps", "2", "--eval-interval", "1", "--eval-batches", "1", "--sample-tokens", "3", "--out",
            str(tmp_path / "run")]
    assert cli_train(*args) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["step"] for line in captured.out.splitlines()] == [2]  # one JSON result line
    assert "step 1 (epoch" in captured.err and "sample: " in captured.err


def test_the_logged_learning_rate_is_the_one_each_step_used(tmp_path, data, model_config, config):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    trainer.fit()
    logged = [(r["step"], r["lr"]) for r in read_metrics(tmp_path / "metrics.jsonl") if "lr" in r]
    assert logged == [(step, learning_rate(step - 1, config, trainer.max_steps)) for step in range(1, 13)]
    assert logged[0][1] == pytest.approx(config.learning_rate / 3)  # step 1 of 3 warm-up steps


TINY = ["--max-seq-len", "16", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--eval-batches", "1",
        "--sample-tokens", "0"]


def print_config(capsys, *args: str) -> dict:
    assert cli_train(*args, "--print-config") == 0
    return json.loads(capsys.readouterr().out)


def test_boolean_flags_read_as_flag_and_no_flag(corpus, capsys):
    assert print_config(capsys, "--data", str(corpus), *TINY, "--no-bias")["model"]["bias"] is False
    assert print_config(capsys, "--data", str(corpus), *TINY, "--bias")["model"]["bias"] is True
    with pytest.raises(SystemExit) as exit_info:
        cli_train("--data", str(corpus), "--bias", "yes")
    assert exit_info.value.code == 2
    assert "unrecognized arguments: yes" in capsys.readouterr().err


def test_flags_take_the_type_of_their_field(corpus, capsys):
    described = print_config(capsys, "--data", str(corpus), *TINY, "--d-ff", "48", "--epochs", "2")
    assert described["model"]["d_ff"] == 48 and described["train"]["epochs"] == 2.0
    with pytest.raises(SystemExit):
        cli_train("--data", str(corpus), "--max-steps", "1e3")
    assert "invalid int value: '1e3'" in capsys.readouterr().err


def test_every_train_flag_has_a_description_its_type_and_the_preset_values(capsys):
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    for action in train._actions:
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"
    text = train.format_help()
    assert "--learning-rate FLOAT" in text and "--max-steps INT" in text and "--gelu-approximate STR" in text
    assert "Peak learning rate, reached at the end of the warm-up (presets: default 0.002, seed 0.0001" in " ".join(
        text.split()
    )
    assert "later wins: built-in defaults < --preset < the checkpoint of --resume < the flags you type" in " ".join(
        text.split()
    )


def test_max_steps_typed_over_an_epochs_preset_trains_exactly_that_many_steps(tmp_path, corpus, capsys):
    assert PRESETS["seed"].train["epochs"] == 3
    args = ["--preset", "seed", "--tokenizer", "char", "--data", str(corpus), *TINY, "--n-layers", "1"]
    assert cli_train(*args, "--max-steps", "4", "--out", str(tmp_path / "run")) == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 4
    capsys.readouterr()
    assert print_config(capsys, *args, "--max-steps", "4")["steps"] == 4


def test_epochs_typed_on_resume_extend_the_run(tmp_path, corpus, capsys):
    args = ["--data", str(corpus), "--tokenizer", "char", *TINY, "--batch-size", "4"]
    assert cli_train(*args, "--max-steps", "2", "--out", str(tmp_path / "run")) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    tokens_per_step = 4 * 16
    steps_per_epoch = int(0.9 * len(corpus.read_text())) // tokens_per_step
    assert cli_train("--resume", str(tmp_path / "run" / "checkpoint.pt"), "--epochs", "1") == 0
    assert state["step"] == 2 and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == steps_per_epoch


def test_the_printed_configuration_is_the_one_the_run_uses(tmp_path, corpus, capsys):
    args = ["--preset", "shakespeare-char", "--data", str(corpus), *TINY, "--max-steps", "3", "--learning-rate", "5e-4"]
    described = print_config(capsys, *args)
    assert described["parameters"] > 0 and described["tokens_per_step"] == 12 * 16 and described["seconds_per_step"] > 0
    assert cli_train(*args, "--out", str(tmp_path / "run")) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert described["model"] == state["model_config"] and described["train"] == state["train_config"]
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["model"] == described["model"] and written["train"] == described["train"]
    assert described["train"]["learning_rate"] == 5e-4 and described["train"]["batch_size"] == 12


def test_a_second_run_into_a_locked_run_folder_is_refused(tmp_path, corpus):
    out = tmp_path / "run"
    with lock_run_folder(out):  # this process is the first run; the second is another process
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "tinytransformer",
                "train",
                "--no-progress",
                "--data",
                str(corpus),
                *TINY,
                "--max-steps",
                "1",
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"another run is using {out}" in second.stderr
    assert not (out / "checkpoint.pt").exists()


def test_default_run_folders_started_in_the_same_second_differ(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda fmt: "20261129-120000")
    folders = [_new_run_folder("default") for _ in range(3)]
    assert [f.as_posix() for f in folders] == [
        "runs/default-20261129-120000",
        "runs/default-20261129-120000-2",
        "runs/default-20261129-120000-3",
    ]


def test_resume_into_another_runs_folder_is_refused(tmp_path, corpus, capsys):
    args = ["--data", str(corpus), "--tokenizer", "char", *TINY]
    assert cli_train(*args, "--max-steps", "2", "--out", str(tmp_path / "a")) == 0
    assert cli_train(*args, "--max-steps", "3", "--out", str(tmp_path / "b")) == 0
    before = (tmp_path / "b" / "checkpoint.pt").read_bytes()
    assert cli_train("--resume", str(tmp_path / "a" / "checkpoint.pt"), "--out", str(tmp_path / "b")) == 2
    assert "already holds checkpoint.pt and metrics.jsonl of another run" in capsys.readouterr().err
    assert (tmp_path / "b" / "checkpoint.pt").read_bytes() == before
    assert (
        cli_train("--resume", str(tmp_path / "a" / "checkpoint.pt"), "--out", str(tmp_path / "c"), "--max-steps", "4")
        == 0
    )  # an empty folder is fine
    assert load_checkpoint(tmp_path / "c" / "checkpoint.pt")["step"] == 4


def test_a_link_planted_at_a_temporary_name_is_not_followed(tmp_path, data, model_config, config):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pt.tmp", ".checkpoint.pt.tmp", "loss.png.tmp.png", ".loss.png.tmp"):
        (run / name).symlink_to(victim)
    new_trainer(model_config, config, data, out_dir=run, progress=False).fit(steps=4)
    assert victim.read_text() == "precious"
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 4


def fill_then_run_out_of_space(file) -> None:
    file.write(b"half of it")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_says_so_and_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(ValueError, match=f"no space left in {tmp_path} while writing checkpoint.pt"):
        atomic_write(path, fill_then_run_out_of_space)
    assert path.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_a_full_disk_inside_torch_save_is_reported_as_a_full_disk(tmp_path, monkeypatch):
    def torch_save_failing(state, file):
        try:
            fill_then_run_out_of_space(file)
        except OSError as error:
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos") from error

    monkeypatch.setattr(torch, "save", torch_save_failing)
    with pytest.raises(ValueError, match="no space left in"):
        write_checkpoint({"step": 1}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


def test_a_torn_metrics_line_does_not_break_resume_and_later_records_are_dropped(tmp_path, corpus, capsys):
    args = ["--data", str(corpus), "--tokenizer", "char", *TINY, "--eval-interval", "2", "--log-interval", "1"]
    assert cli_train(*args, "--max-steps", "2", "--out", str(tmp_path / "run")) == 0
    metrics = tmp_path / "run" / "metrics.jsonl"
    with open(metrics, "a") as file:  # a killed run logged step 3 after the checkpoint, then tore a line
        file.write(json.dumps({"step": 3, "loss": 1.0, "lr": 0.1, "tokens_per_s": 1.0}) + "\n" + '{"step": 4, "lo')
    assert cli_train("--resume", str(tmp_path / "run" / "checkpoint.pt"), "--max-steps", "4") == 0
    steps = [r["step"] for r in read_metrics(metrics) if "loss" in r]
    assert steps == [1, 2, 3, 4]
    assert all(json.loads(line) for line in metrics.read_text().splitlines())  # every line whole


def test_nan_is_written_as_json_null():
    assert json_safe({"loss": float("nan"), "lr": float("inf"), "step": 3}) == {"loss": None, "lr": None, "step": 3}
    assert json.loads(json.dumps(json_safe({"val": float("nan")}))) == {"val": None}


def test_a_diverging_run_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, corpus, capsys):
    args = ["--data", str(corpus), "--tokenizer", "char", *TINY, "--eval-interval", "2", "--log-interval", "1"]
    assert cli_train(*args, "--max-steps", "2", "--out", str(tmp_path / "run")) == 0
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    with torch.no_grad():  # what a far too high learning rate does to the weights, one step later
        state["model"]["embeddings.token_embedding.weight"] *= 1e38
    (tmp_path / "diverging").mkdir()
    write_checkpoint(state, tmp_path / "diverging" / "checkpoint.pt")
    last_good = (tmp_path / "diverging" / "checkpoint.pt").read_bytes()
    capsys.readouterr()
    assert cli_train("--resume", str(tmp_path / "diverging" / "checkpoint.pt"), "--max-steps", "6") == 2
    err = capsys.readouterr().err
    assert "training diverged: the loss of step 3 is" in err and "--learning-rate" in err and "Traceback" not in err
    assert (tmp_path / "diverging" / "checkpoint.pt").read_bytes() == last_good


def test_a_checkpoint_with_nan_weights_is_refused_by_name(tmp_path, data, model_config, config):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    with torch.no_grad():
        trainer.model.final_norm.weight[0] = float("nan")
    path = trainer.save_checkpoint()
    with pytest.raises(ValueError, match=r"holds NaN or infinite weights \(in final_norm.weight"):
        load_model(path)


def interrupt_at_the_nth_forward(trainer: Trainer, condition, n: int) -> list:
    """Send this process SIGINT from inside the n-th forward pass whose input ``x`` meets ``condition(x)``.

    Returns:
        A list that grows by one for each such forward pass.
    """
    calls: list = []

    def hook(module, inputs):
        if condition(inputs[0]):
            calls.append(1)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGINT)

    trainer.model.register_forward_pre_hook(hook)
    return calls


def test_ctrl_c_during_an_evaluation_stops_within_a_batch_and_saves(tmp_path, data, model_config):
    config = TrainConfig(batch_size=4, max_steps=50, eval_interval=2, eval_batches=1_000_000, sample_tokens=0)
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    evaluated = interrupt_at_the_nth_forward(trainer, lambda x: not trainer.model.training, n=5)
    trainer.fit()  # a million evaluation batches: it returns only if the stop cuts the evaluation short
    assert trainer.stop_signal == signal.SIGINT and len(evaluated) == 5
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2
    assert not [r for r in read_metrics(tmp_path / "metrics.jsonl") if "val_loss" in r]  # no half evaluation logged


def test_ctrl_c_during_the_sample_stops_within_64_tokens_and_saves(tmp_path, data, model_config):
    config = TrainConfig(batch_size=4, max_steps=50, eval_interval=2, eval_batches=1, sample_tokens=10_000)
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    sampled = interrupt_at_the_nth_forward(trainer, lambda x: x.shape[0] == 1, n=10)  # the sample is one row
    trainer.fit()
    assert trainer.stop_signal == signal.SIGINT and 10 <= len(sampled) < 10 + 64
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 2


def test_a_full_disk_while_appending_metrics_says_so(tmp_path, data, model_config, config, monkeypatch):
    trainer = new_trainer(model_config, config, data, out_dir=tmp_path, progress=False)
    real_open = open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        if str(path).endswith("metrics.jsonl") and "a" in mode:
            file.writelines = lambda lines: fill_then_run_out_of_space(file.buffer)
        return file

    monkeypatch.setattr("builtins.open", open_on_a_full_disk)
    with pytest.raises(ValueError, match=f"no space left in {tmp_path} while appending to metrics.jsonl"):
        trainer.fit()


def test_an_interrupt_outside_training_exits_130_without_a_traceback(corpus, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("tinytransformer.commands.train.load_token_data", interrupted)
    assert cli_train("--data", str(corpus)) == 130
    assert capsys.readouterr().err == "tinytransformer train: interrupted\n"


@pytest.mark.parametrize("path", ["/dev/null", "fifo"])
def test_a_device_or_a_pipe_given_as_data_is_named_as_such(tmp_path, capsys, path):
    if path == "fifo":
        path = str(tmp_path / "fifo")
        os.mkfifo(path)
    assert cli_train("--data", path) == 2
    assert "is not a regular file or folder" in capsys.readouterr().err


def test_resume_refuses_another_or_a_changed_corpus_unless_asked(tmp_path, corpus, capsys):
    args = ["--tokenizer", "char", *TINY]
    assert cli_train("--data", str(corpus), *args, "--max-steps", "2", "--out", str(tmp_path / "run")) == 0
    resume = ["--resume", str(tmp_path / "run" / "checkpoint.pt"), "--max-steps", "3"]
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().replace("fox", "cat"))
    capsys.readouterr()
    assert cli_train(*resume, "--data", str(other)) == 2
    assert "is not the text" in capsys.readouterr().err
    corpus.write_text(corpus.read_text().replace("dog", "hog"))  # edited in place since the checkpoint
    assert cli_train(*resume) == 2
    err = capsys.readouterr().err
    assert f"reading the corpus the checkpoint was trained on: {corpus}" in err and "add --new-data" in err
    assert cli_train(*resume, "--new-data") == 0
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3


def damaged_checkpoints(good: dict):
    """(name, state) pairs: one field of a good checkpoint damaged in each, as tampering or a bug would."""
    def changed(path: str, value):
        state = {**good, "model_config": dict(good["model_config"]), "train_config": dict(good["train_config"]),
                 "tokenizer": dict(good["tokenizer"]), "rng": dict(good["rng"]), "model": dict(good["model"])}
        *parents, last = path.split(".", 1)  # at most two levels: "model.<a weight name with dots>"
        target = state
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value
        return path, state

    weight = "embeddings.token_embedding.weight"
    yield changed("format", "tinytransformer-checkpoint-99")
    yield changed("format", 1)
    yield changed("model_config", "not a dict")
    yield changed("model_config.future_field", 3)
    yield changed("model_config.d_model", "wide")
    yield changed("model_config.n_heads", 5)
    yield changed("model_config.max_seq_len", 100_000)
    yield changed("train_config.future_field", 3)
    yield changed("train_config.learning_rate", "fast")
    yield changed("train_config.beta2", 2.0)
    yield changed("tokenizer", [])
    yield changed("tokenizer.kind", "morse")
    yield changed("tokenizer.chars", "ab")  # another vocabulary size than the model's
    yield changed("data_source", None)
    yield changed(f"model.{weight}", torch.zeros(3, 3))
    yield changed(f"model.{weight}", DELETE)
    yield changed("optimizer", {"state": 5})
    yield changed("step", "12")
    yield changed("step", -1)
    yield changed("step", 10**9)
    yield changed("max_steps", 1.5)
    yield changed("losses", None)
    yield changed("rng", {})
    yield changed("rng.torch", torch.zeros(3, dtype=torch.uint8))
    yield changed("rng.batches", torch.zeros(3))


DELETE = object()


def bpe_state(pattern: str, ranks_text: str) -> dict:
    return {"kind": "bpe", "name": "bpe:257", "pattern": pattern, "ranks": ranks_text}


def test_every_damaged_checkpoint_field_exits_2_without_a_traceback(tmp_path, corpus, capsys):
    assert cli_train("--data", str(corpus), "--tokenizer", "char", *TINY, "--max-steps", "1",
                     "--out", str(tmp_path / "good")) == 0
    good = load_checkpoint(tmp_path / "good" / "checkpoint.pt")
    cases = list(damaged_checkpoints(good))
    from tinytransformer.tokenizer import ranks_to_text
    all_bytes = ranks_to_text({bytes([b]): b for b in range(256)})
    for name, tokenizer in [("tokenizer.pattern empty", bpe_state("", all_bytes)),
                            ("tokenizer.ranks missing a byte", bpe_state(r"\w+", all_bytes.split("\n", 1)[1])),
                            ("tokenizer.ranks duplicated", bpe_state(r"\w+", all_bytes + "YQ== 3\n"))]:
        cases.append((name, {**good, "tokenizer": tokenizer}))
    assert len(cases) == 28
    for number, (name, state) in enumerate(cases):
        folder = tmp_path / f"case{number}"
        folder.mkdir()
        torch.save(state, folder / "checkpoint.pt")
        before = (folder / "checkpoint.pt").read_bytes()
        capsys.readouterr()
        status = cli_train("--resume", str(folder / "checkpoint.pt"), "--data", str(corpus), "--max-steps", "2")
        err = capsys.readouterr().err
        assert status == 2 and "Traceback" not in err and err.startswith("tinytransformer train: error:"), (name, err)
        assert (folder / "checkpoint.pt").read_bytes() == before, name
        if not name.startswith(("optimizer", "rng", "step", "max_steps", "losses", "data_source", "train_config")):
            status = main(["generate", "--checkpoint", str(folder / "checkpoint.pt"), "--prompt", "the"])
            err = capsys.readouterr().err
            assert status == 2 and err.startswith("tinytransformer generate: error:"), (name, err)


@pytest.mark.parametrize(("dtype", "expected"), [("float32", torch.float32), ("bfloat16", torch.bfloat16)])
def test_the_precision_setting_covers_training_and_evaluation_alike(data, model_config, dtype, expected):
    trainer = new_trainer(model_config, TrainConfig(batch_size=2, eval_batches=1, dtype=dtype), data, progress=False)
    seen = []
    trainer.model.lm_head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    trainer.train_step()
    trainer.evaluate()
    assert seen == [expected] * 3  # the step, and one batch of each split


@pytest.mark.parametrize("fast_attention", [False, True])
def test_a_bfloat16_step_follows_the_float32_step_within_its_rounding(data, model_config, fast_attention):
    """The speedrun's path (chapter 12): autocast rounds the products' inputs to 8 significant bits."""
    model_config = replace(model_config, dropout=0.0, fast_attention=fast_attention)
    trainers = {
        dtype: new_trainer(model_config, TrainConfig(batch_size=4, dtype=dtype), data, progress=False)
        for dtype in ("float32", "bfloat16")
    }
    losses = {dtype: [trainer.train_step().item() for _ in range(5)] for dtype, trainer in trainers.items()}
    assert all(abs(a - b) < 2e-3 for a, b in zip(losses["float32"], losses["bfloat16"])), losses
    weights = [dict(trainer.model.named_parameters()) for trainer in trainers.values()]
    assert all(weights[1][name].dtype == torch.float32 for name in weights[1])  # the weights stay float32
    largest = max((weights[0][name] - weights[1][name]).abs().max().item() for name in weights[0])
    assert 0 < largest < 1e-3  # rounded, and only a little (1e-4 measured)


def test_compile_wraps_the_model_for_training_and_evaluation_alike(data, model_config):
    trainer = new_trainer(model_config, TrainConfig(compile=True), data, progress=False)
    compiled = type(torch.compile(torch.nn.Linear(1, 1)))
    assert isinstance(trainer.training_model, compiled) and isinstance(trainer.evaluation_model, compiled)
    assert trainer.evaluation_model._orig_mod is trainer.model  # evaluation compiles the model itself


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, got 'float8'"):
        TrainConfig(dtype="float8")
