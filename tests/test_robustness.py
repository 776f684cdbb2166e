"""The analyses a reviewer asks for: anchor orientation, topic centring, split-half reliability, the
subsampling curve and its fit, and the max-over-layers null — on synthetic data with a known answer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolib.analysis import geometry as G
from emolib.analysis import reliability as R
from emolib.errors import EmolibError

EMOTIONS = ["happy", "joyful", "delighted", "cheerful", "grateful", "sad", "miserable", "afraid", "angry", "depressed",
            "calm", "sleepy", "furious", "excited", "bored", "terrified"]
VALENCE = pd.Series([8.0, 8.2, 7.9, 7.5, 7.6, 2.1, 1.8, 2.5, 2.3, 1.9, 6.9, 6.0, 2.0, 7.8, 3.0, 1.7], index=EMOTIONS)
AROUSAL = pd.Series([6.0, 6.2, 6.5, 5.8, 4.0, 3.5, 4.0, 6.5, 7.0, 3.0, 2.0, 1.5, 7.5, 7.2, 2.0, 7.8], index=EMOTIONS)


def synthetic(per_emotion: int = 12, n_topics: int = 6, noise: float = 3.0, topic_shift: float = 0.0, d: int = 32,
              seed: int = 0):
    """Stories whose activation = valence * v + arousal * a + topic offset + noise."""
    rng = np.random.default_rng(seed)
    v, a = rng.normal(size=d), rng.normal(size=d)
    offsets = rng.normal(size=(n_topics, d)) * topic_shift
    acts, labels, topics = [], [], []
    for i, emotion in enumerate(EMOTIONS):
        for k in range(per_emotion):
            topic = k % n_topics
            acts.append((VALENCE[emotion] - 5) * v + (AROUSAL[emotion] - 5) * 0.6 * a + offsets[topic]
                        + rng.normal(size=d) * noise)
            labels.append(i)
            topics.append(topic)
    return np.array(acts), np.array(labels), np.array(topics)


def test_anchors_fix_the_sign_without_looking_at_the_ratings():
    acts, labels, topics = synthetic(noise=0.5)
    vectors = R.vectors_from_stories(acts, labels, len(EMOTIONS), None)
    for flip in (1, -1):
        result = G.orient_by_anchors(G.pca(flip * vectors, EMOTIONS, n=2))
        assert G.pearson(result.scores[:, 0], VALENCE.values) > 0.9
    # the reported r keeps its sign: ratings reversed give a negative r, not a flipped axis
    h = R.headline(vectors, EMOTIONS, -VALENCE, AROUSAL)
    assert h.valence_r < -0.9


def test_the_held_out_valence_test_is_oriented_by_anchors_and_has_a_ratings_null():
    """Issue 23.4: the held-out valence axis is oriented by the fixed anchors, never by the ratings. With ratings
    reversed (10 - valence) the anchors still point PC1 at the planted pleasant end, so the AUROC falls far below
    0.5 and its permutation p is large; orienting by the training fold's ratings (the code before) flipped the
    axis to agree with them and reported AUROC near 1. With the true ratings AUROC is high and p at its floor;
    stories with no valence structure give an unremarkable p."""
    acts, labels, topics = synthetic(noise=2.0)
    honest = G.valence_probe(acts, labels, topics, EMOTIONS, VALENCE, n_perm=500)
    assert honest["auroc"] > 0.8 and honest["auroc_p"] == pytest.approx(1 / 501) and honest["r_p"] < 0.01
    reversed_ratings = G.valence_probe(acts, labels, topics, EMOTIONS, 10 - VALENCE, n_perm=500)
    assert reversed_ratings["auroc"] < 0.2 and reversed_ratings["auroc_p"] > 0.9
    rng = np.random.default_rng(1)
    noise = G.valence_probe(rng.normal(size=acts.shape), labels, topics, EMOTIONS, VALENCE, n_perm=500)
    assert noise["auroc_p"] > 0.05


def test_topic_centring_removes_topic_offsets_from_an_unbalanced_design():
    acts, labels, topics = synthetic(noise=0.3, topic_shift=20.0)
    # unbalanced: pleasant emotions only on topics 0-2, unpleasant only on 3-5
    pleasant = VALENCE.values[labels] > 5
    keep = np.where(pleasant, topics < 3, topics >= 3)
    acts, labels, topics = acts[keep], labels[keep], topics[keep]
    centred = G.topic_centre(acts, topics)
    for topic in np.unique(topics):
        assert np.allclose(centred[topics == topic].mean(axis=0), 0, atol=1e-9)
    raw = R.vectors_from_stories(acts, labels, len(EMOTIONS), None)
    fixed = R.vectors_from_stories(centred, labels, len(EMOTIONS), None)
    # the topic offsets make raw PC1 a topic axis; centring keeps the emotion structure (within-group signal)
    assert R.headline(raw, EMOTIONS, VALENCE, AROUSAL).pc1_variance > 0.9
    probe_raw = G.probe(acts, labels, topics, len(EMOTIONS))
    probe_centred = G.probe(acts, labels, topics, len(EMOTIONS), centre_topics=True)
    assert "topic-centred" in probe_centred.name and probe_centred.top1 >= probe_raw.top1
    assert np.isfinite(fixed).all()


def test_split_half_reliability_is_high_for_signal_and_low_for_noise():
    acts, labels, topics = synthetic(noise=0.5)
    clean = R.split_half(acts, labels, topics, len(EMOTIONS), None, n_splits=5)
    noise_only = R.split_half(np.random.default_rng(1).normal(size=acts.shape), labels, topics, len(EMOTIONS), None,
                              n_splits=5)
    assert clean["half"] > 0.9 and clean["spearman_brown"] > clean["half"]
    assert abs(noise_only["half"]) < 0.3
    assert clean["spearman_brown"] == pytest.approx(2 * clean["half"] / (1 + clean["half"]))
    assert clean["emotions"] == len(EMOTIONS)


def test_split_half_leaves_out_an_emotion_with_one_story_and_keeps_the_rest():
    """A quick run whose rewrites never filled a cell has an emotion with one story: it has no halves, so it is
    left out (and counted), and the other emotions' reliability is what it would be without it."""
    acts, labels, topics = synthetic(noise=0.5)
    lonely = np.flatnonzero(labels == 0)[1:]  # emotion 0 keeps a single story
    keep = np.setdiff1d(np.arange(len(labels)), lonely)
    result = R.split_half(acts[keep], labels[keep], topics[keep], len(EMOTIONS), None, n_splits=5)
    assert result["emotions"] == len(EMOTIONS) - 1 and result["half"] > 0.9
    with pytest.raises(EmolibError, match="needs at least 2 emotions with 2 or more stories"):
        R.split_half(acts[:1], labels[:1], topics[:1], len(EMOTIONS), None)


