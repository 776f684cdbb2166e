"""One call from texts to vectors (repeng-style): the same numbers as the staged path on the same texts."""

from __future__ import annotations

import pytest
import torch
from test_keep_rule import _write

import emolib
from emolib.extraction import stages
from emolib.stories import corpus as C
from emolib.stories import design as D


def test_train_in_one_call_equals_the_staged_path(runs, tiny_gemma3):
    store = _write(runs / "corpus" / "c")
    staged = stages.build_vectors(tiny_gemma3, "c", [0, 1, 2], progress=False)
    chosen = D.select(C.Corpus(store.folder))
    stories = {e: group.sort_values("id")["text"].tolist() for e, group in chosen.stories.groupby("emotion")}
    neutral = chosen.neutral.sort_values("id")["text"].tolist()
    before = sorted(p.relative_to(runs) for p in runs.rglob("*"))
    trained = emolib.EmotionVectors.train(tiny_gemma3.model, tiny_gemma3.tokenizer, stories, neutral, layers=[0, 1, 2])
    assert sorted(p.relative_to(runs) for p in runs.rglob("*")) == before  # nothing written
    ours = staged.build.denoised
    assert trained.emotions == ours.emotions and trained.layers == ours.layers
    torch.testing.assert_close(trained.vectors, ours.vectors, rtol=1e-5, atol=1e-6)
    assert trained.metadata["residual_norm"] == pytest.approx(ours.metadata["residual_norm"], rel=1e-6)
    assert trained.metadata["model_type"] == "gemma3_text" and trained.metadata["skipped_texts"] == 0


def test_train_takes_a_loaded_model_and_reports_skipped_texts(tiny_llama):
    words = "she opened the window and looked at the street below for a long while".split()
    long = [" ".join(words * 6) + f" {i}" for i in range(4)]
    build = emolib.EmotionVectors.train(tiny_llama, None, {"happy": long[:2] + ["too short"], "sad": long[2:]},
                                        long, layers="all", return_build=True)
    assert build.denoised.metadata["skipped_texts"] == 1 and build.counts == {"happy": 2, "sad": 2}
    with pytest.raises(emolib.EmolibError, match="out of range"):
        emolib.EmotionVectors.train(tiny_llama, None, {"happy": long, "sad": long}, long, layers=[9])
