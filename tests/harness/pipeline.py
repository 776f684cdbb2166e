"""The pipeline as chapters 1-3 run it, on the tiny models: stories, dialogues, extraction, vectors.

Run as a subprocess by the kill harness (tests/test_reliability.py), which SIGKILLs it at random
moments and runs it again until it finishes. Prints one line per stage so the harness can tell where
each kill landed. Runs under $EMOLIB_RUNS.
"""

from __future__ import annotations

import sys

from emolib.stories import corpus as C
from emolib.stories import design as D
from emolib.writers import generate
from emolib import models
from emolib.extraction import stages


def main() -> int:
    settings = C.CorpusSettings(writer="tiny", max_new_tokens=96)
    store = C.Corpus(C.corpus_dir("tiny"), settings)
    topics = C.select_topics(2, 0)  # two topics: the quick scale's, and enough cells for kills inside retry rounds
    writer = generate.make_writer("tiny", "", batch_size=4)
    print("stage stories", flush=True)
    # the balanced design: a random model's stories are often short or leak, so cells get retries
    design = D.Design(C.select_emotions("quick"), [i for i, _ in topics], per_cell=2, max_attempts=3)
    stats = D.write_balanced(store, design, writer, batch_size=4, progress=False)
    print(f"retry rounds {len(stats['rounds']) - 1}", flush=True)
    print("stage dialogues", flush=True)
    C.write_dialogues(store, C.neutral_jobs(settings, topics, 3, 0), writer, batch_size=3, progress=False)
    print("stage extraction", flush=True)
    loaded = models.load("tiny")
    layers = models.check_layers(loaded.profile, "all")
    options = dict(token_budget=256, shard_texts=4, progress=False, max_emotion_words=1000)
    stages.build_vectors(loaded, "tiny", layers, save=False, **options)  # the extraction (vectors not saved yet)
    print("stage vectors", flush=True)
    # the stage call chapter 3 and `python -m emolib extract` use (its extraction finds every shard on disk)
    stages.build_vectors(loaded, "tiny", layers, **options)
    print("stage done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
