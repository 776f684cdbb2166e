"""The story corpus: jobs, a resumable store, and the writing loops.

Stories are written by a *writer* model (chosen separately from the analysed model) and kept one record
each in `runs/corpus/<name>/stories.jsonl`; neutral Person/AI dialogues go beside them in
`neutral.jsonl`. Every (emotion, topic, sample) prompt is a job with a stable id and seed, so a killed
run resumes where it stopped, without duplicates or losses, and a larger run extends a smaller one.
Filters are recorded, not applied destructively: each story's record says whether it leaked the emotion
word and what the keep rule decided when it was written (`emolib.stories.prompts.keep_status`, in words, so every
analysed model reads the same selection; a model whose tokenizer leaves a kept text too short skips it at
extraction and counts it). A corpus with a data card (`README.md`, as the published one has) is read-only:
analysing it never writes to it. The prompts, the parsing of the writer's answers and the leak rules live
in emolib.stories.prompts (re-exported here).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..errors import StoreError
from ..io import (
    JobStore,
    atomic_write_json,
    progress_bar,
    project_root,
    runs_dir,
    store_lock,
)
from .prompts import (  # noqa: F401 (re-exported: chapters and tests read them as corpus.X)
    MAX_EMOTION_WORDS,
    MIN_TOKENS,
    MIN_WORDS,
    QUICK_EMOTIONS,
    STORY_MARKER,
    STORY_PROMPT,
    STORY_PROMPTS,
    TOKEN_START,
    ChatScript,
    CorpusSettings,
    _stable_int,
    clean_turn,
    count_words,
    find_emotion_words,
    find_leaks,
    format_dialogue,
    keep_status,
    leak_pattern,
    load_emotions,
    load_topics,
    select_emotions,
    select_topics,
    split_stories,
    story_prompt,
    word_forms,
)


@dataclass(frozen=True)
class Job:
    """One prompt to the writer, with a stable id and seed."""

    id: str
    kind: str  # "story" | "neutral"
    topic_index: int
    topic: str
    sample: int
    seed: int
    messages: list[dict] = field(hash=False, compare=False)
    emotion: str | None = None
    n_exchanges: int | None = None
    attempt: int = 0  # the balanced design's retry round (emolib.stories.design)


def story_jobs(settings: CorpusSettings, emotions: list[str], topics: list[tuple[int, str]],
               samples_per_pair: int, seed: int = 0) -> list[Job]:
    jobs = []
    for emotion in emotions:
        for topic_index, topic in topics:
            for sample in range(samples_per_pair):
                job_id = f"story/{emotion}/{topic_index:03d}/{sample}"
                jobs.append(Job(job_id, "story", topic_index, topic, sample, _stable_int(f"{seed}/{job_id}"),
                                settings.story_messages(emotion, topic), emotion=emotion))
    return jobs


def neutral_jobs(settings: CorpusSettings, topics: list[tuple[int, str]], samples_per_topic: int,
                 seed: int = 0) -> list[Job]:
    """Person/AI dialogues of 2-6 exchanges (drawn per job from its seed) on the same topics."""
    jobs = []
    for topic_index, topic in topics:
        for sample in range(samples_per_topic):
            job_id = f"neutral/{topic_index:03d}/{sample}"
            job_seed = _stable_int(f"{seed}/{job_id}")
            n_exchanges = 2 + job_seed % 5
            jobs.append(Job(job_id, "neutral", topic_index, topic, sample, job_seed,
                            settings.person_messages(topic, []), n_exchanges=n_exchanges))
    return jobs


# ---------------------------------------------------------------------------------------------------
# The store


# The published book's corpus (full scale), in the repository beside the chapters it was analysed in, and its
# deep extension (issue 37: more stories for the headline and steered emotions, the published ones first).
PUBLISHED = "published"
DEEP = "deep"
DATA_CARD = "README.md"
_BOOK_CORPORA = {PUBLISHED: "corpus", DEEP: "corpus-deep"}


def published_corpus_dir(name: str = PUBLISHED) -> Path:
    return project_root() / "book" / "data" / _BOOK_CORPORA[name]


def default_corpus(scale: str, writer: str) -> str:
    """The corpus a chapter reads when none is named: the published one for a full-scale run with the
    writer it was written by (when this checkout has it), else the writer's own folder under runs/corpus/."""
    if scale == "full" and (published_corpus_dir() / DATA_CARD).exists():
        settings = published_corpus_dir() / "settings.json"
        if settings.exists() and json.loads(settings.read_text()).get("story", {}).get("writer") == writer:
            return PUBLISHED
    return writer


