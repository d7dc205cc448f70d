"""MkDocs hooks of the book's site (``hooks:`` in ``mkdocs.yml``): math served by the site itself.

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
"""

import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

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
    return files


def _mark_math(items) -> None:
    for item in items:
        item.title = INLINE_MATH.sub(lambda match: f'<span class="arithmatex">{match.group(0)}</span>', item.title)
        _mark_math(item.children)


def on_page_content(html, page, config, files):
    _mark_math(page.toc)
    return html
