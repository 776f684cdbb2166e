"""The tiny chapters, re-executed under other CPU kernel paths, agree with the committed outputs.

A reader's CPU is not ours: OpenBLAS picks its kernels by CPU type (and `OPENBLAS_CORETYPE`), ATen picks
AVX-512, AVX2 or scalar paths (`ATEN_CPU_CAPABILITY`), MKL its own (`MKL_ENABLE_INSTRUCTIONS`), and the
thread count changes how sums are split. Each changes the last bits of floats. This test re-runs the nbval
suite over `tests/notebooks/` in a child process with all of them switched to other paths, so `make test`
proves on any machine that the committed outputs hold beyond the bits of the machine that made them: the
figures and printed numbers at `nbval_tolerance`'s precision, the sampled texts exactly (the writer's
noise is keyed by token id, not by sort position), and every saved number within the same tolerance.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbval_tolerance

ROOT = Path(__file__).resolve().parents[1]
OTHER_KERNELS = {
    "ATEN_CPU_CAPABILITY": "default",  # ATen's scalar kernels instead of AVX2/AVX-512
    "OPENBLAS_CORETYPE": "Nehalem",  # SSE-only OpenBLAS kernels (numpy, scipy), safe on any x86-64
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",  # torch's BLAS without AVX
    "OMP_NUM_THREADS": "1",  # sums split differently from the default thread count
}
VOLATILE = {"seconds", "tokens_per_second", "load_seconds", "conversion_seconds",  # wall times
            "vectors_sha256"}  # a hash of float bits


def _stable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    return [_stable(v) for v in value] if isinstance(value, list) else value


def _saved(folder: Path) -> dict[str, object]:
    return {path.name: _stable(json.loads(path.read_text())) for path in sorted(folder.glob("*.json"))}


def test_tiny_chapters_agree_under_other_cpu_kernels(tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {**os.environ, **OTHER_KERNELS, "EMOLIB_TEST_RESULTS": str(results)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
               "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", "tests/notebooks"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert " passed" in done.stdout.splitlines()[-1] and "failed" not in done.stdout.splitlines()[-1]

    committed, rerun = _saved(ROOT / "tests" / "notebooks" / "results"), _saved(results)
    assert set(rerun) == set(committed)
    for name, saved in committed.items():
        differ = [key for key in saved if not nbval_tolerance.values_agree(saved[key], rerun[name].get(key))]
        assert not differ, f"{name}: {[(key, saved[key], rerun[name].get(key)) for key in differ]}"[:3000]


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
