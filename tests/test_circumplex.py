"""The rotation-aware circumplex tests (issue 26) on hand-made configurations whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolib.analysis import circumplex as C
from emolib.analysis.geometry import match_components, orient_by_anchors, pca


def _human(n: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2))


def _turned(human: np.ndarray, degrees: float, noise: float = 0.3, seed: int = 1) -> np.ndarray:
    """Model coordinates in which human valence lies at `degrees` from PC1 (towards PC2)."""
    t = np.radians(degrees)
    frame = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    return human @ frame + noise * np.random.default_rng(seed).normal(size=human.shape)


def test_a_circumplex_turned_45_degrees_is_found_rotated() -> None:
    human = _human()
    found = C.alignment_test(_turned(human, -45), human, n_perm=500)
    assert found["angle"] == pytest.approx(-45, abs=8)
    assert found["r_valence"] > 0.9 and found["r_arousal"] > 0.9
    assert found["p_valence"] < 0.01 and found["p_arousal"] < 0.01
    assert not found["reflected"]
    assert C.circumplex_verdict(found) == "present but rotated"
    # the axes alone see a diluted picture: PC1's r with valence is about cos 45°
    model = _turned(human, -45)
    assert abs(np.corrcoef(model[:, 0], human[:, 0])[0, 1]) < 0.8


def test_an_unrotated_circumplex_is_on_the_axes() -> None:
    human = _human()
    found = C.alignment_test(_turned(human, 5), human, n_perm=500)
    assert found["angle"] == pytest.approx(5, abs=8)
    assert C.circumplex_verdict(found) == "present on the axes"


def test_a_random_configuration_is_absent() -> None:
    human = _human()
    model = np.random.default_rng(7).normal(size=human.shape)
    found = C.alignment_test(model, human, n_perm=1000)
    assert found["p_valence"] > 0.05 and found["p_arousal"] > 0.05
    assert C.circumplex_verdict(found) == "absent"


def test_a_reflected_plane_is_reported_reflected() -> None:
    human = _human()
    model = human * np.array([1.0, -1.0]) + 0.2 * np.random.default_rng(3).normal(size=human.shape)
    found = C.alignment_test(model, human, n_perm=200)
    assert found["reflected"] and found["r_arousal"] > 0.9
    assert C.circumplex_verdict(found) == "present but rotated"


def test_collinear_points_have_no_alignment() -> None:
    """A bootstrap resample of two distinct words is a line: rotation and reflection fit it equally well,
    and which one an SVD returns depends on the CPU's rounding (a chapter's angle interval moved by a degree
    under another kernel). Such a configuration is refused, and the bootstrap counts it as missing."""
    human = _human(5)
    model = _turned(human, 30, noise=0.1)
    pick = np.array([0, 1, 0, 1, 1])
    with pytest.raises(C.EmolibError, match="collinear"):
        C.procrustes_alignment(model[pick], human[pick])
    line = np.c_[np.arange(6.0), 2 * np.arange(6.0) + 1]  # three or more points, still on one line
    with pytest.raises(C.EmolibError, match="collinear"):
        C.procrustes_alignment(line, _human(6))
    assert C.procrustes_alignment(model, human).r_valence > 0.9  # five points in general position are fine


def test_valence_alone_is_valence_only() -> None:
    human = _human()
    rng = np.random.default_rng(5)
    model = np.column_stack([human[:, 0] + 0.3 * rng.normal(size=len(human)), rng.normal(size=len(human))])
    found = C.alignment_test(model, human, n_perm=1000)
    assert found["p_valence"] < 0.01
    assert C.circumplex_verdict(found) == ("valence only" if found["p_arousal"] >= 0.05 else "present on the axes")
    assert found["p_arousal"] >= 0.05  # the seed is fixed; arousal is pure noise here


def test_the_best_layer_pays_for_being_chosen() -> None:
    human = _human(40)
    rng = np.random.default_rng(11)
    layers = {layer: _turned(human, 0, noise=3.0, seed=layer) for layer in range(8)}
    table, best = C.alignment_over_layers(layers, human, n_perm=1000)
    single = float(table.loc[table["layer"] == best["best_layer"], "p (valence)"].iloc[0])
    assert best["p_max"] >= single
    assert best["best_r"] == pytest.approx(table["aligned r (valence)"].max())
    del rng


def test_ridge_reads_a_buried_rating_and_not_a_shuffled_one() -> None:
    rng = np.random.default_rng(0)
    emotions = [f"e{i}" for i in range(60)]
    y = rng.normal(size=60)
    direction = rng.normal(size=200)
    vectors = np.outer(y, direction) / np.linalg.norm(direction) * 4 + rng.normal(size=(60, 200))
    found = C.ridge_ceiling(vectors, emotions, pd.Series(y, index=emotions), n_perm=500)
    assert found["r"] > 0.7 and found["p"] < 0.01
    noise = C.ridge_ceiling(vectors, emotions, pd.Series(rng.normal(size=60), index=emotions), n_perm=500)
    assert noise["r"] < 0.3 and noise["p"] > 0.01
    assert found["r"] == pytest.approx(np.sqrt(max(found["q2"], 0)))


def test_nested_loo_equals_refitting_with_the_penalty_chosen_inside_each_fold() -> None:
    """The held-out predictions equal ridge refitted without each word, at the penalty GCV picks on that fold's
    training words alone (the held-out word never shapes the penalty: issue 36, 0.710 -> 0.672 on 270m)."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(15, 6))
    y = rng.normal(size=15)
    nested = C.nested_loo_predictions(x @ x.T, y[:, None])[:, 0]
    refit = []
    for i in range(15):
        keep = np.arange(15) != i
        xm = x[keep].mean(0)
        xk, yk = x[keep] - xm, y[keep]
        m = len(yk)
        scale = np.clip(np.linalg.eigvalsh(xk @ xk.T), 0, None).mean()
        best = (np.inf, None)
        for penalty in C.GRID * scale:
            hat = np.full((m, m), 1 / m) + xk @ np.linalg.solve(xk.T @ xk + penalty * np.eye(6), xk.T)
            gcv = m * ((yk - hat @ yk) ** 2).sum() / (m - np.trace(hat)) ** 2
            if gcv < best[0]:
                w = np.linalg.solve(xk.T @ xk + penalty * np.eye(6), xk.T @ (yk - yk.mean()))
                best = (gcv, yk.mean() + (x[i] - xm) @ w)
        refit.append(best[1])
    assert np.allclose(nested, refit, atol=1e-8)


