"""Data-parallel training: 2 processes × batch b follow 1 process × batch 2b (chapter 13)."""

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from tinytransformer.checkpoint import load_model
from tinytransformer.data import TokenData
from tinytransformer.distributed import Distributed, init_distributed
from tinytransformer.model import GPT, GPTConfig
from tinytransformer.tokenizer import get_tokenizer
from tinytransformer.train import TrainConfig, Trainer

TEXT = "to be or not to be, that is the question. " * 40


def make_trainer(out_dir: Path, batch_size: int, distributed: Distributed | None = None) -> Trainer:
    tokenizer = get_tokenizer("char", TEXT)
    tokens = np.array(tokenizer.encode(TEXT), dtype=np.uint16)
    data = TokenData(train=tokens[:1500], val=tokens[1500:], tokenizer=tokenizer, source="test text")
    model_config = GPTConfig(vocab_size=tokenizer.vocab_size, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)
    config = TrainConfig(batch_size=batch_size, grad_accum_steps=2, max_steps=6, warmup_steps=2, log_interval=1,
                         eval_interval=3, eval_batches=2, sample_tokens=0)
    torch.manual_seed(config.seed)  # the same initial weights in every process
    return Trainer(GPT(model_config), config, data, out_dir=out_dir, progress=False, distributed=distributed)


def logged_losses(out_dir: Path) -> list[float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    return [record["loss"] for record in map(json.loads, lines) if "loss" in record]


def run_rank(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed, device = init_distributed("cpu", timeout_seconds=60)
    try:
        make_trainer(Path(out_dir), batch_size=2, distributed=distributed).fit()
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_ranks_match_one_process_with_twice_the_batch(tmp_path):
    mp.spawn(run_rank, args=(2, free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    single = make_trainer(tmp_path / "single", batch_size=4)
    single.fit()
    assert logged_losses(tmp_path / "ddp") == pytest.approx(logged_losses(tmp_path / "single"), abs=1e-5)
    model, _ = load_model(tmp_path / "ddp" / "checkpoint.pt")  # written by rank 0, loads in one process
    for ours, theirs in zip(model.parameters(), single.model.parameters()):
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_only_rank_zero_writes(tmp_path):
    trainer = make_trainer(tmp_path / "rank1", batch_size=2, distributed=Distributed(rank=1, world_size=1))
    assert trainer.out_dir is None and not trainer.progress


def test_incomplete_torchrun_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set; launch with torchrun"):
        init_distributed("cpu")
