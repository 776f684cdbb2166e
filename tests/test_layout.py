"""The package's layout tells the method: subpackages by stage, imports that run one way, a front door."""

from __future__ import annotations

import ast
from pathlib import Path

import emolib

PACKAGE = Path(emolib.__file__).parent
# The stages in order; a module may import from its own stage, the stages before it and the shared base.
STAGES = ["stories", "models", "writers", "extraction", "analysis", "steering", "book"]
BASE = {"errors", "io", "stats", "threads"}
# The CLI imports a command's stage only when that command runs, so `python -m emolib --help` answers without torch.
LAZY = {"emolib.__main__"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported emolib module, line, inside a function) for every import statement of `module`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    base = f"{base}.{child.module}" if child.module else base
                elif (child.module or "").split(".")[0] == "emolib":
                    base = child.module
                else:
                    base = None
                if base:
                    for alias in child.names:
                        target = f"{base}.{alias.name}"
                        found.append((target if target in MODULES else base, child.lineno, in_function))
            elif isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.split(".")[0] == "emolib")
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_the_top_level_lists_the_stages():
    entries = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert set(STAGES) <= entries
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert loose == BASE, f"modules outside the stages: {sorted(loose - BASE)}"


def test_no_import_cycle_at_module_or_function_level():
    graph = {module: {target for target, _, _ in _imports(module)} - {module} for module in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target in graph and not state.get(target):
                walk(target)
        stack.pop()
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            walk(module)


def test_each_stage_imports_only_from_the_stages_before_it():
    order = {stage: i for i, stage in enumerate(STAGES)}
    wrong = []
    for module in MODULES:
        stage = _stage(module)
        if stage not in order:  # the front door, the CLI and the shared base
            if module.split(".")[-1] in BASE:
                wrong += [f"{module} -> {t}" for t, _, _ in _imports(module) if t.split(".")[-1] not in BASE]
            continue
        for target, line, _ in _imports(module):
            other = _stage(target)
            if other in order and order[other] > order[stage]:
                wrong.append(f"{module}:{line} -> {target}")
            if target == "emolib":
                wrong.append(f"{module}:{line} -> the front door")
    assert not wrong, "imports against the stage order: " + ", ".join(wrong)


def test_no_function_level_import_of_emolib():
    late = [f"{module}:{line} -> {target}" for module in MODULES if module not in LAZY
            for target, line, inside in _imports(module) if inside]
    assert not late, "function-level imports of emolib modules (move them to the top): " + ", ".join(late)


def test_the_front_door_names_what_a_user_starts_from():
    for name in ("EmotionVectors", "VectorBuild", "build_vectors", "load_model", "steering", "EmolibError"):
        assert name in emolib.__all__ and getattr(emolib, name) is not None
    for stage in STAGES:
        assert f"{stage}/" in emolib.__doc__
