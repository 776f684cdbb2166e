"""The book runner: table of contents, offline check, atomic chapters, and the notebooks nbval tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import git
from emolib.book import runner as book
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
        book.run_chapters("tiny", ["01_stories"], root=tmp_path, log=lambda *a: None, publish=True)
    assert published.read_bytes() == before
    assert (published.parent / ".01_stories.failed.ipynb").exists()


def test_a_chapter_runs_with_its_parameters_and_hidden_parameter_cells(tmp_path):
    _notebook(tmp_path / "notebooks" / "01_stories.ipynb", ['model = "270m"\nn = 1', "print(model, n * 2)"],
              tags={0: ["parameters"]})
    timings = book.run_chapters("tiny", ["01_stories"], {"n": 21}, root=tmp_path, log=lambda *a: None)
    run = tmp_path / "runs" / "book" / "quick" / "tiny"  # a run's own folder, never the published book
    assert not (tmp_path / "book").exists()
    executed = json.loads((run / "01_stories.ipynb").read_text())
    assert executed["cells"][-1]["outputs"][0]["text"] == ["tiny 42\n"]
    hidden = [cell["metadata"]["tags"] for cell in executed["cells"][:2]]
    assert all("remove-cell" in tags for tags in hidden)
    assert set(timings) == {"01_stories"} and (run / "timings.json").exists()
    book.run_chapters("tiny", ["01_stories"], {"n": 2}, root=tmp_path, log=lambda *a: None, publish=True)
    published = json.loads((tmp_path / "book" / "tiny" / "01_stories.ipynb").read_text())  # only when asked
    assert published["cells"][-1]["outputs"][0]["text"] == ["tiny 4\n"]


def test_long_stages_stream_their_progress_to_the_terminal_not_the_notebook(tmp_path):
    """`make book` / `python -m emolib run`: the kernel's progress bars reach the runner's terminal (n of N,
    rate, ETA) while the executed notebook stays free of them; code cells are folded for the book."""
    _notebook(tmp_path / "notebooks" / "01_stories.ipynb", [
        'model = "270m"',
        "import time\nfrom emolib.io import progress_bar, show_rate\nstarted = time.perf_counter()\n"
        "with progress_bar(total=3, desc='writing (demo)') as bar:\n"
        "    for i in range(3):\n        show_rate(bar, 100 * (i + 1), started)\n        bar.update(1)\nprint('done')"],
              tags={0: ["parameters"]})
    code = ("import sys; from pathlib import Path; from emolib.book import runner as book; "
            "book.run_chapters('tiny', ['01_stories'], {}, root=Path(sys.argv[1]), log=lambda *a: None)")
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "EMOLIB_PROGRESS")}
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300,
                         env={**env, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "writing (demo): 100%" in out.stderr and "3/3" in out.stderr
    assert re.search(r"300 tokens, \d+ tokens/s", out.stderr)  # the rate a user can compare with the benchmarks
    executed = json.loads((tmp_path / "runs" / "book" / "quick" / "tiny" / "01_stories.ipynb").read_text())
    text = json.dumps(executed["cells"][-1]["outputs"])
    assert "writing (demo)" not in text and "done" in text
    assert "hide-input" in executed["cells"][-1]["metadata"]["tags"]


def test_tqdm_disable_is_read_as_tqdm_reads_it_by_the_bars_and_the_runner(monkeypatch):
    """tqdm silences its bars for any non-empty `TQDM_DISABLE` (it casts the value with `bool`); emolib's bars and the
    runner's terminal stream (which points the kernel's bars at a file by $EMOLIB_PROGRESS) read it the same way."""
    from emolib.io import progress_disabled

    monkeypatch.delenv("EMOLIB_PROGRESS", raising=False)
    for value, disabled in (("1", True), ("true", True), ("0", True), ("", False)):
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert progress_disabled() is disabled, value
        with book._progress_to_terminal():
            assert ("EMOLIB_PROGRESS" in os.environ) is not disabled, value
    monkeypatch.delenv("TQDM_DISABLE")
    assert progress_disabled() is False


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
        "emolib: error: unknown model 'nope'; choose one of: " + ", ".join(__import__("emolib").models.PROFILES)
        + ", or a local Hugging Face checkpoint (a folder, or hf:<folder or cached id>)"]


@pytest.mark.parametrize("chapter", book.CHAPTERS)
def test_nbval_notebooks_match_the_chapters(chapter):
    """tests/notebooks/ holds the chapters executed on the tiny model; their code must be the chapter's."""
    source = nbformat.read(ROOT / "notebooks" / f"{chapter}.ipynb", as_version=4)
    executed = nbformat.read(ROOT / "tests" / "notebooks" / f"{chapter}.ipynb", as_version=4)
    cells = [c for c in executed.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    assert [(c.cell_type, c.source) for c in cells] == [(c.cell_type, c.source) for c in source.cells], (
        "tests/notebooks is stale: run `make test-notebooks` and commit the result")


def _tiny_book(tmp_path: Path) -> Path:
    """A project folder whose book holds the tiny executed chapters of tests/notebooks/."""
    import shutil

    root = tmp_path / "project"
    (root / "book" / "tiny").mkdir(parents=True)
    for name in ("_config.yml",):
        shutil.copy(ROOT / name, root / name)
    shutil.copy(ROOT / "book" / "intro.md", root / "book" / "intro.md")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    for notebook in (ROOT / "tests" / "notebooks").glob("[0-9]*.ipynb"):
        shutil.copy(notebook, root / "book" / "tiny" / notebook.name)
    shutil.copytree(ROOT / "tests" / "notebooks" / "results", root / "book" / "tiny" / "results")
    return root


def test_a_readers_run_sits_beside_the_published_comparison_and_appendix(tmp_path, monkeypatch):
    """The published comparison and appendix run from saved results; `make book` on a fresh clone puts the reader's
    chapters in runs/book/<scale>/ with a page that sets each number beside the published one, and changes no tracked
    file. (The HTML of such a run is built and opened in Chromium by tests/test_book_command.py.)"""
    import shutil

    root = _tiny_book(tmp_path)
    monkeypatch.setenv("EMOLIB_HOME", str(root))
    shutil.copy(ROOT / ".gitignore", root / ".gitignore")
    results = book.load_results(root / "book")
    assert results["tiny"].stories and results["tiny"].extract and results["tiny"].geometry and results["tiny"].steering
    timings = book.run_across(root, log=lambda *_: None)  # the published comparison and appendix
    assert set(timings) == set(book.ACROSS)
    comparison = (root / "book" / "comparison.ipynb").read_text()
    assert "PC1 vs human valence" in comparison and "Anthropic (Claude Sonnet 4.5)" in comparison
    appendix = (root / "book" / "appendix.ipynb").read_text()
    assert results["tiny"].extract["vectors_sha256"][:16] in appendix
    toc = book.write_toc(root).read_text()
    assert toc.index("book/tiny/07_steering") < toc.index("Across models") < toc.index("book/comparison")

    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "published")
    run = root / "runs" / "book" / "quick" / "tiny"  # as `make book` leaves it: the tiny chapters, executed again
    shutil.copytree(root / "book" / "tiny", run)
    saved = json.loads((run / "results" / "04_geometry.json").read_text())
    saved["valence"]["r"] += 5.0  # a number that differs, to see the verdict say so
    (run / "results" / "04_geometry.json").write_text(json.dumps(saved))
    book.run_across(root, log=lambda *_: None, publish=False, scale="quick")
    runs_toc = book.write_toc(root, with_runs=True).read_text()
    assert git(root, "status", "--porcelain") == ""
    assert "Your run (quick scale)" in runs_toc and "runs/book/quick/tiny/04_geometry" in runs_toc
    page = (root / "runs" / "book" / "quick" / "your_run.ipynb").read_text()
    assert "agrees within the run" in page and "differs" in page


