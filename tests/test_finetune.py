"""``tinytransformer train --init`` and ``--lora`` (chapter 11b): fine-tuning pretrained weights."""

import json
import os
import re
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tinytransformer.checkpoint import load_checkpoint, load_model, weights_sha256
from tinytransformer.cli import main
from tinytransformer.commands.train import LoRATrainer
from tinytransformer.data import load_token_data
from tinytransformer.lora import apply_lora, lora_layers, merge_lora
from tinytransformer.train import TrainConfig, read_metrics

TEXT = (
    "to be or not to be, that is the question. whether tis nobler in the mind to suffer. "
    * 40
)
TRAIN = [
    "--no-progress",
    "--batch-size",
    "4",
    "--eval-interval",
    "3",
    "--eval-batches",
    "1",
    "--sample-tokens",
    "0",
    "--warmup-steps",
    "1",
    "--learning-rate",
    "0.003",
]

SMALL_CHAR_MODEL = ["--tokenizer", "char", "--max-seq-len", "16", "--d-model", "32", "--n-layers", "2", "--n-heads", "4"]
"""The base model of these tests: the char tokenizer, 2 layers of 32."""


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
    assert (
        main(
            [
                "train",
                "--data",
                str(corpus),
                *SMALL_CHAR_MODEL,
                *TRAIN,
                "--max-steps",
                "2",
                "--out",
                str(tmp_path / "base"),
            ]
        )
        == 0
    )
    capsys.readouterr()
    return tmp_path / "base" / "checkpoint.pt"


def gpt2_dir(tmp_path: Path) -> Path:
    pytest.importorskip("transformers")
    from tests.test_gpt2 import random_gpt2

    directory = tmp_path / "gpt2"
    random_gpt2(
        vocab_size=50257, n_positions=16, n_embd=32, n_layer=2, n_head=4
    ).save_pretrained(directory)
    return directory


