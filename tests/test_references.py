"""The bibliography and the glossary: every citation links to an entry, every entry is used, nothing dangles.

``mkdocs build --strict`` (with ``validation: anchors: warn``) also fails on a link to a missing entry;
these tests say which, without building the site, and check what the build cannot: that the chapters'
author–year citations link to the bibliography, and that no entry is left unused.
"""

import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PAGES = sorted(path for path in BOOK.glob("*.md") if path.name not in ("bibliography.md", "glossary.md"))
ENTRY = re.compile(r"^\{ #([\w-]+) \}$", flags=re.MULTILINE)  # an entry's anchor, on the last line of its paragraph
# "Vaswani et al., 2017", "Xiong et al. (2020", "Kingma & Ba, 2015": the first author's name and the year.
CITATION = re.compile(r"\b([A-Z][\w-]+)(?: et al\.| & [A-Z][\w-]+),? \(?(\d{4})\b")


def entries(page: str) -> dict[str, str]:
    """Each entry of the bibliography or the glossary, by its anchor: the paragraph it ends."""
    text = (BOOK / page).read_text(encoding="utf-8")
    return {match.group(1): paragraph for paragraph in text.split("\n\n") if (match := ENTRY.search(paragraph))}


def links(page: str) -> dict[str, set[str]]:
    """Every anchor of ``page`` that the book links to, with the pages that link to it."""
    found: dict[str, set[str]] = {}
    for path in sorted(BOOK.glob("*.md")):
        for anchor in re.findall(re.escape(page) + r"#([\w-]+)\)", path.read_text(encoding="utf-8")):
            found.setdefault(anchor, set()).add(path.name)
    return found


def prose(path: Path) -> list[str]:
    """The paragraphs of a page outside its code blocks, each on one line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for token in MarkdownIt("commonmark").parse("\n".join(lines)):
        if token.type in ("fence", "code_block") and token.map:
            lines[token.map[0] : token.map[1]] = [""] * (token.map[1] - token.map[0])
    return [" ".join(paragraph.split()) for paragraph in "\n".join(lines).split("\n\n")]


@pytest.mark.parametrize("page", ["bibliography.md", "glossary.md"])
def test_every_link_has_an_entry_and_every_entry_a_link(page: str):
    defined, used = entries(page), links(page)
    assert len(defined) >= 30
    assert not set(used) - set(defined), f"links to entries {page} lacks: {sorted(set(used) - set(defined))}"
    assert not set(defined) - set(used), f"entries of {page} that no page links to: {sorted(set(defined) - set(used))}"


def test_every_paper_links_to_the_paper():
    for key, paragraph in entries("bibliography.md").items():
        linked = re.search(r"\]\(https://\S+\)", paragraph)
        assert linked or "neither an arXiv" in paragraph, f"{key}: give its arXiv or DOI link (or its publisher's page)"
        assert re.match(r"\*\*[^*]+, \d{4}\.\*\*", paragraph), f"{key}: start with **Author(s), year.**"


def test_entries_are_in_alphabetical_order():
    assert list(entries("bibliography.md")) == sorted(entries("bibliography.md"))
    terms = [re.match(r"\*\*([^*]+?)\.\*\*", paragraph) for paragraph in entries("glossary.md").values()]
    titles = [term.group(1).lower() for term in terms if term]
    assert len(titles) == len(terms)
    assert titles == sorted(titles)


@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.name)
def test_author_year_citations_link_to_the_bibliography(path: Path):
    """Each "Name et al., year" names an entry, and its paragraph links to that entry."""
    defined = entries("bibliography.md")
    for paragraph in prose(path):
        for author, year in CITATION.findall(paragraph):
            key = f"{author.lower()}{year}"
            assert key in defined, f"{path.name}: {author} ({year}) is not in the bibliography: {paragraph[:120]}"
            assert f"bibliography.md#{key})" in paragraph, (
                f"{path.name}: link the citation of {author} ({year}) to bibliography.md#{key}: {paragraph[:120]}"
            )


def test_the_citation_check_catches_an_unlinked_citation(tmp_path: Path):
    page = tmp_path / "99-bad.md"
    page.write_text("# Bad\n\nAs Vaswani et al. (2017) showed, and [Xiong et al., 2020](bibliography.md#xiong2020).\n")
    with pytest.raises(AssertionError, match="link the citation of Vaswani"):
        test_author_year_citations_link_to_the_bibliography(page)
