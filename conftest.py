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

**What a block prints is shown under it on the site, and checked here.** Each block's standard output
is kept and compared with its record in ``book/outputs/<chapter>.json``: a block that prints without a
record (its code changed) or prints nothing under a shown output fails; any other difference is a
warning (``tinytransformer/block_outputs.py``, appendix "How the book becomes a package").
``pytest book --refresh-outputs`` records them all again, and the fingerprint of the book they came from.
"""

import contextlib
import dataclasses
import datetime
import difflib
import importlib
import io
import os
import platform
import re
import typing
import warnings
from functools import cache
from pathlib import Path

import pytest
import torch
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import MarkdownInlinePythonItem

from tinytransformer.block_outputs import (
    PythonBlock,
    block_key,
    book_fingerprint,
    fingerprint_file,
    mask_numbers,
    mask_temporary,
    python_blocks,
    read_outputs,
    unfold_solutions,
    write_outputs,
)
from tinytransformer.files import atomic_write_bytes
from tinytransformer.tangle import TITLE
from tinytransformer.tokenizer import load_encoding

# The models in tests and book blocks are tiny: one thread avoids thread start-up and, on a busy
# machine, threads spinning against each other (seen here: 35 s instead of 1 s for 80 steps).
torch.set_num_threads(1)

pytest_plugins = ["pytester"]  # tests/test_skips.py runs pytest on small test files

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PRETRAINED_ENCODINGS = ("gpt2", "r50k_base", "p50k_base")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--refresh-outputs", action="store_true",
                     help="record what each book block prints into book/outputs/ (shown under it on the site)")


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
    runner = getattr(item, "runner", None)
    if report.when == "call" and report.passed and isinstance(runner, PrintingRunner):
        check_output(typing.cast(MarkdownInlinePythonItem, item), report, runner)


# What the book's blocks print.

REFRESH = "pytest book --refresh-outputs"


@cache
def chapter_blocks(chapter: Path) -> dict[int, PythonBlock]:
    """A chapter's run blocks by the line pytest-markdown-docs gives their item (1-based, the fence)."""
    return {block.start + 1: block for block in python_blocks(chapter.read_text(encoding="utf-8"))}


def book_block(item: pytest.Item) -> PythonBlock | None:
    """The chapter block that ``item`` runs, or ``None`` for other tests and docstring examples."""
    if item.path.suffix != ".md" or not isinstance(item, MarkdownInlinePythonItem):
        return None
    return chapter_blocks(item.path).get(item.start_line)


class PrintingRunner:
    """Runs a book block with pytest-markdown-docs' runner and keeps what it prints.

    pytest-markdown-docs switches pytest's capture off while a block runs, so its standard output is
    collected here instead (and still shown on the terminal when the block fails).
    """

    def __init__(self, runner, block: PythonBlock) -> None:
        self.runner, self.block, self.printed = runner, block, ""

    def runtest(self, *args, **kwargs) -> None:
        buffer = io.StringIO()
        try:
            with contextlib.redirect_stdout(buffer):
                self.runner.runtest(*args, **kwargs)
        except BaseException:
            print(buffer.getvalue(), end="")
            raise
        finally:
            self.printed = buffer.getvalue()

    def repr_failure(self, *args, **kwargs):
        return self.runner.repr_failure(*args, **kwargs)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):
    block = book_block(item)
    if block is not None and isinstance(item, MarkdownInlinePythonItem):
        item.runner = PrintingRunner(item.runner, block)
    yield


def output_matches(shown: str, printed: str, varies: str) -> bool:
    """Whether the output ``shown`` under a block still says what it ``printed`` now.

    Exactly the same but for names of temporary folders, or for a block whose output varies
    (see ``VARIES``) the same with its numbers masked, or for an ``unchecked`` one anything.
    """
    shown, printed = mask_temporary(shown), mask_temporary(printed)
    if varies == "all":
        return True
    if varies == "numbers":
        return mask_numbers(shown) == mask_numbers(printed)
    return shown == printed


