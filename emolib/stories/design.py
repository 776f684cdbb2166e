"""The balanced story design: every (emotion, topic) cell holds the same number of kept stories.

Stories that leak their emotion word, are shorter than the keep rule's words or come back empty are not
simply dropped (that left "loving" with 1 story and let its topic become its vector): their cell is
rewritten with fresh seeds until it holds its quota, for at most `max_attempts` rounds.

Determinism, so that a killed run resumes bit-identically:
- attempt 0 of a cell is the plain job `story/<emotion>/<topic>/<sample>`;
- the retries of round a >= 1 are `story/<emotion>/<topic>/r<a>.<j>`, with a seed that follows from
  that id, and *how many* a cell gets in round a depends only on the records of rounds < a — which
  are complete before round a is planned, also after a resume.
The design is saved beside the corpus (`design.json`), so extraction reads exactly the balanced
selection: the first `per_cell` kept stories of each cell, in attempt order.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import EmolibError
from ..io import atomic_write_json, file_sha256
from .corpus import Corpus, Job, corpus_dir, neutral_jobs, records_frame, story_jobs, write_dialogues, write_jobs, writing
from .prompts import (
    MAX_EMOTION_WORDS,
    MIN_WORDS,
    CorpusSettings,
    _stable_int,
    load_topics,
    select_emotions,
    select_topics,
    story_prompt,
)

DESIGN_FILE = "design.json"

@dataclass(frozen=True)
class Scale:
    """How big a run is, chapter by chapter. `quick` previews the whole book from nothing on 2 cores (`make book`:
    26 to 92 min on the boxes measured, docs/costs.md); `full` is the published one (timings of both: the appendix).
    A chapter parameter left at 0 or "" takes its scale's value (`fill`)."""

    n_topics: int  # chapter 01: topics per emotion
    per_cell: int  # chapter 01: kept stories per (emotion, topic) cell
    dialogue_topics: int  # chapter 02: neutral dialogues, one per topic
    n_prompts: int  # chapter 07: neutral prompts in the dose-response
    alphas: str  # chapter 07: the dose-response's strengths
    blackmail_trials: int  # chapter 07: blackmail trials per condition
    hack_samples: int  # chapter 07: samples per reward-hacking task and condition
    null_directions: int  # chapters 07 and 09: random directions steered beside the emotions (the null band)
    activities_per_category: int  # chapter 09: activities of each of the 8 categories in the preference tournament
    sycophancy_questions: int  # chapter 09: factual questions the user pushes back on
    reply_questions: int  # chapter 09: of those, the questions whose replies are generated (harshness, flattery)
    # chapter 04's resampling. Its cost hardly depends on the number of stories (171 emotions' vectors, nested
    # leave-one-out fits per replicate), so at the full scale's counts the quick preview spent ~25 min in chapter 4
    # alone; at 2 stories per emotion its intervals are wide whatever the count.
    geometry_boot: int = 500  # bootstrap replicates at the analysis layer
    layer_boot: int = 50  # bootstrap replicates per layer (the cross-layer plot)
    baseline_boot: int = 200  # joint story-bootstrap replicates behind the text-only baselines' partial r
    permutations: int = 2000  # permutations of the max-over-layers null, the circumplex and baseline tests
    split_halves: int = 20  # random split-halves per layer
    scaling_draws: int = 10  # subsamples per stories-per-emotion step of the scaling curve

    def fill(self, **chosen: Any) -> "Scale":
        """This scale with every chosen value that is not 0 or "" in place of its own."""
        unknown = set(chosen) - set(self.__dataclass_fields__)
        if unknown:
            raise EmolibError(f"a scale has no setting {sorted(unknown)[0]!r}; it has: {', '.join(self.__dataclass_fields__)}")
        return replace(self, **{name: value for name, value in chosen.items() if value not in (0, "", None)})

    @property
    def stories_per_emotion(self) -> int:
        return self.n_topics * self.per_cell


