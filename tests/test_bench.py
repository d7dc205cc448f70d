"""`tinytransformer bench`: the FLOP count, the peak estimate and the command (chapter 12)."""

import json

import pytest

from tinytransformer.bench import cpu_peak_flops, training_flops_per_token
from tinytransformer.cli import main
from tinytransformer.model import GPTConfig


def test_flops_per_token_is_six_n_plus_attention():
    config = GPTConfig(vocab_size=100, max_seq_len=32, d_model=64, n_layers=2, n_heads=4)
    per_block = 12 * 64 * 64 + 13 * 64
    non_position_parameters = 100 * 64 + 2 * per_block + 2 * 64
    assert training_flops_per_token(config) == 6 * non_position_parameters + 12 * 2 * 32 * 64


def test_cpu_peak_names_its_assumptions():
    peak, note = cpu_peak_flops(cores=2)
    assert "FMA" in note or "unknown" in note
    assert peak > 1e9 or peak != peak  # a real estimate, or NaN with the reason


def test_bench_command_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--max-seq-len", "16",
            "--batch-size", "2", "--steps", "1", "--repeats", "1", "--generate", "4", "--json", str(path)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| book |" in table and "| sdpa |" in table and "generate 4 tokens" in table
    results = json.loads(path.read_text())
    assert set(results["training"]) == {"book", "sdpa"}
    assert results["training"]["sdpa"]["tokens_per_s"] > 0 and results["generation"]["4"]["with_cache"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--preset", "huge"], "unknown preset"), (["--steps", "0"], "must be at least 1"), (["--variants", "turbo"], "unknown variant 'turbo'")],
)
def test_bench_bad_input_exits_2(args, message, capsys):
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err
