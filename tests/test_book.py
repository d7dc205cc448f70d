"""Every Python fence in the book and in the package's docstrings is run by pytest or opted out."""

import importlib
import inspect
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import FenceSyntax, extract_fence_tests, parse_superfences_block_info

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))
PYTHON = ("python", "py", "python3")
# Any line that opens a Python fence, at any indentation (so inside admonitions and lists too).
RAW_PYTHON_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(\{[^}]*\.(python3?|py)\b[^}]*\}|(python3?|py)\b.*)$")


def python_fences(text: str) -> list:
    """Top-level fences that markdown-it (the parser pytest-markdown-docs uses) sees as Python."""
    tokens = MarkdownIt("commonmark").parse(text)
    return [
        t for t in tokens if t.type == "fence" and parse_superfences_block_info(t.info)[:1] in [[p] for p in PYTHON]
    ]


def collected(text: str, path: Path) -> list:
    return list(extract_fence_tests(MarkdownIt("commonmark"), text, 0, path, fence_syntax=FenceSyntax.superfences))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_python_fence_runs_or_is_marked_notest(chapter: Path):
    text = chapter.read_text(encoding="utf-8")
    raw_lines = [n for n, line in enumerate(text.splitlines()) if RAW_PYTHON_FENCE.match(line)]
    fences = python_fences(text)
    openings = {t.map[0] for t in fences}
    hidden = [n + 1 for n in raw_lines if n not in openings and not _closes_a_fence(text, n)]
    assert not hidden, (
        f"{chapter.name}: Python fences at lines {hidden} are not top-level fences "
        "(inside an admonition or indented?); pytest would skip them"
    )
    opted_out = [t for t in fences if "notest" in parse_superfences_block_info(t.info)]
    assert len(collected(text, chapter)) + len(opted_out) == len(fences)


def _closes_a_fence(text: str, line_number: int) -> bool:
    """A line inside a fenced block (e.g. a docstring's example) is code, not a fence of the chapter."""
    return any(t.map[0] < line_number < t.map[1] for t in MarkdownIt("commonmark").parse(text) if t.type == "fence")


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_fence_info_uses_the_brace_form(chapter: Path):
    """A bare word after the language (```python continuation) breaks the rendered page."""
    for token in python_fences(chapter.read_text(encoding="utf-8")):
        info = token.info.strip()
        assert info.startswith("{") or info in PYTHON, (
            f"{chapter.name}:{token.map[0] + 1}: use {{.python …}} not {info!r}"
        )


def test_book_has_code_that_runs():
    assert sum(len(collected(p.read_text(encoding="utf-8"), p)) for p in CHAPTERS) > 40


@pytest.mark.parametrize("path", sorted((ROOT / "tinytransformer").glob("*.py")), ids=lambda p: p.name)
def test_docstring_fences_are_collected(path: Path):
    module = importlib.import_module(f"tinytransformer.{path.stem}")
    for _, obj in [(None, module), *inspect.getmembers(module)]:
        if obj is not module and getattr(obj, "__module__", None) != module.__name__:
            continue  # defined elsewhere (imported names and modules, e.g. torch.distributed)
        for doc in [inspect.getdoc(obj)] + [inspect.getdoc(m) for _, m in inspect.getmembers(obj, inspect.isfunction)]:
            if not doc:
                continue
            raw = sum(1 for line in doc.splitlines() if RAW_PYTHON_FENCE.match(line))
            assert len(python_fences(doc)) == raw, f"{path.name}: a docstring fence is indented; pytest would skip it"


def test_the_check_catches_a_fence_inside_an_admonition(tmp_path: Path):
    chapter = tmp_path / "99-bad.md"
    chapter.write_text("# Bad\n\n!!! note\n    ```python\n    assert False\n    ```\n\n```python\nx = 1\n```\n")
    with pytest.raises(AssertionError, match=r"lines \[4\]"):
        test_every_python_fence_runs_or_is_marked_notest(chapter)


def test_the_check_catches_a_bare_word_after_python(tmp_path: Path):
    chapter = tmp_path / "99-bad.md"
    chapter.write_text("# Bad\n\n```python continuation\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="use"):
        test_fence_info_uses_the_brace_form(chapter)