def corpus_dir(name: str) -> Path:
    """`published` / `deep`: the book's own corpora (read-only); any other name: `runs/corpus/<name>`."""
    return published_corpus_dir(name) if name in _BOOK_CORPORA else runs_dir() / "corpus" / name


class Corpus:
    """A run folder holding stories.jsonl, neutral.jsonl and the settings each was written with.

    Stories and dialogues are checked separately, when first written: a corpus can only be extended
    with the settings its records were written with, so job ids never stand for two different texts.
    """

    def __init__(self, folder: str | Path, settings: CorpusSettings | None = None, *, publishing: bool = False):
        """`settings=None` opens a corpus read-only (what the analysis chapters do); a corpus with a data
        card, or the book's own folder (book/data/corpus), is read-only whatever the settings: a run finds
        its stories there, or stops with one line. Only `publishing=True` (`python -m emolib corpus`, the
        explicit act of whoever publishes it) writes into the book's folder before its card exists."""
        self.folder = Path(folder)
        self.settings = settings
        published_here = self.folder.resolve() in {published_corpus_dir(name).resolve() for name in _BOOK_CORPORA}
        self.read_only = (self.folder / DATA_CARD).exists() or (published_here and not publishing)
        self.stories = JobStore(self.folder / "stories.jsonl")
        self.neutral = JobStore(self.folder / "neutral.jsonl")
        # which jobs went into each batch, logged before the batch runs: a resumed run redoes a batch
        # that a kill cut short with exactly the same rows, so its texts are bit-identical
        self.batches = JobStore(self.folder / "batches.jsonl")
        self._checked: set[str] = set()

    @property
    def base(self) -> "Corpus | None":
        """The stored corpus this one deepens (its design.json's `extends`), opened read-only; None otherwise.
        Its records come first in `records_frame`, so a deep corpus holds only what it wrote itself."""
        path = self.folder / "design.json"
        name = (json.loads(path.read_text()).get("extends") or {}).get("corpus") if path.exists() else None
        return Corpus(corpus_dir(name)) if name else None

    def all_records(self) -> list[dict]:
        """Every stored record, the base corpus's first (stories, then dialogues, of each)."""
        base = self.base
        own = [r for store in (self.stories, self.neutral) for r in store.records]
        return (base.all_records() if base is not None else []) + own

    def _check_settings(self, kind: str) -> None:
        if kind in self._checked:
            return
        if self.read_only:
            raise StoreError(f"{self.folder} is a published corpus (it has a data card) and holds no {kind} record for "
                             "some of the jobs asked for; analysing never writes to it: pass another corpus name "
                             "(-p corpus NAME) to write your own")
        if self.settings is None:
            raise StoreError(f"{self.folder} was opened read-only (no settings); pass CorpusSettings to write to it")
        path = self.folder / "settings.json"
        stored = json.loads(path.read_text()) if path.exists() else {}
        wanted = self.settings.for_kind(kind)
        has_records = bool((self.stories if kind == "story" else self.neutral).records)
        if kind in stored and has_records:
            differing = sorted(key for key in wanted if stored[kind].get(key) != wanted[key])
            if differing:
                raise StoreError(
                    f"{self.folder} holds {kind} records written with other settings ({', '.join(differing)} "
                    "differ); keep the old settings, or pass another corpus name to start a new corpus"
                )
        elif stored.get(kind) != wanted:  # nothing written yet under the old settings: adopt the new ones
            atomic_write_json(path, {**stored, kind: wanted})
        self._checked.add(kind)

    def pending(self, jobs: list[Job]) -> list[Job]:
        """Jobs not yet stored; checks the settings of each kind that still needs writing."""
        todo = [job for job in jobs if job.id not in self.store_for(job).done_jobs]
        if self.read_only and self.settings is not None:  # the same ids must stand for the same texts
            for kind in sorted({job.kind for job in jobs}):
                self._check_published(kind)
        for kind in {job.kind for job in todo}:
            self._check_settings(kind)
        return todo

    def _check_published(self, kind: str) -> None:
        path = self.folder / "settings.json"
        stored = (json.loads(path.read_text()) if path.exists() else {}).get(kind, {})
        differing = sorted(key for key, value in self.settings.for_kind(kind).items() if stored.get(key) != value)
        if differing:
            raise StoreError(f"{self.folder} is a published corpus written with other {kind} settings "
                             f"({', '.join(differing)} differ); pass another corpus name (-p corpus NAME) to write your own")

    def store_for(self, job: Job) -> JobStore:
        return self.stories if job.kind == "story" else self.neutral

    def save(self, job: Job, text: str, finished: bool, n_tokens: int) -> list[dict]:
        """Turn one generation into records (one per story / one dialogue) and append them as a job."""
        self._check_settings(job.kind)
        base = {"emotion": job.emotion, "topic_index": job.topic_index, "topic": job.topic, "sample": job.sample,
                "seed": job.seed, "writer": self.settings.writer, "generated_tokens": n_tokens, "finished": finished}
        if job.kind == "story":
            assert job.emotion is not None
            records = []
            for k, story in enumerate(split_stories(text, finished)):
                records.append({**base, "id": f"{job.id}/{k}", "kind": "story", "text": story,
                                "leaks": find_leaks(story, job.emotion)})
            if not records:
                records = [{**base, "id": f"{job.id}/0", "kind": "story", "text": "", "leaks": []}]
            for record in records:  # the keep rule, decided now, in units no reader changes
                record.update(n_words=count_words(record["text"]), status=keep_status(record))
        else:
            raise ValueError("dialogues are stored with save_dialogue")
        self.store_for(job).append_job(job.id, records)
        return records

    def save_dialogue(self, job: Job, turns: list[tuple[str, str]], n_tokens: int) -> dict:
        self._check_settings(job.kind)
        dialogue = format_dialogue(turns)
        record = {"emotion": None, "topic_index": job.topic_index, "topic": job.topic, "sample": job.sample,
                  "seed": job.seed, "writer": self.settings.writer, "generated_tokens": n_tokens, "finished": True,
                  "id": f"{job.id}/0", "kind": "neutral", "text": dialogue,
                  "n_exchanges_asked": job.n_exchanges,
                  "n_exchanges": sum(1 for (_, asked), (_, said) in zip(turns[::2], turns[1::2]) if asked and said),
                  "emotion_words": find_emotion_words(dialogue), "n_words": count_words(dialogue)}
        self.neutral.append_job(job.id, [record])
        return record