def test_run_beside_published_judges_each_number_by_both_intervals():
    from emolib.book import compare
    from emolib.book.results import ModelResults

    def results(r: float, ci: str, scale: str, leak: float) -> ModelResults:
        return ModelResults.of({"01_stories": {"scale": scale, "leak_rate": leak, "status": {"kept": 800, "leak": 200}},
                                "04_geometry": {"valence": {"r": r, "ci": ci, "p": 0.01, "words": 126}}})

    published = {"270m": results(0.41, "0.22 to 0.61", "full", 0.20)}
    same = compare.run_beside_published(published, {"270m": results(0.45, "0.25 to 0.65", "full", 0.21)})
    verdicts = dict(zip(same["number"], same["verdict"]))
    assert verdicts["r(PC1, human valence)"] == compare.AGREES and verdicts["leak rate (stories that name their emotion)"] == compare.AGREES
    far = compare.run_beside_published(published, {"270m": results(-0.5, "-0.6 to -0.4", "full", 0.40)})
    assert set(far["verdict"][far["number"].isin(["r(PC1, human valence)", "leak rate (stories that name their emotion)"])]) == {compare.DIFFERS}
    quick = compare.run_beside_published(published, {"270m": results(-0.5, "-0.9 to 0.1", "quick", 0.21)})
    verdicts = dict(zip(quick["number"], quick["verdict"]))
    assert verdicts["r(PC1, human valence)"] == compare.NOT_AT_SCALE  # the geometry depends on the scale
    assert verdicts["leak rate (stories that name their emotion)"] == compare.AGREES  # the writer's rate does not
    assert "only these can be checked: leak rate" in compare.run_summary(quick, published, {"270m": results(-0.5, "-0.9 to 0.1", "quick", 0.21)})
    assert compare.judge((1.0, 0.9, 1.1), (1.0, None, None), True) == compare.NO_INTERVAL
    assert compare.run_beside_published(published, {"e4b": published["270m"]}).empty