SCALES: dict[str, Scale] = {
    # 2 stories per emotion, 50 dialogues, a 5-point dose-response on 8 prompts, 3 blackmail trials
    "quick": Scale(n_topics=2, per_cell=1, dialogue_topics=50, n_prompts=8, alphas="-0.5,-0.25,0,0.25,0.5",
                   blackmail_trials=3, hack_samples=1, null_directions=4, activities_per_category=2,
                   sycophancy_questions=24, reply_questions=8, geometry_boot=200, layer_boot=20, baseline_boot=40,
                   permutations=500, split_halves=10, scaling_draws=4),
    # 24 stories per emotion, 100 dialogues, a 7-point dose-response on 32 prompts, 6 blackmail trials
    "full": Scale(n_topics=12, per_cell=2, dialogue_topics=100, n_prompts=32, alphas="-0.5,-0.3,-0.15,0,0.15,0.3,0.5",
                  blackmail_trials=6, hack_samples=2, null_directions=20, activities_per_category=8,
                  sycophancy_questions=104, reply_questions=32),
}


def get_scale(name: str) -> Scale:
    if name not in SCALES:
        raise EmolibError(f"unknown scale {name!r}; choose one of: {', '.join(SCALES)}")
    return SCALES[name]


@dataclass(frozen=True)
class Design:
    """Which cells the analysis uses and how many kept stories each must hold."""
    emotions: list[str]
    topics: list[int]  # topic indices (into the 100 topics)
    per_cell: int
    max_attempts: int = 6
    seed: int = 0
    scale: str = "custom"
    # A deep extension of a stored corpus (issue 37): the base design's fields and its corpus name. The base's
    # selection stays the first stories of each cell; this design's jobs never share an id with the base's
    # (first-attempt samples past the base's, retry rounds numbered after the base's last), so nothing is rewritten.
    extends: dict | None = None

    @classmethod
    def from_scale(cls, scale: str, emotions: str | list[str] = "all", n_topics: int = 0, per_cell: int = 0,
                   max_attempts: int = 6, seed: int = 0) -> "Design":
        """A scale's defaults, with `n_topics` / `per_cell` overriding them when > 0."""
        for name, value in (("n_topics", n_topics), ("per_cell", per_cell), ("max_attempts", max_attempts)):
            if not isinstance(value, int) or value < 0:
                raise EmolibError(f"{name} must be a whole number >= 0 (0: the scale's default), got {value!r}")
        chosen = get_scale(scale).fill(n_topics=n_topics, per_cell=per_cell)
        topics = select_topics(chosen.n_topics, seed)
        name = scale if not (n_topics or per_cell) else f"{scale} (custom)"
        return cls(select_emotions(emotions), [i for i, _ in topics], chosen.per_cell, max(1, max_attempts), seed, name)

    @property
    def stories_per_emotion(self) -> int:
        return len(self.topics) * self.per_cell

    @property
    def base(self) -> "Design | None":
        """The design this one deepens (None for a plain design)."""
        if not self.extends:
            return None
        return Design(**{k: v for k, v in self.extends.items() if k != "corpus"})

    @property
    def base_corpus(self) -> str | None:
        return (self.extends or {}).get("corpus")

    def quota(self, emotion: str) -> int:
        """Kept stories per cell for `emotion`: this design's quota for its emotions, the base's for the others."""
        base = self.base
        return self.per_cell if base is None or emotion in self.emotions else base.per_cell

    @property
    def round_offset(self) -> int:
        """Retry round r<k> of this design is stored as r<k + offset>: after every round the base could use."""
        base = self.base
        return 0 if base is None else base.round_offset + base.max_attempts - 1

    def round_of(self, job_id: str) -> int | None:
        """The round of this design a story job belongs to (0: the first attempt), None for the base's jobs."""
        base = self.base
        if base is None:
            return attempt_of(job_id)
        last = job_id.split("/")[3]
        if last.startswith("r"):
            stored = attempt_of(job_id)
            return stored - self.round_offset if stored > self.round_offset else None
        return 0 if int(last) >= base.per_cell else None

    def deepen(self, emotions: str | list[str], per_cell: int, corpus: str) -> "Design":
        """This design deepened for `emotions` to `per_cell` kept stories per cell (same topics and seed); the
        result's selection begins with this one's, for the emotions it had."""
        chosen = select_emotions(emotions)
        missing = [e for e in chosen if e not in self.emotions]
        if missing:
            raise EmolibError(f"the base design has no stories for {missing[0]!r}; deepen only its emotions")
        if per_cell <= self.per_cell:
            raise EmolibError(f"per_cell must exceed the base's {self.per_cell} to deepen it, got {per_cell}")
        return Design(chosen, list(self.topics), per_cell, self.max_attempts, self.seed, f"{self.scale} (deep)",
                      {"corpus": corpus, **asdict(self)})

    def topic_pairs(self) -> list[tuple[int, str]]:

        texts = load_topics()
        return [(i, texts[i]) for i in self.topics]

    def covers(self, other: "Design") -> bool:
        """Whether every cell `other` asks for, at its quota, is one of this design's (same seed, so same jobs)."""
        return (set(other.emotions) <= set(self.emotions) and set(other.topics) <= set(self.topics)
                and other.per_cell <= self.per_cell and other.seed == self.seed and other.max_attempts <= self.max_attempts)

    def save(self, folder: str | Path) -> Path:
        return atomic_write_json(Path(folder) / DESIGN_FILE, asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> "Design | None":
        path = Path(folder) / DESIGN_FILE
        if not path.exists():
            return None
        try:
            return cls(**json.loads(path.read_text()))
        except (ValueError, TypeError) as error:
            raise EmolibError(f"{path} is not a design file emolib wrote ({error}); delete it and rerun chapter 01") from error


def retry_jobs(settings: CorpusSettings, design: Design, attempt: int, need: dict[tuple[str, int], int]) -> list[Job]:
    """Round `attempt` (>= 1): for each short cell, enough prompts for the stories it still needs."""
    texts = dict(design.topic_pairs())
    jobs = []
    for (emotion, topic_index), missing in sorted(need.items()):
        for j in range(math.ceil(missing / settings.stories_per_prompt)):
            stored = attempt + design.round_offset
            job_id = f"story/{emotion}/{topic_index:03d}/r{stored}.{j}"
            jobs.append(Job(job_id, "story", topic_index, texts[topic_index], j, _stable_int(f"{design.seed}/{job_id}"),
                            settings.story_messages(emotion, texts[topic_index]), emotion=emotion, attempt=stored))
    return jobs


def first_jobs(settings: CorpusSettings, design: Design) -> list[Job]:
    """Attempt 0: one prompt per story slot of every cell (several stories per prompt share one)."""
    prompts = math.ceil(design.per_cell / settings.stories_per_prompt)
    jobs = story_jobs(settings, design.emotions, design.topic_pairs(), prompts, design.seed)
    if design.base is None:
        return jobs
    stored = math.ceil(design.base.per_cell / settings.stories_per_prompt)  # the base's samples are written
    return [job for job in jobs if job.sample >= stored]


def attempt_of(job_id: str) -> int:
    """The retry round a stored story's job belongs to (0: the first attempt)."""
    last = job_id.split("/")[3]
    return int(last[1:].split(".")[0]) if last.startswith("r") else 0


def kept_per_cell(frame: Any, design: Design, before_attempt: int | None = None) -> dict[tuple[str, int], int]:
    """Kept stories per cell of the design (only those of its rounds < `before_attempt` when given); a deep
    design counts its base's selection first (all of it: the base was written before any of its rounds)."""
    counts = {(e, t): 0 for e in design.emotions for t in design.topics}
    if frame is None or frame.empty:
        return counts
    if design.base is not None:
        chosen, _ = balanced_selection(_base_records(frame, design), design.base)
        for cell, n in chosen.groupby(["emotion", "topic_index"]).size().items():
            if cell in counts:
                counts[cell] += int(n)
    stories = frame[(frame["kind"] == "story") & (frame["status"] == "kept")]
    for emotion, topic, job in zip(stories["emotion"], stories["topic_index"], stories["job"]):
        round_ = design.round_of(job) if (emotion, topic) in counts else None
        if round_ is not None and (before_attempt is None or round_ < before_attempt):
            counts[(emotion, topic)] += 1
    return counts


def _base_records(frame: Any, design: Design) -> Any:
    """The records a deep design's base wrote (every record not of this design's own story jobs)."""
    own = [kind == "story" and emotion in design.emotions and design.round_of(job) is not None
           for kind, emotion, job in zip(frame["kind"], frame["emotion"], frame["job"])]
    return frame[~np.asarray(own, bool)]


def write_balanced(corpus: Corpus, design: Design, writer: Any, *, batch_size: int = 32,
                   progress: bool = True, on_round: Callable[[int, int], None] | None = None,
                   write: Callable[..., dict] | None = None) -> dict[str, Any]:
    """Write attempt 0 of every cell, then retry short cells round by round until each holds its quota.

    The keep rule is the stored one (`emolib.stories.prompts.keep_status`): no analysed model takes part, so one
    corpus serves them all. On a published (read-only) corpus that already holds the design, nothing is
    written and the rounds are those it was written in. Returns per-round counts."""
    write = write or write_jobs
    if corpus.settings is None:
        raise EmolibError("write_balanced needs a corpus opened with CorpusSettings")
    with writing(corpus):  # the design file and every round: one run at a time
        return _write_rounds(corpus, design, writer, batch_size, progress, on_round, write)


def _write_rounds(corpus: Corpus, design: Design, writer: Any, batch_size: int, progress: bool,
                  on_round: Callable[[int, int], None] | None, write: Callable[..., dict]) -> dict[str, Any]:
    settings = corpus.settings
    stored = Design.load(corpus.folder)
    if corpus.read_only:
        if stored is None or not stored.covers(design):
            raise EmolibError(f"{corpus.folder} is a published corpus whose design does not hold this one (its cells, "
                              "quota and seed); pass another corpus name (-p corpus NAME) to write one for it")
    elif stored != design:
        design.save(corpus.folder)
    rounds = []
    jobs = first_jobs(settings, design)
    totals = {"generated_tokens": 0, "seconds": 0.0, "jobs": 0, "already_done": 0}
    for attempt in range(design.max_attempts):  # attempt 0, then at most max_attempts - 1 rounds of retries
        if attempt > 0:
            frame = records_frame(corpus)
            have = kept_per_cell(frame, design, before_attempt=attempt)
            need = {cell: design.per_cell - n for cell, n in have.items() if n < design.per_cell}
            if not need:
                break
            jobs = retry_jobs(settings, design, attempt, need)
        stats = write(corpus, jobs, writer, batch_size=batch_size, progress=progress)
        for key in totals:
            totals[key] += stats.get(key, 0)
        rounds.append({"attempt": attempt, "prompts": len(jobs), "written_now": stats["jobs"] - stats["already_done"]})
        if on_round:
            on_round(attempt, len(jobs))
    if totals["seconds"] and totals["generated_tokens"]:  # as write_jobs: no rate when nothing was written
        totals["tokens_per_second"] = totals["generated_tokens"] / totals["seconds"]
    return {**totals, "rounds": rounds}


def balanced_selection(frame: Any, design: Design):
    """The kept stories the analysis uses: the first `per_cell` of each cell of the design, in attempt
    order (the first attempt, then round 1, ...), and the cells that stayed short, by name.

    A deep design (`Design.deepen`) selects its base's selection first, for every emotion of the base, then
    fills its own emotions' cells from its own rounds in order; short cells are named at each cell's quota."""
    if design.base is not None:
        return _deep_selection(frame, design)
    stories = frame[(frame["kind"] == "story") & (frame["status"] == "kept")]
    stories = stories[stories["emotion"].isin(design.emotions) & stories["topic_index"].isin(design.topics)].copy()
    stories["attempt"] = [attempt_of(job) for job in stories["job"]]
    stories = stories.sort_values(["emotion", "topic_index", "attempt", "id"])
    chosen = stories.groupby(["emotion", "topic_index"], sort=False).head(design.per_cell)
    counts = chosen.groupby(["emotion", "topic_index"]).size()
    short = sorted((e, t, int(counts.get((e, t), 0))) for e in design.emotions for t in design.topics
                   if counts.get((e, t), 0) < design.per_cell)
    return chosen.drop(columns="attempt").sort_values("id"), short


def _deep_selection(frame: Any, design: Design):
    import pandas as pd

    base_chosen, base_short = balanced_selection(_base_records(frame, design), design.base)
    stories = frame[(frame["kind"] == "story") & (frame["status"] == "kept") & frame["emotion"].isin(design.emotions)
                    & frame["topic_index"].isin(design.topics)].copy()
    stories["round"] = [design.round_of(job) for job in stories["job"]]
    stories = stories[stories["round"].notna()].sort_values(["emotion", "topic_index", "round", "id"])
    have = base_chosen.groupby(["emotion", "topic_index"]).size()
    room = [design.per_cell - int(have.get((e, t), 0)) for e, t in zip(stories["emotion"], stories["topic_index"])]
    rank = stories.groupby(["emotion", "topic_index"], sort=False).cumcount().to_numpy()
    added = stories[rank < np.asarray(room, int)].drop(columns="round")
    chosen = pd.concat([base_chosen, added])
    counts = chosen.groupby(["emotion", "topic_index"]).size()
    short = sorted([(e, t, int(counts.get((e, t), 0))) for e in design.emotions for t in design.topics
                    if counts.get((e, t), 0) < design.per_cell]
                   + [cell for cell in base_short if cell[0] not in design.emotions])
    return chosen.sort_values("id"), short


@dataclass
class Selection:
    """Everything the analysis uses from a corpus, read once: the kept stories of the balanced design (its
    `design.json`), the kept neutral dialogues, every record with its status, and the design itself."""

    stories: Any  # DataFrame: the selected stories
    neutral: Any  # DataFrame: the kept neutral dialogues
    frame: Any  # DataFrame: every record, with its keep status
    design: Design | None


def select(corpus: Corpus, emotions: str | list[str] = "all", max_emotion_words: int = MAX_EMOTION_WORDS) -> Selection:
    """The corpus's selection, the same for every analysed model (the keep rule reads no tokenizer);
    extraction then skips, and counts, the texts a model's tokenizer leaves shorter than it needs.
    `emotions="all"` keeps every emotion the corpus has stories for."""
    frame = records_frame(corpus, None, None, max_emotion_words)
    if frame.empty:
        raise EmolibError(f"{corpus.folder} holds no stories or dialogues; run chapters 01 and 02 first")
    kept = frame[frame["status"] == "kept"]
    stories = kept[kept["kind"] == "story"]
    design = Design.load(corpus.folder)
    if design is not None:  # the balanced design chapter 01 wrote: its cells, capped at the quota
        stories, _ = balanced_selection(frame, design)
    if emotions != "all":
        stories = stories[stories["emotion"].isin(select_emotions(emotions))]
    neutral = kept[kept["kind"] == "neutral"]
    if stories.empty:
        raise EmolibError(f"{corpus.folder} has no kept story for the chosen emotions "
                          f"(every story leaked, was shorter than {MIN_WORDS} words, or none was written)")
    if len(neutral) < 2:
        raise EmolibError(f"{corpus.folder} has {len(neutral)} kept neutral dialogue(s); the denoising needs at "
                          "least 2 — run chapter 02 with more topics")
    return Selection(stories, neutral, frame, design)


def fill_report(frame: Any, design: Design) -> dict[str, Any]:
    """How full the design is: cells at quota, kept stories per emotion (min/median), short cells."""
    import numpy as np

    chosen, short = balanced_selection(frame, design)
    per_emotion = chosen.groupby("emotion").size().reindex(design.emotions, fill_value=0)
    stories = frame[frame["kind"] == "story"]
    cells = len(design.emotions) * len(design.topics)
    return {
        "scale": design.scale, "emotions": len(design.emotions), "topics": len(design.topics), "per_cell": design.per_cell,
        "quota_per_emotion": design.stories_per_emotion, "cells": cells, "cells_full": cells - len(short),
        "fill_rate": (cells - len(short)) / cells,
        "short_cells": [f"{e} / topic {t} ({n} of {design.per_cell})" for e, t, n in short],
        "kept_per_emotion": {"min": int(per_emotion.min()), "median": float(np.median(per_emotion))},
        "stories_written": int((stories["status"] != "empty").sum()),
        "retries": int(sum(attempt_of(job) > 0 for job in stories["job"].unique())),
    }


def cell_weights(stories: Any, design: Design) -> dict[str, float]:
    """Per story id, quota / kept stories in its cell: 1.0 in a full cell, more in a short one, so that an
    emotion's mean weighs its topics equally (passed to emolib.extraction.vectors.build)."""
    counts = stories.groupby(["emotion", "topic_index"])["id"].transform("size")
    return {text_id: design.quota(emotion) / n for text_id, emotion, n in zip(stories["id"], stories["emotion"], counts)}


# --- what chapter 1 shows and saves ------------------------------------------------------------------------

def settings_rows(design: Design, settings: CorpusSettings, *, model: str, writer: str, writer_url: str, prompt: str,
                  seed: int, folder: Path) -> dict[str, Any]:
    """The chapter's settings table: the design, the writer and its sampling."""
    per_prompt = settings.stories_per_prompt
    return {
        "scale": design.scale, "analysed model": model, "writer": writer + (f" at {writer_url}" if writer_url else " (local)"),
        "emotions": len(design.emotions), "topics per emotion": len(design.topics),
        "kept stories per (emotion, topic) cell": design.per_cell, "kept stories per emotion": design.stories_per_emotion,
        "attempts per cell": f"at most {design.max_attempts}",
        "prompt": f"{prompt!r}, {per_prompt} stor{'y' if per_prompt == 1 else 'ies'} per prompt",
        "max new tokens": settings.max_new_tokens,
        "sampling": f"temperature {settings.temperature}, top-p {settings.top_p}, repetition penalty "
                    f"{settings.repetition_penalty} (generated tokens only)",
        "seed": seed, "corpus folder": f"runs/corpus/{Path(folder).name}",
    }


def design_stories(frame: Any, design: Design) -> Any:
    """Every story the design's cells asked for (kept or not), from `corpus.records_frame`."""
    return frame[(frame["kind"] == "story") & frame["emotion"].isin(design.emotions) & frame["topic_index"].isin(design.topics)]


def describe_fill(stories: Any, design: Design, fill: dict[str, Any]) -> str:
    """What the refill reached: cells at quota, kept stories per emotion, leaks, cut stories, short cells."""
    return (f"cells holding their quota: {fill['cells_full']} of {fill['cells']} ({fill['fill_rate']:.1%}); "
            f"kept stories per emotion used by the analysis: min {fill['kept_per_emotion']['min']}, "
            f"median {fill['kept_per_emotion']['median']:.0f} (quota {design.stories_per_emotion})\n"
            f"leak rate over all stories written: {(stories['status'] == 'leak').mean():.1%}; "
            f"stories cut by the token limit: {(~stories.groupby('job')['finished'].first()).mean():.1%} of prompts\n"
            "cells short of their quota: " + (", ".join(fill["short_cells"]) or "none"))


def stories_results(design: Design, stats: dict[str, Any], stories: Any, fill: dict[str, Any], fidelity: dict[str, Any],
                    *, writer: str, prompt: str, corpus_file: Path, seed: int) -> dict[str, Any]:
    """Chapter 1's key numbers (`emolib.book.results.StoriesResults`)."""
    return {
        "writer": writer, "scale": design.scale, "emotions": len(design.emotions), "topics": len(design.topics),
        "per_cell": design.per_cell, "prompt": prompt, "prompts": sum(r["prompts"] for r in stats["rounds"]),
        "stories": int(len(stories)), "status": stories["status"].value_counts().to_dict(),
        "leak_rate": float((stories["status"] == "leak").mean()), "kept_per_emotion": fill["kept_per_emotion"],
        "fill_rate": fill["fill_rate"], "short_cells": fill["short_cells"], "retry_rounds": len(stats["rounds"]) - 1,
        "fidelity": fidelity, "tokens_per_second": stats.get("tokens_per_second"), "seconds": stats.get("seconds"),
        "corpus_sha256": file_sha256(corpus_file), "seed": seed,
    }


def rounds_table(stats: dict[str, Any]) -> Any:
    """`write_balanced`'s rounds: prompts written and stories kept per attempt."""
    import pandas as pd

    return pd.DataFrame(stats["rounds"]).set_index("attempt")


def describe_rate(stats: dict[str, Any], batch_size: int) -> str:
    """The writing rate of this execution (nothing when every story was already stored)."""
    if "tokens_per_second" not in stats:
        return "every story was already stored: nothing written in this execution"
    return (f"generated {stats['generated_tokens']:,} tokens in {stats['seconds']:.0f} s: "
            f"{stats['tokens_per_second']:.0f} tokens/s with batches of {batch_size}")


# --- the corpus in one call (chapters 1 and 2 without the notebooks) ------------------------------------------

# Chapters 1 and 2's parameter defaults (their parameter cells; tests/test_keep_rule.py keeps them equal).
CORPUS_DEFAULTS: dict[str, Any] = {"prompt": "label", "stories_per_prompt": 1, "max_new_tokens": 320, "max_attempts": 6,
                                   "seed": 0, "dialogues_per_topic": 1}


def write_corpus(folder: str | Path, scale: str, writer: Any, *, emotions: str = "all", batch_size: int = 128,
                 progress: bool = True) -> dict[str, Any]:
    """What chapters 1 and 2 write, with their defaults, into `folder`: the balanced stories of `scale`'s
    design, then the neutral dialogues (`python -m emolib corpus`; how the published corpus was made)."""
    d = CORPUS_DEFAULTS
    design = Design.from_scale(scale, emotions, 0, 0, d["max_attempts"], d["seed"])
    settings = CorpusSettings(writer=writer.name, story_prompt=story_prompt(d["prompt"]),
                              stories_per_prompt=d["stories_per_prompt"], max_new_tokens=d["max_new_tokens"])
    store = Corpus(folder, settings, publishing=True)  # an explicit act: this command may write the book's folder
    stories = write_balanced(store, design, writer, batch_size=batch_size, progress=progress)
    topics = select_topics(get_scale(scale).dialogue_topics, d["seed"])
    dialogues = write_dialogues(store, neutral_jobs(settings, topics, d["dialogues_per_topic"], d["seed"]), writer,
                                batch_size=batch_size, progress=progress)
    return {"stories": stories, "dialogues": dialogues, "design": asdict(design)}


def deepen_corpus(folder: str | Path, base: str, emotions: str | list[str], per_cell: int, writer: Any, *,
                  batch_size: int = 128, progress: bool = True) -> dict[str, Any]:
    """Write the deep extension of the stored corpus `base` (`python -m emolib corpus --extends`): `emotions` to
    `per_cell` kept stories per cell, with the base's writer, prompt, sampling, keep rule and topics. `folder`
    holds only the new stories (the base's are read from the base, first in every cell, never rewritten);
    a killed run resumes, and a finished one writes nothing."""
    base_corpus = Corpus(corpus_dir(base))
    base_design = Design.load(base_corpus.folder)
    settings_file = base_corpus.folder / "settings.json"
    if base_design is None or not settings_file.exists():
        raise EmolibError(f"{base_corpus.folder} holds no balanced design (design.json, settings.json) to deepen")
    stored = json.loads(settings_file.read_text())["story"]
    if stored["writer"] != writer.name:
        raise EmolibError(f"{base!r} was written by {stored['writer']!r}; deepen it with the same writer, not {writer.name!r}")
    design = base_design.deepen(emotions, per_cell, base)
    store = Corpus(folder, CorpusSettings(**stored), publishing=True)
    if store.read_only:
        found = Design.load(store.folder)
        if found != design:
            raise EmolibError(f"{store.folder} is published with another deep design; pass another --out")
    return {**write_balanced(store, design, writer, batch_size=batch_size, progress=progress), "design": asdict(design)}
