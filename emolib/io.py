"""Where things live, and writes that survive a kill.

Artefacts are written atomically (temp file, fsync, rename) so a killed job never leaves a half-written
file behind. Records that accumulate (stories, dialogues) go to an append-only JSONL file that is
written a whole job at a time and repaired on open: a torn last line is cut off, and a job whose
records are not all present is dropped so that it is regenerated, never half-kept.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import StoreError
from .threads import note

# emolib.__version__, kept here so that the stages below the front door can record it
EMOLIB_VERSION = "0.2.0"

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _disk_full(path: Path, error: OSError) -> StoreError:
    return StoreError(f"no space left on the disk writing {path} ({os.strerror(error.errno)}); free some space "
                      f"and rerun: what was already written is intact and the run resumes from it")


_HELD: dict[str, tuple[int, int]] = {}  # lock path -> (fd, depth): re-entrant within one process


@contextmanager
def store_lock(folder: str | Path, name: str = ".lock") -> Iterator[Path]:
    """One writer per store: an advisory `flock` on `<folder>/<name>` for as long as the block runs.

    A second process that wants to write the same store stops at once with one line naming the holder
    (pid, command, start time). The kernel drops a flock when its process dies, so a lock left by a
    killed run is simply taken over by the next one, which also removes the temp files its atomic writes
    left (per-rank locks of a distributed run leave them to rank 0's); nested use is re-entrant."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    key = str(path.resolve())
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 65536, 0) or b"{}")
        except ValueError:
            holder = {}
        os.close(fd)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if "started" in holder else "?"
        raise StoreError(f"{folder} is being written by another run (pid {holder.get('pid', '?')}, started {started}: "
                         f"{holder.get('command', '?')}); wait for it to finish or use another corpus/run folder") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"pid": os.getpid(), "started": time.time(),
                              "command": " ".join(sys.argv)[:300] or sys.executable}).encode(), 0)
    if name == ".lock":  # the only writer now: a temp file here is what a killed run's atomic write left behind
        for orphan in folder.glob(".*.tmp-*"):
            orphan.unlink(missing_ok=True)
    _HELD[key] = (fd, 1)
    try:
        yield path
    finally:
        del _HELD[key]
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def progress_disabled() -> bool:
    """Whether $TQDM_DISABLE silences progress, read as tqdm reads it (any non-empty value: tqdm casts it with
    `bool`, so even `0` silences its bars), but at each call: tqdm reads it once, when first imported. The bars and
    the runner's terminal stream both ask here, so the other libraries' bars and ours go quiet together."""
    return bool(os.environ.get("TQDM_DISABLE", ""))


def progress_bar(**kwargs: Any):
    """A tqdm bar for a long stage. Under `python -m emolib run/book` ($EMOLIB_PROGRESS names a file the
    runner streams to its terminal) the bar is written there, every 2 s, and not into the executed
    notebook; anywhere else (plain papermill, JupyterLab, scripts) it is the usual bar."""
    from tqdm import tqdm

    if note() and kwargs.get("desc"):  # the first line says how many threads this process works with, and why
        kwargs["desc"] = f"{kwargs['desc']} [{note()}]"
    if kwargs.get("disable") is None:
        kwargs["disable"] = progress_disabled()
    target = os.environ.get("EMOLIB_PROGRESS")
    if target and not kwargs["disable"]:
        handle = open(target, "a", buffering=1)
        width = 100 + len(kwargs.get("desc") or "")  # the counts and rate always fit beside a long description
        bar = tqdm(file=handle, mininterval=2.0, dynamic_ncols=False, ncols=width, **kwargs)
        close = bar.close

        def close_both() -> None:
            close()
            if not handle.closed:
                handle.write("\n")
                handle.close()
        bar.close = close_both  # type: ignore[method-assign]
        return bar
    return tqdm(**kwargs)


