"""The built site as a reader's browser shows it: every page opened in headless Chromium.

The site is built once (``mkdocs build``, strict as configured) into a temporary folder and served
on 127.0.0.1. The browser is Chromium, driven by Playwright for Python: the system's Chromium where
there is one (Debian and Ubuntu: ``apt-get install chromium``; ``.ci/run`` installs it), else the one
``python -m playwright install chromium`` downloads (the usual route on macOS and Windows). Without
either, the test is skipped with that instruction. Any request to another host
is blocked and reported: the site must work offline. A full-page screenshot of every page is saved
for a human to look at, with the exercises' solutions opened; the test prints the folder. Every
chapter page must link to its notebook, and the notebook must be there. The fixtures that build, serve
and open the site are in ``tests/conftest.py``, shared with ``tests/test_explorer.py``.
"""

import base64
import json
import re
from pathlib import Path

import pytest

from tinytransformer.block_outputs import block_key, python_blocks, read_outputs

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.xdist_group("site")  # one built site for this module and test_explorer.py

# Code blocks allowed to scroll sideways at 1280 px, by their first line (say why next to each one).
# None today: every block of the book fits.
WIDE_ON_PURPOSE: tuple[str, ...] = ()

# Material's copy button on each code block (button.md-clipboard before Material 9.6).
COPY_BUTTON = '"button[data-md-type=copy], button.md-clipboard"'

# Run in the page after it has loaded: everything the reader should see, checked in one round trip.
INSPECT_PAGE = r"""() => {
    const rawTex = /\\\(|\\\[|\$\$|\$[^$\s][^$]*\$/;
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {
        acceptNode: (node) => node.parentElement.closest("pre, code, script, style, textarea, .katex")
            ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT,
    });
    const raw = [];
    while (walker.nextNode()) {
        const text = walker.currentNode.textContent;
        if (rawTex.test(text)) raw.push(text.trim().slice(0, 80));
    }
    const math = [...document.querySelectorAll(".arithmatex")];
    const code = [...document.querySelectorAll("div.highlight:not(.output)")];
    const python = [...document.querySelectorAll("div.language-python")];
    const outputs = [...document.querySelectorAll("div.output")];
    return {
        math: math.length,
        unrendered_math: math.filter((e) => !e.querySelector(".katex"))
            .map((e) => e.textContent.slice(0, 80)),
        raw_tex: raw,
        images: document.images.length,
        broken_images: [...document.images].filter((i) => !(i.complete && i.naturalWidth > 0))
            .map((i) => i.src),
        code_blocks: code.length,
        without_copy_button: code.filter((e) => !e.querySelector(COPY_BUTTON)).length,
        python_blocks: python.length,
        unhighlighted_python: python.filter((e) => !e.querySelector("code span[class]")).length,
        solutions: [...document.querySelectorAll("details.success")].length,
        open_solutions: [...document.querySelectorAll("details.success")].filter((e) => e.open).length,
        notebook: document.querySelector('a[download][href$=".ipynb"]')?.href ?? null,
        outputs: outputs.length,
        outputs_with_copy_button: outputs.filter((e) => e.querySelector(COPY_BUTTON)).length,
        outputs_not_under_code: outputs.filter((e) => !e.previousElementSibling?.matches("div.highlight")).length,
    };
}""".replace("COPY_BUTTON", COPY_BUTTON)

# Run after INSPECT_PAGE: open every collapsible block (the exercises' solutions), as a reader clicking each
# one, so that their code is checked as shown and appears in the screenshot. Returns the code blocks that
# stay invisible, or lack a copy button, once open.
OPEN_SOLUTIONS = """() => {
    document.querySelectorAll("details").forEach((e) => { e.open = true; });
    const code = [...document.querySelectorAll("details div.highlight:not(.output)")];
    const scrolling = [...document.querySelectorAll("div.highlight pre > code")]
        .filter((e) => e.scrollWidth > e.clientWidth + 1);
    return {
        code_in_solutions: code.length,
        hidden: code.filter((e) => e.getBoundingClientRect().height === 0).length,
        without_copy_button: code.filter((e) => !e.querySelector(COPY_BUTTON)).length,
        scrolling: scrolling.map((e) => e.textContent.trim().split("\\n")[0].slice(0, 60)),
    };
}""".replace("COPY_BUTTON", COPY_BUTTON)

