"""The package and the site's scripts are generated from the book, and the check notices every kind of drift."""

import shutil
from pathlib import Path

import pytest

from tinytransformer.cli import main
from tinytransformer.tangle import MARK, SCRIPTS, collect_blocks, tangle

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


def test_every_generated_script_says_where_to_edit_and_the_hand_written_ones_are_left_alone():
    generated = [name for name in collect_blocks(ROOT / "book") if name.startswith(SCRIPTS)]
    assert "book/javascripts/tinytransformer.js" in generated and "book/javascripts/explorer.js" in generated
    for name in generated:
        first_line, second_line = (ROOT / name).read_text(encoding="utf-8").splitlines()[:2]
        assert first_line.startswith("// Generated from the book") and second_line.startswith("//   book/"), name
    assert not (ROOT / SCRIPTS / "math.js").read_text(encoding="utf-8").startswith("// Generated")


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
    header = MARK + "; edit these chapters instead:\n#   book/99-gone.md\n"
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
    assert text == MARK + "; edit these chapters instead:\n#   book/99-extra.md\nANSWER = 42\n"


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


def test_edited_script_block_fails_with_a_diff_and_regenerates(checkout: Path):
    chapter = checkout / "book" / "appendix-browser.md"
    chapter.write_text(chapter.read_text().replace("variance / d + eps", "variance / (d - 1) + eps"))
    problems = tangle(checkout, check=True)
    assert len(problems) == 1 and "book/javascripts/tinytransformer.js: differs from the book" in problems[0]
    assert "+    const scale = 1 / Math.sqrt(variance / (d - 1) + eps);" in problems[0]
    assert tangle(checkout) == ["wrote book/javascripts/tinytransformer.js"]
    assert tangle(checkout, check=True) == []


def test_hand_written_scripts_are_kept_and_stale_generated_ones_reported(checkout: Path):
    scripts = checkout / "book" / "javascripts"
    (scripts / "extra.js").write_text("console.log(1);\n")  # the site's own, like math.js: not the tangle's
    (scripts / "old.js").write_text("// Generated from the book by `tinytransformer tangle`; edit these chapters, "
                                    "not this file:\n//   book/99-gone.md\nlet x = 1;\n")
    assert tangle(checkout, check=True) == ["book/javascripts/old.js: stale, no block in the book names it any more"]
    assert tangle(checkout) == ["removed book/javascripts/old.js: no block in the book names it any more"]
    assert (scripts / "extra.js").exists() and not (scripts / "old.js").exists()


def test_new_script_block_creates_its_file_with_a_javascript_header(checkout: Path):
    chapter = checkout / "book" / "99-extra.md"
    chapter.write_text('# Extra\n\n```{.js title="book/javascripts/extra.js"}\nconst a = 1;\n```\n\n'
                       '```{.js title="book/javascripts/extra.js"}\nconst b = 2;\n```\n')
    assert tangle(checkout) == ["wrote book/javascripts/extra.js"]
    text = (checkout / "book" / "javascripts" / "extra.js").read_text()
    assert text == ("// Generated from the book by `tinytransformer tangle`; edit these chapters instead:\n"
                    "//   book/99-extra.md\nconst a = 1;\n\nconst b = 2;\n")
