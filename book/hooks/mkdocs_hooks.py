"""MkDocs hooks of the book's site (``hooks:`` in ``mkdocs.yml``): math served by the site itself, and
a Jupyter notebook of every chapter.

The math is rendered in the browser by KaTeX, installed from npm at the version pinned in
``package-lock.json``, and copied into the built site, so the site makes no request to another
server: it works offline, and readers are not tracked by a CDN.

- ``on_config`` installs KaTeX (``npm ci``) when ``node_modules/katex`` is missing or is not the
  locked version, so that ``mkdocs build`` and ``mkdocs serve`` work right after ``pip install``.
- ``on_files`` adds KaTeX's script, style sheet and fonts to the site under ``assets/katex/``;
  ``mkdocs.yml`` loads them with ``javascripts/math.js``, which renders every ``.arithmatex``
  element that ``pymdownx.arithmatex`` (generic mode) writes.
- ``on_page_content`` marks inline math in the table of contents (headings such as "Why divide by
  $\\sqrt{d_k}$?") so that ``math.js`` renders it there too instead of showing raw TeX.

Every numbered chapter is also offered as a notebook, for readers who run code their own way:

- ``on_files`` converts each chapter ``NN-name.md`` with jupytext (a dev dependency) and adds the
  result to the site as ``NN-name.ipynb``, next to the chapter's page. Prose becomes Markdown cells and
  every Python block a code cell, in the chapter's order, solutions of exercises included (their
  source folded, as on the page); the figures travel inside the notebook as cell attachments.
- ``on_page_markdown`` puts a download link to it under the chapter's title.

What each code block printed when ``pytest`` last ran it (``book/outputs/``, see the appendix "How the
book becomes a package") is shown under the block: ``on_page_markdown`` adds it as an ``.output``
block, which ``stylesheets/book.css`` marks as output and which has no copy button.

``tests/test_notebooks.py`` converts every chapter and checks the code cells against the chapter's
blocks, and runs one chapter's notebook from top to bottom.
"""

import base64
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

from markdown_it import MarkdownIt
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

from tinytransformer.block_outputs import read_outputs, with_outputs

log = logging.getLogger("mkdocs.hooks.katex")

SITE_FOLDER = "assets/katex"
INLINE_MATH = re.compile(r"\\\(.+?\\\)")

_katex_dist: Path | None = None


def _version(package_json: Path) -> str | None:
    return json.loads(package_json.read_text(encoding="utf-8"))["version"] if package_json.exists() else None


def install_katex(root: Path) -> Path:
    """Make sure ``root/node_modules/katex`` holds the locked KaTeX; return its ``dist`` folder."""
    lock = json.loads((root / "package-lock.json").read_text(encoding="utf-8"))
    locked = lock["packages"]["node_modules/katex"]["version"]
    katex = root / "node_modules" / "katex"
    if _version(katex / "package.json") != locked:
        npm = shutil.which("npm")
        if npm is None:
            raise PluginError(
                f"The site renders math with KaTeX {locked}, installed from npm, but `npm` is not on "
                "PATH. Install Node.js 18 or later with npm (Debian/Ubuntu: `apt-get install nodejs "
                "npm`), then build again; the build runs `npm ci` itself."
            )
        log.info("Installing KaTeX %s from package-lock.json: npm ci", locked)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=root, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 or _version(katex / "package.json") != locked:
            raise PluginError(f"`npm ci` in {root} did not install KaTeX {locked}:\n{result.stderr}")
    return katex / "dist"


def on_config(config):
    global _katex_dist
    _katex_dist = install_katex(Path(config.config_file_path).resolve().parent)
    return config