# Material adds the copy buttons and math.js renders the math once the page's scripts have run; images
# are complete once loaded or failed (a failed one has no width, which INSPECT_PAGE reports).
PAGE_READY = """() => [...document.querySelectorAll(".arithmatex")].every((e) => e.querySelector(".katex"))
    && [...document.querySelectorAll("div.highlight:not(.output)")].every((e) => e.querySelector(COPY_BUTTON))
    && [...document.images].every((i) => i.complete)""".replace(
    "COPY_BUTTON", COPY_BUTTON)


# A valid search index of Material for MkDocs with no documents.
EMPTY_SEARCH_INDEX = {
    "config": {"lang": ["en"], "separator": r"[\s\-]+", "pipeline": ["stopWordFilter"],
               "fields": {"title": {"boost": 1000.0}, "text": {"boost": 1.0}, "tags": {"boost": 1000000.0}}},
    "docs": [],
}


def site_pages(site: Path) -> list[str]:
    """Every page of the built site, as a URL path relative to its root ("/" is the landing page)."""
    folders = (path.parent.relative_to(site).as_posix() for path in site.rglob("index.html"))
    return sorted(folder.removeprefix(".") + "/" for folder in folders)


def save_full_page_screenshot(page, devtools, path: Path) -> None:
    """Save the whole page as a JPEG at 0.4 scale, through the DevTools protocol.

    Small, but math, figures and code are recognisable in it.

    This takes a third of the time of Playwright's ``page.screenshot(full_page=True)`` at full scale,
    which resizes the viewport to the whole page first; the screenshots are most of this test's time.
    """
    size = page.evaluate("({width: innerWidth, height: document.documentElement.scrollHeight})")
    clip = {"x": 0, "y": 0, "scale": 0.4, **size}
    shot = devtools.send("Page.captureScreenshot", {
        "format": "jpeg", "quality": 60, "captureBeyondViewport": True, "clip": clip, "optimizeForSpeed": True,
    })
    path.write_bytes(base64.b64decode(shot["data"]))


