"""How many CPU threads torch uses: chosen so that a shared 2-core box does not collapse.

Two torch processes with 2 threads each on 2 cores slow each other many-fold (the writer fell from 24 to 2.2
tokens/s beside one other job). So, unless told (`EMOLIB_THREADS`, else `OMP_NUM_THREADS`), emolib takes one thread
per process when another emolib process is working (each one that loads a model registers itself for as long as it
lives), and otherwise the cores that the tasks running now leave free (at least one). The choice and why are said in every
progress bar (`note`) and in `python -m emolib plan`.
"""

from __future__ import annotations

import atexit
import os
import tempfile
from pathlib import Path

_CHOSEN: tuple[int, str] | None = None


def _registry() -> Path:
    folder = Path(tempfile.gettempdir()) / f"emolib-active-{os.getuid()}"
    folder.mkdir(exist_ok=True)
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def other_workers() -> int:
    """Live emolib processes other than this one that have loaded a model."""
    count = 0
    for entry in _registry().iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            if _alive(int(entry.name)):
                count += 1
            else:
                entry.unlink(missing_ok=True)
    return count


def choose() -> tuple[int, str]:
    """(threads, why): `EMOLIB_THREADS`, else `OMP_NUM_THREADS`, else 1 beside another emolib process, else the cores
    that other running work leaves free (`running_elsewhere`)."""
    for name in ("EMOLIB_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return max(1, int(value)), f"{name}={value}"
            except ValueError:
                pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    others = other_workers()
    if others:
        return 1, f"{others} other emolib process{'es' if others > 1 else ''} on {cores} cores"
    busy, seen = running_elsewhere()
    free = max(1, min(cores, cores - int(busy + 0.5)))
    return free, f"{seen} on {cores} cores; EMOLIB_THREADS sets it"


def running_elsewhere(samples: int = 5, every: float = 0.1) -> tuple[float, str]:
    """How many cores other work holds now: the median of a few readings of the kernel's running tasks (less this
    process), which is Linux's instant view; the 1-minute load average trails a job that just ended by minutes (a run
    started right after one once took 1 thread of 2 for its whole extraction). Elsewhere the load average."""
    import statistics
    import time

    running = []
    for _ in range(samples):
        try:
            text = Path("/proc/stat").read_text()
        except OSError:
            break
        running += [int(line.split()[1]) - 1 for line in text.splitlines() if line.startswith("procs_running")]
        time.sleep(every)
    if running:
        now = float(statistics.median(running))
        return now, f"{now:.0f} other running task{'s' if now != 1 else ''}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return load, f"load {load:.1f}"


def apply() -> tuple[int, str]:
    """Choose once per process, set torch's intra-op threads, and register this process as working."""
    global _CHOSEN
    if _CHOSEN is None:
        import torch

        _CHOSEN = choose()
        torch.set_num_threads(_CHOSEN[0])
        marker = _registry() / str(os.getpid())
        marker.touch()
        atexit.register(lambda: marker.unlink(missing_ok=True))
    return _CHOSEN


def note() -> str:
    """What the progress bars say about threads ("" before a model was loaded in this process)."""
    return f"{_CHOSEN[0]} thread{'s' if _CHOSEN[0] > 1 else ''}: {_CHOSEN[1]}" if _CHOSEN else ""
