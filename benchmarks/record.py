"""What every benchmark shares: the machine's measured fp32 matmul limit, a description of the machine and
versions, and writing the numbers to `benchmarks/results/<name>.json` (so a reader, the README and a
later run compare like with like)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def matmul_flops(seconds: float = 3.0, size: int = 2048) -> float:
    """Best fp32 GEMM FLOP/s over a few seconds: the machine's practical ceiling for this work (the `limit`)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best, started = 0.0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - t))
    return best


def _installed(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """CPU, cores, threads, and the versions that decide the numbers."""
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "commit": commit or None,
            "versions": {name: _installed(name) for name in ("torch", "transformers", "llama_cpp_python", "steering-vectors")},
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def write(name: str, payload: dict[str, Any]) -> Path:
    """`benchmarks/results/<name>.json`: the machine beside the numbers."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **payload}, indent=1) + "\n")
    print(f"numbers written to {path.relative_to(ROOT)}")
    return path