def test_every_page_renders_offline(site, base_url, context, tmp_path_factory, capsys):
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    pages = site_pages(site)
    assert "/" in pages and "01-attention/" in pages
    # Every page load makes Material's search worker fetch and index the whole site (0.4 MB) while the
    # page renders. Search has its own test below; here it gets an empty index, which saves about 3 s.
    context.route("**/search/search_index.json", lambda route: route.fulfill(json=EMPTY_SEARCH_INDEX))
    screenshots = tmp_path_factory.mktemp("site-screenshots")
    page = context.new_page()
    devtools = context.new_cdp_session(page)
    events: list[str] = []
    page.on("console", lambda message: message.type == "error"
            and events.append(f"console error: {message.text}"))
    page.on("pageerror", lambda error: events.append(f"script error: {error}"))
    page.on("requestfailed", lambda request: request.url.startswith(base_url)
            and request.failure != "net::ERR_ABORTED"  # cancelled by leaving the page (e.g. the favicon)
            and events.append(f"request failed: {request.url} ({request.failure})"))
    page.on("response", lambda response: response.status >= 400
            and events.append(f"HTTP {response.status}: {response.url}"))

    problems: dict[str, list[str]] = {}
    totals = {"math": 0, "images": 0, "python_blocks": 0, "solutions": 0, "code_in_solutions": 0, "outputs": 0}
    for path in pages:
        events.clear()
        url = base_url + path.lstrip("/")
        page.goto(url, wait_until="domcontentloaded")
        try:
            page.wait_for_function(PAGE_READY, timeout=5_000)
        except PlaywrightTimeoutError:
            pass  # what is missing is reported below
        found = page.evaluate(INSPECT_PAGE)
        opened = page.evaluate(OPEN_SOLUTIONS)
        found["code_in_solutions"] = opened["code_in_solutions"]
        name = path.strip("/").replace("/", "_") or "index"
        save_full_page_screenshot(page, devtools, screenshots / f"{name}.jpg")
        for key in totals:
            totals[key] += found[key]
        page_problems = list(events)
        page_problems += [f"math not rendered: {tex}" for tex in found["unrendered_math"]]
        page_problems += [f"raw TeX in the text: {text!r}" for text in found["raw_tex"]]
        page_problems += [f"image not loaded: {src}" for src in found["broken_images"]]
        if found["without_copy_button"]:
            page_problems.append(f"{found['without_copy_button']} code blocks without a copy button")
        if found["unhighlighted_python"]:
            page_problems.append(f"{found['unhighlighted_python']} Python blocks without syntax highlighting")
        if found["open_solutions"]:
            page_problems.append(f"{found['open_solutions']} solutions open before the reader opens them")
        if opened["hidden"] or opened["without_copy_button"]:
            page_problems.append(f"opened solutions: {opened['hidden']} code blocks invisible, "
                                 f"{opened['without_copy_button']} without a copy button")
        if re.match(r"/?\d\d-", path):
            page_problems += notebook_problems(context, found["notebook"])
        page_problems += output_problems(path, found)
        wide = [line for line in opened["scrolling"] if not line.startswith(WIDE_ON_PURPOSE)]
        page_problems += [f"code scrolls sideways at 1280 px: {line!r}" for line in wide]
        if page_problems:
            problems[path] = page_problems

    with capsys.disabled():
        print(f"\nscreenshots of the {len(pages)} pages of the site: {screenshots}")
    assert not context.external, f"requests that left 127.0.0.1 (blocked): {sorted(set(context.external))}"
    assert not problems, "\n".join(f"{path}: {item}" for path, items in problems.items() for item in items)
    # The checks above looked at something: the book has math, figures, code, and solutions with code.
    assert totals["math"] > 100 and totals["images"] >= 5 and totals["python_blocks"] > 40, totals
    assert totals["solutions"] >= 3 * 13 and totals["code_in_solutions"] >= totals["solutions"], totals
    assert totals["outputs"] > 100, totals


def output_problems(path: str, found: dict) -> list[str]:
    """What is wrong with the outputs shown under a page's code blocks (``book/outputs/``)."""
    chapter = ROOT / "book" / (path.strip("/") or "index").removesuffix("/")
    chapter = chapter.with_suffix(".md")
    records = read_outputs(chapter) if chapter.exists() else {}
    blocks = python_blocks(chapter.read_text(encoding="utf-8")) if chapter.exists() else []
    expected = sum(block_key(block.code) in records for block in blocks)
    problems = []
    if found["outputs"] != expected:
        problems.append(f"{found['outputs']} outputs under code blocks, {expected} recorded")
    if found["outputs_with_copy_button"]:
        problems.append(f"{found['outputs_with_copy_button']} outputs with a copy button")
    if found["outputs_not_under_code"]:
        problems.append(f"{found['outputs_not_under_code']} outputs not right under a code block")
    return problems


def notebook_problems(context, href: str | None) -> list[str]:
    """What is wrong with a chapter page's notebook download: no link, or no notebook behind it."""
    if href is None:
        return ["no link to download the chapter as a notebook"]
    response = context.request.get(href)
    if response.status != 200:
        return [f"notebook {href}: HTTP {response.status}"]
    notebook = json.loads(response.body())
    if notebook.get("nbformat") != 4 or not any(cell["cell_type"] == "code" for cell in notebook["cells"]):
        return [f"notebook {href}: not a notebook with code cells"]
    return []


def test_search_finds_attention_and_links_to_its_chapter(base_url, context):
    page = context.new_page()
    page.goto(base_url, wait_until="load")
    page.click(".md-search__input")
    page.keyboard.type("attention")  # as a reader types (setting the value alone does not always search)
    page.wait_for_selector(".md-search-result__item", timeout=10_000)
    links = page.eval_on_selector_all(".md-search-result__link", "links => links.map((a) => a.href)")
    assert any("/01-attention/" in link for link in links), links
    assert not context.external
