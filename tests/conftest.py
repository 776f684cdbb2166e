"""Test setup: every session writes its runs to a private folder, and progress bars stay quiet.

The variables are set before any kernel starts, so the notebooks that nbval re-executes
(tests/notebooks/, the chapters run on the tiny models) inherit them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    os.environ["EMOLIB_RUNS"] = tempfile.mkdtemp(prefix="emolib-test-runs-")
    os.environ["EMOLIB_HOME"] = str(ROOT)
    # chapters save their key numbers here instead of book/<model>/results/ of the checkout
    os.environ["EMOLIB_RESULTS"] = tempfile.mkdtemp(prefix="emolib-test-results-")
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh runs folder for one test."""
    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


@pytest.fixture(scope="session")
def tiny_gemma3():
    from emolib import models

    return models.load("tiny")


@pytest.fixture(scope="session")
def tiny_llama():
    from emolib import models

    return models.load("tiny-llama")
