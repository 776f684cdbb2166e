"""Where things live, and writes that survive a kill.

Artefacts are written atomically (temp file, fsync, rename) so a killed job never leaves a half-written
file behind. Records that accumulate (stories, dialogues) go to an append-only JSONL file that is
written a whole job at a time and repaired on open: a torn last line is cut off, and a job whose
records are not all present is dropped so that it is regenerated, never half-kept.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import StoreError

_DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _disk_full(path: Path, error: OSError) -> StoreError:
    return StoreError(f"no space left on the disk writing {path} ({os.strerror(error.errno)}); free some space "
                      f"and rerun: what was already written is intact and the run resumes from it")


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
        clean = True
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                if number == len(lines) - 1:  # a torn final line from a kill mid-write
                    clean = False
                    break
                raise ValueError(f"{self.path}: line {number + 1} is not JSON; the file was edited or "
                                 "corrupted — move it aside to start over") from None
        by_job: dict[str, list[dict]] = {}
        for record in parsed:
            by_job.setdefault(record["job"], []).append(record)
        complete = {job for job, recs in by_job.items() if len(recs) == recs[0]["n_in_job"]}
        kept = [record for record in parsed if record["job"] in complete]
        if not clean or len(kept) != len(parsed) or (raw and not raw.endswith(b"\n")):
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


def _jsonl(records: Iterable[dict]) -> Iterable[bytes]:
    for record in records:
        yield (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
