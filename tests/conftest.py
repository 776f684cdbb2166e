"""Test setup: every session writes its runs to a private folder, and progress bars stay quiet.

The variables are set before any kernel starts, so the notebooks that nbval re-executes
(tests/notebooks/, the chapters run on the tiny models) inherit them.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config: pytest.Config) -> None:
    import nbval_tolerance

    nbval_tolerance.install()  # outputs compared at a stated precision, not bit for bit (see that module)
    os.environ["EMOLIB_RUNS"] = tempfile.mkdtemp(prefix="emolib-test-runs-")
    os.environ["EMOLIB_HOME"] = str(ROOT)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers on two cores: one thread each
        os.environ["EMOLIB_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


CHAPTERS = "tests/notebooks/"  # the tiny chapters nbval re-executes, in order, on one worker

# The longest files first (`make test --durations`, 2026-12-07: 406, 178, about 150, 134, 116 and 52 s), so that
# the two workers end together: the one that draws the end-to-end book command takes the short files after it.
LONGEST_FIRST = ("tests/test_book_command.py", "tests/test_cross_kernel.py", CHAPTERS, "tests/test_reliability.py",
                 "tests/test_book.py", "tests/test_keep_rule.py")


def _duration_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest test files first (a stable sort: the chapters keep their order). nbval re-runs the tiny chapters:
    their key numbers go to a temporary folder, not to the committed tests/notebooks/results/ (the `results_dir`
    parameter papermill injected is redirected; to $EMOLIB_TEST_RESULTS when set, so that the cross-kernel test can
    read them back)."""
    items.sort(key=_duration_rank)
    folder = os.environ.get("EMOLIB_TEST_RESULTS") or tempfile.mkdtemp(prefix="emolib-test-results-")
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = re.sub(r'^results_dir = ".*"$', f"results_dir = {folder!r}", cell.source, flags=re.M)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under `-n 2`, one worker runs every tiny chapter, in order (08 reads the vectors 03 wrote in that
    worker's runs folder); the other test files are spread file by file, the longest first. (xdist's `xdist_group` mark cannot
    do this here: it renames node ids through an attribute pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ChaptersTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return CHAPTERS if path.startswith(CHAPTERS) else path

    config.option.loadscopereorder = False  # keep LONGEST_FIRST, not xdist's most-tests-first
    return ChaptersTogether(config, log)


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


@pytest.fixture(scope="session")
def llama_checkpoint(tmp_path_factory) -> Path:
    """A tiny random Llama saved as a researcher's checkpoint folder (weights, config, tokenizer)."""
    import torch
    import transformers as tf

    from emolib.models.tiny import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    config = tf.LlamaConfig(vocab_size=-(-len(tokenizer) // 8) * 8, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                            eos_token_id=5, bos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = tf.LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("checkpoint") / "my-llama"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
