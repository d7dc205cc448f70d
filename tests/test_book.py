"""Every Python fence in the book and in the package's docstrings is run by pytest or opted out.

Fences inside a chapter's collapsible solutions (``??? success "Solution"``) count as top-level: the root
``conftest.py`` gives pytest-markdown-docs a parser that collects them. The checks below use that same
parser, taken from the same hook, so they see exactly what pytest collects; a fence in any other
admonition, or in a solution the parser does not unfold, is reported as hidden.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import (
    FenceSyntax,
    extract_fence_tests,
    parse_superfences_block_info,
)

from tinytransformer.block_outputs import unfold_solutions

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))
NUMBERED_CHAPTERS = [path for path in CHAPTERS if re.match(r"\d\d-", path.name)]
PYTHON = ("python", "py", "python3")
# Any line that opens a Python fence, at any indentation (so inside admonitions and lists too).
RAW_PYTHON_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*(\{[^}]*\.(python3?|py)\b[^}]*\}|(python3?|py)\b.*)$")
SOLUTION = re.compile(r'^\?\?\?\+? success "Solution"\s*$')
EXERCISE = re.compile(r"^\*\*(\d+)\. [^*]+\*\*")  # an exercise opens with its number in bold: **1. Title.**


@pytest.fixture(scope="module")
def markdown_it(pytestconfig: pytest.Config) -> MarkdownIt:
    """The parser pytest-markdown-docs collects the book's fences with: the root conftest's hook."""
    return pytestconfig.hook.pytest_markdown_docs_markdown_it()


def python_fences(text: str, markdown_it: MarkdownIt) -> list:
    """Top-level fences that ``markdown_it`` (the parser pytest-markdown-docs uses) sees as Python."""
    tokens = markdown_it.parse(text)
    return [
        t for t in tokens if t.type == "fence" and parse_superfences_block_info(t.info)[:1] in [[p] for p in PYTHON]
    ]


def collected(text: str, path: Path, markdown_it: MarkdownIt) -> list:
    return list(extract_fence_tests(markdown_it, text, 0, path, fence_syntax=FenceSyntax.superfences))


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_python_fence_runs_or_is_marked_notest(chapter: Path, markdown_it: MarkdownIt):
    text = chapter.read_text(encoding="utf-8")
    raw_lines = [n for n, line in enumerate(text.splitlines()) if RAW_PYTHON_FENCE.match(line)]
    fences = python_fences(text, markdown_it)
    openings = {t.map[0] for t in fences}
    hidden = [n + 1 for n in raw_lines if n not in openings and not _closes_a_fence(text, n, markdown_it)]
    assert not hidden, (
        f"{chapter.name}: Python fences at lines {hidden} are not top-level fences "
        "(inside an admonition other than ??? success \"Solution\", or indented?); pytest would skip them"
    )
    opted_out = [t for t in fences if "notest" in parse_superfences_block_info(t.info)]
    assert len(collected(text, chapter, markdown_it)) + len(opted_out) == len(fences)


def _closes_a_fence(text: str, line_number: int, markdown_it: MarkdownIt) -> bool:
    """A line inside a fenced block (e.g. a docstring's example) is code, not a fence of the chapter."""
    return any(t.map[0] < line_number < t.map[1] for t in markdown_it.parse(text) if t.type == "fence")


def solutions(text: str) -> list[tuple[int, int]]:
    """``(first, end)`` line numbers (from 0, end excluded) of each ``??? success "Solution"`` block's body."""
    lines = text.splitlines()
    blocks = []
    for start, line in enumerate(lines):
        if SOLUTION.match(line):
            end = start + 1
            while end < len(lines) and (not lines[end].strip() or lines[end].startswith("    ")):
                end += 1
            blocks.append((start + 1, end))
    return blocks


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_every_solution_runs(chapter: Path, markdown_it: MarkdownIt):
    """Each solution holds at least one Python block that pytest collects, none opted out, none titled."""
    text = chapter.read_text(encoding="utf-8")
    runs = {test.start_line - 1 for test in collected(text, chapter, markdown_it)}  # the lines of the fences
    for first, end in solutions(text):
        fences = [t for t in python_fences(text, markdown_it) if first <= t.map[0] < end]
        assert fences, f"{chapter.name}:{first}: a solution without a Python block that pytest runs"
        for fence in fences:
            info = parse_superfences_block_info(fence.info)
            assert fence.map[0] in runs and "notest" not in info, (
                f"{chapter.name}:{fence.map[0] + 1}: a solution's block must run under pytest"
            )
            assert "title=" not in fence.info, (
                f"{chapter.name}:{fence.map[0] + 1}: solutions never change the package (no titled blocks)"
            )


@pytest.mark.parametrize("chapter", NUMBERED_CHAPTERS, ids=lambda p: p.name)
def test_chapter_ends_with_three_to_six_exercises_each_with_a_solution(chapter: Path):
    text = chapter.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[-1] == "Exercises", f"{chapter.name}: the last section must be ## Exercises, not {headings[-1]}"
    section = text[text.index("\n## Exercises\n"):]
    numbers = [int(match.group(1)) for line in section.splitlines() if (match := EXERCISE.match(line))]
    assert 3 <= len(numbers) <= 6 and numbers == list(range(1, len(numbers) + 1)), (
        f"{chapter.name}: exercises numbered {numbers}; want 3 to 6, numbered from 1"
    )
    answered = [line for line in section.splitlines() if SOLUTION.match(line)]
    assert len(answered) == len(numbers), f"{chapter.name}: {len(numbers)} exercises, {len(answered)} solutions"
    assert len(solutions(text)) == len(answered), f"{chapter.name}: a solution outside the Exercises section"


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_fence_info_uses_the_brace_form(chapter: Path, markdown_it: MarkdownIt):
    """A bare word after the language (```python continuation) breaks the rendered page."""
    for token in python_fences(chapter.read_text(encoding="utf-8"), markdown_it):
        info = token.info.strip()
        assert info.startswith("{") or info in PYTHON, (
            f"{chapter.name}:{token.map[0] + 1}: use {{.python …}} not {info!r}"
        )


def test_book_has_code_that_runs(markdown_it: MarkdownIt):
    assert sum(len(collected(p.read_text(encoding="utf-8"), p, markdown_it)) for p in CHAPTERS) > 40


@pytest.mark.parametrize("path", sorted((ROOT / "tinytransformer").glob("*.py")), ids=lambda p: p.name)
def test_docstring_fences_are_collected(path: Path, markdown_it: MarkdownIt):
    module = importlib.import_module(f"tinytransformer.{path.stem}")
    for _, obj in [(None, module), *inspect.getmembers(module)]:
        if obj is not module and getattr(obj, "__module__", None) != module.__name__:
            continue  # defined elsewhere (imported names and modules, e.g. torch.distributed)
        for doc in [inspect.getdoc(obj)] + [inspect.getdoc(m) for _, m in inspect.getmembers(obj, inspect.isfunction)]:
            if not doc:
                continue
            raw = sum(1 for line in doc.splitlines() if RAW_PYTHON_FENCE.match(line))
            assert len(python_fences(doc, markdown_it)) == raw, (
                f"{path.name}: a docstring fence is indented; pytest would skip it"
            )


def test_the_check_catches_a_fence_inside_an_admonition(tmp_path: Path, markdown_it: MarkdownIt):
    chapter = tmp_path / "99-bad.md"
    chapter.write_text("# Bad\n\n!!! note\n    ```python\n    assert False\n    ```\n\n```python\nx = 1\n```\n")
    with pytest.raises(AssertionError, match=r"lines \[4\]"):
        test_every_python_fence_runs_or_is_marked_notest(chapter, markdown_it)


def test_the_check_catches_a_bare_word_after_python(tmp_path: Path, markdown_it: MarkdownIt):
    chapter = tmp_path / "99-bad.md"
    chapter.write_text("# Bad\n\n```python continuation\nx = 1\n```\n")
    with pytest.raises(AssertionError, match="use"):
        test_fence_info_uses_the_brace_form(chapter, markdown_it)


A_SOLUTION = """# Exercises

**1. Add.** What is 1 + 1?

??? success "Solution"

    Two:

    ```python
    assert 1 + 1 == 2
    ```
"""


def test_the_check_accepts_a_solution_because_pytest_collects_it(tmp_path: Path, markdown_it: MarkdownIt):
    chapter = tmp_path / "99-good.md"
    chapter.write_text(A_SOLUTION)
    test_every_python_fence_runs_or_is_marked_notest(chapter, markdown_it)
    test_every_solution_runs(chapter, markdown_it)
    assert [test.start_line for test in collected(A_SOLUTION, chapter, markdown_it)] == [9]


def test_the_check_catches_a_solution_that_is_not_collected(tmp_path: Path):
    """With the collector's plain CommonMark parser (as without the conftest's hook), a solution's fence is hidden."""
    chapter = tmp_path / "99-bad.md"
    chapter.write_text(A_SOLUTION)
    with pytest.raises(AssertionError, match=r"lines \[9\]"):
        test_every_python_fence_runs_or_is_marked_notest(chapter, MarkdownIt("commonmark"))
    with pytest.raises(AssertionError, match="without a Python block that pytest runs"):
        test_every_solution_runs(chapter, MarkdownIt("commonmark"))


@pytest.mark.parametrize("opening", ['??? note "Solution"', '??? success "Answer"', '!!! success "Solution"'])
def test_the_check_catches_a_fence_in_other_collapsible_blocks(tmp_path: Path, markdown_it: MarkdownIt, opening: str):
    """Only a ``??? success "Solution"`` block is unfolded; a fence in any other admonition stays hidden, and fails."""
    chapter = tmp_path / "99-bad.md"
    chapter.write_text(A_SOLUTION.replace('??? success "Solution"', opening))
    with pytest.raises(AssertionError, match=r"lines \[9\] are not top-level fences"):
        test_every_python_fence_runs_or_is_marked_notest(chapter, markdown_it)


def test_the_check_catches_a_solution_nested_in_another_admonition(tmp_path: Path, markdown_it: MarkdownIt):
    """A solution block must start at the margin: nested in a note, its body is not unfolded, and fails."""
    chapter = tmp_path / "99-bad.md"
    nested = '!!! note\n\n    ??? success "Solution"\n\n        ```python\n        x = 1\n        ```\n'
    chapter.write_text("# Bad\n\n" + nested)
    with pytest.raises(AssertionError, match=r"lines \[7\] are not top-level fences"):
        test_every_python_fence_runs_or_is_marked_notest(chapter, markdown_it)


def test_the_check_catches_a_notest_or_titled_solution(tmp_path: Path, markdown_it: MarkdownIt):
    chapter = tmp_path / "99-bad.md"
    for info, message in (("{.python notest}", "must run under pytest"),
                          ('{.python title="tinytransformer/x.py"}', "never change the package")):
        chapter.write_text(A_SOLUTION.replace("```python", "```" + info))
        with pytest.raises(AssertionError, match=message):
            test_every_solution_runs(chapter, markdown_it)


def test_the_exercise_check_catches_a_missing_solution(tmp_path: Path):
    chapter = tmp_path / "99-bad.md"
    one_solution = A_SOLUTION[A_SOLUTION.index("??? success"):]
    chapter.write_text("# Bad\n\n## Exercises\n\n" + "".join(f"**{n}. Do.** It.\n\n" for n in (1, 2, 3)) + one_solution)
    with pytest.raises(AssertionError, match="3 exercises, 1 solutions"):
        test_chapter_ends_with_three_to_six_exercises_each_with_a_solution(chapter)


def test_a_failing_solution_fails_pytest(pytester: pytest.Pytester):
    """End to end: pytest, with the book's conftest, runs a solution's block, and its failed assert is a failure."""
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    pytester.makefile(".md", chapter=A_SOLUTION.replace("1 + 1 == 2", "1 + 1 == 3"))
    result = pytester.runpytest_inprocess("--markdown-docs", "--markdown-docs-syntax=superfences", "-p",
                                          "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*assert 1 + 1 == 3*", "FAILED chapter.md::*[[]line:9[]]*"])


WIDTH = 88  # the book's line length, as ruff's line-length in pyproject.toml


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.name)
def test_code_fits_the_column(chapter: Path):
    """Every line of every code block is at most 88 characters: no block scrolls sideways on the page."""
    tokens = MarkdownIt("commonmark").parse(unfold_solutions(chapter.read_text(encoding="utf-8")))
    wide = [
        f"line {token.map[0] + 2 + n}: {len(line)} characters"
        for token in tokens
        if token.type == "fence" and token.map
        for n, line in enumerate(token.content.splitlines())
        if len(line) > WIDTH
    ]
    assert not wide, f"{chapter.name}: code wider than {WIDTH} characters at " + ", ".join(wide)
