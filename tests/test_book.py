"""The book runner: table of contents, offline check, atomic chapters, and the notebooks nbval tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from emolib import book
from emolib.errors import EmolibError

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, sources: list[str], tags: dict[int, list[str]] | None = None) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in sources]
    for index, cell_tags in (tags or {}).items():
        notebook.cells[index].metadata["tags"] = cell_tags
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)


def test_toc_lists_executed_models_embedded_first(tmp_path):
    for model in ("e4b", "270m", "smollm2"):
        _notebook(tmp_path / "book" / model / "01_stories.ipynb", ["1"])
    _notebook(tmp_path / "book" / "270m" / "02_neutral.ipynb", ["1"])
    (tmp_path / "book" / "_vendor").mkdir()
    toc = book.write_toc(tmp_path).read_text()
    assert toc.index("book/270m/01_stories") < toc.index("book/270m/02_neutral") < toc.index("book/smollm2/")
    assert toc.index("book/smollm2/") < toc.index("book/e4b/")
    assert '"Gemma 4 E4B"' in toc and "root: book/intro" in toc


def test_toc_without_runs_says_what_to_do(tmp_path):
    (tmp_path / "book").mkdir()
    with pytest.raises(EmolibError, match="run `python -m emolib run --model 270m` first"):
        book.write_toc(tmp_path)


def test_external_references_are_found(tmp_path):
    (tmp_path / "a.html").write_text('<script src="https://cdn.plot.ly/x.js"></script><a href="https://example.org">ok</a>'
                                     '<link rel="stylesheet" href="//fonts.example/f.css"><script src="_static/p.js"></script>')
    found = book.external_references(tmp_path)
    assert len(found) == 2 and "cdn.plot.ly" in found[0] and "fonts.example" in found[1]


def test_a_failed_chapter_leaves_the_published_one_untouched(tmp_path):
    _notebook(tmp_path / "notebooks" / "01_stories.ipynb",
              ['model = "270m"', "from emolib.errors import EmolibError\nraise EmolibError('no stories for you')"],
              tags={0: ["parameters"]})
    published = tmp_path / "book" / "tiny" / "01_stories.ipynb"
    _notebook(published, ["'the good one'"])
    before = published.read_bytes()
    with pytest.raises(EmolibError, match=r"chapter 01_stories failed for model tiny: EmolibError: no stories for you"):
        book.run_chapters("tiny", ["01_stories"], root=tmp_path, log=lambda *a: None)
    assert published.read_bytes() == before
    assert (published.parent / ".01_stories.failed.ipynb").exists()


def test_a_chapter_runs_with_its_parameters_and_hidden_parameter_cells(tmp_path):
    _notebook(tmp_path / "notebooks" / "01_stories.ipynb", ['model = "270m"\nn = 1', "print(model, n * 2)"],
              tags={0: ["parameters"]})
    timings = book.run_chapters("tiny", ["01_stories"], {"n": 21}, root=tmp_path, log=lambda *a: None)
    executed = json.loads((tmp_path / "book" / "tiny" / "01_stories.ipynb").read_text())
    assert executed["cells"][-1]["outputs"][0]["text"] == ["tiny 42\n"]
    hidden = [cell["metadata"]["tags"] for cell in executed["cells"][:2]]
    assert all("remove-cell" in tags for tags in hidden)
    assert set(timings) == {"01_stories"} and (tmp_path / "book" / "tiny" / "timings.json").exists()


def test_papermill_on_a_missing_model_fails_in_seconds_with_one_line(tmp_path):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    env.pop("EMOLIB_31B_PATH", None)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "01_stories.ipynb"),
                             str(tmp_path / "o.ipynb"), "-p", "model", "31b"], capture_output=True, text=True, env=env,
                            cwd=ROOT)
    assert result.returncode != 0
    assert time.perf_counter() - started < 60
    line = ("MissingWeightsError: 31b: weights for google/gemma-4-31B-it not found (looked at the Hugging Face "
            f"cache {tmp_path / 'hf' / 'hub'}); run `hf download google/gemma-4-31B-it`")
    assert line in result.stderr
    outputs = [o for cell in json.loads((tmp_path / "o.ipynb").read_text())["cells"] for o in cell.get("outputs", [])]
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert len(errors) == 1 and len(errors[0]["traceback"]) == 1  # one line in the notebook, no traceback


def test_the_cli_reports_errors_in_one_line():
    result = subprocess.run([sys.executable, "-m", "emolib", "run", "--model", "nope"], capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "emolib: error: unknown model 'nope'; choose one of: " + ", ".join(__import__("emolib").models.PROFILES)]


@pytest.mark.parametrize("chapter", book.CHAPTERS)
def test_nbval_notebooks_match_the_chapters(chapter):
    """tests/notebooks/ holds the chapters executed on the tiny model; their code must be the chapter's."""
    source = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    executed = nbformat.read(ROOT / "tests" / "notebooks" / f"{chapter}.ipynb", as_version=4)
    cells = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in source.cells], (
        "tests/notebooks is stale: run `make test-notebooks` and commit the result")
