"""Reliability: SIGKILL the pipeline anywhere and resume; every bad input gets one line and harms nothing.

The kill harness runs tests/harness/pipeline.py (chapters 1-3 on the tiny models) to completion once,
then again in a fresh runs folder where it is SIGKILLed at random moments inside each stage, rerun,
killed again, and finally allowed to finish. The resumed run must hold the same stories and dialogues
(none lost, none twice, same texts) and bit-identical activations and vectors.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from emolib.stories import corpus as C
from emolib.stories import design as D
from emolib.book import runner as book
from emolib.extraction import extract
from emolib import io
from emolib.errors import EmolibError, StoreError

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = ROOT / "tests" / "harness" / "pipeline.py"
STAGES = ("stories", "dialogues", "extraction", "vectors")


def _pipeline(runs: Path, kill_in: str | None = None, delay: float = 0.0) -> tuple[int, list[tuple[str, float]]]:
    """Run the pipeline; with `kill_in`, SIGKILL it `delay` s after it announces that stage."""
    env = {**os.environ, "EMOLIB_RUNS": str(runs), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(PIPELINE)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen: list[tuple[str, float]] = []
    try:
        for line in proc.stdout:
            if line.startswith("stage "):
                seen.append((line.split()[1], time.perf_counter()))
                if kill_in and seen[-1][0] == kill_in:
                    time.sleep(delay)
                    proc.send_signal(signal.SIGKILL)
                    break
        proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr.read()[-3000:])
    return proc.returncode, seen


def _records(path: Path) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(row["id"], row["text"]) for row in rows]


def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_result(tmp_path):
    reference = tmp_path / "reference"
    code, seen = _pipeline(reference)
    assert code == 0 and [stage for stage, _ in seen] == [*STAGES, "done"]
    durations = {stage: later - at for (stage, at), (_, later) in zip(seen, seen[1:])}
    # the balanced design rewrote short cells, so the kills below also land inside retry rounds
    assert any("/r1." in i for i, _ in _records(reference / "corpus" / "tiny" / "stories.jsonl"))

    killed = tmp_path / "killed"
    rng = random.Random(20261123)
    kills = 0
    for stage in ("stories", "stories", "dialogues", "extraction", "extraction", "vectors"):
        code, _ = _pipeline(killed, kill_in=stage, delay=rng.uniform(0.1, 0.9) * durations[stage])
        kills += code == -signal.SIGKILL
    assert kills >= 4  # the kills landed inside the stages, not after the end
    code, _ = _pipeline(killed)
    assert code == 0

    for name in ("stories.jsonl", "neutral.jsonl"):
        got = _records(killed / "corpus" / "tiny" / name)
        expected = _records(reference / "corpus" / "tiny" / name)
        assert len({i for i, _ in got}) == len(got), f"duplicate records in {name}"
        assert sorted(got) == sorted(expected), f"{name} differs from the uninterrupted run"
    for folder in ("activations/tiny", "vectors/tiny/tiny"):
        expected_files = sorted(p.relative_to(reference) for p in (reference / folder).rglob("*.safetensors"))
        assert expected_files and expected_files == sorted(p.relative_to(killed) for p in (killed / folder).rglob("*.safetensors"))
        for relative in expected_files:
            a, b = load_file(reference / relative), load_file(killed / relative)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), relative
    leftovers = [p for p in killed.rglob("*") if ".tmp-" in p.name or p.name.endswith(".partial")]
    assert leftovers == []


# --- the bad-input matrix (the cases not covered next to their modules) ------------------------------

def test_an_empty_corpus_says_to_run_the_first_chapters(tmp_path, tiny_gemma3):
    with pytest.raises(EmolibError, match="holds no stories or dialogues; run chapters 01 and 02 first"):
        D.select(C.Corpus(tmp_path / "nothing"))


def test_stories_all_shorter_than_the_token_rule(tmp_path, tiny_gemma3):
    settings = C.CorpusSettings(writer="scripted")
    store = C.Corpus(tmp_path / "short", settings)
    for job in C.story_jobs(settings, ["happy", "sad"], C.select_topics(2), 1):
        store.save(job, "She smiled at the door.", True, 6)
    for job in C.neutral_jobs(settings, C.select_topics(2), 1):
        store.save_dialogue(job, [("Person", "What is a door?"), ("AI", "A door is a panel."),
                                  ("Person", "And a wall?"), ("AI", "A wall is a side of a room.")], 30)
    before = {p.name: p.read_bytes() for p in (tmp_path / "short").iterdir()}
    with pytest.raises(EmolibError, match="no kept story .* shorter than 64 words"):
        D.select(C.Corpus(tmp_path / "short"))
    assert {p.name: p.read_bytes() for p in (tmp_path / "short").iterdir()} == before


def test_extraction_refuses_texts_without_a_position_past_the_rule(tiny_gemma3):
    ids = torch.tensor([[2, 5, 6, 7]])
    with pytest.raises(EmolibError, match="no token at position >= 50"):
        extract.reduce_batch(tiny_gemma3.model, [1], ids, torch.ones_like(ids))


@pytest.mark.parametrize("parameters, message", [
    ({"n_topics": "five"}, r"parameter n_topics of 01_stories must be int like its default 0, got 'five'"),
    ({"variance": "half"}, r"parameter variance of 03_extract must be float"),
    ({"n_topic": 3}, r"no chapter among .* takes a parameter 'n_topic'"),
])
def test_a_wrongly_typed_parameter_fails_before_anything_runs(tmp_path, parameters, message):
    out = tmp_path / "out"
    with pytest.raises(EmolibError, match=message):
        book.run_chapters("tiny", ["01_stories", "03_extract"], parameters, out_dir=out)
    assert not out.exists() or not any(out.iterdir())


def test_the_cli_reports_a_wrong_parameter_in_one_line(tmp_path):
    env = {**os.environ, "EMOLIB_RUNS": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "emolib", "run", "--model", "tiny", "--chapters", "01_stories",
                             "--out", str(tmp_path / "o"), "-p", "n_topics", "five"], capture_output=True, text=True,
                            env=env, cwd=ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "n_topics is a whole number" in result.stderr


def _fail_with(error_number: int):
    real_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:  # a partial write, then the disk is full
            real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(error_number, os.strerror(error_number))
    return write


def test_disk_full_while_appending_keeps_the_stored_jobs(tmp_path, monkeypatch):
    store = io.JobStore(tmp_path / "stories.jsonl")
    store.append_job("a", [{"id": "a/0", "text": "kept"}])
    before = (tmp_path / "stories.jsonl").read_bytes()
    monkeypatch.setattr(os, "write", _fail_with(errno.ENOSPC))
    with pytest.raises(StoreError, match="no space left on the disk writing .*stories.jsonl.*free some space"):
        store.append_job("b", [{"id": "b/0", "text": "lost"}])
    monkeypatch.undo()
    assert (tmp_path / "stories.jsonl").read_bytes() == before  # no torn line left
    assert io.JobStore(tmp_path / "stories.jsonl").done_jobs == {"a"}


def test_disk_full_on_an_atomic_write_leaves_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "vectors.safetensors"
    target.write_bytes(b"old and good")

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(StoreError, match="no space left on the disk writing .*vectors.safetensors"):
        io.atomic_write_bytes(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["vectors.safetensors"]


def test_errors_render_as_one_line_in_notebooks():
    error = StoreError("what is wrong; what to do")
    assert error._render_traceback_() == ["StoreError: what is wrong; what to do"]


def test_no_pickle_and_no_remote_code_anywhere():
    sources = [p for folder in ("emolib", "benchmarks", "tests") for p in (ROOT / folder).rglob("*.py")]
    forbidden = ("import pickle", "pickle.load", "trust_remote_code=True", "allow_pickle=True", "torch.load(",
                 "weights_only=False", "import dill", "joblib.load")
    offenders = [f"{p.relative_to(ROOT)}: {word}" for p in sources if p.name != "test_reliability.py"
                 for word in forbidden if word in p.read_text()]
    assert offenders == []
