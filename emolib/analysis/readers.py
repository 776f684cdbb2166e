"""Text collections a user hands in: .txt (passages separated by blank lines), .jsonl, .csv, .parquet.

Files are streamed: with `max_texts`, a seeded reservoir sample is kept while reading, so a multi-GB
JSONL costs the memory of the sample, not of the file. Anything malformed stops at once with one line
naming the file, the place in it (line, row, passage) and what to do; records whose text is missing,
null, not a string or empty are skipped and counted (`frame.attrs["skipped"]`), and a file with no
usable text at all is refused.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import EmolibError

FORMATS = (".txt", ".jsonl", ".csv", ".parquet")
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def _encoding(path: Path, encoding: str | None) -> str:
    if encoding:
        try:
            codecs.lookup(encoding)
        except LookupError:
            raise EmolibError(f"unknown text encoding {encoding!r} for {path}; use e.g. 'utf-8' or 'latin-1'") from None
        return encoding
    with open(path, "rb") as handle:
        head = handle.read(4)
    return next((name for bom, name in _BOMS if head.startswith(bom)), "utf-8")


def _lines(path: Path, encoding: str | None) -> Iterator[tuple[int, str]]:
    """(line number, line) decoded as it streams; a byte that is not valid text names its line."""
    chosen = _encoding(path, encoding)
    wide = codecs.lookup(chosen).name.startswith(("utf-16", "utf-32"))
    number = 0
    with open(path, "rb") as raw:
        # byte lines decoded one by one (exact line numbers); UTF-16/32 need a decoding reader
        source = io.TextIOWrapper(raw, encoding=chosen, errors="strict", newline="") if wide else raw
        while True:
            try:
                line = source.readline()
                if not wide:
                    line = line.decode(chosen if number == 0 else chosen.replace("-sig", ""))
            except UnicodeDecodeError as error:
                raise EmolibError(f"{path}, line {number + 1}: not {chosen} text ({error.reason}, byte "
                                  f"0x{error.object[error.start]:02x}); re-save the file as UTF-8, or pass "
                                  f"encoding='latin-1' (or the file's encoding)") from None
            if not line:
                return
            number += 1
            yield number, line


def _txt(path: Path, encoding: str | None, *_: Any) -> Iterator[tuple[str, dict]]:
    passage: list[str] = []
    start = 1
    for number, line in _lines(path, encoding):
        if line.strip():
            if not passage:
                start = number
            passage.append(line.rstrip("\r\n"))
        elif passage:
            yield f"line {start}", {"text": "\n".join(passage)}
            passage = []
    if passage:
        yield f"line {start}", {"text": "\n".join(passage)}


def _jsonl(path: Path, encoding: str | None, *_: Any) -> Iterator[tuple[str, dict]]:
    for number, line in _lines(path, encoding):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise EmolibError(f"{path}, line {number}: not valid JSON ({error.msg} at column {error.colno}); fix or "
                              "delete that line (a file cut off while being written ends in a torn line)") from None
        except RecursionError:
            raise EmolibError(f"{path}, line {number}: JSON nested too deeply to read; fix or delete that line") from None
        if not isinstance(record, dict):
            raise EmolibError(f"{path}, line {number}: a JSON {type(record).__name__} where a record "
                              "({\"text\": ...}) was expected; each line must be one JSON object")
        yield f"line {number}", record


def _csv(path: Path, encoding: str | None, text_field: str, label_field: str | None) -> Iterator[tuple[str, dict]]:
    csv.field_size_limit(1 << 27)
    rows = csv.reader(line for _, line in _lines(path, encoding))
    try:
        header = next(rows, None)
        if header is None:
            raise EmolibError(f"{path} is empty: a .csv needs a header row naming its columns (e.g. text,label)")
        for wanted in (text_field, label_field):
            if wanted and wanted not in header:
                raise EmolibError(f"{path} has no column {wanted!r} (columns: {', '.join(header) or 'none'}); "
                                  "pass text_field=/label_field= with the right names")
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            yield f"row {rows.line_num}", dict(zip(header, row))
    except csv.Error as error:
        raise EmolibError(f"{path}, line {rows.line_num}: not valid CSV ({error}); fix that line") from None


def _parquet(path: Path, encoding: str | None, text_field: str, label_field: str | None) -> Iterator[tuple[str, dict]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is an install requirement
        raise EmolibError("reading .parquet needs pyarrow: pip install pyarrow") from None
    try:
        handle = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises its own types for a file that is not parquet
        raise EmolibError(f"{path} is not a readable parquet file ({type(error).__name__}: {str(error)[:120]})") from None
    names = handle.schema_arrow.names
    for wanted in (text_field, label_field):
        if wanted and wanted not in names:
            raise EmolibError(f"{path} has no column {wanted!r} (columns: {', '.join(names)}); "
                              "pass text_field=/label_field= with the right names")
    columns = [c for c in (text_field, label_field) if c]
    row = 0
    try:
        for batch in handle.iter_batches(columns=columns, batch_size=4096):
            for record in batch.to_pylist():
                row += 1
                yield f"row {row}", record
    except Exception as error:
        raise EmolibError(f"{path}, after row {row}: the parquet data is damaged ({type(error).__name__}); "
                          "re-export the file") from None


_READERS = {".txt": _txt, ".jsonl": _jsonl, ".csv": _csv, ".parquet": _parquet}


def read_texts(path: str | Path, text_field: str = "text", label_field: str | None = None,
               max_texts: int | None = None, seed: int = 0, encoding: str | None = None) -> pd.DataFrame:
    """A local collection as (id, text, label), in file order; with `max_texts`, a seeded uniform sample
    of that many records kept while streaming. `attrs`: records read, skipped (by reason), source."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise EmolibError(f"{path}: unsupported format {suffix or '(no extension)'!r}; use {', '.join(FORMATS)}")
    if not path.is_file():
        raise EmolibError(f"no texts at {path}; give a {', '.join(FORMATS)} file")
    if max_texts is not None and (not isinstance(max_texts, int) or max_texts < 1):
        raise EmolibError(f"max_texts must be a whole number >= 1, got {max_texts!r}")
    rng = random.Random(seed)
    sample: list[tuple[int, str, Any]] = []
    skipped: Counter[str] = Counter()
    usable = 0
    for index, (_, record) in enumerate(_READERS[suffix](path, encoding, text_field, label_field)):
        if text_field not in record:
            skipped["no text field"] += 1
            continue
        text = record[text_field]
        if text is None:
            skipped["null text"] += 1
            continue
        if not isinstance(text, str):
            skipped["text not a string"] += 1
            continue
        if not text.strip():
            skipped["empty text"] += 1
            continue
        label = record.get(label_field) if label_field else None
        item = (index, text, label)
        if max_texts is None or len(sample) < max_texts:
            sample.append(item)
        else:  # reservoir sampling: every usable record is kept with probability max_texts / usable
            slot = rng.randrange(usable + 1)
            if slot < max_texts:
                sample[slot] = item
        usable += 1
    if not sample:
        why = ", ".join(f"{n} {reason}" for reason, n in skipped.items()) or "the file holds no records"
        raise EmolibError(f"{path}: no usable text in field {text_field!r} ({why}); check text_field= and the file")
    sample.sort()
    frame = pd.DataFrame({"id": [f"{path.stem}/{i}" for i, _, _ in sample], "text": [t for _, t, _ in sample],
                          "label": [lab for _, _, lab in sample]})
    frame.attrs.update(source=str(path), records=usable + sum(skipped.values()), usable=usable, skipped=dict(skipped))
    return frame