def plan_writing(corpus: Corpus, jobs: list[Job], batch_size: int, key: Callable[[Job], Any] | None = None) -> list[list[Job]]:
    """Batches still to run: first any logged batch a kill cut short (same rows as before), then the
    other pending jobs sorted by `key` and cut into batches — the same cut an uninterrupted run makes."""
    todo = {job.id for job in corpus.pending(jobs)}
    by_id = {job.id: job for job in jobs}
    batches: list[list[Job]] = []
    planned: set[str] = set()
    for logged in corpus.batches.records:
        members = logged["jobs"]
        if any(m in todo for m in members) and all(m in by_id for m in members) and not planned & set(members):
            batches.append([by_id[m] for m in members])
            planned.update(members)
    rest = [job for job in jobs if job.id in todo and job.id not in planned]
    if key is not None:
        rest.sort(key=key)
    return batches + [rest[i: i + batch_size] for i in range(0, len(rest), batch_size)]


def _log_batch(corpus: Corpus, batch: list[Job]) -> None:
    ids = [job.id for job in batch]
    name = hashlib.sha1("\n".join(ids).encode()).hexdigest()[:16]
    if name not in corpus.batches.done_jobs:
        corpus.batches.append_job(name, [{"jobs": ids}])


def write_jobs(corpus: Corpus, jobs: list[Job], writer: Any, *, batch_size: int = 32,
               progress: bool = True, on_batch: Callable[[int], None] | None = None) -> dict[str, float]:
    """Generate every pending job through `writer`, storing each job as soon as its batch returns.
    Holds the corpus folder's lock meanwhile: a second run writing the same corpus stops with one line."""
    with writing(corpus):
        return _write_jobs(corpus, jobs, writer, batch_size, progress, on_batch)