def test_readout_gain_credits_the_model_only_with_what_the_baseline_lacks() -> None:
    """A rating carried by the baseline's features gives the model no gain even where the model reads it too; a
    part only the model carries does."""
    rng = np.random.default_rng(3)
    n = 45
    words_signal, model_only = rng.normal(size=n), rng.normal(size=n)
    base = np.column_stack([words_signal, rng.normal(size=(n, 20))])
    model = np.column_stack([words_signal + 0.1 * rng.normal(size=n), model_only, rng.normal(size=(n, 20))])
    kernel = lambda v: C.word_kernel(v, list(range(n)), list(range(n)))  # noqa: E731
    carried = C.readout_gain(kernel(model), kernel(base), words_signal, n_perm=200)
    assert carried["r model"] > 0.8 and carried["r baseline"] > 0.8 and carried["p"] > 0.05
    both = C.readout_gain(kernel(model), kernel(base), words_signal + 1.5 * model_only, n_perm=200)
    assert both["partial r"] > 0.5 and both["p"] < 0.02
    # a bootstrap replicate reads only the partial r: skipping the model's own fit leaves it as it was
    quick = C.readout_gain(kernel(model), kernel(base), words_signal + 1.5 * model_only, n_perm=0, model_alone=False)
    assert quick["partial r"] == pytest.approx(both["partial r"], rel=1e-9) and np.isnan(quick["r model"])


def _stories(signal: float, seed: int = 0, n_emotions: int = 30, topics: int = 4, per_cell: int = 2, d: int = 40):
    """Stories = emotion's point in a 2-D plane (scaled by `signal`) + story noise; ratings = the plane."""
    rng = np.random.default_rng(seed)
    plane = rng.normal(size=(n_emotions, 2))
    axes = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    centres = signal * plane @ axes
    labels = np.repeat(np.arange(n_emotions), topics * per_cell)
    story_topics = np.tile(np.repeat(np.arange(topics), per_cell), n_emotions)
    acts = centres[labels] + rng.normal(size=(len(labels), d))
    emotions = [f"e{i}" for i in range(n_emotions)]
    rated = pd.DataFrame({"valence": plane[:, 0], "arousal": plane[:, 1]}, index=emotions)
    return acts, labels, story_topics, emotions, rated, axes


def test_cv_pca_separates_signal_from_story_noise() -> None:
    acts, labels, topics, emotions, rated, _ = _stories(signal=3.0)
    table = C.cv_pca(acts, labels, topics, emotions, None, rated, n_components=5, n_splits=6)
    signal = table.attrs["signal share of total variance"]
    assert table["cross-validated share"].iloc[:2].sum() > 0.85 * signal
    assert abs(table["cross-validated share"].iloc[2:]).max() < 0.02
    # the plain spectrum spends real variance on noise components; the cross-validated one does not
    assert table["plain share"].iloc[2:].sum() > table["cross-validated share"].iloc[2:].sum() + 0.02
    assert 0 < table.attrs["signal share of total variance"] < 1
    noise = C.cv_pca(*_stories(signal=0.0)[:4], None, n_components=5, n_splits=6)
    assert abs(noise["cross-validated share"]).max() < abs(table["cross-validated share"]).max() / 3
    assert noise.attrs["signal share of total variance"] < 0.15