def output_problem(shown: str, printed: str, varies: str) -> str | None:
    """Why the output ``shown`` under a block is stale, given what it ``printed`` now; ``None`` if it is not.

    Stale: output shown for a block that prints nothing, or none for a block that prints (whose code
    changed: the record's key is a hash of it). Any other difference is a warning: another CPU or
    version of PyTorch may round a trained model's numbers otherwise, or sample another sentence.
    """
    if output_matches(shown, printed, varies):
        return None
    if bool(shown) == bool(printed):
        diff = "".join(difflib.unified_diff(shown.splitlines(keepends=True), printed.splitlines(keepends=True),
                                            "shown on the page", "printed now"))
        warnings.warn(f"this block printed something else than its output on the page (another machine, or a "
                      f"changed book?); `{REFRESH}` records it again:\n{diff}", stacklevel=1)
        return None
    if printed:
        return f"the page shows no output under this block, but it prints; record it with `{REFRESH}`"
    return f"the page shows output under this block, but it prints nothing; `{REFRESH}` removes it"


@cache
def recorded_outputs(chapter: Path) -> dict[str, dict[str, str]]:
    """A chapter's records, read once per test session (they are only written at its end)."""
    return read_outputs(chapter)


def check_output(item: MarkdownInlinePythonItem, report: pytest.TestReport, runner: PrintingRunner) -> None:
    """Compare what a block printed with its record (or keep it to record, under ``--refresh-outputs``)."""
    key, varies = block_key(runner.block.code), runner.block.varies
    report.user_properties.append(("block_output", (str(item.path), key, runner.printed, varies)))
    if item.config.getoption("refresh_outputs"):
        return
    record = recorded_outputs(item.path).get(key)
    problem = output_problem(record["printed"] if record else "", runner.printed, varies)
    if problem:
        report.outcome = "failed"
        report.longrepr = f"{item.path.name}, block at line {item.start_line}: {problem}"


_printed: dict[Path, dict[str, tuple[str, str]]] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for name, value in report.user_properties:
        if name == "block_output":
            chapter, key, printed, varies = typing.cast(tuple[str, str, str, str], value)
            _printed.setdefault(Path(chapter), {})[key] = (printed, varies)


@cache
def measured_on() -> str:
    """This machine and today, for the label of a ``varies`` output: what its numbers depend on."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        models = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.MULTILINE)
        cpu = models[0].strip() if models else cpu
    return f"{cpu}, {os.cpu_count()} cores, PyTorch {torch.__version__.split('+')[0]}, {datetime.date.today()}"


def refreshed_records(chapter: Path) -> dict[str, dict[str, str]]:
    """A chapter's records after this run: what its blocks printed, and the old record of blocks not run."""
    old, printed_now, records = read_outputs(chapter), _printed.get(chapter, {}), {}
    for block in python_blocks(chapter.read_text(encoding="utf-8")):
        key = block_key(block.code)
        if key in records:
            continue
        if key not in printed_now:
            if key in old:
                records[key] = old[key]
            continue
        printed, varies = printed_now[key]
        if key in old and output_matches(old[key]["printed"], printed, varies):
            records[key] = old[key]  # unchanged: keep it, and a timing's first measurement
        elif printed:
            records[key] = {"printed": printed} | ({"measured": measured_on()} if varies else {})
    return records


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not session.config.getoption("refresh_outputs") or hasattr(session.config, "workerinput"):
        return
    changed = [chapter for chapter in sorted(_printed) if write_outputs(chapter, refreshed_records(chapter))]
    session.config.stash[REFRESHED] = changed
    if not _printed or session.testsfailed:
        return
    book = next(iter(_printed)).parent
    with_blocks = {chapter for chapter in book.glob("*.md") if python_blocks(chapter.read_text(encoding="utf-8"))}
    if with_blocks <= set(_printed):  # every chapter's blocks ran: the records are those of this book
        atomic_write_bytes(fingerprint_file(book), (book_fingerprint(book) + "\n").encode("ascii"))


REFRESHED = pytest.StashKey[list[Path]]()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    if config.getoption("refresh_outputs"):
        changed = config.stash.get(REFRESHED, [])
        names = ", ".join(path.name for path in changed) or "none changed"
        terminalreporter.write_line(f"recorded the outputs of the book's blocks: {names}")


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
    # Every block starts from the same random state, whatever ran before it in this process (pytest-xdist
    # spreads the blocks over processes differently on every run): a block's failure, and its output, repeat.
    torch.manual_seed(0)
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
