"""`tinytransformer bench`: the FLOP count, the peak estimate and the command (chapter 12)."""

import json
import math

import pytest

import tinytransformer.bench as bench_module
from tinytransformer.bench import cpu_peak_flops, training_flops_per_token
from tinytransformer.cli import main
from tinytransformer.model import GPTConfig


def test_flops_per_token_is_six_n_plus_attention():
    config = GPTConfig(vocab_size=100, max_seq_len=32, d_model=64, n_layers=2, n_heads=4)
    per_block = 12 * 64 * 64 + 13 * 64
    non_position_parameters = 100 * 64 + 2 * per_block + 2 * 64
    assert training_flops_per_token(config) == 6 * non_position_parameters + 12 * 2 * 32 * 64


class FakeCpuinfo:
    """Stands in for ``Path("/proc/cpuinfo")``: its text, or ``None`` for a system without the file."""

    def __init__(self, text: str | None):
        self.text = text

    def __call__(self, path: str) -> "FakeCpuinfo":
        assert path == "/proc/cpuinfo"
        return self

    def read_text(self) -> str:
        if self.text is None:
            raise FileNotFoundError("/proc/cpuinfo")
        return self.text


@pytest.mark.parametrize(
    ("flags", "lanes"), [("fpu sse2 avx2 fma avx512f", 16), ("fpu sse2 avx2 fma", 8), ("fpu sse2", 4)]
)
def test_cpu_peak_is_lanes_times_two_fma_units_times_two_times_clock_times_cores(monkeypatch, flags, lanes):
    monkeypatch.setattr(
        bench_module, "Path", FakeCpuinfo(f"processor\t: 0\nflags\t\t: {flags}\ncpu MHz\t\t: 2100.000\n")
    )
    peak, note = cpu_peak_flops(cores=2)
    assert peak == lanes * 2 * 2 * 2100e6 * 2
    assert note == f"{lanes} fp32 lanes × 2 FMA units × 2 × 2100 MHz × 2 cores"


def test_cpu_peak_without_cpuinfo_is_nan_with_the_reason(monkeypatch):
    monkeypatch.setattr(bench_module, "Path", FakeCpuinfo(None))
    peak, note = cpu_peak_flops(cores=2)
    assert math.isnan(peak) and note.endswith("peak unknown")


def test_bench_command_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    args = ["bench", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--max-seq-len", "16", "--batch-size",
            "2", "--steps", "1", "--repeats", "1", "--generate", "4", "--json", str(path)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| book |" in table and "| sdpa |" in table and "generate 4 tokens" in table
    results = json.loads(path.read_text())
    assert set(results["training"]) == {"book", "sdpa"}
    assert results["training"]["sdpa"]["tokens_per_s"] > 0 and results["generation"]["4"]["with_cache"] > 0


def test_bench_decode_prints_one_table_per_length_and_writes_json(tmp_path, capsys):
    path = tmp_path / "decode.json"
    args = ["bench", "--decode", "--d-model", "16", "--n-layers", "1", "--n-heads", "2",
            "--max-seq-len", "32", "--vocab-size", "100", "--generate", "4",
            "--repeats", "1", "--dtypes", "float32", "int8", "--json", str(path)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "memory bandwidth" in table and "| plain |" in table and "| int8 |" in table
    assert "| bfloat16 |" not in table and "4/4 |" in table
    results = json.loads(path.read_text())
    assert results["bandwidth_gb_s"] > 0 and results["training"] == {}
    rows = results["decoding"]["4"]
    assert rows["float32"]["agree"] == 4
    assert rows["int8"]["mb_per_token"] < rows["plain"]["mb_per_token"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preset", "huge"], "unknown preset"),
        (["--decode", "--dtypes", "fp8"], "unknown --dtypes 'fp8'"),
        (["--steps", "0"], "must be at least 1"),
        (["--variants", "turbo"], "unknown variant 'turbo'"),
    ],
)
def test_bench_bad_input_exits_2(args, message, capsys):
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "0"], "batch_size must be at least 1, got 0"),
    (["--json", "/nonexistent-folder/bench.json"], "cannot write /nonexistent-folder/bench.json"),
])
def test_bench_refuses_before_measuring(args, message, capsys, monkeypatch):
    def measured(*args, **kwargs):
        raise AssertionError("the benchmark ran before the input was checked")

    monkeypatch.setattr(bench_module, "bench_training", measured)
    assert main(["bench", *args]) == 2
    assert message in capsys.readouterr().err
