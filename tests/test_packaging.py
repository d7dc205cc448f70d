"""The built wheel: the package's modules and the book's chapters (the embedded corpus), nothing else."""

import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    missing = [name for name in ("pip", "setuptools") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"building the wheel needs {' and '.join(missing)} in this environment: "
                    f"python -m pip install {' '.join(missing)} (with uv: uv pip install {' '.join(missing)})")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"  # a copy, so that the build leaves nothing in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("tinytransformer", "book"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                             "--wheel-dir", str(work / "dist"), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (work / "dist").glob("tinytransformer-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return {name for name in archive.namelist() if ".dist-info/" not in name}


def test_the_wheel_holds_the_modules_and_the_chapters_and_nothing_else(wheel_files):
    modules = {f"tinytransformer/{p.name}" for p in (ROOT / "tinytransformer").glob("*.py")}
    chapters = {f"tinytransformer/book/{p.name}" for p in (ROOT / "book").glob("*.md")}
    assert len(chapters) > 13 and "tinytransformer/book/07-tokens.md" in chapters
    assert wheel_files == modules | chapters


def test_the_wheel_holds_no_book_tooling(wheel_files):
    assert not [name for name in wheel_files if name.startswith("tinytransformer/book/") and not name.endswith(".md")]
    assert not [name for name in wheel_files if "conftest" in name or "mkdocs" in name]
