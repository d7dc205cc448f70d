"""The book's figures: drawn deterministically, committed, and shown in a chapter with alt text."""

import math
import re
from pathlib import Path

import pytest

from tinytransformer.cli import main
from tinytransformer.data import load_token_data
from tinytransformer.figures import (
    FIGURES,
    frequency_loss,
    train_grid_point,
    write_figures,
)

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


def test_figures_command_writes_every_figure_and_a_second_run_changes_nothing(tmp_path, capsys):
    out = tmp_path / "figures"
    assert main(["figures", "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("wrote") == len(FIGURES)
    assert sorted(path.stem for path in out.iterdir()) == sorted(FIGURES)
    first = {path.name: path.read_bytes() for path in out.iterdir()}

    # Redrawing gives the same bytes: one figure drawn from scratch, one from the trained model.
    again = ["causal-mask", "attention-heads"]
    assert main(["figures", *again, "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("unchanged") == len(again)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == first


def test_every_registered_figure_is_committed_and_nothing_else():
    committed = sorted(path.stem for path in (BOOK / "figures").glob("*"))
    assert committed == sorted(FIGURES), "run `tinytransformer figures` and remove files no figure writes"


def test_every_figure_is_shown_in_a_chapter():
    shown = {src for chapter in BOOK.glob("*.md") for _, src in IMAGE.findall(chapter.read_text(encoding="utf-8"))}
    assert {f"figures/{name}.svg" for name in FIGURES} <= shown


@pytest.mark.parametrize("chapter", sorted(BOOK.glob("*.md")), ids=lambda path: path.name)
def test_every_image_in_the_book_exists_and_has_alt_text(chapter: Path):
    for alt, src in IMAGE.findall(chapter.read_text(encoding="utf-8")):
        if "://" in src:
            continue
        assert (chapter.parent / src).is_file(), f"{chapter.name}: {src} does not exist"
        assert len(alt.split()) >= 8, f"{chapter.name}: {src} needs alt text that says what it shows"


def test_unknown_figure_is_a_usage_error_that_writes_nothing(tmp_path, capsys):
    assert main(["figures", "no-such-figure", "--out", str(tmp_path / "figures")]) == 2
    assert "no-such-figure" in capsys.readouterr().err
    assert not (tmp_path / "figures").exists()


def test_missing_parent_folder_is_a_usage_error(tmp_path, capsys):
    assert main(["figures", "--out", str(tmp_path / "missing" / "figures")]) == 2
    assert "--out" in capsys.readouterr().err


def test_a_failing_figure_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    def broken():
        raise RuntimeError("this figure cannot be drawn")

    monkeypatch.setitem(FIGURES, "zz-broken", broken)
    with pytest.raises(RuntimeError):
        write_figures(tmp_path / "figures", ["causal-mask", "zz-broken"])
    assert not (tmp_path / "figures").exists()


def test_a_warmup_grid_point_records_what_the_figure_reads():
    data = load_token_data(None, tokenizer="char")
    run = train_grid_point(data, n_layers=1, learning_rate=3e-3, warmup_steps=2,
                           pre_norm=False, seed=0, steps=3, batch_size=2)
    assert set(run) == {"n_layers", "learning_rate", "warmup_steps", "pre_norm", "seed",
                        "losses", "max_grad_norm", "val_loss"}
    assert len(run["losses"]) == 2  # step 0 and the last step
    assert run["max_grad_norm"] > 0
    ln_v = math.log(data.tokenizer.vocab_size)
    assert run["val_loss"] is not None and run["val_loss"] < 1.1 * ln_v
    assert 0 < frequency_loss(data) < ln_v
