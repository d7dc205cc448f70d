# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-literate.md
"""Build the package and the site's scripts from the book: collect titled code blocks,
write their files."""

import difflib
import re
from pathlib import Path

from markdown_it import MarkdownIt

PACKAGE = "tinytransformer"
SCRIPTS = "book/javascripts"  # the site's JavaScript
TITLE = re.compile(r'title="(' + PACKAGE + r'/[\w/]+\.py)"')
SCRIPT_TITLE = re.compile(r'title="(' + SCRIPTS + r'/[\w-]+\.js)"')
MARK = "# Generated from the book by `tinytransformer tangle`"
HEADER = MARK + "; edit these chapters instead:\n"


def comment(name: str) -> str:
    """What starts a comment line in the file ``name``: ``//`` in JavaScript, ``#`` in
    Python."""
    return "//" if name.endswith(".js") else "#"


def collect_blocks(book_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Gather the package's code from the book.

    Args:
        book_dir: The folder of Markdown chapters.

    Returns:
        For each generated file (e.g. ``"tinytransformer/model.py"``,
        ``"book/javascripts/explorer.js"``), its blocks in book order as ``(chapter
        path, code)`` pairs.
    """
    parser = MarkdownIt("commonmark")
    blocks: dict[str, list[tuple[str, str]]] = {}
    for chapter in sorted(book_dir.glob("*.md")):
        for token in parser.parse(chapter.read_text(encoding="utf-8")):
            match = (
                (TITLE.search(token.info) or SCRIPT_TITLE.search(token.info))
                if token.type == "fence"
                else None
            )
            if match:
                source = f"{book_dir.name}/{chapter.name}"
                blocks.setdefault(match.group(1), []).append((source, token.content))
    return blocks


def render(blocks: list[tuple[str, str]], prefix: str = "#") -> str:
    """Join one file's blocks under a header that says where to edit them.

    Args:
        blocks: ``(chapter path, code)`` pairs in book order.
        prefix: What starts a comment line in the file (see ``comment``).

    Returns:
        The file's full text.
    """
    sources = "".join(
        f"{prefix}   {source}\n"
        for source in dict.fromkeys(source for source, _ in blocks)
    )
    body = ""
    for _, code in blocks:
        code = code.strip("\n")
        # Python: two blank lines between top-level definitions, one before more methods
        # of a class
        if body:
            body += "\n\n" if code[:1].isspace() or prefix != "#" else "\n\n\n"
        body += code
    return prefix + HEADER.removeprefix("#") + sources + body + "\n"


def tangle(root: Path, check: bool = False) -> list[str]:
    """Regenerate (or, with ``check``, verify) every package file and generated script
    from the book.

    Args:
        root: The repository root, holding ``book/`` (and ``book/javascripts/``) and
            ``tinytransformer/``.
        check: Write nothing; report each difference between book and package instead.

    Returns:
        One message per problem found (``check``) or per file written or removed
        (otherwise).
    """
    expected = {
        name: render(blocks, comment(name))
        for name, blocks in collect_blocks(root / "book").items()
    }
    messages = []
    for path in sorted((root / PACKAGE).rglob("*.py")) + sorted(
        (root / SCRIPTS).glob("*.js")
    ):
        name = path.relative_to(root).as_posix()
        text = path.read_text(encoding="utf-8")
        ours = text.startswith(comment(name) + MARK.removeprefix("#"))
        # a hand-written script of the site
        if name in expected or (path.suffix == ".js" and not ours):
            continue
        if not ours:
            messages.append(
                f"{name}: not in the book; write it as titled blocks in a chapter"
            )
        elif check:
            messages.append(f"{name}: stale, no block in the book names it any more")
        else:
            path.unlink()
            messages.append(f"removed {name}: no block in the book names it any more")
    for name, text in expected.items():
        path = root / name
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current == text:
            continue
        if check:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{name} (package)",
                f"{name} (book)",
            )
            messages.append(f"{name}: differs from the book\n" + "".join(diff))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            messages.append(f"wrote {name}")
    return messages
