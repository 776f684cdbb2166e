"""The corpus: data, prompts, the leak filter, splitting, and a store that survives kills."""

from __future__ import annotations

import json
import re

import pytest

from emolib.stories import corpus as C
from emolib.errors import EmolibError, StoreError
from emolib.writers.generate import Generation
from emolib.io import JobStore


def test_data_files_are_the_papers():
    emotions, topics = C.load_emotions(), C.load_topics()
    assert len(emotions) == 171 and len(set(emotions)) == 171
    assert {"at ease", "grief-stricken", "hope", "hopeful", "aroused"} <= set(emotions)
    assert len(topics) == 100
    assert set(C.QUICK_EMOTIONS) <= set(emotions)


def test_emotion_selection_suggests_the_closest_word():
    assert C.select_emotions("quick") == list(C.QUICK_EMOTIONS)
    assert len(C.select_emotions("all")) == 171
    assert C.select_emotions("happy, sad") == ["happy", "sad"]
    with pytest.raises(EmolibError, match=r"'hapy' is not one of the 171 emotion words.*did you mean 'happy'"):
        C.select_emotions(["hapy"])


def test_topics_are_a_prefix_of_one_permutation():
    small, large = C.select_topics(5, seed=3), C.select_topics(20, seed=3)
    assert large[:5] == small
    assert len({index for index, _ in large}) == 20
    assert C.select_topics(5, seed=4) != small
    with pytest.raises(EmolibError, match="n_topics must be an integer in 1..100"):
        C.select_topics(0)


@pytest.mark.parametrize("emotion,text", [
    ("happy", "She laughed with happiness."),
    ("happy", "He was HAPPIER than ever."),
    ("angry", "She slammed it down angrily."),
    ("angry", "His anger rose."),
    ("afraid", "I was afraid of it."),
    ("at ease", "Finally she felt at  ease."),
    ("self-confident", "His self confidence grew."),
    ("terrified", "It was terrifying."),
    ("embarrassed", "Such embarrassment."),
    ("hopeful", "She hoped it would work."),
    ("calm", "He calmly folded the letter."),
])
def test_leak_filter_catches_inflections(emotion, text):
    assert C.find_leaks(text, emotion)


@pytest.mark.parametrize("emotion,text", [
    ("happy", "What happened next surprised nobody."),
    ("sad", "The saddle was old."),
    ("calm", "Her hands trembled; she breathed slowly."),
    ("playful", "They play in the park."),
    ("tired", "The car tires squealed."),
    ("pleased", "Could you please pass the salt?"),
])
def test_leak_filter_ignores_other_words(emotion, text):
    assert C.find_leaks(text, emotion) == []


def test_splitting_on_the_marker_headings_and_numbers():
    text = "<NEW STORY>\nFirst story here.\n\n<NEW STORY>\nSecond story.\n"
    assert C.split_stories(text) == ["First story here.", "Second story."]
    assert C.split_stories("**Story 2: The Train**\nA ride.\n### Story 3\nAnother.") == ["A ride.", "Another."]
    numbered = "1. Once upon a time a woman walked into the old bakery.\n2. The man at the station waited for the last train home."
    assert len(C.split_stories(numbered)) == 2
    # a generation cut by the token limit loses its unfinished last sentence
    assert C.split_stories("He waited. Then he ran to the", finished=False) == ["He waited."]
    assert C.split_stories("no sentence ends here", finished=False) == []


def test_clean_turn_strips_labels_and_unfinished_sentences():
    assert C.clean_turn('Person: "How do I fix a tap?"') == "How do I fix a tap?"
    assert C.clean_turn("AI: First, close the valve. Then open", finished=False) == "First, close the valve."
    assert C.clean_turn("How long?\n\nExtra text", first_paragraph=True) == "How long?"


def test_prompts_share_a_long_prefix_and_name_the_emotion_last():
    settings = C.CorpusSettings(writer="w")
    a = settings.story_messages("happy", "A rainy afternoon.")[0]["content"]
    b = settings.story_messages("grief-stricken", "A broken phone")[0]["content"]
    assert a.endswith("Topic: A rainy afternoon\nEmotion: happy")
    shared = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    assert shared > 300
    many = C.CorpusSettings(writer="w", stories_per_prompt=3).story_messages("sad", "A letter")
    assert "3 different short stories" in many[0]["content"] and C.STORY_MARKER in many[0]["content"]
    assert many[-1] == {"role": "assistant", "content": C.STORY_MARKER + "\n"}


