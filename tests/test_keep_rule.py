"""One corpus serves every analysed model: the keep rule is decided when a story is written, in words, and
stored with it; a published corpus is never written by the runs that analyse it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from emolib import models
from emolib.errors import EmolibError, StoreError
from emolib.extraction import stages
from emolib.stories import corpus as C
from emolib.stories import card as data_card
from emolib.stories import design as D
from emolib.stories import prompts
from emolib.writers.generate import Generation

WORDS = "she walked along the river and thought about the long day behind her while the light".split()


def _story(n_words: int, seed: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(n_words)) + f" dusk{seed % 2}."


class LengthWriter:
    """Stories whose length (in words) and leaking follow from the seed: 40, 66 or 100 words."""

    name = "lengths"

    def generate(self, messages_list, seeds, **kwargs):
        out = []
        for messages, seed in zip(messages_list, seeds):
            emotion = messages[0]["content"].rsplit("feels ", 1)[1].split(".")[0].split(",")[0]
            text = _story((40, 66, 100)[seed % 3], seed) + (f" She was {emotion}." if seed % 7 == 0 else "")
            out.append(Generation(text, 120, True))
        return out


class Dialogues:
    name = "lengths"

    def generate(self, messages_list, seeds, **kwargs):
        return [Generation("What is a river made of, and where does its water come from in the end? " * 3, 40, True)
                for _ in seeds]


class ScaledTokenizer:
    """A stand-in for another family's tokenizer: `factor` tokens per word (subword: > 1; merging: < 1),
    or the wrapped tokenizer's ids with every other one dropped for texts holding `merge_marker`."""

    def __init__(self, inner=None, factor: float = 1.0, merge_marker: str | None = None):
        self.inner, self.factor, self.merge_marker = inner, factor, merge_marker

    def __call__(self, texts, add_special_tokens=True, **kwargs):
        if self.inner is None:
            return {"input_ids": [[1] + [7] * int(len(t.split()) * self.factor) for t in texts]}
        encoded = self.inner(texts, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]
        return {"input_ids": [ids[::2] if self.merge_marker in text else ids for ids, text in zip(encoded, texts)]}

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _design() -> D.Design:
    return D.Design(["happy", "sad", "calm"], [i for i, _ in C.select_topics(3)], 2, 6)


def _settings() -> C.CorpusSettings:
    return C.CorpusSettings(writer="lengths", story_prompt=C.story_prompt("feels"))


def _write(folder: Path) -> C.Corpus:
    store = C.Corpus(folder, _settings())
    D.write_balanced(store, _design(), LengthWriter(), batch_size=4, progress=False)
    C.write_dialogues(store, C.neutral_jobs(store.settings, C.select_topics(3), 2), Dialogues(), progress=False)
    return store


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_keep_rule_is_stored_when_a_story_is_written(tmp_path, monkeypatch):
    store = _write(tmp_path / "c")
    records = store.stories.records
    assert {r["status"] for r in records} == {"kept", "short", "leak"}
    assert all(r["n_words"] == prompts.count_words(r["text"]) for r in records)
    assert all((r["status"] == "short") == (not r["leaks"] and r["n_words"] < prompts.MIN_WORDS) for r in records)
    # decided once: a later change of the rule does not move stored stories
    before = C.records_frame(store)[["id", "status"]]
    monkeypatch.setattr(prompts, "MIN_WORDS", 10)
    assert C.records_frame(C.Corpus(store.folder))[["id", "status"]].equals(before)


def test_two_tokenizers_select_the_same_stories(tmp_path):
    store = _write(tmp_path / "c")
    subword, merging = ScaledTokenizer(factor=1.6), ScaledTokenizer(factor=0.9)
    a, b = C.records_frame(store, None, subword), C.records_frame(store, None, merging)
    # under a rule counted in the reader's tokens these two would disagree on some stories ...
    stories = a["kind"] == "story"
    assert ((a["n_tokens"] >= 64) != (b["n_tokens"] >= 64))[stories].any()
    # ... under the stored rule they read the same statuses and select the same ids
    assert a["status"].tolist() == b["status"].tolist()
    chosen_a, _ = D.balanced_selection(a, _design())
    chosen_b, _ = D.balanced_selection(b, _design())
    assert chosen_a["id"].tolist() == chosen_b["id"].tolist() and len(chosen_a) == 3 * 3 * 2
    assert D.select(C.Corpus(store.folder)).stories["id"].tolist() == chosen_a["id"].tolist()


def test_analysing_a_published_corpus_leaves_it_byte_identical(runs, tiny_gemma3):
    store = _write(runs / "corpus" / "pub")
    (store.folder / C.DATA_CARD).write_text("# a published corpus\n")
    before = _snapshot(store.folder)
    # chapter 1 and 2 again: everything is there, nothing is written (not even a lock file)
    published = C.Corpus(store.folder, _settings())
    assert published.read_only
    stats = D.write_balanced(published, _design(), LengthWriter(), batch_size=4, progress=False)
    assert sum(r["written_now"] for r in stats["rounds"]) == 0
    C.write_dialogues(published, C.neutral_jobs(published.settings, C.select_topics(3), 2), Dialogues(), progress=False)
    # a smaller design inside the published one reads it too
    D.write_balanced(published, dataclasses.replace(_design(), emotions=["sad"], per_cell=1), LengthWriter(),
                     batch_size=4, progress=False)
    # chapter 3: extraction and vectors
    run = stages.build_vectors(tiny_gemma3, "pub", [0, 1], progress=False)
    assert len(run.stories) == 18
    assert _snapshot(store.folder) == before


