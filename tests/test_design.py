"""The balanced design: refill of short cells with deterministic seeds, resume with retries, the selection,
and story fidelity measured from the text alone."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emolib.stories import corpus as C
from emolib.stories import card as data_card
from emolib.stories import design as D
from emolib.analysis import fidelity
from emolib.errors import EmolibError
from emolib.writers.generate import Generation

ROOT = Path(__file__).resolve().parents[1]
LONG = "She walked to the door and looked outside at the rain for a very long time. " * 6


class LeakyWriter:
    """Writes a long story, but names the emotion when its seed says so (or always, for `hopeless`)."""

    name = "leaky"

    def __init__(self, hopeless: str | None = None, die_after: int | None = None, by_seed: bool = True):
        self.hopeless, self.die_after, self.by_seed, self.calls = hopeless, die_after, by_seed, 0

    def generate(self, messages_list, seeds, **kwargs):
        if self.die_after is not None and self.calls >= self.die_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        out = []
        for messages, seed in zip(messages_list, seeds):
            emotion = messages[0]["content"].rsplit("feels ", 1)[1].split(".")[0].split(",")[0]
            leak = (self.by_seed and seed % 3 == 0) or emotion == self.hopeless
            out.append(Generation(f"{LONG} Seed {seed}." + (f" She felt {emotion}." if leak else ""), 90, True))
        return out


def _design(per_cell: int = 2, max_attempts: int = 6) -> D.Design:
    return D.Design(["happy", "sad", "calm"], [i for i, _ in C.select_topics(3)], per_cell, max_attempts)


def _settings() -> C.CorpusSettings:
    return C.CorpusSettings(writer="leaky", story_prompt=C.story_prompt("feels"))


def test_retry_seeds_follow_from_the_cell_and_the_round():
    design, settings = _design(), _settings()
    need = {("sad", design.topics[0]): 2}
    first, again = D.retry_jobs(settings, design, 1, need), D.retry_jobs(settings, design, 1, need)
    assert [(j.id, j.seed) for j in first] == [(j.id, j.seed) for j in again]
    assert [j.id for j in first] == [f"story/sad/{design.topics[0]:03d}/r1.0", f"story/sad/{design.topics[0]:03d}/r1.1"]
    later = D.retry_jobs(settings, design, 2, need)
    original = {j.seed for j in D.first_jobs(settings, design)}
    assert not {j.seed for j in first} & {j.seed for j in later} and not {j.seed for j in first} & original
    assert [D.attempt_of(j.id) for j in first + later] == [1, 1, 2, 2]


def test_short_cells_are_rewritten_until_every_cell_holds_its_quota(tmp_path, tiny_gemma3):
    design = _design()
    store = C.Corpus(tmp_path / "c", _settings())
    stats = D.write_balanced(store, design, LeakyWriter(), batch_size=4, progress=False)
    assert len(stats["rounds"]) > 1  # a third of the seeds leak: some cells needed retries
    frame = C.records_frame(store, None, tiny_gemma3.tokenizer)
    chosen, short = D.balanced_selection(frame, design)
    assert short == []
    assert chosen.groupby(["emotion", "topic_index"]).size().eq(design.per_cell).all()
    assert (chosen["status"] == "kept").all() and len(chosen) == 3 * 3 * design.per_cell
    report = D.fill_report(frame, design)
    assert report["fill_rate"] == 1.0 and report["kept_per_emotion"] == {"min": 6, "median": 6.0}
    assert D.Design.load(store.folder) == design


def test_cells_that_stay_short_are_named(tmp_path, tiny_gemma3):
    design = _design(max_attempts=3)
    store = C.Corpus(tmp_path / "c", _settings())
    stats = D.write_balanced(store, design, LeakyWriter(hopeless="calm", by_seed=False), batch_size=4,
                             progress=False)
    assert len(stats["rounds"]) == 3  # bounded
    report = D.fill_report(C.records_frame(store, None, tiny_gemma3.tokenizer), design)
    assert report["cells_full"] == 6 and len(report["short_cells"]) == 3
    assert all(cell.startswith("calm / topic ") and cell.endswith("(0 of 2)") for cell in report["short_cells"])


def test_a_killed_refill_resumes_to_the_same_stories(tmp_path, tiny_gemma3):
    design = _design()
    reference = C.Corpus(tmp_path / "ref", _settings())
    D.write_balanced(reference, design, LeakyWriter(), batch_size=4, progress=False)
    for die_after in (3, 5, 6):  # inside the first attempt, and inside the retry rounds
        killed = C.Corpus(tmp_path / f"killed-{die_after}", _settings())
        with pytest.raises(KeyboardInterrupt):
            D.write_balanced(killed, design, LeakyWriter(die_after=die_after), batch_size=4,
                             progress=False)
        D.write_balanced(C.Corpus(killed.folder, _settings()), design, LeakyWriter(), 
                         batch_size=4, progress=False)
        got = sorted((r["id"], r["text"]) for r in C.Corpus(killed.folder).stories.records)
        assert got == sorted((r["id"], r["text"]) for r in reference.stories.records)


def test_extraction_reads_the_balanced_selection(tmp_path, tiny_gemma3):
    design = _design(per_cell=1)
    store = C.Corpus(tmp_path / "c", _settings())
    D.write_balanced(store, design, LeakyWriter(), batch_size=4, progress=False)
    # an extra kept story in a full cell (a larger earlier run, say) is not used
    extra = C.Job("story/happy/{:03d}/9".format(design.topics[0]), "story", design.topics[0], "t", 9, 1,
                  [], emotion="happy")
    store.save(extra, LONG, True, 90)
    C.write_dialogues(store, C.neutral_jobs(store.settings, C.select_topics(2), 2), _Dialogues(), progress=False)
    chosen = D.select(C.Corpus(store.folder))
    stories, _ = chosen.stories, chosen.neutral
    assert len(stories) == 9 and extra.id + "/0" not in set(stories["id"])


class _Dialogues:
    name = "dialogues"

    def generate(self, messages_list, seeds, **kwargs):
        return [Generation("How do I cook rice? Rinse it, then simmer it for twenty minutes in a covered pot.", 20, True)
                for _ in seeds]


def test_scales_and_bad_design_input():
    quick, full = D.Design.from_scale("quick"), D.Design.from_scale("full")
    assert (quick.stories_per_emotion, full.stories_per_emotion) == (2, 24) and len(full.emotions) == 171
    assert full.topics[:2] == quick.topics  # the full corpus extends the quick one
    assert D.Design.from_scale("quick", n_topics=3, per_cell=2).stories_per_emotion == 6
    assert D.Design.from_scale("full", n_topics=5).scale == "full (custom)"
    with pytest.raises(EmolibError, match="unknown scale 'huge'; choose one of: quick, full"):
        D.Design.from_scale("huge")
    with pytest.raises(EmolibError, match="per_cell must be a whole number >= 0"):
        D.Design.from_scale("quick", per_cell=-1)
    with pytest.raises(EmolibError, match="unknown story prompt 'fancy'"):
        C.story_prompt("fancy")


def test_a_scale_fills_only_what_a_chapter_left_at_zero():
    quick = D.get_scale("quick")
    assert quick.fill(n_prompts=0, alphas="", blackmail_trials=5) == replace(quick, blackmail_trials=5)
    assert quick.fill(hack_samples=None).hack_samples == quick.hack_samples
    with pytest.raises(EmolibError, match="a scale has no setting 'n_stories'"):
        quick.fill(n_stories=3)
    for scale in D.SCALES.values():  # every scale's dose-response has its baseline and both signs
        alphas = [float(a) for a in scale.alphas.split(",")]
        assert 0.0 in alphas and min(alphas) < 0 < max(alphas)
    assert quick.stories_per_emotion < D.SCALES["full"].stories_per_emotion


def test_the_published_steering_chapters_ran_at_the_full_scale():
    """book/<model>/ is the full scale: its chapter 7 settings are the ones `full` names (a change to SCALES
    that the published chapters did not run with fails here until they are re-executed)."""
    full = D.SCALES["full"]
    saved = sorted((ROOT / "book").glob("*/results/07_steering.json"))
    assert saved
    for path in saved:
        steering = json.loads(path.read_text())
        assert steering["alphas"] == [float(a) for a in full.alphas.split(",")], path
        assert (steering["prompts"], steering["blackmail_trials"]) == (full.n_prompts, full.blackmail_trials), path
        assert steering["reward_hacking"]["per_task"] == full.hack_samples, path


def test_fidelity_reads_the_emotion_from_the_words_without_the_emotion_words():
    pleasant = "sunshine laughter gift party friends vacation"
    unpleasant = "funeral disease grave pain accident prison"
    calmish = "quiet garden pillow nap blanket meadow"
    rows = []
    for emotion, words in (("happy", pleasant), ("joyful", pleasant), ("sad", unpleasant), ("miserable", unpleasant),
                           ("relaxed", calmish), ("serene", calmish), ("furious", unpleasant + " shouting fight")):
        rows += [{"emotion": emotion, "text": f"The {w} and the day." } for w in words.split()]
    result = fidelity.story_fidelity(pd.DataFrame(rows), n_boot=200)
    assert result.valence_r > 0.8 and result.valence_ci[0] > 0.3
    assert result.vader_agreement > 0.5
    # the interval resamples stories within emotion: every story 4 times over halves its width (resampling whole
    # emotions, or not resampling at all, does not; arousal, whose r is far from 1, is near the normal regime)
    more = fidelity.story_fidelity(pd.DataFrame(rows * 4), n_boot=200)
    width, width_more = np.diff(result.arousal_ci)[0], np.diff(more.arousal_ci)[0]
    assert width > 0 and 0.35 < width_more / width < 0.7
    assert more.valence_r == pytest.approx(result.valence_r)  # the estimate itself does not move
    # the same words told for the opposite emotions: r is negative and so is its whole interval (an abs(r), or
    # emotion means matched to other emotions' ratings, breaks this)
    swapped = {"happy": "sad", "joyful": "miserable", "sad": "happy", "miserable": "joyful"}
    flipped = fidelity.story_fidelity(pd.DataFrame(rows).replace({"emotion": swapped}), n_boot=200)
    assert flipped.valence_r < -0.3 and flipped.valence_ci[1] < 0
    # the emotion words themselves are never counted: a leak cannot raise fidelity
    scores = fidelity.word_scores(["happy happiness joyful sad sadly", "happy sunshine"])
    assert np.isnan(scores.loc[0, "valence"]) and scores.loc[1, "rated_words"] == 1
    with pytest.raises(EmolibError, match="at least 3 rated emotions"):
        fidelity.story_fidelity(pd.DataFrame(rows[:6]))


def test_fidelity_intervals_have_the_width_of_the_sampling_error():
    """30 independent corpora from one known process (each story names one word: from its emotion's pool half the
    time, from all pools otherwise): r +- 1.96 bootstrap SE covers the mean r across corpora in most of them, and
    the bootstrap SE is about the spread of r across corpora. An interval of r +- 1 SE, an SE of the mean of the
    replicates instead of their SD, or replicates that resample emotions instead of stories, all break this. (The
    percentile interval of the replicates does about as well on these data, whose replicates are barely pulled
    below the estimate: this test does not tell the two apart; test_geometry's bootstrap test does.)"""
    pools = {"pleasant": "sunshine laughter gift party friends vacation holiday music".split(),
             "unpleasant": "funeral disease grave pain accident prison debt illness".split(),
             "calm": "quiet garden pillow nap blanket meadow lake book".split()}
    kinds = {"happy": "pleasant", "joyful": "pleasant", "sad": "unpleasant", "miserable": "unpleasant",
             "relaxed": "calm", "serene": "calm", "furious": "unpleasant"}
    every = sum(pools.values(), [])
    results = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        words = [rng.choice(pools[kind] if rng.random() < 0.5 else every) for kind in kinds.values() for _ in range(6)]
        emotions = [emotion for emotion in kinds for _ in range(6)]
        rows = [{"emotion": emotion, "text": f"The {word} and the day."} for emotion, word in zip(emotions, words)]
        results.append(fidelity.story_fidelity(pd.DataFrame(rows), n_boot=100, seed=seed))
    for measure in ("valence", "arousal"):
        r = np.array([getattr(f, f"{measure}_r") for f in results])
        ci = np.array([getattr(f, f"{measure}_ci") for f in results])
        covered = np.mean((ci[:, 0] <= r.mean()) & (r.mean() <= ci[:, 1]))
        se = np.diff(ci, axis=1)[:, 0] / 3.92
        assert covered >= 0.75, measure
        assert 0.6 < se.mean() / r.std(ddof=1) < 1.7, measure


def test_a_finished_design_reruns_without_writing(tmp_path, tiny_gemma3):
    design = _design(per_cell=1)
    store = C.Corpus(tmp_path / "c", _settings())
    first = D.write_balanced(store, design, LeakyWriter(), batch_size=4, progress=False)
    assert first["tokens_per_second"] > 0
    again = D.write_balanced(C.Corpus(store.folder, _settings()), design, LeakyWriter(die_after=0), 
                             batch_size=4, progress=False)  # a writer that dies if asked for anything
    assert "tokens_per_second" not in again and again["generated_tokens"] == 0
    assert [r["written_now"] for r in again["rounds"]] == [0] * len(again["rounds"])


# --- the deep extension (issue 37) --------------------------------------------------------------------------

def _base_corpus(runs: Path) -> tuple[C.Corpus, D.Design]:
    """A stored base corpus under runs/corpus/base, written as a published one is (settings, design, records)."""
    design = _design(per_cell=1)
    store = C.Corpus(runs / "corpus" / "base", _settings())
    D.write_balanced(store, design, LeakyWriter(), batch_size=4, progress=False)
    return store, design


def _leaky(name: str = "leaky", **kwargs) -> LeakyWriter:
    writer = LeakyWriter(**kwargs)
    writer.name = name
    return writer


def test_a_deep_extension_keeps_the_base_first_and_rewrites_nothing(runs):
    base, design = _base_corpus(runs)
    before = (base.folder / "stories.jsonl").read_bytes()
    base_selection, _ = D.balanced_selection(C.records_frame(C.Corpus(base.folder)), design)
    deep = runs / "corpus" / "deep-tiny"
    stats = D.deepen_corpus(deep, "base", ["happy", "sad"], 3, _leaky(), batch_size=4, progress=False)
    assert stats["generated_tokens"] > 0 and len(stats["rounds"]) > 1  # a third of the seeds leak: retries ran
    assert (base.folder / "stories.jsonl").read_bytes() == before  # nothing rewritten
    own = {r["job"] for r in C.Corpus(deep).stories.records}
    assert own and not own & {r["job"] for r in base.stories.records}  # no job id shared with the base
    deep_design = D.Design.load(deep)
    assert deep_design.base == design and deep_design.round_offset == design.max_attempts - 1
    frame = C.records_frame(C.Corpus(deep))
    chosen, short = D.balanced_selection(frame, deep_design)
    assert short == []
    counts = chosen.groupby(["emotion", "topic_index"]).size()
    assert all(counts[("happy", t)] == 3 and counts[("calm", t)] == 1 for t in design.topics)
    assert set(base_selection["id"]) <= set(chosen["id"])  # the base's stories stay in every cell
    # the base's own selection, read through the base, is unchanged (the 171-emotion selection of the book)
    again, _ = D.balanced_selection(C.records_frame(C.Corpus(base.folder)), design)
    assert again["id"].tolist() == base_selection["id"].tolist()
    weights = D.cell_weights(chosen, deep_design)
    assert set(weights.values()) == {1.0}  # every cell at its own quota: 3 for the deep emotions, 1 for calm
    assert D.fill_report(frame, deep_design)["kept_per_emotion"] == {"min": 9, "median": 9.0}
    # a rerun reads the stored set and writes nothing
    again_stats = D.deepen_corpus(deep, "base", ["happy", "sad"], 3, _leaky(die_after=0), batch_size=4, progress=False)
    assert again_stats["generated_tokens"] == 0


def test_a_killed_deep_extension_resumes_to_the_same_stories(runs):
    _base_corpus(runs)
    reference = runs / "corpus" / "deep-ref"
    D.deepen_corpus(reference, "base", ["happy", "sad"], 3, _leaky(), batch_size=4, progress=False)
    for die_after in (1, 3):
        killed = runs / "corpus" / f"deep-killed-{die_after}"
        with pytest.raises(KeyboardInterrupt):
            D.deepen_corpus(killed, "base", ["happy", "sad"], 3, _leaky(die_after=die_after), batch_size=4, progress=False)
        D.deepen_corpus(killed, "base", ["happy", "sad"], 3, _leaky(), batch_size=4, progress=False)
        got = sorted((r["id"], r["text"]) for r in C.Corpus(killed).stories.records)
        assert got == sorted((r["id"], r["text"]) for r in C.Corpus(reference).stories.records)


def test_deepening_refuses_what_would_change_the_base(runs):
    _base_corpus(runs)
    with pytest.raises(EmolibError, match="was written by 'leaky'; deepen it with the same writer"):
        D.deepen_corpus(runs / "corpus" / "d", "base", ["happy"], 3, _leaky("other"), progress=False)
    with pytest.raises(EmolibError, match="per_cell must exceed the base's 1"):
        D.deepen_corpus(runs / "corpus" / "d", "base", ["happy"], 1, _leaky(), progress=False)
    with pytest.raises(EmolibError, match="the base design has no stories for 'angry'"):
        D.deepen_corpus(runs / "corpus" / "d", "base", ["angry"], 3, _leaky(), progress=False)
    assert D.select_emotions("deep")[:2] == ["alert", "angry"] and len(D.select_emotions("deep")) == 50


def test_a_deep_extension_gets_a_data_card_that_verifies(runs):
    base, _ = _base_corpus(runs)
    data_card.write_data_card(base.folder, made_by="python -m emolib corpus --scale quick", how=["on a test machine"])
    deep = runs / "corpus" / "deep-card"
    D.deepen_corpus(deep, "base", ["happy", "sad"], 3, _leaky(), batch_size=4, progress=False)
    card = data_card.write_data_card(deep, made_by="python -m emolib corpus --extends base --per-cell 3", how=["here"])
    text = card.read_text()
    assert "first in every cell" in text and "the base's data card" in text
    assert data_card.verify_data_card(deep)["matches"].all()
    assert C.Corpus(deep).read_only  # published: analysing it never writes to it
    (deep / "stories.jsonl").write_text((deep / "stories.jsonl").read_text() + "\n")
    assert not data_card.verify_data_card(deep)["matches"].all()


def test_chapter_4_resamples_by_scale_and_the_published_chapter_ran_the_full_counts():
    """The quick preview's chapter 4 used the full counts (about 25 min on 2 cores, most of it the baselines' joint
    bootstrap, whose cost hardly depends on the stories); its counts are now the scale's. The published chapters
    must still hold the full scale's counts."""
    quick, full = D.SCALES["quick"], D.SCALES["full"]
    counts = ("geometry_boot", "layer_boot", "baseline_boot", "permutations", "split_halves", "scaling_draws")
    assert all(0 < getattr(quick, c) < getattr(full, c) for c in counts)
    names = dict(zip(("n_boot", "n_boot_layers", "n_boot_baselines", "n_perm", "n_splits", "scaling_draws"), counts))
    published = sorted((ROOT / "book").glob("*/04_geometry.ipynb"))
    assert published
    for path in published:
        cells = json.loads(path.read_text())["cells"]
        chosen: dict = {}
        for cell in cells:  # the parameters cell, then what papermill injected over it
            if {"parameters", "injected-parameters"} & set(cell["metadata"].get("tags", [])):
                exec("".join(cell["source"]), {}, chosen)
        size = D.get_scale(chosen.get("scale", "full")).fill(**{names[k]: v for k, v in chosen.items() if k in names})
        assert all(getattr(size, c) == getattr(full, c) for c in counts), path
