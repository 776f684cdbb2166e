"""The README's main command, end to end (issue 41): `python -m emolib book` — every chapter for two analysed models,
the comparison, the appendix, the "your run" page and the HTML build — at the quick scale's design (one kept story per
(emotion, topic) cell, two topics, the quick scale's chapter-7 and chapter-9 sizes), on two tiny random models of
different families: a built-in profile and a researcher's checkpoint folder (`--model path/to/folder`). It fails on any chapter's error: chapter 4's cross-validated spectrum could not split this
design before issue 41, and nothing ran the main command's shape. The built book is then opened in headless Chromium
(every figure of the run's chapters must draw, offline) and the checkout's `git status` must stay clean: what a reader's
`make book` promises, checked on the one build (each used to build a book of its own)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import git
from emolib.book import runner as book

ROOT = Path(__file__).resolve().parents[1]


def _checkout_copy(target: Path) -> Path:
    """What `make book` needs of a checkout: the chapters, the book's pages (the published chapters included, which
    the build shows beside the run; not the published data) and the book's configuration."""
    target.mkdir()
    shutil.copytree(ROOT / "notebooks", target / "notebooks")
    shutil.copytree(ROOT / "book", target / "book", ignore=shutil.ignore_patterns("data", "_vendor"))
    for name in ("_config.yml", "_toc.yml", ".gitignore"):
        shutil.copy(ROOT / name, target / name)
    (target / "emolib").symlink_to(ROOT / "emolib")  # project_root() looks for it
    return target


def test_the_book_command_runs_every_chapter_of_both_profiles_and_builds(tmp_path, llama_checkpoint):
    root = _checkout_copy(tmp_path / "checkout")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a fresh clone")
    env = {**os.environ, "EMOLIB_HOME": str(root), "EMOLIB_RUNS": str(tmp_path / "runs"), "TQDM_DISABLE": "1",
           "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "emolib", "book", "--model", "tiny", "--model", str(llama_checkpoint),
               "-p", "scale", "quick", "-p", "writer", "tiny", "-p", "corpus", "tiny", "-p", "emotions", "quick",
               "-p", "dialogue_topics", "4", "-p", "dialogues_per_topic", "1", "-p", "batch_size", "8",
               "-p", "max_emotion_words", "1000"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    run = root / "runs" / "book" / "quick"
    for model in ("tiny", "my-llama"):
        executed = sorted(p.stem for p in (run / model).glob("[0-9]*.ipynb"))
        assert executed == ["01_stories", "02_neutral", "03_extract", "04_geometry", "05_logit_lens", "06_external_validation",
                            "07_steering", "08_in_context", "09_preferences"], model
        geometry = json.loads((run / model / "results" / "04_geometry.json").read_text())
        assert geometry["cv_pca"]["splits"] > 0  # the quick design's spectrum exists (issue 41)
    assert not list(llama_checkpoint.rglob("results"))  # nothing is ever written into the model's folder
    assert (tmp_path / "runs" / "vectors" / "my-llama" / "tiny" / "vectors.safetensors").exists()
    design = json.loads((tmp_path / "runs" / "corpus" / "tiny" / "design.json").read_text())
    assert (design["per_cell"], len(design["topics"])) == (1, 2)  # the quick scale's design
    for page in ("your_run", "comparison", "appendix"):
        assert (run / f"{page}.ipynb").exists()
    html = root / "_build" / "html"
    assert (html / "runs" / "book" / "quick" / "your_run.html").exists()
    assert (html / "runs" / "book" / "quick" / "my-llama" / "08_in_context.html").exists()
    assert (html / "book" / "270m" / "04_geometry.html").exists()  # the published book beside the run
    assert git(root, "status", "--porcelain") == ""  # the run, the comparison and the build wrote no tracked file

    if book.find_chromium() is None:
        message = "no Chromium on this machine (Debian: apt-get install chromium): the drawing check did not run"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)  # make test installs it in CI
    pages = sorted(str(p.relative_to(html)) for p in html.glob("runs/book/quick/tiny/*.html"))
    assert len(pages) == 9
    for page in pages:  # the figures reference the one vendored plotly.js, not a CDN
        assert "cdn.plot.ly" not in (html / page).read_text()
    drawn = book.browser_check(html, pages=[*pages, "runs/book/quick/your_run.html", "book/comparison.html"],
                               log=lambda *_: None)
    assert drawn["runs/book/quick/tiny/04_geometry.html"] >= 5
    assert all(drawn[page] > 0 for page in pages) and drawn["book/comparison.html"] >= 1
    assert (html.parent / "screenshot-04_geometry.png").stat().st_size > 10_000