def test_a_published_corpus_refuses_to_be_extended(runs):
    store = _write(runs / "corpus" / "pub")
    (store.folder / C.DATA_CARD).write_text("# a published corpus\n")
    before = _snapshot(store.folder)
    published = C.Corpus(store.folder, _settings())
    with pytest.raises(EmolibError, match="published corpus whose design does not hold this one"):
        D.write_balanced(published, dataclasses.replace(_design(), per_cell=3), LengthWriter(), batch_size=4,
                         progress=False)
    with pytest.raises(StoreError, match="published corpus .* pass another corpus name"):
        C.write_jobs(published, C.story_jobs(published.settings, ["angry"], C.select_topics(1), 1), LengthWriter(),
                     progress=False)
    assert _snapshot(store.folder) == before


def test_a_story_too_short_for_one_tokenizer_is_skipped_and_counted(runs, tiny_gemma3):
    store = _write(runs / "corpus" / "c")
    chosen = D.select(C.Corpus(store.folder)).stories
    merging = dataclasses.replace(tiny_gemma3, tokenizer=ScaledTokenizer(tiny_gemma3.tokenizer, merge_marker="dusk1"))
    run = stages.build_vectors(merging, "c", [0, 1], progress=False)
    expected = set(chosen.loc[chosen["text"].str.contains("dusk1") & (chosen["n_words"] < 2 * prompts.MIN_TOKENS - 2), "id"])
    assert expected and set(run.too_short) >= expected
    assert not set(run.stories["id"]) & set(run.too_short)
    assert len(run.stories) == len(chosen) - len(set(run.too_short) & set(chosen["id"]))
    assert f"{len(run.too_short)} kept texts skipped" in run.describe_texts()
    # the other model reads the whole selection from the same, unchanged corpus
    full = stages.build_vectors(tiny_gemma3, "c", [0, 1], progress=False)
    assert full.too_short == [] and full.stories["id"].tolist() == chosen["id"].tolist()


def test_a_published_corpus_refuses_other_settings(runs):
    store = _write(runs / "corpus" / "pub")
    (store.folder / C.DATA_CARD).write_text("# a published corpus\n")
    other = dataclasses.replace(_settings(), max_new_tokens=99)
    with pytest.raises(StoreError, match="published corpus written with other story settings \\(max_new_tokens differ\\)"):
        D.write_balanced(C.Corpus(store.folder, other), _design(), LengthWriter(), batch_size=4, progress=False)


def test_the_corpus_command_writes_what_the_chapters_would(tmp_path):
    import ast

    import papermill

    from emolib.__main__ import main

    root = Path(__file__).resolve().parents[1]
    for chapter, names in (("01_stories", ["prompt", "stories_per_prompt", "max_new_tokens", "max_attempts", "seed"]),
                           ("02_neutral", ["dialogues_per_topic", "seed"])):
        declared = papermill.inspect_notebook(str(root / "notebooks" / f"{chapter}.ipynb"))
        assert {name: ast.literal_eval(declared[name]["default"]) for name in names} == \
               {name: D.CORPUS_DEFAULTS[name] for name in names}
    assert main(["corpus", "--writer", "tiny", "--scale", "quick", "--emotions", "happy,sad", "--batch-size", "8",
                 "--out", str(tmp_path / "c")]) == 0
    written = C.Corpus(tmp_path / "c")
    assert D.Design.load(written.folder) == D.Design.from_scale("quick", "happy,sad")
    assert len(written.neutral.records) == D.get_scale("quick").dialogue_topics
    settings = C.CorpusSettings(writer="tiny", story_prompt=C.story_prompt("label"), max_new_tokens=320)
    assert json.loads((written.folder / "settings.json").read_text())["story"] == settings.for_kind("story")


def test_a_data_card_lists_every_file_with_its_hash_and_makes_the_corpus_read_only(tmp_path):
    from emolib.io import file_sha256

    store = _write(tmp_path / "c")
    assert not C.Corpus(store.folder).read_only
    card = data_card.write_data_card(store.folder, made_by="python -m emolib corpus --scale quick", how=["on a test machine"])
    text = card.read_text()
    assert text.startswith("---\nlicense:") and "python -m emolib corpus --scale quick" in text
    for name in ("stories.jsonl", "neutral.jsonl", "design.json", "settings.json"):
        assert f"| `{name}` |" in text and file_sha256(store.folder / name) in text
    assert f"fewer than {prompts.MIN_WORDS} words" in text
    assert C.Corpus(store.folder, _settings()).read_only


def test_the_data_card_is_verified_file_by_file(tmp_path):
    store = _write(tmp_path / "c")
    assert data_card.verify_data_card(store.folder) is None
    data_card.write_data_card(store.folder, made_by="test", how=[])
    table = data_card.verify_data_card(store.folder)
    assert table["matches"].all() and {"stories.jsonl", "neutral.jsonl", "design.json"} <= set(table.index)
    with open(store.folder / "neutral.jsonl", "a") as handle:
        handle.write("\n")
    assert not data_card.verify_data_card(store.folder).loc["neutral.jsonl", "matches"]
