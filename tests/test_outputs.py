"""What the book's blocks print is recorded, checked for staleness, and shown under each block on the site."""

import json
import re
from pathlib import Path

import pytest

from tinytransformer.block_outputs import (
    block_key,
    book_fingerprint,
    fingerprint_file,
    mask_numbers,
    outputs_file,
    python_blocks,
    read_outputs,
    with_outputs,
)

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))

# The blocks whose output is recorded but never compared (``unchecked``): each prints something that
# changes on every run beyond its numbers. Adding one here is a decision, not an accident.
UNCHECKED = {
    ("07-tokens.md", "load_token_data(None, cache_dir=cache)"),  # timings, and a sample of the book's text
    ("12-fast.md", "profiler.key_averages().table("),  # the profiler's table, ranked by time
}

A_CHAPTER = '''# A chapter

```{.python}
print("hello")
```

Text.

```{.python}
x = 1
```

??? success "Solution"

    ```{.python}
    print("solved")
    ```
'''


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.name)
def test_every_record_belongs_to_a_block_that_runs(chapter: Path):
    keys = {block_key(block.code) for block in python_blocks(chapter.read_text(encoding="utf-8"))}
    stale = set(read_outputs(chapter)) - keys
    assert not stale, f"{outputs_file(chapter).name}: records of no block (refresh: pytest book --refresh-outputs)"


def test_unchecked_blocks_are_the_listed_ones():
    unchecked = {
        (chapter.name, block.code)
        for chapter in CHAPTERS
        for block in python_blocks(chapter.read_text(encoding="utf-8"))
        if block.varies == "all"
    }
    found = {(name, marker) for name, code in unchecked for listed_name, marker in UNCHECKED
             if name == listed_name and marker in code}
    assert found == UNCHECKED and len(unchecked) == len(UNCHECKED), sorted(name for name, _ in unchecked)


def test_the_book_shows_outputs_and_labels_the_varying_ones():
    records = [record for chapter in CHAPTERS for record in read_outputs(chapter).values()]
    assert len(records) > 100
    measured = [record for record in records if "measured" in record]
    assert measured and all(re.search(r"\d{4}-\d\d-\d\d$", record["measured"]) for record in measured)


def test_python_blocks_finds_solutions_and_skips_notest():
    text = A_CHAPTER + '\n```{.python notest}\nprint("never run")\n```\n\n```{.python varies}\nprint(1.5)\n```\n'
    blocks = python_blocks(text)
    assert [block.code for block in blocks] == ['print("hello")\n', "x = 1\n", 'print("solved")\n', "print(1.5)\n"]
    assert [block.indent for block in blocks] == ["", "", "    ", ""]
    assert [block.varies for block in blocks] == ["", "", "", "numbers"]


def test_with_outputs_puts_each_record_under_its_block():
    hello, solved = (block_key(code) for code in ('print("hello")\n', 'print("solved")\n'))
    records = {hello: {"printed": "hello\n"}, solved: {"printed": "solved\n", "measured": "a CPU, 2026-11-29"}}
    page = with_outputs(A_CHAPTER, records)
    assert '```\n``` {.text .output .no-copy title="Output"}\nhello\n```\n\nText.' in page
    title = "Output, measured on a CPU, 2026-11-29: yours will differ"
    assert f'    ```\n    ``` {{.text .output .no-copy title="{title}"}}\n    solved\n    ```\n' in page
    assert page.count(".output") == 2  # the block that prints nothing has no box


def test_an_output_with_backticks_gets_a_longer_fence():
    records = {block_key('print("hello")\n'): {"printed": "```\n"}}
    assert '```` {.text .output .no-copy title="Output"}\n```\n````' in with_outputs(A_CHAPTER, records)


def test_mask_numbers_keeps_the_words():
    assert mask_numbers("20 tokens in 0.03 s, 1,039 tokens/s (3.3×), 4.7e-04") == "# tokens in # s, # tokens/s (#×), #"
    assert mask_numbers("split   5.4 ms") == mask_numbers("split  28.0 ms") == "split # ms"  # aligned columns


@pytest.fixture
def book(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((ROOT / "conftest.py").read_text(encoding="utf-8"))
    pytester.mkdir("book")
    (pytester.path / "book" / "01-a.md").write_text(A_CHAPTER, encoding="utf-8")
    return pytester


def run_book(book: pytest.Pytester, *args: str) -> pytest.RunResult:
    return book.runpytest_inprocess("book", "--markdown-docs", "--markdown-docs-syntax=superfences",
                                    "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:benchmark",
                                    "-p", "no:anyio", *args)


def test_a_block_that_prints_without_a_record_fails_until_refreshed(book: pytest.Pytester):
    result = run_book(book)
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*01-a.md, block at line 3: the page shows no output under this block*",
                                 "*--refresh-outputs*"])

    result = run_book(book, "--refresh-outputs")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["recorded the outputs of the book's blocks: 01-a.md"])
    records = json.loads((book.path / "book" / "outputs" / "01-a.json").read_text(encoding="utf-8"))
    assert [record["printed"] for record in records.values()] == ["hello\n", "solved\n"]

    run_book(book).assert_outcomes(passed=3)


def test_an_edited_block_is_stale_and_a_different_output_a_warning(book: pytest.Pytester, monkeypatch):
    run_book(book, "--refresh-outputs").assert_outcomes(passed=3)
    chapter = book.path / "book" / "01-a.md"
    assert (book.path / "book" / "outputs" / "book.sha256").read_text().strip() == book_fingerprint(chapter.parent)

    chapter.write_text(A_CHAPTER.replace('print("hello")', 'print("hello, 2")'), encoding="utf-8")
    result = run_book(book)  # the code changed: no record for it
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*the page shows no output under this block, but it prints*"])

    chapter.write_text(A_CHAPTER.replace('print("hello")', "pass"), encoding="utf-8")
    records = book.path / "book" / "outputs" / "01-a.json"
    records.write_text(json.dumps({block_key("pass\n"): {"printed": "hello\n"},
                                   block_key('print("solved")\n'): {"printed": "solved\n"}}), encoding="utf-8")
    result = run_book(book)  # a record under a block that prints nothing
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*the page shows output under this block, but it prints nothing*"])

    # The same code printing something else (another machine): a warning with the diff, even in CI.
    records.write_text(json.dumps({block_key("pass\n"): {"printed": "hello\n"},
                                   block_key('print("solved")\n'): {"printed": "solved 1\n"}}), encoding="utf-8")
    for ci in ("", "true"):
        monkeypatch.setenv("CI", ci)
        result = run_book(book)
        result.assert_outcomes(passed=2, failed=1, warnings=1)
        result.stdout.fnmatch_lines(["*printed something else than its output on the page*", "*-solved 1*"])


def test_the_outputs_were_recorded_from_this_book():
    recorded = fingerprint_file(ROOT / "book").read_text(encoding="ascii").strip()
    assert recorded == book_fingerprint(ROOT / "book"), (
        "the book changed since its blocks' outputs were recorded: pytest book --refresh-outputs")
