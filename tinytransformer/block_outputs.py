# Generated from the book by `tinytransformer tangle`; edit these chapters instead:
#   book/appendix-literate.md
"""What the book's code blocks print: recorded by ``pytest``, shown under each block on
the site."""

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

from tinytransformer.files import atomic_write_bytes

SOLUTION = re.compile(r'^\?\?\?\+? success "Solution"[ \t]*$')
"""The first line of a collapsible solution block, at the margin: ``??? success
"Solution"``."""

VARIES = {"varies": "numbers", "unchecked": "all"}
"""Info-string words of blocks whose output changes from run to run: their numbers
(timings), or everything (a profiler's table, ranked by time). Such an output is checked
with its numbers masked,
or not at all."""

TEMPORARY = re.compile(r"tmp[a-z0-9_]{8}\b")
NUMBER = re.compile(r"[-+]?\d[\d,_]*(\.\d+)?([eE][-+]?\d+)?")


def unfold_solutions(text: str) -> str:
    """``text`` with the body of every solution block moved four spaces left, line for
    line.

    The body is what Python-Markdown gives the block: the lines after its first line
    that are blank or indented by at least four spaces.
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


@dataclass(frozen=True)
class PythonBlock:
    """One Python fence of a chapter that ``pytest`` runs."""

    start: int  # 0-based line of the opening fence
    end: int  # 0-based line after the closing fence
    indent: str  # "    " inside a solution, "" at the margin
    code: str
    varies: str  # "": prints the same every run; "numbers" or "all": see ``VARIES``


def python_blocks(text: str) -> list[PythonBlock]:
    """The Python fences of a chapter that ``pytest`` runs, solutions included, in
    order."""
    lines = text.splitlines()
    blocks = []
    for token in MarkdownIt("commonmark").parse(unfold_solutions(text)):
        words = token.info.strip("{} ").split() if token.type == "fence" else []
        if not words or words[0] not in (".python", "python") or "notest" in words:
            continue
        assert token.map is not None
        start, end = token.map
        indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
        varies = next((VARIES[word] for word in words if word in VARIES), "")
        blocks.append(PythonBlock(start, end, indent, token.content, varies))
    return blocks


def block_key(code: str) -> str:
    """The record's key: a hash of the block's code, so that editing the block asks for
    a new one."""
    return hashlib.sha256(code.strip("\n").encode("utf-8")).hexdigest()[:16]


def mask_numbers(text: str) -> str:
    """``text`` with every number replaced by ``#``, and each run of spaces by one
    (a wider number shifts its column): what must not change in a ``varies`` output."""
    return re.sub(" +", " ", NUMBER.sub("#", text))


def mask_temporary(text: str) -> str:
    """``text`` with the name of every temporary folder (``tempfile``'s
    ``tmp`` + 8 characters) replaced by ``tmp…``: they differ on every run."""
    return TEMPORARY.sub("tmp…", text)


def book_fingerprint(book_dir: Path) -> str:
    """A hash of every chapter: the records are current only for the book they were
    made from, since many blocks train on the book itself."""
    digest = hashlib.sha256()
    for chapter in sorted(book_dir.glob("*.md")):
        digest.update(chapter.name.encode("utf-8") + b"\0" + chapter.read_bytes())
    return digest.hexdigest()


def fingerprint_file(book_dir: Path) -> Path:
    """Where the fingerprint of the book the records were made from is kept."""
    return book_dir / "outputs" / "book.sha256"


def outputs_file(chapter: Path) -> Path:
    """Where a chapter's records live: ``book/outputs/01-attention.json`` for
    ``book/01-attention.md``."""
    return chapter.parent / "outputs" / chapter.with_suffix(".json").name


def read_outputs(chapter: Path) -> dict[str, dict[str, str]]:
    """A chapter's records: ``{key: {"printed": text}}``, plus ``"measured"`` where it
    varies."""
    path = outputs_file(chapter)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def write_outputs(chapter: Path, records: dict[str, dict[str, str]]) -> bool:
    """Save a chapter's records (none: no file); return whether anything changed on
    disk."""
    path = outputs_file(chapter)
    if records == read_outputs(chapter) and (records or not path.exists()):
        return False
    if not records:
        path.unlink(missing_ok=True)
        return True
    path.parent.mkdir(exist_ok=True)
    text = json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8"))
    return True


def with_outputs(text: str, records: dict[str, dict[str, str]]) -> str:
    """A chapter's Markdown with each recorded output in a box under its block, for the
    site.

    Args:
        text: The chapter's Markdown.
        records: Its records, as ``read_outputs`` returns them.

    Returns:
        The Markdown, with a fenced ``.output`` block after every block that has a
        record:
        titled "Output", or where it varies with the machine and date it was measured
        on.
    """
    lines = text.splitlines()
    for block in reversed(python_blocks(text)):
        record = records.get(block_key(block.code))
        if record is None:
            continue
        title = "Output"
        if "measured" in record:
            title = f"Output, measured on {record['measured']}: yours will differ"
        printed = record["printed"].rstrip("\n")
        longest_run = max((len(run) for run in re.findall("`+", printed)), default=0)
        fence = "`" * max(3, longest_run + 1)
        box = [f'{fence} {{.text .output .no-copy title="{title}"}}']
        box += printed.split("\n") + [fence]
        lines[block.end : block.end] = [
            block.indent + line if line else line for line in box
        ]
    return "\n".join(lines) + "\n"
