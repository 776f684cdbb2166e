"""External validation helpers: the embedded corpus, local files, projections, VADER, AUROC."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from emolib.analysis import validate
from emolib.errors import EmolibError


def test_bbc_news_is_real_and_balanced():
    frame = validate.bbc_news(n=25, seed=1)
    assert len(frame) == 25 and frame["id"].is_unique
    assert set(frame["label"]) == {"business", "entertainment", "politics", "sports", "tech"}
    assert frame["text"].str.len().min() > 200
    assert len(validate.bbc_news()) == 2225
    cut = validate.opening_passages(frame, max_chars=400)
    assert (cut["text"].str.len() <= 400).all() and (cut["text"].str.len() > 50).all()


def test_local_texts_in_every_format(tmp_path):
    (tmp_path / "a.txt").write_text("First passage.\nStill first.\n\nSecond passage.\n")
    assert validate.read_texts(tmp_path / "a.txt")["text"].tolist() == ["First passage.\nStill first.", "Second passage."]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"content": t, "y": i}) for i, t in enumerate("xyz")))
    frame = validate.read_texts(tmp_path / "b.jsonl", text_field="content", label_field="y")
    assert frame["label"].tolist() == [0, 1, 2] and frame["id"].tolist() == ["b/0", "b/1", "b/2"]
    pd.DataFrame({"text": ["p", "q"], "label": ["pos", "neg"]}).to_csv(tmp_path / "c.csv", index=False)
    assert validate.read_texts(tmp_path / "c.csv", label_field="label")["label"].tolist() == ["pos", "neg"]
    with pytest.raises(EmolibError, match="has no column 'body'"):
        validate.read_texts(tmp_path / "c.csv", text_field="body")
    with pytest.raises(EmolibError, match="unsupported format '.xml'"):
        (tmp_path / "d.xml").write_text("<x/>")
        validate.read_texts(tmp_path / "d.xml")
    with pytest.raises(EmolibError, match="no texts at"):
        validate.read_texts(tmp_path / "missing.txt")


def test_projection_vader_auroc():
    acts = np.array([[2.0, 0.0], [0.0, 3.0]])
    vectors = np.array([[10.0, 0.0], [0.0, -1.0]])
    assert np.allclose(validate.project(acts, vectors), [[2, 0], [0, -3]])
    assert np.allclose(validate.project(acts, vectors, center=np.array([1.0, 1.0])), [[1, 1], [-1, -2]])
    scores = validate.vader(["What a wonderful, happy day!", "This is a terrible, awful disaster."])
    assert scores[0] > 0.5 > -0.5 > scores[1]
    assert validate.auroc([0.1, 0.2, 0.9, 0.8], [False, False, True, True]) == 1.0
    assert np.isnan(validate.auroc([1, 2], [True, True]))
    r, low, high = validate.bootstrap_r(np.arange(50), np.arange(50) + np.random.default_rng(0).normal(size=50), n=200)
    assert 0.9 < low <= r <= high <= 1.0


def test_per_token_projections_average_to_the_passage_projection(tiny_gemma3):
    """The token-by-token view and the passage score agree: the mean of the tokens' projections from the
    50th token on is the projection of the passage's mean activation, which extraction computes."""
    import torch

    from emolib.book import plots
    from emolib.extraction import extract
    from emolib.extraction.vectors import EmotionVectors

    words = "the morning light fell on the kitchen table while she waited for the letter".split()
    text = " ".join(words * 6)
    vectors = EmotionVectors(["happy", "sad"], (0, 1, 2, 3), torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(3)))
    passage = validate.project_tokens(tiny_gemma3, vectors, text, ["happy", "sad"], 2)
    ids = tiny_gemma3.tokenizer(text)["input_ids"]
    assert passage.values.shape == (2, len(ids)) and len(passage.tokens) == len(ids)
    means, _ = extract.reduce_batch(tiny_gemma3.model, [2], torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))
    units = torch.stack([vectors.direction(e, 2) for e in ("happy", "sad")])
    expected = (units @ means[0, 0]).numpy()
    assert abs(passage.values[:, 50:].mean(axis=1) - expected).max() < 1e-4
    figure = plots.token_heatmap(passage, "a passage")
    assert figure.data[0].z is not None and len(figure.data[0].text) == -(-len(ids) // 24)