@pytest.mark.parametrize("per_cell", [1, 2, 3])
def test_halves_split_every_emotion_with_two_stories_at_any_cell_size(per_cell):
    """The quick scale keeps 1 story per cell over 2 topics: a one-story cell sent to a random half on its own
    left 2 of 171 emotions unsplit with probability 1/2 each, so no split of them all existed. Within an emotion
    the odd stories now alternate between halves: every emotion with >= 2 stories has one in each, the halves
    differ by at most one story per emotion, and cells of even size split evenly."""
    n_topics, n_emotions = 2, 171
    labels = np.repeat(np.arange(n_emotions), n_topics * per_cell)
    topics = np.tile(np.repeat(np.arange(n_topics), per_cell), n_emotions)
    rng = np.random.default_rng(0)
    for _ in range(20):
        first = R._halves(labels, topics, rng)
        in_first = np.bincount(labels[first], minlength=n_emotions)
        in_second = np.bincount(labels[~first], minlength=n_emotions)
        assert (in_first >= 1).all() and (in_second >= 1).all()
        assert (np.abs(in_first - in_second) <= (1 if n_topics * per_cell % 2 else 0)).all()
        if per_cell % 2 == 0:
            for cell in range(n_topics):  # even cells split evenly within the cell too
                members = first[topics == cell].reshape(n_emotions, per_cell)
                assert (members.sum(1) == per_cell // 2).all()
    # both halves take the odd stories equally often over many emotions (a random start, not always the first half)
    labels3 = np.repeat(np.arange(400), 3)
    first = R._halves(labels3, np.zeros(1200, int), np.random.default_rng(1))
    assert 0.4 < np.mean(np.bincount(labels3[first]) == 2) < 0.6


def test_cv_pca_runs_at_the_quick_scale_and_leaves_out_an_emotion_with_one_story():
    """A quick-scale corpus (one story per cell, two topics) has a cross-validated spectrum; an emotion whose
    cells kept a single story is left out and named, not a reason for chapter 4 to stop."""
    from emolib.analysis import circumplex as C

    acts, labels, topics = synthetic(per_emotion=2, n_topics=2, noise=0.5)
    table = C.cv_pca(acts, labels, topics, EMOTIONS, None, None, n_components=3, n_splits=4)
    assert table.attrs["splits"] == 4 and table.attrs["emotions"] == len(EMOTIONS) and table.attrs["left out"] == []
    keep = np.setdiff1d(np.arange(len(labels)), np.flatnonzero(labels == 3)[1:])
    table = C.cv_pca(acts[keep], labels[keep], topics[keep], EMOTIONS, None, None, n_components=3, n_splits=4)
    assert table.attrs["emotions"] == len(EMOTIONS) - 1 and table.attrs["left out"] == ["cheerful"]


def test_subsampling_spreads_over_topics_and_the_curve_rises():
    acts, labels, topics = synthetic(per_emotion=12, noise=6.0)
    rng = np.random.default_rng(0)
    pick = R.subsample(labels, topics, 4, rng)
    assert np.bincount(labels[pick]).tolist() == [4] * len(EMOTIONS)
    for emotion in range(len(EMOTIONS)):
        assert len(set(topics[pick][labels[pick] == emotion])) == 4  # 4 stories from 4 different topics
    curve = R.scaling_curve(acts, labels, topics, EMOTIONS, None, VALENCE, AROUSAL, ns=[1, 3, 12], draws=6)
    means = curve.groupby("n")["r_valence"].mean()
    assert means[12] > means[1]
    assert curve.groupby("n").size().tolist() == [6, 6, 6] and "probe_top1" in curve


def test_the_attenuation_fit_recovers_a_known_curve():
    """Noisy mean r per n (the subsampling curve's n up to 24; noise SD 0.01, about a mean of 10 draws) around a
    known curve r_inf = 0.9, rho = 0.1. Tolerances: over 300 seeds, 99 % of fits fall within r_inf 0.865..0.941,
    rho 0.086..0.112 and n(r = 0.8) 27..47 stories; ten seeds must all fall within them. A fit of the model without
    its square root, or of r^2, or the Spearman-Brown inversion for n turned around, lands far outside."""
    n = np.array([1, 2, 3, 4, 6, 8, 12, 16, 20, 24], float)
    truth = R.ScalingFit(0.9, 0.1, {})
    rel = (0.8 / 0.9) ** 2  # r = 0.8 needs reliability (0.8 / 0.9)^2: n = rel (1 - rho) / (rho (1 - rel)) = 33.9
    needed = rel * 0.9 / (0.1 * (1 - rel))
    for seed in range(10):
        r = truth.predict(n) + 0.01 * np.random.default_rng(seed).normal(size=n.size)
        fit = R.fit_scaling(n, r, targets=(0.8, 0.95))
        assert set(fit.n_for) == {"0.8", "0.95"}
        assert fit.r_inf == pytest.approx(0.9, abs=0.05) and fit.rho == pytest.approx(0.1, abs=0.025), seed
        assert fit.n_for["0.8"] == pytest.approx(needed, rel=0.4), seed
        assert fit.n_for["0.95"] is None  # above r_inf: unreachable, said as such
        assert fit.predict(fit.n_for["0.8"]) == pytest.approx(0.8, abs=1e-6)  # n_for inverts the fitted curve
        assert np.sqrt(np.mean((fit.predict(n) - r) ** 2)) < 0.02  # about the noise: the fit converged


def test_the_attenuation_fit_at_its_bounds():
    """Truths the fit cannot hold inside its bounds: its parameters go to the bound, where a reader can see it."""
    n = np.array([1, 2, 3, 4, 6, 8, 12, 16, 20, 24], float)
    rng = np.random.default_rng(0)
    # outside the family: r = 0.1 sqrt(n) never levels off (it reaches 0.8 at n = 64). The ceiling goes to its bound,
    # exactly 1.0 (compare.py reads r_inf >= 0.99 as "does not level off"); without the bound r_inf would pass 1.
    # Within the measured n the curve is still described to a few hundredths, but its n(r = 0.8), about 150, is an
    # extrapolation from a fit at its bound, not the truth's 64.
    r = 0.1 * np.sqrt(n) + 0.01 * rng.normal(size=n.size)
    rising = R.fit_scaling(n, r)
    assert rising.r_inf == pytest.approx(1.0, abs=1e-9) and 0.005 < rising.rho < 0.05
    assert np.sqrt(np.mean((rising.predict(n) - r) ** 2)) < 0.03
    # a flat curve at 0.6: nothing to gain from more stories; one story's reliability goes to (near) its bound, 1,
    # the ceiling is the level, r = 0.8 is out of reach (None) and r = 0.5 is already there at one story (n < 1)
    flat = R.fit_scaling(n, 0.6 + 0.01 * rng.normal(size=n.size))
    assert flat.r_inf == pytest.approx(0.6, abs=0.02) and flat.rho > 0.9
    assert flat.n_for["0.8"] is None and flat.n_for["0.5"] < 1
    # a curve falling below zero: the sign is kept (a fit of |r| would report a positive ceiling)
    falling = R.fit_scaling(n, -0.1 * np.sqrt(n) + 0.01 * rng.normal(size=n.size))
    assert falling.r_inf == pytest.approx(-1.0, abs=1e-9) and falling.n_for == {"0.5": None, "0.8": None}


def test_an_extrapolation_is_offered_only_where_the_data_set_it():
    """supported_extrapolation (what the comparison and chapter 4 print) gives n(r = 0.8) for a well-determined fit
    and None for a fit at a bound or with an open-ended bootstrap interval; bootstrap_fit's interval is finite for
    a known curve inside the family (r_inf 0.9, rho 0.1: 34 stories) and open-ended for one that never levels off."""
    n = np.array([1, 2, 3, 4, 6, 8, 12, 16, 20, 24], float)
    rng = np.random.default_rng(0)
    truth = R.ScalingFit(0.9, 0.1, {})
    rows = [{"n": k, "draw": d, "r": float(truth.predict(k)) + 0.03 * rng.normal()} for k in n for d in range(10)]
    curve = pd.DataFrame(rows)
    means = curve.groupby("n")["r"].mean()
    fit = R.fit_scaling(means.index, means.values)
    ci = R.bootstrap_fit(curve, "r", None, n_boot=100)
    assert not fit.at_bound and np.isfinite(ci["0.8"]).all() and ci["0.8"][0] < fit.n_for["0.8"] < ci["0.8"][1]
    saved = {"r_inf": fit.r_inf, "rho": fit.rho, "stories_needed": fit.n_for, "stories_needed_ci": ci}
    assert R.supported_extrapolation(saved) == pytest.approx(fit.n_for["0.8"])
    assert R.supported_extrapolation({**saved, "stories_needed_ci": {}}) is None  # no interval: no number
    assert R.supported_extrapolation({**saved, "stories_needed_ci": {"0.8": [20.0, np.inf]}}) is None
    assert R.supported_extrapolation({**saved, "r_inf": 1.0}) is None and R.supported_extrapolation({**saved, "rho": 1.0}) is None
    rising = pd.DataFrame([{"n": k, "draw": d, "r": 0.1 * np.sqrt(k) + 0.01 * rng.normal()} for k in n for d in range(10)])
    assert not np.isfinite(R.bootstrap_fit(rising, "r", None, n_boot=50)["0.8"][1])


def test_the_max_over_layers_null_is_harder_to_pass_than_one_layer():
    rng = np.random.default_rng(0)
    ratings = rng.normal(size=40)
    noise_layers = [rng.normal(size=40) for _ in range(18)]
    result = R.max_layer_null(noise_layers, ratings, n_perm=2000)
    best = noise_layers[result["best_slot"]]
    single_layer_p = G.permutation_p(best, ratings, n=2000)
    # the best of 18 noise layers looks "significant" far more often on its own than against the max null
    assert result["p"] > single_layer_p
    assert result["null_95"] > 0.25
    signal = [r + (3 * ratings if i == 5 else 0) for i, r in enumerate(noise_layers)]
    strong = R.max_layer_null(signal, ratings, n_perm=2000)
    assert strong["best_slot"] == 5 and strong["p"] < 0.01


def test_the_robustness_tables_plain_row_is_the_chapters_vectors():
    """Issue 23.8: the "plain" row reports the chapter's own vectors (here weighted differently from an unweighted
    rebuild from the stories, as a design-weighted build is), so it equals the headline instead of differing
    from it in the third decimal."""
    from types import SimpleNamespace

    import torch

    acts, labels, topics = synthetic(noise=1.0)
    chapter = R.vectors_from_stories(acts, labels, len(EMOTIONS), None) * np.linspace(1.0, 1.3, len(EMOTIONS))[:, None]
    build = SimpleNamespace(
        story_activations=lambda layer: (acts, labels, topics, None),
        denoised=SimpleNamespace(emotions=EMOTIONS, at=lambda layer: torch.from_numpy(chapter)),
        neutral_basis=lambda layer: np.zeros((0, acts.shape[1])))
    table = R.robustness_table(build, 0, VALENCE, AROUSAL)
    expected = R.headline(chapter, EMOTIONS, VALENCE, AROUSAL)
    assert table.loc["plain (the chapter's vectors)", "r(PC1, valence)"] == pytest.approx(expected.valence_r, abs=1e-12)
    rebuilt = R.headline(R.vectors_from_stories(acts, labels, len(EMOTIONS), None), EMOTIONS, VALENCE, AROUSAL)
    assert rebuilt.valence_r != pytest.approx(expected.valence_r, abs=1e-6)  # the case: the two differ