def test_the_aligned_valence_direction_is_the_planted_one() -> None:
    acts, labels, topics, emotions, rated, axes = _stories(signal=3.0)
    vectors = np.stack([acts[labels == i].mean(0) for i in range(len(emotions))])
    vectors -= vectors.mean(0)
    directions = C.aligned_directions(vectors, emotions, rated)
    assert float(directions["valence"] @ axes[0]) > 0.9  # the planted valence axis
    assert float(directions["arousal"] @ axes[1]) > 0.9
    assert np.linalg.norm(directions["valence"]) == pytest.approx(1.0)
    del topics


def test_bootstrap_interval_holds_the_rotation_and_matches_swapped_components() -> None:
    acts, labels, topics, emotions, rated, _ = _stories(signal=3.0, seed=4)
    vectors = np.stack([acts[labels == i].mean(0) for i in range(len(emotions))])
    vectors -= vectors.mean(0)
    reference = orient_by_anchors(pca(vectors, emotions, n=3))
    model_xy, human_xy, _ = C.plane(vectors, emotions, rated)
    observed = C.procrustes_alignment(model_xy, human_xy)
    boot = C.alignment_bootstrap(acts, labels, emotions, np.zeros((0, acts.shape[1])), reference, rated, n_boot=60)
    low, high = C.angle_interval(boot["angle"], observed.angle)
    assert low <= observed.angle <= high
    assert np.nanmean(boot["r_valence"]) > 0.8
    order, signs = match_components(reference.components[:2], reference.components[[1, 0, 2]] * -1)
    assert list(order) == [1, 0] and list(signs) == [-1, -1]


def test_angle_interval_unwraps_across_180_degrees() -> None:
    low, high = C.angle_interval(np.array([179.0, -179.0, 178.0, -178.0]), 180.0)
    assert 170 < low < high < 190


def test_steering_directions_keep_one_sign_across_layers() -> None:
    """A later layer whose configuration is the first one reflected (arousal flipped: the ratings cannot tell an
    absent axis's sign) still gets directions whose emotion scores agree with the first layer's."""
    import torch

    from emolib.extraction.vectors import EmotionVectors

    acts, labels, topics, emotions, rated, axes = _stories(signal=3.0)
    base = np.stack([acts[labels == i].mean(0) for i in range(len(emotions))])
    base -= base.mean(0)
    rng = np.random.default_rng(9)
    other = base + 0.05 * rng.normal(size=base.shape)  # the same plane, a little noise
    flipped = rated.assign(arousal=rng.normal(size=len(rated)))  # arousal unrelated: its aligned sign is arbitrary
    vectors = EmotionVectors(emotions, (3, 6), torch.tensor(np.stack([base, other], axis=1)))
    found = C.steering_directions(vectors, [3, 6], flipped)
    for name in ("aligned valence", "aligned arousal"):
        direction = found[name]
        first, later = base @ direction.at(3).numpy(), other @ direction.at(6).numpy()
        assert np.corrcoef(first, later)[0, 1] > 0.9
        assert np.linalg.norm(direction.at(6).numpy()) == pytest.approx(1.0, abs=1e-5)
    del topics, axes


def test_a_push_along_one_aligned_axis_leaves_the_other_unchanged() -> None:
    """With PC1 spreading twice as wide as PC2 and valence at 45° in the standardised plane, the push direction
    moves aligned valence and not aligned arousal (the reading direction Cᵀ R / σ would move both)."""
    rng = np.random.default_rng(12)
    n, d = 40, 30
    human = rng.normal(size=(n, 2))
    model_xy = _turned(human, 45, noise=0.2) * np.array([2.0, 1.0])
    axes = np.linalg.qr(rng.normal(size=(d, 2)))[0].T
    vectors = model_xy @ axes + 0.01 * rng.normal(size=(n, d))
    emotions = [f"e{i}" for i in range(n)]
    rated = pd.DataFrame({"valence": human[:, 0], "arousal": human[:, 1]}, index=emotions)
    push = C.aligned_directions(vectors, emotions, rated)

    def aligned(x: np.ndarray) -> np.ndarray:
        xy, _, _ = C.plane(x, emotions, rated)
        found = C.procrustes_alignment(xy, human)
        return found, xy

    found, xy = aligned(vectors)
    spread, centre = xy.std(0), xy.mean(0)
    result = C.plane(vectors, emotions, rated)[2]
    for j, name in enumerate(("valence", "arousal")):
        moved = (result.components[:2] @ push[name]) / spread @ found.rotation  # change of the aligned coordinates
        assert abs(moved[1 - j]) < 0.02 * abs(moved[j])
    del centre
