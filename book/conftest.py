"""How pytest runs the book's code blocks (pytest-markdown-docs collects them).

A block titled with a package file, e.g. ``{.python title="tinytransformer/model.py"}``, runs in the
namespace of that file: it starts from the generated module's globals, so it sees the imports and
definitions of the blocks before it, in this chapter or an earlier one. Every other block runs on its
own, as a reader's fresh Python session would run it.

A titled block whose first line is indented adds methods to the class above it in the same file; it
runs as the body of a subclass of that class (``class GPT(GPT):``), so its code executes in the
class's context while the line numbers of errors still point into the chapter.
"""

import dataclasses
import importlib
import os
import re
from functools import cache
from pathlib import Path

import torch
from markdown_it import MarkdownIt

from tinytransformer.tangle import TITLE

# The models in tests and book blocks are tiny: one thread avoids thread start-up and, on a busy
# machine, threads spinning against each other (seen here: 35 s instead of 1 s for 80 steps).
torch.set_num_threads(1)

SHARED_TIKTOKEN_CACHE = Path(__file__).resolve().parents[2] / "shared" / "tiktoken_cache"
if SHARED_TIKTOKEN_CACHE.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED_TIKTOKEN_CACHE))

_file_globals: dict = {}


@cache
def package_titles(chapter: Path) -> dict[int, str]:
    """Map the first code line of each titled fence in a chapter to its module name."""
    titles = {}
    for token in MarkdownIt("commonmark").parse(chapter.read_text(encoding="utf-8")):
        match = TITLE.search(token.info) if token.type == "fence" else None
        if match:
            titles[token.map[0] + 1] = match.group(1).removesuffix(".py").replace("/", ".")
    return titles


def pytest_runtest_setup(item):
    _file_globals.clear()
    if item.path.suffix != ".md":
        return
    module_name = package_titles(item.path).get(getattr(item, "start_line", None))
    if not module_name:
        return
    module = importlib.import_module(module_name)
    _file_globals.update(vars(module))
    definition = item.test_definition
    code = definition.source.lstrip("\n")
    if code[:1] in (" ", "\t"):  # methods continuing a class: run them inside a subclass of it
        module_text = Path(module.__file__).read_text(encoding="utf-8")
        before = module_text[: module_text.index(code.strip("\n"))]
        class_name = re.findall(r"^class (\w+)", before, flags=re.MULTILINE)[-1]
        padding = "\n" * (len(definition.source) - len(code) - 1)  # keeps chapter line numbers
        source = f"{padding}class {class_name}({class_name}):\n{code}"
        item.test_definition = dataclasses.replace(definition, source=source)


def pytest_markdown_docs_globals():
    return dict(_file_globals)
