"""The package is generated from the book, and the check notices every kind of drift."""

import shutil
from pathlib import Path

import pytest

from tinytransformer.cli import main
from tinytransformer.tangle import MARK, collect_blocks, tangle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the book and the package to edit freely."""
    shutil.copytree(ROOT / "book", tmp_path / "book", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "tinytransformer", tmp_path / "tinytransformer", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_package_matches_book():
    problems = tangle(ROOT, check=True)
    assert problems == [], "\n".join(problems) + "\nrun `tinytransformer tangle`"


def test_every_package_file_is_generated_and_says_where_to_edit():
    for path in (ROOT / "tinytransformer").rglob("*.py"):
        first_line, second_line = path.read_text(encoding="utf-8").splitlines()[:2]
        assert first_line.startswith(MARK) and second_line.startswith("#   book/"), path


def test_blocks_of_one_file_keep_book_order():
    sources = [source for source, _ in collect_blocks(ROOT / "book")["tinytransformer/attention.py"]]
    assert sources == sorted(sources) and "book/01-attention.md" in sources


def test_edited_block_without_regenerating_fails_with_a_diff(checkout: Path):
    chapter = checkout / "book" / "03-feedforward.md"
    chapter.write_text(chapter.read_text().replace("self.fc_in = nn.Linear(", "self.fc_in  = nn.Linear("))
    problems = tangle(checkout, check=True)
    assert len(problems) == 1
    assert "tinytransformer/feedforward.py: differs from the book" in problems[0]
    assert "-        self.fc_in = nn.Linear(" in problems[0]
    assert "+        self.fc_in  = nn.Linear(" in problems[0]
    assert tangle(checkout) == ["wrote tinytransformer/feedforward.py"]
    assert tangle(checkout, check=True) == []


def test_hand_edited_package_file_fails(checkout: Path):
    module = checkout / "tinytransformer" / "block.py"
    module.write_text(module.read_text() + "\nHAND_EDIT = 1\n")
    problems = tangle(checkout, check=True)
    assert len(problems) == 1 and "block.py: differs from the book" in problems[0]


def test_generated_file_with_no_blocks_left_is_stale(checkout: Path):
    header = MARK + "; edit these chapters, not this file:\n#   book/99-gone.md\n"
    (checkout / "tinytransformer" / "old.py").write_text(header + "X = 1\n")
    assert tangle(checkout, check=True) == ["tinytransformer/old.py: stale, no block in the book names it any more"]
    assert "removed tinytransformer/old.py" in tangle(checkout)[0]
    assert not (checkout / "tinytransformer" / "old.py").exists()


def test_hand_written_package_file_is_reported_and_kept(checkout: Path):
    handwritten = checkout / "tinytransformer" / "extra.py"
    handwritten.write_text("X = 1\n")
    for check in (True, False):
        assert tangle(checkout, check=check)[0].startswith("tinytransformer/extra.py: not in the book")
    assert handwritten.read_text() == "X = 1\n"  # never deleted: it is not ours to remove


def test_new_titled_block_creates_its_file(checkout: Path):
    chapter = checkout / "book" / "99-extra.md"
    chapter.write_text('# Extra\n\n```{.python title="tinytransformer/extra.py"}\nANSWER = 42\n```\n')
    assert tangle(checkout) == ["wrote tinytransformer/extra.py"]
    text = (checkout / "tinytransformer" / "extra.py").read_text()
    assert text == MARK + "; edit these chapters, not this file:\n#   book/99-extra.md\nANSWER = 42\n"


def test_cli_check_exit_codes(checkout: Path, capsys):
    assert main(["tangle", "--check", "--root", str(checkout)]) == 0
    chapter = checkout / "book" / "05-block.md"
    chapter.write_text(chapter.read_text().replace("self.pre_norm = pre_norm", "self.pre_norm = not pre_norm"))
    assert main(["tangle", "--check", "--root", str(checkout)]) == 1
    assert "run `tinytransformer tangle`" in capsys.readouterr().err
    assert main(["tangle", "--root", str(checkout)]) == 0
    assert main(["tangle", "--check", "--root", str(checkout)]) == 0


def test_cli_without_book_is_a_usage_error(tmp_path: Path, capsys):
    assert main(["tangle", "--root", str(tmp_path)]) == 2
    assert "no book/ folder" in capsys.readouterr().err
