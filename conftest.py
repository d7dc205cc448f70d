"""Test set-up shared by the unit tests (``tests/``) and the book's code blocks (``book/*.md``).

**What a machine lacks is skipped, with the fix in the reason — except in CI.** A reader's machine
may have no network and no browser. A test that needs one of them is skipped with a reason that says
what to install or set; under ``CI=true`` (as ``.ci/run`` runs) every skip is turned into a failure,
so CI still proves everything. Tests and blocks that need tiktoken's pretrained encodings say so with
the ``pretrained_encodings`` marker (tests) or fixture (``{.python fixture:pretrained_encodings}`` on a
book block).

**How pytest runs the book's code blocks** (pytest-markdown-docs collects them). A block titled with
a package file, e.g. ``{.python title="tinytransformer/model.py"}``, runs in the namespace of that
file: it starts from the generated module's globals, so it sees the imports and definitions of the
blocks before it, in this chapter or an earlier one. Every other block runs on its own, as a reader's
fresh Python session would run it.

A titled block whose first line is indented adds methods to the class above it in the same file; it
runs as the body of a subclass of that class (``class GPT(GPT):``), so its code executes in the
class's context while the line numbers of errors still point into the chapter.

**Solutions of exercises run too.** Each chapter ends with exercises whose solutions sit in collapsible
``??? success "Solution"`` blocks (pymdownx.details), hidden until the reader opens them. Their body is
indented, so to a CommonMark parser their fences are indented text, not code, and pytest-markdown-docs
would skip them. ``pytest_markdown_docs_markdown_it`` below gives it a parser that first moves the
body of every such block back to the margin — line for line, so error line numbers still point into
the chapter — which makes their fences ordinary top-level fences, collected and run like any other
untitled block. Fences inside any other admonition stay hidden, and ``tests/test_book.py`` fails on them.
"""

import dataclasses
import importlib
import os
import re
from functools import cache
from pathlib import Path

import pytest
import torch
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import MarkdownInlinePythonItem

from tinytransformer.tangle import TITLE
from tinytransformer.tokenizer import load_encoding

# The models in tests and book blocks are tiny: one thread avoids thread start-up and, on a busy
# machine, threads spinning against each other (seen here: 35 s instead of 1 s for 80 steps).
torch.set_num_threads(1)

pytest_plugins = ["pytester"]  # tests/test_skips.py runs pytest on small test files

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PRETRAINED_ENCODINGS = ("gpt2", "r50k_base", "p50k_base")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "pretrained_encodings: needs tiktoken's gpt2, r50k_base and p50k_base (cache or network)")


@cache
def missing_encodings() -> str | None:
    """Why tiktoken's pretrained encodings cannot be loaded here, or ``None`` when they can."""
    for name in PRETRAINED_ENCODINGS:
        try:
            load_encoding(name)
        except ValueError:
            cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR")
            where = f"TIKTOKEN_CACHE_DIR={cache_dir} does not hold it" if cache_dir else "TIKTOKEN_CACHE_DIR is unset"
            return (f"tiktoken's {name} encoding is not cached and cannot be downloaded ({where}): connect to the "
                    "internet once (tiktoken then caches it), or set TIKTOKEN_CACHE_DIR to a folder that holds it")
    return None


def skip_unless_encodings() -> None:
    reason = missing_encodings()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def pretrained_encodings() -> tuple[str, ...]:
    """For book blocks (``fixture:pretrained_encodings``): skip unless the pretrained encodings load."""
    skip_unless_encodings()
    return PRETRAINED_ENCODINGS


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Under ``CI=true`` nothing may be skipped: a skip becomes a failure that keeps its reason."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"CI=true: nothing may be skipped, but this test was: {reason}"


_file_globals: dict = {}


@cache
def package_titles(chapter: Path) -> dict[int, str]:
    """Map the first code line of each titled fence in a chapter to its module name."""
    titles = {}
    for token in MarkdownIt("commonmark").parse(chapter.read_text(encoding="utf-8")):
        match = TITLE.search(token.info) if token.type == "fence" else None
        if match and token.map:
            titles[token.map[0] + 1] = match.group(1).removesuffix(".py").replace("/", ".")
    return titles


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("pretrained_encodings"):
        skip_unless_encodings()
    _file_globals.clear()
    if item.path.suffix != ".md" or not isinstance(item, MarkdownInlinePythonItem):
        return
    module_name = package_titles(item.path).get(item.start_line)
    if not module_name:
        return
    module = importlib.import_module(module_name)
    _file_globals.update(vars(module))
    definition = item.test_definition
    code = definition.source.lstrip("\n")
    if code[:1] in (" ", "\t"):  # methods continuing a class: run them inside a subclass of it
        module_text = Path(str(module.__file__)).read_text(encoding="utf-8")
        before = module_text[: module_text.index(code.strip("\n"))]
        class_name = re.findall(r"^class (\w+)", before, flags=re.MULTILINE)[-1]
        padding = "\n" * (len(definition.source) - len(code) - 1)  # keeps chapter line numbers
        source = f"{padding}class {class_name}({class_name}):\n{code}"
        item.test_definition = dataclasses.replace(definition, source=source)


SOLUTION = re.compile(r'^\?\?\?\+? success "Solution"[ \t]*$')
"""The first line of a collapsible solution block, at the margin: ``??? success "Solution"``."""


def unfold_solutions(text: str) -> str:
    """``text`` with the body of every solution block moved four spaces left, keeping every line in place.

    The body is what Python-Markdown gives the block: the lines after its first line that are blank or
    indented by at least four spaces.
    """
    lines = text.splitlines(keepends=True)
    inside = False
    for i, line in enumerate(lines):
        if SOLUTION.match(line):
            inside = True
        elif inside and line.startswith("    "):
            lines[i] = line[4:]
        elif inside and line.strip():
            inside = False
    return "".join(lines)


class SolutionsMarkdownIt(MarkdownIt):
    """CommonMark, reading the fences inside ``??? success "Solution"`` blocks as top-level fences."""

    def parse(self, src: str, env=None):
        """The tokens of ``src`` with its solutions unfolded."""
        return super().parse(unfold_solutions(src), env)


@pytest.hookimpl
def pytest_markdown_docs_markdown_it() -> MarkdownIt:
    """The parser pytest-markdown-docs collects the book's fences with (``firstresult``: this one wins)."""
    return SolutionsMarkdownIt("commonmark")


def pytest_markdown_docs_globals() -> dict:
    return dict(_file_globals)