def show_rate(bar: Any, tokens: float, started: float) -> None:
    """Tokens so far and tokens/s beside a bar's texts/s (texts vary in length, and a writer's batch lands
    all its rows at once, so texts/s alone says little about how fast a stage goes)."""
    bar.set_postfix_str(f"{tokens:,.0f} tokens, {tokens / max(time.perf_counter() - started, 1e-9):.0f} tokens/s",
                        refresh=False)


def project_root() -> Path:
    """The checkout this runs in: `$EMOLIB_HOME`, else the nearest parent of the cwd with `_toc.yml`."""
    if os.environ.get("EMOLIB_HOME"):
        return Path(os.environ["EMOLIB_HOME"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").exists() and (folder / "emolib").is_dir():
            return folder
    return here


def runs_dir() -> Path:
    """Run artefacts (stories, activations, vectors): `$EMOLIB_RUNS`, else `<project>/runs`."""
    return Path(os.environ.get("EMOLIB_RUNS") or project_root() / "runs")


def cache_dir() -> Path:
    """Converted model weights: `$EMOLIB_CACHE`, else `$XDG_CACHE_HOME/emolib` or `~/.cache/emolib`."""
    if os.environ.get("EMOLIB_CACHE"):
        return Path(os.environ["EMOLIB_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "emolib"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno in _DISK_FULL:
            raise _disk_full(path, error) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in blocks (GGUFs and shards are large)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


class JobStore:
    """Append-only JSONL of records grouped in jobs; a job counts only when all its records are there.

    Each record carries `job` (a stable id) and `n_in_job`. A job is appended with one `write` and an
    fsync, so a kill loses at most the job being written, and `open` repairs what such a kill leaves.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict] = []
        self.done_jobs: set[str] = set()
        self._load_and_repair()

    def _load_and_repair(self) -> None:
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        parsed: list[dict] = []
        first_bad: int | None = None
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            record = _record(line)
            if record is None:
                first_bad = number if first_bad is None else first_bad
            elif first_bad is not None:  # a good record after a bad line: not a torn tail but a damaged file
                raise StoreError(f"{self.path}: line {first_bad + 1} is not a stored record, but records follow it; the "
                                 "file was edited or corrupted — move it aside to start over, or delete that line")
            else:
                parsed.append(record)
        by_job: dict[str, list[dict]] = {}
        for record in parsed:
            by_job.setdefault(record["job"], []).append(record)
        complete = {job for job, recs in by_job.items() if len(recs) == recs[0]["n_in_job"]}
        kept = [record for record in parsed if record["job"] in complete]
        # a kill mid-write leaves a torn last line (or garbage after the last record): cut it off
        if first_bad is not None or len(kept) != len(parsed) or (raw and not raw.endswith(b"\n")):
            atomic_write_bytes(self.path, b"".join(_jsonl(kept)))
        self.records = kept
        self.done_jobs = complete

    def append_job(self, job: str, records: list[dict]) -> None:
        """Append all records of one job at once (each gets `job` and `n_in_job`)."""
        if job in self.done_jobs:
            raise ValueError(f"job {job!r} is already stored")
        if not records:
            raise ValueError(f"job {job!r} has no records; store a placeholder so it counts as done")
        stamped = [{**record, "job": job, "n_in_job": len(records)} for record in records]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        start = os.fstat(fd).st_size
        try:
            data = memoryview(b"".join(_jsonl(stamped)))
            while data:
                data = data[os.write(fd, data):]
            os.fsync(fd)
        except OSError as error:
            os.ftruncate(fd, start)  # no torn record left behind
            if error.errno in _DISK_FULL:
                raise _disk_full(self.path, error) from None
            raise
        finally:
            os.close(fd)
        self.records.extend(stamped)
        self.done_jobs.add(job)


def _record(line: bytes) -> dict | None:
    """A stored record (a JSON object with its job id and job size), or None for anything else."""
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("job"), str)
            or not isinstance(record.get("n_in_job"), int) or record["n_in_job"] < 1):
        return None
    return record


def _jsonl(records: Iterable[dict]) -> Iterable[bytes]:
    for record in records:
        yield (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