def on_files(files, config):
    assets = ["katex.min.js", "katex.min.css"]
    assets += [f"fonts/{font.name}" for font in sorted((_katex_dist / "fonts").iterdir())]
    for asset in assets:
        files.append(File.generated(config, f"{SITE_FOLDER}/{asset}", abs_src_path=str(_katex_dist / asset)))
    docs = Path(config.docs_dir)
    for chapter in [file for file in files if CHAPTER.match(file.src_uri)]:
        notebook = chapter_notebook(docs / chapter.src_uri, site_url=config.site_url)
        files.append(File.generated(config, notebook_name(chapter.src_uri), content=json.dumps(notebook, indent=1)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.abs_src_path:
        records = read_outputs(Path(page.file.abs_src_path))
        markdown = with_outputs(markdown, records) if records else markdown
    if not CHAPTER.match(page.file.src_uri):
        return markdown
    title, _, rest = markdown.partition("\n")
    name = notebook_name(page.file.src_uri)
    link = f"*Run it your way:* [download this chapter as a Jupyter notebook]({name}){{ download=\"{name}\" }}"
    return f"{title}\n\n{link}\n{rest}"


def _mark_math(items) -> None:
    for item in items:
        item.title = INLINE_MATH.sub(lambda match: f'<span class="arithmatex">{match.group(0)}</span>', item.title)
        _mark_math(item.children)


def on_page_content(html, page, config, files):
    _mark_math(page.toc)
    return html


# The chapters as notebooks.

CHAPTER = re.compile(r"^\d\d-[\w-]+\.md$")
ADMONITION = re.compile(r'^(!!!|\?\?\?\+?) ([\w-]+)(?: "(.*)")?\s*$')
SOLUTION = re.compile(r'^\?\?\?\+? success "Solution"\s*$')
TITLE = re.compile(r'title="(tinytransformer/[\w/]+\.py)"')
LOCAL_IMAGE = re.compile(r"!\[([^\]]*)\]\(((?:figures|diagrams)/([\w.-]+\.svg))\)")
AUTOREF = re.compile(r"\[([^\]]+)\]\[tinytransformer\.[\w.]+\]")  # mkdocstrings' [`GPT`][tinytransformer.model.GPT]
PAGE_LINK = re.compile(r"\]\((?!\w+:)([\w-]+)\.md(#[\w-]*)?\)")
INTRO = (
    "> Generated from chapter {number} of *Transformer from Scratch*: the prose as Markdown cells and every "
    "Python block of the chapter as a code cell, in order. The code imports the `tinytransformer` package, so "
    "install it first (from the book's repository: `python -m pip install -e .`). Cells headed with a package "
    "file are the package's own code; running them defines the same names again here. The solutions of the "
    "exercises are the folded cells at the end."
)


def notebook_name(chapter: str) -> str:
    """``01-attention.md`` -> ``01-attention.ipynb``."""
    return Path(chapter).with_suffix(".ipynb").name


def chapter_notebook(chapter: Path, site_url: str | None = None) -> dict:
    """Convert a chapter to a Jupyter notebook (nbformat 4) with jupytext.

    Args:
        chapter: The chapter's Markdown file, in the book's folder.
        site_url: Where the site is published; links to pages that have no notebook point there.
            Without it they stay relative.

    Returns:
        The notebook as plain data. Its code cells are the chapter's Python blocks in order, each
        exactly as the book's tests run it: a block that adds methods to a class is run, there as
        here, in a subclass of the class (``class GPT(GPT):`` then the block). Package blocks are
        tagged ``package`` (and carry their file as ``title``), blocks the tests skip ``notest``,
        and solutions ``solution``, with their source folded.

    Raises:
        PluginError: If jupytext is missing, or does not find exactly the chapter's Python blocks.
    """
    try:
        import jupytext
    except ImportError:
        raise PluginError("the site offers every chapter as a notebook, converted by jupytext: "
                          'python -m pip install -e ".[dev]" (or pip install jupytext)') from None
    markdown, blocks = notebook_markdown(chapter, site_url)
    notebook = jupytext.reads(markdown, fmt="md")
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    if [cell.source for cell in code_cells] != [block["source"] for block in blocks]:
        raise PluginError(f"jupytext did not find the {len(blocks)} Python blocks of {chapter.name} as its code cells")
    for cell, block in zip(code_cells, blocks):
        cell.metadata.update(block["metadata"])
    for number, cell in enumerate(notebook.cells):
        cell.id = f"cell-{number}"  # the same notebook from the same chapter, build after build
        images = re.findall(r"\(attachment:([\w.-]+\.svg)\)", cell.source) if cell.cell_type == "markdown" else []
        if images:
            cell["attachments"] = {name: {"image/svg+xml": _base64(_find_image(chapter.parent, name))}
                                   for name in images}
    notebook.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    return json.loads(jupytext.writes(notebook, fmt="ipynb"))


def notebook_markdown(chapter: Path, site_url: str | None = None) -> tuple[str, list[dict]]:
    """The chapter rewritten as Markdown that jupytext and Jupyter read as the page means it.

    Admonitions become block quotes (Jupyter has no admonitions) and solutions plain text followed by
    their code; each Python fence becomes a plain ```` ```python ```` fence, the form jupytext turns
    into a code cell; figures point to cell attachments; links to other chapters go to their notebooks.

    Returns:
        The Markdown, and for each Python block, in order, the ``source`` its code cell must have and
        the cell's ``metadata``.
    """
    lines, in_solution = _unfold_admonitions(chapter.read_text(encoding="utf-8").splitlines())
    heading = next(i for i, line in enumerate(lines) if line.startswith("# "))
    lines[heading + 1 : heading + 1] = ["", INTRO.format(number=int(chapter.name[:2]))]
    in_solution = {i + 2 if i > heading else i for i in in_solution}
    fences = [token for token in MarkdownIt("commonmark").parse("\n".join(lines) + "\n")
              if token.type == "fence" and re.match(r"\{?\.?(python3?|py)\b", token.info.strip())]
    blocks = []
    for token in reversed(fences):  # from the bottom up, so that inserted lines shift nothing still to come
        start, end = token.map
        tags, metadata, code = [], {}, token.content.rstrip("\n")
        title = TITLE.search(token.info)
        if title:
            tags.append("package")
            metadata["title"] = title.group(1)
            if code[:1] in (" ", "\t"):  # methods continuing a class: a subclass of it, as the tests run them
                name = _continued_class(chapter, title.group(1), token.content)
                code = f"class {name}({name}):\n{code}"
        if "notest" in token.info:
            tags.append("notest")
        if start in in_solution:
            tags.append("solution")
            metadata["jupyter"] = {"source_hidden": True}
        if tags:
            metadata["tags"] = tags
        fence = lines[start].strip()[:3]
        lines[start:end] = [f"{fence}python", *code.split("\n"), fence]
        if title:
            lines[start:start] = [f"`{title.group(1)}`, part of the package:", ""]
        blocks.append({"source": code, "metadata": metadata})
    blocks.reverse()
    code_lines = {n for token in MarkdownIt("commonmark").parse("\n".join(lines) + "\n")
                  if token.type == "fence" and token.map for n in range(*token.map)}
    for n, line in enumerate(lines):
        if n not in code_lines:  # prose: what Jupyter would show differently from the site
            line = re.sub(r"^\s*</?figure\b[^>]*>\s*$", "", line)
            line = re.sub(r"<figcaption markdown>(.*?)</figcaption>", r"*\1*", line)
            line = LOCAL_IMAGE.sub(lambda match: f"![{match.group(1)}](attachment:{match.group(3)})", line)
            line = AUTOREF.sub(r"\1", line)
            lines[n] = PAGE_LINK.sub(lambda match: _page_link(match.group(1), match.group(2) or "", site_url), line)
    return "\n".join(lines) + "\n", blocks


def _unfold_admonitions(lines: list[str]) -> tuple[list[str], set[int]]:
    """Solutions become "**Solution**" and their body; other admonitions block quotes under their title.

    Returns:
        The new lines (as many as before), and the numbers of those in the body of a solution.
    """
    out: list[str] = []
    in_solution: set[int] = set()
    mode = None
    for line in lines:
        match = ADMONITION.match(line)
        if match:
            mode = "solution" if SOLUTION.match(line) else "quote"
            title = match.group(3) or match.group(2).capitalize()
            out.append("**Solution**" if mode == "solution" else f"> **{title}**")
        elif mode and (line.startswith("    ") or not line.strip()):
            if mode == "solution":
                in_solution.add(len(out))
            out.append(line[4:] if mode == "solution" else f"> {line[4:]}".rstrip())
        else:
            if mode == "quote":  # blank lines at the end of a quote are outside it
                for i in range(len(out) - 1, 0, -1):
                    if out[i] != ">":
                        break
                    out[i] = ""
            mode = None
            out.append(line)
    return out, in_solution


def _continued_class(chapter: Path, title: str, code: str) -> str:
    """The class that an indented package block continues: the last one its file defines before it."""
    before = ""
    for path in sorted(chapter.parent.glob("*.md")):
        for token in MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8")):
            if token.type == "fence" and TITLE.search(token.info) and TITLE.search(token.info).group(1) == title:
                if path == chapter and token.content == code:
                    return re.findall(r"^class (\w+)", before, flags=re.MULTILINE)[-1]
                before += token.content
    raise PluginError(f"{chapter.name}: found no class for a block of {title} that continues one")


def _page_link(page: str, anchor: str, site_url: str | None) -> str:
    if CHAPTER.match(page + ".md"):
        return f"]({page}.ipynb)"
    if site_url:
        return f"]({site_url.rstrip('/')}/{page}/{anchor})"
    return f"]({page}.md{anchor})"


def _find_image(docs: Path, name: str) -> Path:
    return next(path for folder in ("figures", "diagrams") if (path := docs / folder / name).is_file())


def _base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")
