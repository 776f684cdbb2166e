"""What each chapter cost: `book/<model>/timings.json` per scale and chapter, the wall time of the last
execution and of the last one that computed its stage (a rerun that reuses stored stories or activations
keeps the computing run's time), and the appendix's table of both scales."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io import atomic_write_json

STAGE_CHAPTERS = ("01_stories", "02_neutral", "03_extract")  # chapters that reuse stored work on a rerun


def read(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """`timings.json`: {scale: {chapter: {"computed_s", "last_run_s", "reused"}}} (an older flat file is read
    as the scale "unknown")."""
    if not path.exists():
        return {}
    recorded = json.loads(path.read_text())
    if recorded and all(isinstance(v, (int, float)) for v in recorded.values()):
        return {"unknown": {c: {"last_run_s": v, "computed_s": v, "reused": False} for c, v in recorded.items()}}
    return recorded


def record(out_dir: Path, timings: dict[str, float], results_dir: Path) -> None:
    """Per scale (the one chapter 1 recorded) and chapter: the wall time of the last execution, and of the
    last one that computed its stage — a rerun that reuses stored stories or activations keeps that one."""
    path = out_dir / "timings.json"
    recorded = read(path)
    stories = results_dir / "01_stories.json"
    scale = str(json.loads(stories.read_text()).get("scale", "unknown")) if stories.exists() else "unknown"
    for chapter, seconds in timings.items():
        saved = results_dir / f"{chapter}.json"
        rate = json.loads(saved.read_text()).get("tokens_per_second") if saved.exists() else None
        reused = chapter in STAGE_CHAPTERS and not rate  # the stage wrote or read no tokens: all was on disk
        entry = recorded.setdefault(scale, {}).setdefault(chapter, {})
        entry.update({"last_run_s": seconds, "reused": reused, **({} if reused else {"computed_s": seconds})})
    atomic_write_json(path, recorded)


def table(book_dir: Path, models: list[str]) -> Any:
    """Minutes per chapter for each model and scale: the execution that computed each stage, and where the
    last execution reused stored work, that rerun's minutes in brackets."""
    import pandas as pd

    columns: dict[str, dict[str, str]] = {}
    for model in models:
        for scale, chapters in read(book_dir / model / "timings.json").items():
            column = columns.setdefault(f"{model}, {scale} scale", {})
            total = 0.0
            for chapter, entry in chapters.items():
                computed = entry.get("computed_s")
                total += computed or 0.0
                notes = [entry["note"]] if entry.get("note") else []
                if entry.get("reused"):
                    notes.append(f"rerun reusing stored work: {entry['last_run_s'] / 60:.1f}")
                text = (f"{computed / 60:.1f}" if computed is not None else "not recorded") + (f" ({'; '.join(notes)})" if notes else "")
                column[chapter] = text
            column["total (minutes)"] = f"{total / 60:.1f}"
    return pd.DataFrame(columns).rename_axis("chapter")