def writing(corpus: Corpus):
    """The corpus folder's lock; none for a read-only corpus, which no run writes (not even a lock file)."""
    import contextlib

    return contextlib.nullcontext() if corpus.read_only else store_lock(corpus.folder)


def _write_jobs(corpus: Corpus, jobs: list[Job], writer: Any, batch_size: int, progress: bool,
                on_batch: Callable[[int], None] | None) -> dict[str, float]:
    import time

    todo = corpus.pending(jobs)
    stats = {"jobs": len(jobs), "already_done": len(jobs) - len(todo), "generated_tokens": 0, "seconds": 0.0}
    if not todo:
        return stats
    settings = corpus.settings
    # similar prompt lengths per batch waste less padding
    batches = plan_writing(corpus, jobs, max(batch_size, getattr(writer, "call_size", 0)),
                           key=lambda job: len(job.messages[0]["content"]))
    started = time.perf_counter()
    quiet = {} if progress else {"disable": True}  # unset, so $TQDM_DISABLE can silence it
    written = 0
    # The bar counts the token budget (prompts x max_new_tokens), used up as the writer decodes: it moves
    # within a batch and its ETA is the budget's, an upper bound from the first steps on (a bar in stories
    # stood still for a whole batch, then read "1/342 [02:54<16:33:33]").
    budget = sum(len(batch) for batch in batches) * settings.max_new_tokens  # a logged batch is redone whole
    reports = "on_progress" in inspect.signature(writer.generate).parameters
    with progress_bar(total=budget, desc=f"writing ({writer.name})", unit="tok", unit_scale=True, **quiet) as bar:
        for batch in batches:
            _log_batch(corpus, batch)
            budget_used = _BudgetUsed(bar, len(batch) * settings.max_new_tokens)
            outputs = writer.generate([job.messages for job in batch], seeds=[job.seed for job in batch],
                                      max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                                      top_p=settings.top_p, repetition_penalty=settings.repetition_penalty,
                                      **({"on_progress": budget_used} if reports else {}))
            done = corpus.stories.done_jobs
            for job, output in zip(batch, outputs):
                if job.id in done:  # stored before a kill cut its batch short
                    continue
                corpus.save(job, output.text, output.finished, output.n_tokens)
                stats["generated_tokens"] += output.n_tokens
                written += 1
            budget_used.finish()  # the rest of the batch's budget (all of it for writers that do not report)
            bar.set_postfix_str(f"{written}/{len(todo)} stories, {stats['generated_tokens']:,} tokens, "
                                f"{stats['generated_tokens'] / max(time.perf_counter() - started, 1e-9):.0f} tokens/s")
            if on_batch:
                on_batch(written)
    stats["seconds"] = time.perf_counter() - started
    stats["tokens_per_second"] = stats["generated_tokens"] / stats["seconds"]
    return stats


