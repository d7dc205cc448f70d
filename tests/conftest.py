"""Shared test set-up: offline tiktoken encodings and tiny model configurations."""

import os
from pathlib import Path

import pytest
import torch

from tinytransformer.model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
# The models in tests and book blocks are tiny: one thread avoids thread start-up and, on a busy
# machine, threads spinning against each other (seen here: 35 s instead of 1 s for 80 steps).
torch.set_num_threads(1)

SHARED_TIKTOKEN_CACHE = ROOT.parent / "shared" / "tiktoken_cache"
if SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN_CACHE))


@pytest.fixture
def tiny_config() -> GPTConfig:
    """A model small enough to run a few hundred steps in a test."""
    return GPTConfig(vocab_size=32, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)