def test_every_executed_figure_can_draw_in_the_book():
    """A plotly output without text/html draws in JupyterLab but not in the rendered book (the comparison's
    headline figure was displayed before emolib.book.plots set the renderer)."""
    notebooks = [*(ROOT / "book").rglob("*.ipynb"), *(ROOT / "tests" / "notebooks").glob("*.ipynb")]
    assert len(notebooks) >= 20
    assert [str(p.relative_to(ROOT)) for p in notebooks if book.figures_without_html(p)] == []


def test_the_browser_check_fails_on_a_page_that_lost_its_figures(tmp_path):
    if book.find_chromium() is None:
        message = "no Chromium on this machine (Debian: apt-get install chromium)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    html = tmp_path / "_build" / "html"
    (html / "book").mkdir(parents=True)
    (html / "index.html").write_text("<html><body>index</body></html>")
    (html / "book" / "comparison.html").write_text("<html><body><p>a page without its figure</p></body></html>")
    _notebook(tmp_path / "book" / "comparison.ipynb", ["1"])
    notebook = json.loads((tmp_path / "book" / "comparison.ipynb").read_text())
    notebook["cells"][0]["outputs"] = [{"output_type": "display_data", "metadata": {},
                                        "data": {book.PLOTLY_MIME: {"data": [], "layout": {}}}}]
    (tmp_path / "book" / "comparison.ipynb").write_text(json.dumps(notebook))
    with pytest.raises(EmolibError, match="has 1 figures but the page shows 0"):
        book.browser_check(html, pages=["book/comparison.html"], screenshot="", log=lambda *_: None)