def test_init_from_our_checkpoint_trains_and_generate_reads_it(
    tmp_path, corpus, base, capsys
):
    out = tmp_path / "tuned"
    assert (
        main(
            [
                "train",
                "--init",
                str(base),
                "--data",
                str(corpus),
                *TRAIN,
                "--max-steps",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    state = load_checkpoint(out / "checkpoint.pt")
    assert (
        state["model_config"] == load_checkpoint(base)["model_config"]
    )  # the architecture of the weights
    assert not torch.equal(
        state["model"]["blocks.0.mlp.fc_in.weight"],
        load_checkpoint(base)["model"]["blocks.0.mlp.fc_in.weight"],
    )
    assert json.loads((out / "config.json").read_text())["init"] == str(base)
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(out / "checkpoint.pt"),
                "--prompt",
                "to be",
                "--max-new-tokens",
                "5",
                "--greedy",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("to be")


def test_init_accepts_the_run_folder(tmp_path, corpus, base, capsys):
    assert (
        main(
            [
                "train",
                "--init",
                str(base.parent),
                "--data",
                str(corpus),
                *TRAIN,
                "--max-steps",
                "1",
                "--out",
                str(tmp_path / "tuned"),
            ]
        )
        == 0
    )


@pytest.mark.pretrained_encodings
@pytest.mark.parametrize("lora", [[], ["--lora", "2"]], ids=["full", "lora"])
def test_init_from_a_gpt2_directory_trains_saves_resumes_bit_exactly_and_generates(
    tmp_path, corpus, capsys, lora
):
    directory = gpt2_dir(tmp_path)
    constant = [
        "--warmup-steps",
        "0",
        "--min-learning-rate",
        "0.003",
        "--log-interval",
        "1",
    ]  # no schedule
    for name, steps in (("straight", "2"), ("halves", "1")):
        assert (
            main(
                [
                    "train",
                    "--init",
                    str(directory),
                    "--data",
                    str(corpus),
                    *TRAIN,
                    *constant,
                    *lora,
                    "--max-steps",
                    steps,
                    "--out",
                    str(tmp_path / name),
                ]
            )
            == 0
        )
    halves = tmp_path / "halves" / "checkpoint.pt"
    assert (
        main(["train", "--resume", str(halves), "--max-steps", "2", *TRAIN, *constant])
        == 0
    )
    straight, resumed = (
        load_checkpoint(tmp_path / "straight" / "checkpoint.pt"),
        load_checkpoint(halves),
    )
    assert resumed["step"] == 2 and resumed["tokenizer"]["name"] == "gpt2"
    assert (
        resumed["model_config"]["d_model"] == 32
        and resumed["model_config"]["vocab_size"] == 50257
    )
    assert straight["model"].keys() == resumed["model"].keys()
    assert all(
        torch.equal(straight["model"][name], resumed["model"][name])
        for name in straight["model"]
    )
    if lora:
        assert resumed["lora"]["base"] == str(directory.resolve())
        assert all(
            name.endswith((".A", ".B"))
            for name in resumed["model"]
            if name != "lora_alpha"
        )
    model, tokenizer = load_model(halves)
    assert tokenizer.name == "gpt2" and bool(lora_layers(model)) == bool(lora)
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(halves),
                "--prompt",
                "to be",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("to be")


@pytest.mark.pretrained_encodings
def test_a_tokenizer_other_than_gpt2s_is_refused(tmp_path, corpus, capsys):
    directory = gpt2_dir(tmp_path)
    assert (
        main(
            [
                "train",
                "--init",
                str(directory),
                "--data",
                str(corpus),
                "--tokenizer",
                "char",
                "--out",
                str(tmp_path / "tuned"),
            ]
        )
        == 2
    )
    assert "trained with tokenizer 'gpt2', not 'char'" in capsys.readouterr().err
    assert not (tmp_path / "tuned").exists()


def lora_run(tmp_path: Path, corpus: Path, base: Path, name: str, *flags: str) -> Path:
    out = tmp_path / name
    assert (
        main(
            [
                "train",
                "--init",
                str(base),
                "--data",
                str(corpus),
                *TRAIN,
                "--lora",
                "2",
                "--lora-targets",
                "qkv_proj,fc_out",
                "--out",
                str(out),
                *flags,
            ]
        )
        == 0
    )
    return out / "checkpoint.pt"


def adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    return {
        name: tensor
        for name, tensor in load_checkpoint(path)["model"].items()
        if name != "lora_alpha"
    }


def test_a_lora_checkpoint_holds_only_the_adapters_and_names_its_base(
    tmp_path, corpus, base, capsys
):
    path = lora_run(tmp_path, corpus, base, "lora", "--max-steps", "3")
    capsys.readouterr()
    state = load_checkpoint(path)
    assert set(state["model"]) == {"lora_alpha"} | {
        f"blocks.{i}.{part}.{matrix}"
        for i in range(2)
        for part in ("attn.qkv_proj", "mlp.fc_out")
        for matrix in "AB"
    }
    base_model, _ = load_model(base)
    assert state["lora"] == {
        "base": str(base.resolve()),
        "base_sha256": weights_sha256(base_model),
    }
    assert state["model_config"] == load_checkpoint(base)["model_config"]
    assert path.stat().st_size < base.stat().st_size / 2
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                "to",
                "--max-new-tokens",
                "3",
                "--greedy",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out.startswith("to")


def test_the_adapter_checkpoint_on_its_base_reproduces_the_fine_tuned_logits(
    tmp_path, corpus, base
):
    model, tokenizer = load_model(base)
    base_reference = {"base": str(base), "base_sha256": weights_sha256(model)}
    data = load_token_data(corpus, tokenizer=tokenizer)
    config = TrainConfig(
        batch_size=4,
        max_steps=3,
        warmup_steps=1,
        learning_rate=0.01,
        sample_tokens=0,
        eval_batches=1,
    )
    trainer = LoRATrainer(
        apply_lora(model.train(), rank=3, alpha=4.0),
        config,
        data,
        out_dir=tmp_path / "run",
        progress=False,
        base=base_reference,
    )
    trainer.fit()
    restored, _ = load_model(tmp_path / "run" / "checkpoint.pt")
    ids = torch.tensor([tokenizer.encode("whether tis")])
    with torch.no_grad():
        assert torch.equal(restored(ids), trainer.model.eval()(ids))
        assert not torch.equal(
            restored(ids), load_model(base)[0](ids)
        )  # the adapters did change it
    assert lora_layers(restored)["blocks.1.mlp.fc_in"].scale == 4.0 / 3


def test_a_resumed_lora_run_matches_the_uninterrupted_one_bit_for_bit(
    tmp_path, corpus, capsys
):
    assert (
        main(
            [
                "train",
                "--data",
                str(corpus),
                *SMALL_CHAR_MODEL,
                "--dropout",
                "0.1",
                *TRAIN,
                "--max-steps",
                "1",
                "--out",
                str(tmp_path / "base"),
            ]
        )
        == 0
    )
    base = tmp_path / "base" / "checkpoint.pt"
    constant = [
        "--log-interval",
        "1",
        "--warmup-steps",
        "0",
        "--min-learning-rate",
        "0.003",
    ]  # no schedule
    straight = lora_run(
        tmp_path, corpus, base, "straight", *constant, "--max-steps", "4"
    )
    halves = lora_run(tmp_path, corpus, base, "halves", *constant, "--max-steps", "2")
    assert (
        main(["train", "--resume", str(halves), "--max-steps", "4", *TRAIN, *constant])
        == 0
    )
    assert load_checkpoint(halves)["step"] == 4
    first, second = adapter_weights(straight), adapter_weights(halves)
    assert first.keys() == second.keys() and all(
        torch.equal(first[name], second[name]) for name in first
    )
    losses = [
        [
            record["loss"]
            for record in read_metrics(path.parent / "metrics.jsonl")
            if "loss" in record
        ]
        for path in (straight, halves)
    ]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_merge_writes_the_merged_model_as_a_plain_checkpoint(
    tmp_path, corpus, base, capsys
):
    path = lora_run(tmp_path, corpus, base, "lora", "--max-steps", "3")
    out = tmp_path / "merged.pt"
    assert main(["merge", str(path.parent), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    merged_state = load_checkpoint(out)
    assert "lora" not in merged_state and merged_state["optimizer"] == {}
    assert merged_state["model"].keys() == load_checkpoint(base)["model"].keys()
    expected = merge_lora(load_model(path)[0]).state_dict()
    assert all(
        torch.equal(merged_state["model"][name], expected[name]) for name in expected
    )
    for name, weight in load_checkpoint(base)[
        "model"
    ].items():  # only the adapted weights moved
        adapted = name.endswith(("qkv_proj.weight", "fc_out.weight"))
        assert torch.equal(merged_state["model"][name], weight) != adapted, name
    merged, tokenizer = load_model(out)
    adapted_model, _ = load_model(path)
    ids = torch.tensor([tokenizer.encode("to be or not")])
    with torch.no_grad():
        assert (
            merged(ids) - adapted_model(ids)
        ).abs().max().item() < 1e-5  # float32 weights, merged once
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(out),
                "--prompt",
                "to",
                "--max-new-tokens",
                "3",
            ]
        )
        == 0
    )
    assert main(["train", "--resume", str(out), "--max-steps", "5"]) == 2
    assert "holds no optimiser state" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--init",
                str(out),
                "--data",
                str(corpus),
                *TRAIN,
                "--max-steps",
                "1",
                "--out",
                str(tmp_path / "again"),
            ]
        )
        == 0
    )
    for checkpoint, web in (
        (path, "web-adapters"),
        (out, "web-merged"),
    ):  # export-web reads both
        web_args = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / web)]
        assert main(["export-web", *web_args, "--dtype", "float32"]) == 0
    weights = [
        (tmp_path / web / "weights.bin").read_bytes()
        for web in ("web-adapters", "web-merged")
    ]
    assert weights[0] == weights[1]