class _BudgetUsed:
    """A writer's `on_progress`: the part of one batch's token budget decoded so far, moved onto the bar as it
    comes (an HTTP writer reports from its pool's threads); `finish` adds what was not reported."""

    def __init__(self, bar: Any, budget: int):
        self.bar, self.budget, self.reported, self.lock = bar, budget, 0, threading.Lock()

    def __call__(self, n: int) -> None:
        with self.lock:
            self.reported += n
            self.bar.update(n)

    def finish(self) -> None:
        self.bar.update(self.budget - min(self.reported, self.budget))


def write_dialogues(corpus: Corpus, jobs: list[Job], writer: Any, *, batch_size: int = 32,
                    progress: bool = True) -> dict[str, float]:
    """Write every pending dialogue: as one continuous chat with a local writer (ChatScript), turn by
    turn through an HTTP writer (servers reuse the shared prefix of each turn's request)."""
    with writing(corpus):
        return _write_dialogues(corpus, jobs, writer, batch_size, progress)


def _write_dialogues(corpus: Corpus, jobs: list[Job], writer: Any, batch_size: int, progress: bool) -> dict[str, float]:
    import time

    todo = corpus.pending(jobs)
    stats = {"jobs": len(jobs), "already_done": len(jobs) - len(todo), "generated_tokens": 0, "seconds": 0.0}
    if not todo:
        return stats
    started = time.perf_counter()
    quiet = {} if progress else {"disable": True}  # unset, so $TQDM_DISABLE can silence it
    one_pass = getattr(writer, "fast", False) and hasattr(writer, "chat_markers") and writer.chat_markers() is not None
    batches = list(plan_writing(corpus, jobs, max(batch_size, getattr(writer, "call_size", 0))))
    # Like the stories' bar, this one counts the token budget as the writer decodes: a local writer writes all 50
    # quick-scale dialogues in one call, and a bar of dialogues stood at 0/50 for the whole call (minutes).
    budgets = [len(batch) * _longest_dialogue(corpus.settings, batch) for batch in batches]
    written = 0
    with progress_bar(total=sum(budgets), desc=f"dialogues ({writer.name})", unit="tok", unit_scale=True, **quiet) as bar:
        for batch, budget in zip(batches, budgets):
            _log_batch(corpus, batch)
            budget_used = _BudgetUsed(bar, budget)
            write = _dialogues_in_one_pass if one_pass else _dialogues_turn_by_turn
            tokens, saved = write(corpus, batch, writer, budget_used)
            budget_used.finish()
            stats["generated_tokens"] += tokens
            written += saved
            bar.set_postfix_str(f"{written}/{len(todo)} dialogues, {stats['generated_tokens']:,} tokens, "
                                f"{stats['generated_tokens'] / max(time.perf_counter() - started, 1e-9):.0f} tokens/s")
    stats["seconds"] = time.perf_counter() - started
    stats["tokens_per_second"] = stats["generated_tokens"] / stats["seconds"]
    stats["mode"] = "one continuous chat per dialogue" if one_pass else "turn by turn"
    return stats


def _longest_dialogue(settings: CorpusSettings, batch: list[Job]) -> int:
    """The most tokens one dialogue of a batch may take: every turn of its longest dialogue (the budget per row)."""
    return max(job.n_exchanges or 2 for job in batch) * (settings.person_tokens + settings.ai_tokens + 16)


