"""Emotion vectors: construction, denoising, files, llama.cpp export."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from emolib.extraction import vectors as V
from emolib.errors import EmolibError


def _vectors(e: int = 4, layers=(1, 2), d: int = 8, seed: int = 0) -> V.EmotionVectors:
    generator = torch.Generator().manual_seed(seed)
    names = ["happy", "sad", "calm", "angry", "afraid", "loving"][:e]
    return V.EmotionVectors(names, layers, torch.randn(e, len(layers), d, generator=generator),
                            {"model": "tiny", "residual_norm": {str(layer): 10.0 * layer for layer in layers}})


def test_arithmetic_and_selection():
    a, b = _vectors(), _vectors(seed=1)
    torch.testing.assert_close((a + b - b).vectors, a.vectors)
    torch.testing.assert_close((2 * a).vectors, a.vectors * 2)
    torch.testing.assert_close((-a / 2).vectors, -a.vectors / 2)
    sub = a.select(["calm", "happy"], [2])
    torch.testing.assert_close(sub["calm"][0], a["calm"][1])
    assert torch.allclose(a.direction("sad", 2).norm(), torch.tensor(1.0))
    cosine = a.cosine(1)
    assert cosine.shape == (4, 4) and torch.allclose(cosine.diagonal(), torch.ones(4))
    with pytest.raises(EmolibError, match="different emotions, layers or width"):
        a + a.select(["happy", "sad"])
    with pytest.raises(EmolibError, match="no vector for emotion 'bored'"):
        a["bored"]
    with pytest.raises(EmolibError, match=r"no vectors at layer 7; these were extracted at layers \[1, 2\]"):
        a.at(7)


def test_save_load_round_trip_and_model_check(tmp_path):
    a = _vectors()
    a.save(tmp_path / "v")
    assert (tmp_path / "v.safetensors").exists() and (tmp_path / "v.json").exists()
    b = V.EmotionVectors.load(tmp_path / "v", model="tiny")
    assert b.emotions == a.emotions and b.layers == a.layers and torch.equal(b.vectors, a.vectors)
    assert b.metadata["residual_norm"] == a.metadata["residual_norm"]
    with pytest.raises(EmolibError, match="holds vectors for model 'tiny' \\(d=8\\), not '270m'"):
        V.EmotionVectors.load(tmp_path / "v", model="270m")
    (tmp_path / "v.safetensors").write_bytes(b"garbage")
    with pytest.raises(EmolibError, match="corrupted"):
        V.EmotionVectors.load(tmp_path / "v")
    with pytest.raises(EmolibError, match="missing"):
        V.EmotionVectors.load(tmp_path / "nothing")


def test_denoising_removes_exactly_the_neutral_subspace():
    generator = torch.Generator().manual_seed(3)
    d = 16
    # neutral variance lives mostly in two planted directions
    basis = torch.linalg.qr(torch.randn(d, d, generator=generator))[0]
    scales = torch.tensor([10.0, 6.0] + [0.5] * (d - 2))
    neutral = (torch.randn(300, d, generator=generator) * scales) @ basis.T
    pcs = V.neutral_pcs(neutral[:, None, :], layers=[0], variance=0.5)
    assert pcs.k == [1]
    pcs2 = V.neutral_pcs(neutral[:, None, :], layers=[0], variance=0.8)
    assert pcs2.k == [2]
    vectors = torch.randn(5, 1, d, generator=generator)
    cleaned = V.project_out(vectors, pcs2)
    top = pcs2.components[0][:2]
    assert (cleaned[:, 0] @ top.T).abs().max() < 1e-4  # nothing left along the removed directions
    rest = torch.eye(d) - top.T @ top
    torch.testing.assert_close(cleaned[:, 0], vectors[:, 0] @ rest, rtol=1e-4, atol=1e-4)  # the rest untouched
    # the planted axes are what was found
    assert abs(float(top[0] @ basis[:, 0])) > 0.95 and abs(float(top[1] @ basis[:, 1])) > 0.95


def test_control_vector_export_reads_back(tmp_path):
    a = _vectors(layers=(0, 1, 2))
    path = a.to_control_vector(tmp_path / "happy.gguf", "happy")
    read = V.read_control_vector(path)
    assert sorted(read) == [1, 2]  # llama.cpp has no slot for block 0
    for layer in (1, 2):
        torch.testing.assert_close(read[layer], a.direction("happy", layer) * 10.0 * layer)
    unit = V.read_control_vector(a.to_control_vector(tmp_path / "u.gguf", "sad", layers=[2], scale="unit", strength=-1))
    torch.testing.assert_close(unit[2], -a.direction("sad", 2))
    import gguf

    reader = gguf.GGUFReader(str(path))
    fields = {f.name: f for f in reader.fields.values()}
    assert "controlvector.layer_count" in fields and "controlvector.model_hint" in fields
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "controlvector"


def test_a_build_saves_and_loads_whole(tmp_path, monkeypatch):
    from emolib.extraction import extract
    from emolib import models

    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path))
    loaded = models.load("tiny")
    words = "the light fell on the table while she waited for the letter in the rain".split()
    texts = {f"story/{e}/{t:03d}/0/0": " ".join(words[(i * 7 + j * 3) % len(words)] for j in range(70))
             for i, (e, t) in enumerate([(e, t) for e in ("happy", "sad", "calm") for t in (1, 2, 3)])}
    neutral = {f"neutral/{t:03d}/0/0": " ".join(words[(t + j) % len(words)] for j in range(80)) for t in range(5)}
    every = {**texts, **neutral}
    prepared, _ = extract.Texts.tokenize(list(every), list(every.values()), loaded.tokenizer)
    store = extract.ActivationStore(extract.activations_dir("tiny", "t", (1, 3)))
    store.extract(loaded, (1, 3), prepared, progress=False)
    stories = {e: [i for i in texts if f"/{e}/" in i] for e in ("happy", "sad", "calm")}
    story_topics = {i: int(i.split("/")[2]) for i in texts}  # as the corpus records each story's topic
    with pytest.raises(EmolibError, match="record no story topics"):
        V.build(store, stories, list(neutral)).story_activations(3)
    built = V.build(store, stories, list(neutral), metadata={"model": "tiny"}, topics=story_topics)
    built.save(tmp_path / "v")
    again = V.VectorBuild.load(tmp_path / "v", model="tiny")
    assert torch.equal(again.denoised.vectors, built.denoised.vectors) and torch.equal(again.raw.vectors, built.raw.vectors)
    assert again.pcs.k == built.pcs.k and again.stories == built.stories and again.neutral_ids == list(neutral)
    acts, labels, topics, ids = again.story_activations(3)
    assert acts.shape == (9, 64) and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and topics.tolist() == [1, 2, 3] * 3
    # the vectors are the story means minus their mean, with the neutral basis projected out
    means = torch.tensor(acts).reshape(3, 3, 64).mean(1)
    raw = means - means.mean(0)
    basis = torch.tensor(again.neutral_basis(3))
    torch.testing.assert_close(again.denoised.at(3), raw - (raw @ basis.T) @ basis, rtol=1e-4, atol=1e-3)
    with pytest.raises(EmolibError, match="run chapter 3"):
        V.VectorBuild.load(tmp_path / "nothing")
    # weights: a full cell weighs 1 (plain means, bit for bit); topic centring cancels in a balanced design
    assert store.layers == [1, 3] and store.hidden_size == 64
    topics = story_topics
    weighted = V.build(store, stories, list(neutral), weights={i: 1.0 for i in texts}, topics=topics)
    assert torch.equal(weighted.raw.vectors, built.raw.vectors) and weighted.topics == topics
    centred = V.build(store, stories, list(neutral), topics=topics, centre_topics=True)
    assert centred.raw.metadata["topic_centred"] is True and built.raw.metadata.get("topic_centred") is False
    torch.testing.assert_close(centred.raw.vectors, built.raw.vectors, rtol=1e-4, atol=1e-3)
    # unbalanced (sad lacks topic 3): centring removes topic 3's offset from the other emotions' means
    uneven = {**stories, "sad": [i for i in stories["sad"] if "/003/" not in i]}
    plain_uneven = V.build(store, uneven, list(neutral), topics=topics)
    centred_uneven = V.build(store, uneven, list(neutral), topics=topics, centre_topics=True)
    assert not torch.allclose(plain_uneven.raw.vectors, centred_uneven.raw.vectors, atol=1e-3)
    # a short cell's story weighs quota / kept: equivalent to the mean of the cell means
    short = V.build(store, uneven, list(neutral), weights={i: 2.0 for i in uneven["sad"][:1]} | {i: 1.0 for i in uneven["sad"][1:]})
    acts3, _, _, ids3 = again.story_activations(3)
    by_id = dict(zip(ids3, acts3))
    sad = uneven["sad"]
    expected_sad = (2 * by_id[sad[0]] + by_id[sad[1]]) / 3
    happy_calm = [np.mean([by_id[i] for i in stories[e]], axis=0) for e in ("happy", "calm")]
    expected = expected_sad - np.mean([happy_calm[0], expected_sad, happy_calm[1]], axis=0)
    torch.testing.assert_close(short.raw.at(3)[short.raw.index("sad")], torch.tensor(expected, dtype=torch.float32),
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(EmolibError, match="centre_topics needs each story's topic"):
        V.build(store, stories, list(neutral), centre_topics=True)


def test_control_vectors_come_back_in_bit_for_bit(tmp_path):
    """Round trip through llama.cpp's format: exported raw, read back identical; exported scaled by the
    residual norm (the default), read back as that scaled direction."""
    a = _vectors(layers=(1, 2, 3))
    paths = {e: a.to_control_vector(tmp_path / f"{e}.gguf", e, scale="raw") for e in ("happy", "sad")}
    back = V.EmotionVectors.from_control_vector(paths)
    assert back.emotions == ["happy", "sad"] and back.layers == (1, 2, 3)
    assert torch.equal(back.vectors, a.select(["happy", "sad"]).vectors)  # bit for bit
    scaled = V.EmotionVectors.from_control_vector(a.to_control_vector(tmp_path / "n.gguf", "calm"), emotion="calm")
    for layer in (1, 2, 3):
        torch.testing.assert_close(scaled.direction("calm", layer), a.direction("calm", layer))
        assert abs(scaled.metadata["direction_norm"]["calm"][str(layer)] - 10.0 * layer) < 1e-4  # the residual norm
    with pytest.raises(EmolibError, match="name it"):
        V.EmotionVectors.from_control_vector(paths["happy"])
    only_two = a.to_control_vector(tmp_path / "two.gguf", "calm", layers=[2, 3], scale="raw")
    with pytest.raises(EmolibError, match="the same layers"):
        V.EmotionVectors.from_control_vector({"happy": paths["happy"], "calm": only_two})


def test_steering_vectors_come_back_in_bit_for_bit():
    if not os.environ.get("CI"):  # make setup installs it: in CI a missing peer fails instead of skipping
        pytest.importorskip("steering_vectors")
    from steering_vectors import SteeringVector

    a = _vectors(layers=(0, 1, 2))
    back = V.EmotionVectors.from_steering_vector({e: a.to_steering_vector(e, scale="raw") for e in a.emotions})
    assert back.emotions == a.emotions and back.layers == a.layers and torch.equal(back.vectors, a.vectors)
    normed = V.EmotionVectors.from_steering_vector(a.to_steering_vector("sad"), emotion="sad")
    torch.testing.assert_close(normed.direction("sad", 2), a.direction("sad", 2))
    with pytest.raises(EmolibError, match="decoder-block"):
        V.EmotionVectors.from_steering_vector(SteeringVector({1: torch.ones(4)}, "mlp"), emotion="happy")


def test_published_vectors_carry_a_card_that_verifies(tmp_path, monkeypatch):
    """Issue 24.6: a build published with its data card loads back bit for bit, its control vectors read back,
    and the card's SHA-256s match until a file changes."""
    from emolib.extraction.publish import publish_vectors
    from emolib.stories.card import verify_data_card

    test_a_build_saves_and_loads_whole(tmp_path, monkeypatch)
    built = V.VectorBuild.load(tmp_path / "v", model="tiny")
    card = publish_vectors(built, tmp_path / "pub", model="tiny", made_by="pytest", emotions=("happy", "calm", "absent"))
    assert "| `control_vectors/happy.gguf` |" in card.read_text() and "absent" not in card.read_text()
    again = V.EmotionVectors.load(tmp_path / "pub" / "vectors", model="tiny")
    assert torch.equal(again.vectors, built.denoised.vectors) and again.emotions == built.denoised.emotions
    assert sorted(V.read_control_vector(tmp_path / "pub" / "control_vectors" / "calm.gguf")) == [1, 3]
    checked = verify_data_card(tmp_path / "pub")
    assert len(checked) == 4 and checked["matches"].all()
    (tmp_path / "pub" / "control_vectors" / "calm.gguf").write_bytes(b"changed")
    assert verify_data_card(tmp_path / "pub")["matches"].sum() == 3