def test_merge_refuses_bad_input_and_overwrites_nothing(tmp_path, corpus, base, capsys):
    path = lora_run(tmp_path, corpus, base, "lora", "--max-steps", "1")
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"keep me")
    cases = [
        ([str(path), "--out", str(existing)], "exists; choose a new file name"),
        ([str(base), "--out", str(tmp_path / "new.pt")], "holds no LoRA adapters"),
        (
            [str(tmp_path / "nothing.pt"), "--out", str(tmp_path / "new.pt")],
            "does not exist",
        ),
        (
            [
                str(path),
                "--out",
                str(tmp_path / "new.pt"),
                "--base",
                str(tmp_path / "gone"),
            ],
            "does not load",
        ),
    ]
    for arguments, message in cases:
        assert main(["merge", *arguments]) == 2
        assert message in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me" and not (tmp_path / "new.pt").exists()


def test_a_moved_base_is_named_with_base(tmp_path, corpus, base, capsys):
    path = lora_run(tmp_path, corpus, base, "lora", "--max-steps", "1")
    moved = base.rename(tmp_path / "moved.pt")
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                "to",
                "--max-new-tokens",
                "2",
            ]
        )
        == 2
    )
    assert (
        f"LoRA adapters of the base {base.resolve()}, which does not load"
        in capsys.readouterr().err
    )
    assert (
        main(
            [
                "merge",
                str(path),
                "--out",
                str(tmp_path / "merged.pt"),
                "--base",
                str(moved),
            ]
        )
        == 0
    )