def _dialogues_in_one_pass(corpus: Corpus, batch: list[Job], writer: Any, budget_used: _BudgetUsed) -> tuple[int, int]:
    """(tokens written, dialogues saved) of one batch, written as one continuous chat per dialogue."""
    settings = corpus.settings
    tokenizer = writer.loaded.tokenizer
    opening, to_assistant, to_user = writer.chat_markers()
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
    prompts = [writer.render([{"role": "system", "content": settings.dialogue_system(job.topic)}]) + opening
               for job in batch]
    scripts = [ChatScript(job.n_exchanges or 2, encode(to_assistant), encode(to_user), writer.eos_id,
                          settings.person_tokens, settings.ai_tokens) for job in batch]
    longest = _longest_dialogue(settings, batch)
    reports = "on_progress" in inspect.signature(writer.generate).parameters
    outputs = writer.generate(prompts, [job.seed for job in batch], max_new_tokens=longest,
                              temperature=settings.dialogue_temperature, top_p=settings.top_p,
                              repetition_penalty=settings.repetition_penalty, forcing=scripts,
                              **({"on_progress": budget_used} if reports else {}))
    saved = 0
    for job, script in zip(batch, scripts):
        turns = []
        for index, ids in enumerate(script.turns):
            said = tokenizer.decode(ids, skip_special_tokens=True).strip()
            ended = bool(re.search(r"[.!?…][\"'”’)]*$", said))
            turns.append(("Person" if index % 2 == 0 else "AI", clean_turn(said, ended) or clean_turn(said, True)))
        if job.id in corpus.neutral.done_jobs:  # stored before a kill cut its batch short
            continue
        corpus.save_dialogue(job, turns, sum(len(ids) for ids in script.turns))
        saved += 1
    del outputs  # the text is in the scripts' turns
    return sum(len(ids) for script in scripts for ids in script.turns), saved


def _dialogues_turn_by_turn(corpus: Corpus, batch: list[Job], writer: Any, budget_used: _BudgetUsed) -> tuple[int, int]:
    """(tokens written, dialogues saved) of one batch, one request per turn (an HTTP writer)."""
    settings = corpus.settings
    sampling = dict(temperature=settings.dialogue_temperature, top_p=settings.top_p,
                    repetition_penalty=settings.repetition_penalty)
    turns: dict[str, list[tuple[str, str]]] = {job.id: [] for job in batch}
    tokens = dict.fromkeys(turns, 0)
    saved = 0
    for step in range(2 * max(job.n_exchanges or 0 for job in batch)):
        active = [job for job in batch if step < 2 * (job.n_exchanges or 0)]
        person_turn = step % 2 == 0
        if person_turn:
            prompts = [settings.person_messages(job.topic, turns[job.id]) for job in active]
        else:
            prompts = [settings.ai_messages(turns[job.id], job.topic) for job in active]
        outputs = writer.generate(prompts, seeds=[job.seed + step for job in active],
                                  max_new_tokens=settings.person_tokens if person_turn else settings.ai_tokens, **sampling)
        for job, output in zip(active, outputs):
            said = (clean_turn(output.text, output.finished, first_paragraph=person_turn)
                    or clean_turn(output.text, True, first_paragraph=person_turn))
            turns[job.id].append(("Person" if person_turn else "AI", said))
            tokens[job.id] += output.n_tokens
            if step == 2 * (job.n_exchanges or 0) - 1:  # its last turn: store it now
                if job.id not in corpus.neutral.done_jobs:  # stored before a kill cut its batch short
                    corpus.save_dialogue(job, turns[job.id], tokens[job.id])
                    saved += 1
        budget_used(sum(output.n_tokens for output in outputs))  # the bar moves turn by turn
    return sum(tokens.values()), saved


