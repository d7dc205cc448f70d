"""Every chapter as a Jupyter notebook, as the site's build hook makes it (``book/hooks/mkdocs_hooks.py``).

The code cells of a chapter's notebook must be the chapter's Python blocks, in order — package blocks,
demos, blocks the tests skip and the solutions of the exercises — each as the book's tests run it. The
expected blocks are found here independently of the hook: with the parser pytest-markdown-docs collects
the book with (the root conftest's, which reads solutions as top-level fences), so a block that the
tests run but the notebook lost, or the other way round, fails. One short chapter's notebook is run
from top to bottom in a Jupyter kernel.
"""

import base64
import importlib
import importlib.util
import json
import os
import re
from pathlib import Path
from types import ModuleType

import pytest
from markdown_it import MarkdownIt
from pytest_markdown_docs.plugin import parse_superfences_block_info

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
CHAPTERS = sorted(path for path in BOOK.glob("*.md") if re.match(r"\d\d-", path.name))
RUN = BOOK / "03-feedforward.md"  # short, no downloads, a package block and exercises: a few seconds
TITLE = re.compile(r'title="(tinytransformer/[\w/]+\.py)"')
DEV = 'python -m pip install -e ".[dev]"'


@pytest.fixture(scope="module")
def hooks() -> ModuleType:
    for name in ("mkdocs", "jupytext", "nbformat"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed; the notebooks are made at site build time: {DEV}")
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", BOOK / "hooks" / "mkdocs_hooks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def markdown_it(pytestconfig: pytest.Config) -> MarkdownIt:
    return pytestconfig.hook.pytest_markdown_docs_markdown_it()


def python_blocks(chapter: Path, markdown_it: MarkdownIt) -> list:
    """The chapter's Python fences as pytest-markdown-docs sees them, notest ones included."""
    return [token for token in markdown_it.parse(chapter.read_text(encoding="utf-8"))
            if token.type == "fence" and parse_superfences_block_info(token.info)[:1] in (["python"], ["py"])]


def as_the_tests_run_it(token) -> str:
    """The block's code; methods continuing a class inside a subclass of it, as the root conftest runs them."""
    code = token.content.rstrip("\n")
    title = TITLE.search(token.info)
    if title and code[:1] in (" ", "\t"):
        module = importlib.import_module(title.group(1).removesuffix(".py").replace("/", "."))
        module_text = Path(str(module.__file__)).read_text(encoding="utf-8")
        class_name = re.findall(r"^class (\w+)", module_text[: module_text.index(code.strip("\n"))], re.MULTILINE)[-1]
        return f"class {class_name}({class_name}):\n{code}"
    return code


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.name)
def test_code_cells_are_the_chapters_python_blocks(hooks, markdown_it, chapter: Path):
    import nbformat

    notebook = hooks.chapter_notebook(chapter)
    nbformat.validate(nbformat.from_dict(notebook))
    cells = notebook["cells"]
    code = [cell for cell in cells if cell["cell_type"] == "code"]
    blocks = python_blocks(chapter, markdown_it)
    assert [source(cell) for cell in code] == [as_the_tests_run_it(token) for token in blocks]

    top_level = {token.map[0] for token in python_blocks(chapter, MarkdownIt("commonmark"))}
    for cell, token in zip(code, blocks):
        tags = cell["metadata"].get("tags", [])
        assert ("package" in tags) == bool(TITLE.search(token.info))
        assert ("notest" in tags) == ("notest" in parse_superfences_block_info(token.info))
        in_solution = token.map[0] not in top_level  # only a solution's fences need the conftest's parser
        assert ("solution" in tags) == in_solution
        assert cell["metadata"].get("jupyter", {}).get("source_hidden", False) == in_solution

    prose = "\n".join(source(cell) for cell in cells if cell["cell_type"] == "markdown")
    text = chapter.read_text(encoding="utf-8")
    assert source(cells[0]).startswith(text.splitlines()[0])  # the chapter's title comes first
    for heading in re.findall(r"^##+ .+$", text, flags=re.MULTILINE):
        assert heading in prose
    assert not re.search(r"^(!!!|\?\?\?)|\{\.python|\]\[tinytransformer\.", prose, flags=re.MULTILINE)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"


def test_figures_travel_inside_the_notebook(hooks):
    notebook = hooks.chapter_notebook(BOOK / "01-attention.md")
    attached = {name: bundle for cell in notebook["cells"] for name, bundle in cell.get("attachments", {}).items()}
    assert list(attached) == ["causal-mask.svg"]
    svg = base64.b64decode("".join(attached["causal-mask.svg"]["image/svg+xml"]))
    assert svg == (BOOK / "figures" / "causal-mask.svg").read_bytes()
    assert any("(attachment:causal-mask.svg)" in source(cell) for cell in notebook["cells"])


def test_links_to_chapters_go_to_their_notebooks_and_others_to_the_site(hooks):
    markdown, _ = hooks.notebook_markdown(BOOK / "02-embeddings.md", site_url="https://example.org/book/")
    assert "](appendix-figures.md)" not in markdown and "](https://example.org/book/appendix-figures/)" in markdown
    markdown, _ = hooks.notebook_markdown(BOOK / "06-model.md")
    assert "](10-generation.ipynb)" in markdown and "](10-generation.md" not in markdown


def test_admonitions_become_quotes_and_solutions_text(hooks, tmp_path: Path):
    chapter = tmp_path / "99-test.md"
    chapter.write_text('# 99. Test\n\n!!! warning "Common pitfalls"\n    - one\n\n    - two\n\nAfter.\n\n'
                       '**1. Add.** Sum.\n\n??? success "Solution"\n\n    Two:\n\n    ```python\n    x = 1 + 1\n'
                       '    ```\n', encoding="utf-8")
    markdown, blocks = hooks.notebook_markdown(chapter)
    assert "> **Common pitfalls**\n> - one\n>\n> - two\n\nAfter." in markdown
    assert "**Solution**\n\nTwo:\n\n```python\nx = 1 + 1\n```\n" in markdown
    assert blocks == [{"source": "x = 1 + 1", "metadata": {"tags": ["solution"], "jupyter": {"source_hidden": True}}}]


def test_a_chapter_notebook_runs_from_top_to_bottom(hooks, tmp_path: Path):
    for name in ("nbclient", "ipykernel"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"no Jupyter kernel to run a notebook in: {name} is not installed ({DEV})")
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    from nbclient import NotebookClient

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no Jupyter kernel named python3: python -m pip install ipykernel")
    notebook = nbformat.reads(json.dumps(hooks.chapter_notebook(RUN)), as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tmp_path}})
    # One thread, as in the tests (the root conftest): the models are tiny, and the machine may be busy.
    client.execute(env={**os.environ, "OMP_NUM_THREADS": "1"})
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    errors = [output for cell in code for output in cell.outputs if output.output_type == "error"]
    assert not errors
    printed = "".join(output.get("text", "") for cell in code for output in cell.outputs)
    assert "parameters = 2·16·64 weights + 64 + 16 biases" in printed  # the chapter's own check ran
