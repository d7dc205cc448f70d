"""Fixtures of the unit tests (the set-up shared with the book's blocks is in the root conftest.py)."""

import pytest

from tinytransformer.model import GPTConfig


@pytest.fixture
def tiny_config() -> GPTConfig:
    """A model small enough to run a few hundred steps in a test."""
    return GPTConfig(vocab_size=32, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)