def test_neutral_jobs_draw_two_to_six_exchanges():
    settings = C.CorpusSettings(writer="w")
    jobs = C.neutral_jobs(settings, C.select_topics(100), 1)
    counts = {job.n_exchanges for job in jobs}
    assert counts == {2, 3, 4, 5, 6}


def test_job_store_repairs_a_torn_tail_and_drops_incomplete_jobs(tmp_path):
    path = tmp_path / "s.jsonl"
    store = JobStore(path)
    store.append_job("a", [{"id": "a/0"}, {"id": "a/1"}])
    store.append_job("b", [{"id": "b/0"}])
    # a kill after one of job c's two records, and in the middle of the next line
    with open(path, "a") as handle:
        handle.write(json.dumps({"id": "c/0", "job": "c", "n_in_job": 2}) + "\n")
        handle.write('{"id": "c/1", "jo')
    reopened = JobStore(path)
    assert reopened.done_jobs == {"a", "b"}
    assert [r["id"] for r in reopened.records] == ["a/0", "a/1", "b/0"]
    assert all(json.loads(line) for line in path.read_text().splitlines())
    with pytest.raises(ValueError, match="already stored"):
        reopened.append_job("a", [{"id": "a/0"}])


def test_job_store_refuses_a_corrupted_middle(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "a/0", "job": "a", "n_in_job": 1}\nnot json\n{"id": "b/0", "job": "b", "n_in_job": 1}\n')
    with pytest.raises(StoreError, match="line 2 is not a stored record, but records follow it"):
        JobStore(path)


class ScriptedWriter:
    """A writer that returns canned text, and can die after some batches like a killed process."""

    name = "scripted"

    def __init__(self, die_after: int | None = None):
        self.calls = 0
        self.die_after = die_after

    def generate(self, messages_list, seeds, **kwargs):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return [Generation(f"A story with seed {seed}. It has two sentences.", 12, True) for seed in seeds]


def test_a_killed_run_resumes_without_duplicates_or_losses(tmp_path):
    settings = C.CorpusSettings(writer="scripted")
    jobs = C.story_jobs(settings, ["happy", "sad", "calm"], C.select_topics(4), 2)
    store = C.Corpus(tmp_path / "corpus", settings)
    with pytest.raises(KeyboardInterrupt):
        C.write_jobs(store, jobs, ScriptedWriter(die_after=2), batch_size=5, progress=False)
    assert len(store.stories.done_jobs) == 10
    resumed = C.Corpus(tmp_path / "corpus", settings)
    stats = C.write_jobs(resumed, jobs, ScriptedWriter(), batch_size=5, progress=False)
    assert stats["already_done"] == 10
    ids = [r["id"] for r in C.Corpus(tmp_path / "corpus", settings).stories.records]
    assert len(ids) == len(set(ids)) == len(jobs)
    assert {i.rsplit("/", 1)[0] for i in ids} == {job.id for job in jobs}


def test_a_corpus_refuses_other_settings_but_allows_growth(tmp_path):
    settings = C.CorpusSettings(writer="scripted")
    store = C.Corpus(tmp_path / "c", settings)
    C.write_jobs(store, C.story_jobs(settings, ["happy"], C.select_topics(2), 1), ScriptedWriter(), progress=False)
    grown = C.Corpus(tmp_path / "c", settings)
    stats = C.write_jobs(grown, C.story_jobs(settings, ["happy", "sad"], C.select_topics(3), 1), ScriptedWriter(),
                         progress=False)
    assert (stats["already_done"], stats["jobs"]) == (2, 6)
    other = C.CorpusSettings(writer="scripted", max_new_tokens=99)
    with pytest.raises(StoreError, match="max_new_tokens"):
        C.write_jobs(C.Corpus(tmp_path / "c", other), C.story_jobs(other, ["calm"], C.select_topics(1), 1),
                     ScriptedWriter(), progress=False)
    # dialogues have their own settings: writing them with different story settings is fine
    C.write_dialogues(C.Corpus(tmp_path / "c", other), C.neutral_jobs(other, C.select_topics(1), 1), ScriptedWriter(),
                      progress=False)


