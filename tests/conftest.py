"""Fixtures of the unit tests (the set-up shared with the book's blocks is in the root conftest.py).

The browser tests (``test_site.py``, ``test_explorer.py``) share one built site, one server and one
Chromium for the whole session: building the site takes seconds, and so does starting the browser.
"""

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tinytransformer.model import GPTConfig

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_CHROMIUMS = ("chromium", "chromium-browser")  # the names Debian's and Ubuntu's packages install
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # Every request that leaves 127.0.0.1 goes to a proxy that is not there, so it fails (the test records
    # it); loopback never uses a proxy. Unlike Playwright's request routing, this keeps the browser cache.
    "--proxy-server=http://127.0.0.1:9",
]


@pytest.fixture
def tiny_config() -> GPTConfig:
    """A model small enough to run a few hundred steps in a test."""
    return GPTConfig(vocab_size=32, max_seq_len=16, d_model=32, n_layers=2, n_heads=4)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the browser closed a connection (it left the page mid-download); failures show in the browser


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The book's site, built (strict, as configured) into a temporary folder."""
    site_dir = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(site_dir)],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, f"mkdocs build failed:\n{result.stderr[-4000:]}"
    return site_dir


@pytest.fixture(scope="session")
def base_url(site: Path):
    """The built site, served on 127.0.0.1."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = QuietServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def find_chromium(playwright) -> str | None:
    """The system's Chromium, else Playwright's own download, else ``None``."""
    system = next(filter(None, map(shutil.which, SYSTEM_CHROMIUMS)), None)
    if system:
        return system
    downloaded = playwright.chromium.executable_path  # where `playwright install chromium` puts it
    return downloaded if Path(downloaded).is_file() else None


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, or a skip that says how to install it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed: python -m pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        executable = find_chromium(playwright)
        if executable is None:
            pytest.skip("no Chromium found for the browser tests: install it with `apt-get install chromium` "
                        "(Debian, Ubuntu) or `python -m playwright install chromium` (any system)")
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def context(browser, base_url):
    """A browser context that records in ``context.external`` every request to another host."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.external = []
    context.on("request", lambda request: request.url.startswith(("http:", "https:", "ws:", "wss:"))
               and not request.url.startswith(base_url) and context.external.append(request.url))
    yield context
    context.close()
