"""The tiny chapters, re-executed under other CPU kernel paths, agree with the committed outputs.

nbval re-executes `tests/notebooks/` with ATen's, OpenBLAS's and MKL's kernels switched to other paths than the
ones that wrote the committed outputs, and one thread (`conftest.OTHER_KERNELS`): its comparison proves the figures
and printed numbers at `nbval_tolerance`'s precision and the sampled texts exactly (the writer's noise is keyed by
token id, not by sort position). This file checks the rest: every number the chapters saved, within the same
tolerance. In `make test` it reads what that nbval run saved (it runs after the chapters, on their worker); run
alone, or without `--nbval`, it executes the chapters itself in a child process first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nbval_tolerance
from conftest import CHAPTERS, OTHER_KERNELS, OTHER_PATH_ITEMS, RESULTS_KEY

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = {"seconds", "tokens_per_second", "load_seconds", "conversion_seconds",  # wall times
            "vectors_sha256"}  # a hash of float bits


def _stable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    return [_stable(v) for v in value] if isinstance(value, list) else value


def _saved(folder: Path) -> dict[str, object]:
    return {path.name: _stable(json.loads(path.read_text())) for path in sorted(folder.glob("*.json"))}


def _chapters_ran_here(session: pytest.Session) -> bool:
    """Did this session collect every tiny chapter for nbval? (They run before this file: conftest. A chapter that
    failed leaves its numbers missing or wrong, which the comparison below reports.)"""
    chapters = {item.nodeid.split("::", 1)[0] for item in session.items if item.nodeid.startswith(CHAPTERS)}
    return len(chapters) == len(list((ROOT / CHAPTERS).glob("[0-9]*.ipynb")))


def test_tiny_chapters_agree_under_other_cpu_kernels(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if _chapters_ran_here(request.session):
        results = request.config.stash[RESULTS_KEY]
        chapter_items = [item for item in request.session.items if item.nodeid.startswith(CHAPTERS)]
        assert request.config.stash.get(OTHER_PATH_ITEMS, 0) == len(chapter_items)  # every kernel got the paths
    else:  # this file alone: run nbval over the chapters in a child process, with the same kernels
        results = tmp_path / "results"
        env = {**os.environ, **OTHER_KERNELS, "EMOLIB_TEST_RESULTS": str(results)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
                   "--nbval-current-env", "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", CHAPTERS]
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
        assert " passed" in done.stdout.splitlines()[-1] and "failed" not in done.stdout.splitlines()[-1]

    committed, rerun = _saved(ROOT / "tests" / "notebooks" / "results"), _saved(results)
    assert set(rerun) == set(committed)
    for name, saved in committed.items():
        differ = [key for key in saved if not nbval_tolerance.values_agree(saved[key], rerun[name].get(key))]
        assert not differ, f"{name}: {[(key, saved[key], rerun[name].get(key)) for key in differ]}"[:3000]


def test_the_other_paths_are_taken() -> None:
    """The variables do switch the paths: torch started with them reports ATen's scalar kernels."""
    probe = "import torch; print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    native = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    other = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **OTHER_KERNELS}, capture_output=True,
                           text=True, check=True).stdout.split()
    assert other == ["DEFAULT", "1"] and native[0] != "DEFAULT"


def test_the_tolerance_accepts_last_bits_and_rejects_real_changes() -> None:
    agree = nbval_tolerance.texts_agree
    assert agree("r = 0.4153 (p = 0.0012)", "r = 0.4152999 (p = 0.0012)")
    assert agree("r = 0.415", "r = 0.416")  # a rounding flip in the last printed digit
    assert not agree("r = 0.41", "r = 0.42") and not agree("share 0.2", "share 0.3")  # short numbers: 1e-3 only
    assert agree("| -0.000 | 0.5 |", "|  0.000 | 0.5 |")  # a table re-padded by one character
    assert agree("share 7.47393e-33", "share -2.1e-32")  # numerical zeros
    assert not agree("kept 341 stories", "kept 342 stories")  # integers exactly
    assert not agree("r = 0.415", "r = 0.425")
    assert not agree("valence r = 0.41", "arousal r = 0.41")  # the words too
    assert not agree("[0.1, 0.2]", "[0.1, 0.2, 0.3]")
    assert nbval_tolerance.values_agree({"y": [0.340032, 1]}, {"y": [0.340031, 1]})
    assert not nbval_tolerance.values_agree({"y": [0.340032, 1]}, {"y": [0.350032, 1]})
    assert not nbval_tolerance.values_agree({"y": [0.340032, 1]}, {"y": [0.340032, 2]})
    # an estimate near zero in a record with an interval may move by 1e-3 of the interval's width, no more
    slope = {"emotion": "calm", "slope": 0.000365147739648819, "low": -1.12, "high": 1.04, "n": 8}
    assert nbval_tolerance.values_agree([slope], [{**slope, "slope": 0.00036577731370925905}])
    assert not nbval_tolerance.values_agree([slope], [{**slope, "slope": 0.004}])
    assert not nbval_tolerance.values_agree([slope], [{**slope, "n": 9}])
    assert not nbval_tolerance.values_agree([slope], [{**slope, "emotion": "happy"}])
    assert not nbval_tolerance.values_agree({"slope": 0.000365147739648819}, {"slope": 0.00036577731370925905})