def test_records_frame_applies_the_filters(tmp_path, tiny_gemma3):
    settings = C.CorpusSettings(writer="scripted")
    store = C.Corpus(tmp_path / "c", settings)
    jobs = C.story_jobs(settings, ["happy"], C.select_topics(3), 1)
    long_text = "She walked to the door and looked outside at the rain for a very long time. " * 6
    store.save(jobs[0], long_text, True, 80)
    store.save(jobs[1], "Short. But happy.", True, 5)
    store.save(jobs[2], "", True, 0)
    frame = C.records_frame(store, jobs, tiny_gemma3.tokenizer)
    assert dict(zip(frame["job"], frame["status"])) == {jobs[0].id: "kept", jobs[1].id: "leak", jobs[2].id: "empty"}
    summary = C.per_emotion_summary(frame)
    assert summary.loc["happy", "leak_rate"] == 0.5 and summary.loc["happy", "kept"] == 1


def test_settings_bind_only_once_records_exist(tmp_path):
    first = C.CorpusSettings(writer="scripted", ai_tokens=50)
    store = C.Corpus(tmp_path / "c", first)
    store.pending(C.neutral_jobs(first, C.select_topics(1), 1))  # checked, but nothing written
    second = C.CorpusSettings(writer="scripted", ai_tokens=99)
    C.write_dialogues(C.Corpus(tmp_path / "c", second), C.neutral_jobs(second, C.select_topics(1), 1),
                      ScriptedWriter(), progress=False)
    with pytest.raises(StoreError, match="ai_tokens"):
        C.write_dialogues(C.Corpus(tmp_path / "c", first), C.neutral_jobs(first, C.select_topics(2), 1),
                          ScriptedWriter(), progress=False)
    with pytest.raises(StoreError, match="read-only"):
        C.Corpus(tmp_path / "c").save(C.story_jobs(first, ["sad"], C.select_topics(1), 1)[0], "x", True, 1)


def test_a_local_writer_writes_each_dialogue_as_one_chat(tmp_path):
    from emolib.writers import generate
    from emolib import models

    writer = generate.LocalWriter(models.load("tiny-llama"), batch_size=8)
    opening, to_assistant, to_user = writer.chat_markers()
    assert (opening, to_assistant, to_user) == ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n",
                                                 "<|im_end|>\n<|im_start|>user\n")
    settings = C.CorpusSettings(writer="tiny", person_tokens=8, ai_tokens=12)
    store = C.Corpus(tmp_path / "c", settings)
    jobs = C.neutral_jobs(settings, C.select_topics(6), 1)
    stats = C.write_dialogues(store, jobs, writer, progress=False)
    assert stats["mode"] == "one continuous chat per dialogue"
    for job, record in zip(sorted(jobs, key=lambda j: j.id), sorted(store.neutral.records, key=lambda r: r["job"])):
        speakers = re.findall(r"^(Person|AI): ", record["text"], re.M)  # a turn may itself span lines
        assert speakers == ["Person", "AI"] * job.n_exchanges
        assert record["n_exchanges"] <= job.n_exchanges and "<|im_" not in record["text"]


def test_chat_script_inserts_markers_and_ends_after_the_last_answer():
    script = C.ChatScript(2, to_assistant=[9, 1, 7], to_user=[9, 1, 8], eos_id=9, person_tokens=3, ai_tokens=2)
    assert script.after(5) == [] and script.after(9) == [1, 7]  # the model ended its message
    assert script.after(6) == [] and script.after(6) == [9, 1, 8]  # the answer hit its cap: full switch
    assert script.after(4) == [] and script.after(4) == [] and script.after(4) == [9, 1, 7]
    assert script.after(3) == [] and not script.finished
    assert script.after(3) == [9] and script.finished
    assert script.turns == [[5], [6, 6], [4, 4, 4], [3, 3]]