def test_every_chapter_starts_in_the_project_kernel():
    """JupyterLab opens the chapters with the kernel their metadata names; it must be this environment."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import start_new_kernel

    names = {nbformat.read(p, 4).metadata["kernelspec"]["name"] for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert names == {"python3"}
    spec = KernelSpecManager().get_kernel_spec("python3")
    manager, client = start_new_kernel(kernel_name="python3")
    outputs: list[dict] = []
    try:
        reply = client.execute_interactive("import sys, emolib; print(sys.prefix, emolib.__file__)", timeout=60,
                                           output_hook=outputs.append)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert reply["content"]["status"] == "ok", spec.argv
    printed = "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")
    prefix, module = printed.split()
    assert Path(prefix).resolve() == Path(sys.prefix).resolve()
    assert Path(module).resolve().is_relative_to(ROOT)


def test_timings_keep_the_computing_run_beside_a_rerun(tmp_path):
    """A rerun that reuses stored stories does not overwrite the time of the run that wrote them; the
    appendix's table shows both, per scale."""
    import json

    from emolib.book import timings

    results = tmp_path / "results"
    results.mkdir()
    (results / "01_stories.json").write_text(json.dumps({"scale": "full", "tokens_per_second": 180.0}))
    timings.record(tmp_path, {"01_stories": 5100.0, "04_geometry": 120.0}, results)
    (results / "01_stories.json").write_text(json.dumps({"scale": "full", "tokens_per_second": None}))  # a rerun: all stored
    timings.record(tmp_path, {"01_stories": 42.0, "04_geometry": 118.0}, results)
    recorded = timings.read(tmp_path / "timings.json")["full"]
    assert recorded["01_stories"] == {"last_run_s": 42.0, "reused": True, "computed_s": 5100.0}
    assert recorded["04_geometry"]["computed_s"] == 118.0 and not recorded["04_geometry"]["reused"]
    table = timings.table(tmp_path.parent, [tmp_path.name])
    column = table[f"{tmp_path.name}, full scale"]
    assert column["01_stories"] == "85.0 (rerun reusing stored work: 0.7)" and column["total (minutes)"] == "87.0"
    (tmp_path / "timings.json").write_text(json.dumps({"01_stories": 60.0}))  # an older flat file
    assert timings.read(tmp_path / "timings.json") == {"unknown": {"01_stories": {"last_run_s": 60.0, "computed_s": 60.0,
                                                                                "reused": False}}}


def test_models_run_one_after_another_on_one_corpus(monkeypatch, tmp_path):
    """The keep rule reads no model, so the book needs no phase order: each model runs its chapters in turn;
    a full-scale run reads the published corpus (when this checkout has it) unless another is named."""
    from emolib.stories import corpus as C

    calls = []
    monkeypatch.setattr(book, "run_chapters", lambda model, chapters, parameters, *a, **k:
                        calls.append((model, list(chapters), parameters.get("corpus"))))
    book.run_models(["270m", "smollm2"], book.CHAPTERS, {"writer": "smollm2", "n_prompts": 4})  # a 01 and a 07 parameter
    assert calls == [("270m", list(book.CHAPTERS), "smollm2"), ("smollm2", list(book.CHAPTERS), "smollm2")]
    published = tmp_path / "published"
    published.mkdir()
    (published / "settings.json").write_text(json.dumps({"story": {"writer": "smollm2"}}))
    (published / C.DATA_CARD).write_text("# card\n")
    monkeypatch.setattr(C, "published_corpus_dir", lambda: published)
    calls.clear()
    book.run_models(["270m"], ["01_stories", "03_extract"], {"scale": "full"})
    book.run_models(["270m"], ["01_stories", "03_extract"], {"scale": "quick"})
    book.run_models(["270m"], ["01_stories", "03_extract"], {"scale": "full", "corpus": "mine"})
    assert [c[2] for c in calls] == ["published", "smollm2", "mine"]
    calls.clear()
    book.run_models(["270m"], ["04_geometry"])
    assert calls == [("270m", ["04_geometry"], "smollm2")]
    with pytest.raises(EmolibError, match="takes a parameter 'writer'"):
        book.run_models(["270m"], ["04_geometry"], {"writer": "smollm2"})