def other_base(corpus: Path, out: Path, *sizes: str) -> Path:
    """Another small model trained on the corpus: a base the adapters were not trained on."""
    assert (
        main(
            [
                "train",
                "--data",
                str(corpus),
                "--tokenizer",
                "char",
                "--n-layers",
                "2",
                "--n-heads",
                "4",
                *sizes,
                *TRAIN,
                "--max-steps",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "checkpoint.pt"


def test_adapters_on_the_wrong_base_are_refused_with_exit_2(
    tmp_path, corpus, base, capsys
):
    path = lora_run(tmp_path, corpus, base, "lora", "--max-steps", "1")
    shapes = (
        r"do not fit the base .*blocks.0.attn.qkv_proj: adapters of shapes "
        r"A \(2, 32\), B \(96, 2\) "
        r"do not fit the base weight \(48, 16\), which needs A \(2, 16\), B \(48, 2\)"
    )
    cases = {
        shapes: ["--max-seq-len", "16", "--d-model", "16"],
        r"not the model its adapters were trained on: max_seq_len 16 \(trained on\) vs 8": [
            *("--max-seq-len", "8", "--d-model", "32")
        ],
        "has the right shapes but other weights": [
            "--max-seq-len",
            "16",
            "--d-model",
            "32",
            "--seed",
            "7",
        ],
    }
    for number, (message, sizes) in enumerate(cases.items()):
        wrong = other_base(corpus, tmp_path / f"other{number}", *sizes)
        with pytest.raises(ValueError, match=message):
            load_model(path, base=wrong)
    (tmp_path / "other0" / "checkpoint.pt").replace(
        base
    )  # the recorded base is now a model of other shapes
    capsys.readouterr()
    assert (
        main(
            [
                "generate",
                "--checkpoint",
                str(path),
                "--prompt",
                "to",
                "--max-new-tokens",
                "2",
            ]
        )
        == 2
    )
    assert re.search(shapes, capsys.readouterr().err)
    assert main(["merge", str(path), "--out", str(tmp_path / "merged.pt")]) == 2
    assert not (tmp_path / "merged.pt").exists()


def test_print_config_counts_only_the_adapters(tmp_path, corpus, base, capsys):
    assert (
        main(
            [
                "train",
                "--init",
                str(base),
                "--data",
                str(corpus),
                *TRAIN,
                "--lora",
                "1",
                "--print-config",
            ]
        )
        == 0
    )
    described = json.loads(capsys.readouterr().out)
    assert described["lora"]["rank"] == 1 and described["init"] == str(base)


def test_configure_optimizer_skips_frozen_parameters():
    from tinytransformer.lora import apply_lora
    from tinytransformer.model import GPT, GPTConfig
    from tinytransformer.train import TrainConfig, configure_optimizer

    model = apply_lora(
        GPT(GPTConfig(vocab_size=10, max_seq_len=8, d_model=16, n_layers=1, n_heads=2)),
        rank=2,
    )
    optimizer = configure_optimizer(model, TrainConfig(), torch.device("cpu"))
    optimised = [p for group in optimizer.param_groups for p in group["params"]]
    assert optimised and all(p.requires_grad for p in optimised)
    assert len(optimised) == sum(p.requires_grad for p in model.parameters())
    assert [group["weight_decay"] for group in optimizer.param_groups][
        0
    ] > 0  # adapters are matrices: decayed


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--init", "{tmp}/nothing"], "does not exist"),
        (["--init", "{tmp}/empty"], "neither config.json"),
        (["--init", "{base}", "--lora", "0"], "rank must be a positive integer"),
        (["--lora", "2"], "add --init"),
        (
            ["--init", "{base}", "--lora", "2", "--lora-targets", "wte"],
            "--lora-targets 'wte'",
        ),
        (["--init", "{base}", "--resume", "{base}"], "use one"),
        (
            ["--init", "{base}", "--d-model", "64"],
            "the weights fix the architecture; drop --d-model",
        ),
        (
            ["--init", "{base}", "--tokenizer", "bpe:300"],
            "trained with tokenizer 'char', not 'bpe:300'",
        ),
    ],
    ids=[
        "nothing",
        "neither",
        "rank-0",
        "lora-without-init",
        "bad-targets",
        "with-resume",
        "architecture",
        "tokenizer",
    ],
)
def test_bad_input_is_exit_2_and_writes_nothing(
    tmp_path, corpus, base, capsys, flags, message
):
    (tmp_path / "empty").mkdir()
    flags = [flag.format(tmp=tmp_path, base=base) for flag in flags]
    out = tmp_path / "tuned"
    assert main(["train", "--data", str(corpus), *flags, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def run_rank(rank: int, world_size: int, port: int, arguments: list[str]) -> None:
    """One process of a torchrun-like job on the CPU (gloo), as chapter 13's tests do."""
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    assert main(arguments) == 0


def test_lora_under_two_processes_matches_one_process_with_twice_the_batch(
    tmp_path, corpus
):
    from tests.test_distributed import free_port

    # Without dropout: each process draws its own masks, so with dropout the runs differ.
    base = other_base(
        corpus,
        tmp_path / "base",
        "--max-seq-len",
        "16",
        "--d-model",
        "32",
        "--dropout",
        "0",
    )
    lora = [
        "train",
        "--init",
        str(base),
        "--data",
        str(corpus),
        *TRAIN,
        "--lora",
        "2",
        "--max-steps",
        "3",
    ]
    mp.spawn(
        run_rank,
        args=(
            2,
            free_port(),
            [*lora, "--batch-size", "2", "--out", str(tmp_path / "ddp")],
        ),
        nprocs=2,
        join=True,
    )
    assert main([*lora, "--batch-size", "4", "--out", str(tmp_path / "single")]) == 0
    ddp, single = (
        adapter_weights(tmp_path / name / "checkpoint.pt") for name in ("ddp", "single")
    )
    assert ddp.keys() == single.keys()
    assert all(torch.allclose(ddp[name], single[name], atol=1e-5) for name in ddp)
    assert load_checkpoint(tmp_path / "ddp" / "checkpoint.pt")["lora"]["base"] == str(
        base.resolve()
    )