@pytest.mark.parametrize("text,plain,sense_aware", [
    ("I'm happy to help. What kind of oven do you have?", ["happy", "kind"], []),
    ("I'd love to explain it. I hope this helps.", ["hope", "hopeful", "loving"], []),
    ("The water is safe to drink; check the content of the label.", ["content", "safe"], []),
    ("Sorry for any confusion. Stay alert while driving. A patient should rest.", ["alert", "patient", "sorry"], []),
    ("You should feel safe now. I am so happy for you, and grateful.", ["grateful", "happy", "safe"], ["grateful", "happy", "safe"]),
    ("They felt content and at ease, but I'm tired.", ["at ease", "content", "tired"], ["at ease", "content", "tired"]),
])
def test_the_neutral_rule_skips_idioms_but_not_feelings(text, plain, sense_aware):
    assert sorted(C.find_emotion_words(text, sense_aware=False)) == plain
    assert sorted(C.find_emotion_words(text)) == sense_aware


def test_the_writing_bar_moves_within_the_first_call(tmp_path, monkeypatch, tiny_llama):
    """Under `make book` bars go to a side file every 2 s: during the first writing call it already shows a
    count above 1 (the token budget used so far), not 0 or 1 until the whole batch returns."""
    import time

    from emolib.models import decoder_layers
    from emolib.writers.generate import LocalWriter

    side = tmp_path / "progress.txt"
    monkeypatch.setenv("EMOLIB_PROGRESS", str(side))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    seen = []

    def slow(module, args, output):  # about 3 s per call of 64 steps: past tqdm's 2 s refresh
        time.sleep(0.05)
        if len(seen) < 200:
            seen.append(side.read_text() if side.exists() else "")

    settings = C.CorpusSettings(writer="tiny-llama", max_new_tokens=64)
    jobs = C.story_jobs(settings, ["happy", "sad"], C.select_topics(2), 1)
    writer = LocalWriter(tiny_llama, batch_size=len(jobs))
    handle = decoder_layers(tiny_llama.model)[0].register_forward_hook(slow)
    try:
        stats = C.write_jobs(C.Corpus(tmp_path / "c", settings), jobs, writer, batch_size=len(jobs))
    finally:
        handle.remove()
    assert stats["jobs"] == 4 and len(seen) >= 40
    counts = [int(float(n)) for text in seen for n in re.findall(r"\| *(\d+(?:\.\d+)?)/256 ", text)]
    assert counts and max(counts) > 1, seen[-1][-300:]
    assert "256/256" in side.read_text()  # the budget is used up exactly when the call ends


def test_the_dialogue_bar_moves_within_the_first_call(tmp_path, monkeypatch, tiny_llama):
    """A local writer writes the quick scale's 50 dialogues in one call; their bar stood at 0/50 for all of it.
    It now counts the call's token budget as decoding goes, and ends at its total with every dialogue stored."""
    import time

    from emolib.models import decoder_layers
    from emolib.writers.generate import LocalWriter

    side = tmp_path / "progress.txt"
    monkeypatch.setenv("EMOLIB_PROGRESS", str(side))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    seen = []

    def slow(module, args, output):  # past tqdm's 2 s refresh within the one call
        time.sleep(0.05)
        if len(seen) < 200:
            seen.append(side.read_text() if side.exists() else "")

    settings = C.CorpusSettings(writer="tiny-llama", person_tokens=8, ai_tokens=12)
    jobs = C.neutral_jobs(settings, C.select_topics(3), 1)
    budget = len(jobs) * max(job.n_exchanges for job in jobs) * (8 + 12 + 16)
    handle = decoder_layers(tiny_llama.model)[0].register_forward_hook(slow)
    try:
        stats = C.write_dialogues(C.Corpus(tmp_path / "c", settings), jobs, LocalWriter(tiny_llama, batch_size=8))
    finally:
        handle.remove()
    assert stats["mode"] == "one continuous chat per dialogue" and len(seen) >= 40
    counts = [int(float(n)) for text in seen for n in re.findall(rf"\| *(\d+(?:\.\d+)?)/{budget} ", text)]
    assert counts and 1 < max(counts) < budget, seen[-1][-300:]
    final = side.read_text()
    assert f"{budget}/{budget}" in final and f"{len(jobs)}/{len(jobs)} dialogues" in final
