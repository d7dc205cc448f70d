"""The package's layers: the library never imports a command, and its modules import each other without a cycle."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tinytransformer"
COMMAND_LAYER = ("tinytransformer.commands", "tinytransformer.cli", "tinytransformer.__main__")


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``path`` imports, at the top or inside functions; not under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # drop type-checking-only imports
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in names if name in known}


def import_graph(package: Path) -> dict[str, set[str]]:
    paths = {module_name(path, package): path for path in package.rglob("*.py")}
    return {name: imported_modules(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules (the first repeated at the end), or ``[]``."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target, path + [target])):
                return cycle
        state[node] = "done"
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return []


def test_the_modules_import_each_other_without_a_cycle():
    graph = import_graph(PACKAGE)
    assert len(graph) > 20
    assert find_cycle(graph) == []


def test_the_cycle_check_finds_a_cycle(tmp_path):
    package = tmp_path / "tinytransformer"
    package.mkdir()
    (package / "model.py").write_text("def generate():\n    from tinytransformer.generation import loop\n")
    (package / "generation.py").write_text("from tinytransformer import model\n")
    typed_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tinytransformer.model\n"
    (package / "typed.py").write_text(typed_only)
    graph = import_graph(package)
    assert graph["tinytransformer.typed"] == set()
    assert find_cycle(graph) == ["tinytransformer.generation", "tinytransformer.model", "tinytransformer.generation"]


def test_no_library_module_imports_a_command():
    for module, imports in import_graph(PACKAGE).items():
        if not module.startswith(COMMAND_LAYER):
            assert not {name for name in imports if name.startswith(COMMAND_LAYER)}, module


def test_generation_imports_neither_matplotlib_nor_the_trainer():
    code = ("import sys, tinytransformer.generation; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'transformers') "
            "or m in ('tinytransformer.train', 'tinytransformer.checkpoint', 'tinytransformer.commands')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_the_command_line_loads_matplotlib_and_transformers_only_when_a_command_needs_them():
    code = ("import sys, tinytransformer.cli; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'transformers'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
