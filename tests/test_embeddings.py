"""Token and positional embeddings (chapter 2)."""

import pytest
import torch

from tinytransformer.embeddings import Embeddings


@pytest.fixture
def embeddings() -> Embeddings:
    torch.manual_seed(0)
    return Embeddings(vocab_size=50, max_seq_len=8, d_model=16)


def test_output_shape(embeddings):
    assert embeddings(torch.randint(0, 50, (3, 8))).shape == (3, 8, 16)


def test_output_is_token_plus_position_vector(embeddings):
    token_ids = torch.tensor([[4, 9]])
    x = embeddings(token_ids)
    expected = embeddings.token_embedding.weight[[4, 9]] + embeddings.position_embedding.weight[:2]
    assert torch.allclose(x[0], expected)


def test_same_token_at_different_positions_differs(embeddings):
    x = embeddings(torch.tensor([[3, 3, 3]]))
    assert not torch.allclose(x[0, 0], x[0, 1])


def test_start_pos_shifts_the_positions(embeddings):
    token_ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.allclose(embeddings(token_ids)[:, 2:], embeddings(token_ids[:, 2:], start_pos=2))


def test_max_seq_len_is_enforced_with_a_clear_error(embeddings):
    embeddings(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"9 positions is longer than max_seq_len \(8\)"):
        embeddings(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match="max_seq_len"):
        embeddings(torch.zeros(1, 2, dtype=torch.long), start_pos=7)


@pytest.mark.parametrize(
    "token_ids", [torch.zeros(8, dtype=torch.long), torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 4)],
    ids=["rank-1", "rank-3", "float"],
)
def test_wrong_rank_or_dtype_raises(embeddings, token_ids):
    with pytest.raises(ValueError, match=r"integer tensor of shape \(B, T\)"):
        embeddings(token_ids)


def test_dropout_only_in_training():
    embeddings = Embeddings(vocab_size=10, max_seq_len=4, d_model=64, dropout=0.5)
    token_ids = torch.randint(0, 10, (2, 4))
    assert (embeddings(token_ids) == 0).any()
    embeddings.eval()
    assert torch.equal(embeddings(token_ids), embeddings(token_ids))
