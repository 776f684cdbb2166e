"""The README's code, run as printed (issue 40): its steering example on the embedded Gemma 3 270M with the published
vectors changes the generated text at ±0.3, and its one-call training example runs once its placeholders (a model
folder, story lists) are filled with the embedded model and published stories."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_the_readme_example_steers_the_embedded_model(monkeypatch):
    monkeypatch.chdir(ROOT)
    first, *_ = _blocks()
    printed = io.StringIO()
    namespace: dict = {}
    with contextlib.redirect_stdout(printed):
        exec(compile(first, "README.md", "exec"), namespace)  # noqa: S102 (the README's own code)
    lines = printed.getvalue().strip().splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == ["-0.3", "+0.0", "+0.3"]
    texts = [line.split(" ", 1)[1] for line in lines]
    assert texts[0] != texts[1] and texts[2] != texts[1], texts  # the push visibly changes what the model writes
    shown = (ROOT / "README.md").read_text()
    # what the README shows is what the example prints: its opening words (greedy decoding on another CPU's float
    # kernels may part ways at a near-tie late in a text, so the whole text is not held bit for bit)
    assert all(text[:24] in shown for text in texts), "the README's printed output is not what the example prints"
    namespace.clear()


def test_the_readme_training_example_runs_with_its_placeholders_filled(monkeypatch, tmp_path):
    import json

    from emolib import models

    monkeypatch.chdir(tmp_path)  # it writes happy.gguf where it runs
    _, second = _blocks()[:2]
    folder = models.load("270m").model.config.name_or_path  # the embedded model's converted checkpoint folder
    records = [json.loads(line) for line in (ROOT / "book" / "data" / "corpus" / "stories.jsonl").read_text().splitlines()]
    kept = {e: [r["text"] for r in records if r.get("emotion") == e and r.get("status") == "kept"][:4] for e in ("happy", "sad")}
    neutral = [json.loads(line)["text"] for line in (ROOT / "book" / "data" / "corpus" / "neutral.jsonl").read_text().splitlines()[:4]]
    fill = {'"path/to/model"': repr(folder), '{"happy": [...], "sad": [...]}': repr(kept), "neutral=[...]": f"neutral={neutral!r}"}
    skeleton, code = second, second
    for placeholder, value in fill.items():
        assert placeholder in second, placeholder
        skeleton, code = skeleton.replace(placeholder, "FILLED"), code.replace(placeholder, value)
    assert "..." not in re.sub(r"#.*", "", skeleton)  # no other placeholder (the stories themselves may hold `...`)
    namespace: dict = {}  # the block imports what it uses
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["ev"].emotions == ["happy", "sad"] and (tmp_path / "happy.gguf").exists()