def records_frame(corpus: Corpus, jobs: list[Job] | None = None, tokenizer: Any = None,
                  max_emotion_words: int = MAX_EMOTION_WORDS):
    """The stored records of `jobs` (None: all) as a DataFrame with each one's keep `status`.

    The status comes from the record alone (`emolib.stories.prompts.keep_status`: a story's as stored when it
    was written), never from a model, so every analysed model selects the same stories. With a
    `tokenizer`, `n_tokens` and `fits` (>= MIN_TOKENS, what extraction needs) say how that model reads them.
    """
    import pandas as pd

    wanted = None if jobs is None else {job.id for job in jobs}
    rows = [r for r in corpus.all_records() if wanted is None or r["job"] in wanted]
    for row in rows:  # a hand-edited or foreign record: one line, not a traceback deep in pandas
        if not isinstance(row.get("text"), str) or row.get("kind") not in ("story", "neutral"):
            raise StoreError(f"{corpus.folder}: record {row.get('id', row.get('job'))!r} has no "
                             f"{'text' if not isinstance(row.get('text'), str) else 'kind (story or neutral)'}; every record "
                             "needs a text string and its kind — repair or remove that line (its job is then rewritten)")
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    texts = frame["text"].tolist()
    if "emotion_words" in frame:  # the neutral rule is applied when read, so a changed rule needs no rewrite
        frame["emotion_words"] = [find_emotion_words(text) if kind == "neutral" else words
                                  for kind, text, words in zip(frame["kind"], texts, frame["emotion_words"])]
    frame["n_words"] = [count_words(text) for text in texts]
    stored = frame["status"] if "status" in frame else pd.Series([None] * len(frame), index=frame.index)
    frame["status"] = [given if kind == "story" and isinstance(given, str) else keep_status(record, max_emotion_words)
                       for kind, given, record in zip(frame["kind"], stored, frame.to_dict("records"))]
    if tokenizer is not None:
        frame["n_tokens"] = [len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"]]
        frame["fits"] = frame["n_tokens"] >= MIN_TOKENS
    return frame


def per_emotion_summary(frame) -> Any:
    """Counts, leak rate and length per emotion (stories only), sorted by leak rate."""
    import pandas as pd

    stories = frame[frame["kind"] == "story"]
    nonempty = stories[stories["status"] != "empty"]
    table = pd.DataFrame({
        "stories": nonempty.groupby("emotion").size(),
        "leaked": nonempty.groupby("emotion")["status"].apply(lambda s: int((s == "leak").sum())),
        "short": nonempty.groupby("emotion")["status"].apply(lambda s: int((s == "short").sum())),
        "kept": nonempty.groupby("emotion")["status"].apply(lambda s: int((s == "kept").sum())),
        "median_words": nonempty.groupby("emotion")["n_words"].median(),
    }).fillna(0)
    table["leak_rate"] = table["leaked"] / table["stories"].clip(lower=1)
    return table.sort_values(["leak_rate", "kept"], ascending=[False, True])


def wrap(text: str, width: int = 100) -> str:
    """Text wrapped paragraph by paragraph, for printing prompts and examples."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) if line.strip() else "" for line in text.splitlines())


def _quote(text: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in text.strip().splitlines())


def examples_markdown(stories, emotions: list[str]) -> str:
    """The first kept story of each emotion (by job order), as Markdown block quotes."""
    parts = []
    for emotion in emotions:
        kept = stories[(stories["emotion"] == emotion) & (stories["status"] == "kept")].sort_values("id")
        if kept.empty:
            parts.append(f"**{emotion}**: no kept story in this run.")
            continue
        row = kept.iloc[0]
        parts.append(f"**{emotion}** — topic: *{row['topic']}* ({row['n_words']} words)\n\n{_quote(row['text'])}")
    return "\n\n".join(parts)


def dialogue_examples_markdown(frame, n: int = 3) -> str:
    """The first `n` kept dialogues (by job order), as Markdown block quotes."""
    kept = frame[frame["status"] == "kept"].sort_values("id").head(n)
    if kept.empty:
        kept = frame.sort_values("id").head(n)
    parts = [f"*{row['topic']}* — {row['n_exchanges']} exchanges, status {row['status']}\n\n{_quote(row['text'])}"
             for _, row in kept.iterrows()]
    return "\n\n".join(parts) or "No dialogues."


def status_counts(frame: Any, what: str = "stories") -> Any:
    """How many texts each filter decision holds, and its share."""
    counts = frame["status"].value_counts().rename_axis("status").to_frame(what)
    counts["share"] = (counts[what] / counts[what].sum()).round(3)
    return counts


def leaked_forms(stories: Any, n: int = 15) -> Any:
    """The word forms that leaked most often, with how many stories each."""
    leaked = stories[stories["status"] == "leak"].explode("leaks")
    return leaked["leaks"].value_counts().head(n).rename_axis("leaked form").to_frame("stories")
