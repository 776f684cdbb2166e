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
SAVED_NUMBERS = "tests/test_cross_kernel.py"  # reads what those chapters saved: after them, on the same worker

# A reader's CPU is not ours: OpenBLAS picks its kernels by CPU type (and `OPENBLAS_CORETYPE`), ATen picks AVX-512,
# AVX2 or scalar paths (`ATEN_CPU_CAPABILITY`), MKL its own (`MKL_ENABLE_INSTRUCTIONS`), and the thread count changes
# how sums are split; each changes the last bits of floats. nbval re-executes the tiny chapters with all of them
# switched to other paths than the ones that wrote the committed outputs, so `make test` proves on any machine that
# those outputs hold beyond the bits of the machine that made them (tests/test_cross_kernel.py reads the numbers they
# saved). One run of the chapters does both checks; it used to be two, the second in a child process (212 s).
OTHER_KERNELS = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's scalar kernels instead of AVX2/AVX-512
    "OPENBLAS_CORETYPE": "Nehalem",  # SSE-only OpenBLAS kernels (numpy, scipy), safe on any x86-64
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",  # torch's BLAS without AVX
    "OMP_NUM_THREADS": "1",  # sums split differently from the default thread count
}

# The longest files first (`make test --durations`, 2026-12-07), so that the two workers end together: the one that
# draws the end-to-end book command takes the short files after it.
LONGEST_FIRST = ("tests/test_book_command.py", CHAPTERS, SAVED_NUMBERS, "tests/test_reliability.py",
                 "tests/test_keep_rule.py", "tests/test_extract.py", "tests/test_readme.py", "tests/test_book.py")


def _duration_rank(item: pytest.Item) -> int:
    path = item.nodeid.split("::", 1)[0]
    return next((i for i, prefix in enumerate(LONGEST_FIRST) if path.startswith(prefix)), len(LONGEST_FIRST))


RESULTS_KEY = pytest.StashKey[Path]()  # where this session's tiny chapters save their key numbers
OTHER_PATH_ITEMS = pytest.StashKey[int]()  # how many of their cells were set up under `OTHER_KERNELS`


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest test files first (a stable sort: the chapters keep their order). nbval re-runs the tiny chapters:
    their key numbers go to a temporary folder, not to the committed tests/notebooks/results/ (the `results_dir`
    parameter papermill injected is redirected; to $EMOLIB_TEST_RESULTS when set), where the cross-kernel test reads
    them back."""
    items.sort(key=_duration_rank)
    folder = os.environ.get("EMOLIB_TEST_RESULTS") or tempfile.mkdtemp(prefix="emolib-test-results-")
    config.stash[RESULTS_KEY] = Path(folder)
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is not None and "injected-parameters" in cell.get("metadata", {}).get("tags", []):
            cell.source = re.sub(r'^results_dir = ".*"$', f"results_dir = {folder!r}", cell.source, flags=re.M)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    """nbval starts a tiny chapter's kernel when its first cell is set up: that kernel gets the other CPU kernels
    (`OTHER_KERNELS`); the worker itself and every other test keep the machine's own."""
    if not item.nodeid.startswith(CHAPTERS):
        yield
        return
    saved = {name: os.environ.get(name) for name in OTHER_KERNELS}
    os.environ.update(OTHER_KERNELS)
    item.config.stash[OTHER_PATH_ITEMS] = item.config.stash.get(OTHER_PATH_ITEMS, 0) + 1
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name)
            else:
                os.environ[name] = value


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under `-n 2`, one worker runs every tiny chapter, in order (08 reads the vectors 03 wrote in that
    worker's runs folder), then the test of the numbers they saved; the other test files are spread file by file, the longest first. (xdist's `xdist_group` mark cannot
    do this here: it renames node ids through an attribute pytest 9 no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ChaptersTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return CHAPTERS if path.startswith(CHAPTERS) or path == SAVED_NUMBERS else path

    config.option.loadscopereorder = False  # keep LONGEST_FIRST, not xdist's most-tests-first
    return ChaptersTogether(config, log)


def git(root: Path, *args: str) -> str:
    """git in `root` with a throwaway identity (the tests commit a checkout copy to check `git status` after a run)."""
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, capture_output=True,
                          text=True, check=True).stdout


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
