"""The chapters' parameters, read straight from each notebook's `parameters` cell (no kernel, no papermill, no
torch: `python -m emolib run --help` lists them in a fraction of a second), and command-line values turned into
the type each chapter declares (`-p alphas -0.3,0.3` stays the text the chapter parses; `-p layers 12` becomes
[12]; `-p n_boot 200` an int)."""

from __future__ import annotations

import ast
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import EmolibError

# The chapters, in order (the runner executes them; `--help` lists their parameters without importing torch).
CHAPTERS = ("01_stories", "02_neutral", "03_extract", "04_geometry", "05_logit_lens", "06_external_validation",
            "07_steering", "08_in_context", "09_preferences")


@lru_cache(maxsize=None)
def _declared(path: str, mtime: float) -> dict[str, tuple[Any, str]]:
    cells = json.loads(Path(path).read_text())["cells"]
    cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return {}
    source = "".join(cell["source"])
    lines = source.splitlines()
    out: dict[str, tuple[Any, str]] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            line = lines[node.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line[node.value.end_col_offset:] else ""
            out[node.targets[0].id] = (value, comment)
    return out


def declared(root: Path, chapter: str) -> dict[str, tuple[Any, str]]:
    """{name: (default, its comment)} of one chapter's parameters cell."""
    path = Path(root) / "notebooks" / f"{chapter}.ipynb"
    if not path.exists():
        raise EmolibError(f"no chapter {chapter!r}: {path} does not exist")
    return _declared(str(path), path.stat().st_mtime)


def coerce(name: str, text: str, default: Any) -> Any:
    """A command-line value as the type of its chapter default: numbers and booleans parsed, a string kept as typed
    (a quoted Python string unquoted), `layers` also as a list of ints (one int, or a list literal)."""
    try:
        literal = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        literal = None
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise EmolibError(f"parameter {name} is true or false, got {text!r}")
    if isinstance(default, int):
        if isinstance(literal, int) and not isinstance(literal, bool):
            return literal
        raise EmolibError(f"parameter {name} is a whole number like its default {default!r}, got {text!r}")
    if isinstance(default, float):
        if isinstance(literal, (int, float)) and not isinstance(literal, bool):
            return float(literal)
        raise EmolibError(f"parameter {name} is a number like its default {default!r}, got {text!r}")
    if name == "layers":
        if isinstance(literal, int) and not isinstance(literal, bool):
            return [literal]
        if isinstance(literal, (list, tuple)):
            return list(literal)
    if isinstance(literal, str):  # '"-0.3,0.3"' or "'x'": the quotes were the user's
        return literal
    return text


def parameter_help(root: Path, chapters: list[str] | tuple[str, ...]) -> str:
    """Every parameter of the chapters, once, with its default, its comment and the chapters that take it."""
    seen: dict[str, tuple[Any, str, list[str]]] = {}
    for chapter in chapters:
        for name, (default, comment) in declared(root, chapter).items():
            if name in ("model", "results_dir"):
                continue
            seen.setdefault(name, (default, comment, []))[2].append(chapter[:2])
    return "\n".join(f"  -p {name} ({default!r}; ch. {', '.join(where)}){'  ' + comment if comment else ''}"
                     for name, (default, comment, where) in seen.items())
