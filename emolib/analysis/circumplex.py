"""The valence-arousal circumplex, tested the way affect research tests it: rotation-aware, with a ceiling.

Chapter 4's headline asks whether PC1 *is* valence and PC2 *is* arousal. Human affect data answer a wider
question first: is the two-dimensional valence-arousal plane there at all, whatever its orientation? Watson
& Tellegen's (1985) positive- and negative-activation axes are the same circumplex rotated by about 45°;
a model whose variance-ranked axes fall between valence and arousal holds the plane but not the axes.

- `procrustes_alignment`: the orthogonal rotation (or reflection) of a model's standardised (PC1, PC2)
  coordinates that best fits the standardised human (valence, arousal) coordinates; the aligned r's and
  the angle at which valence lies in the PC plane.
- `alignment_test`: a row-permutation null for the aligned r's (the fitting freedom is in the null);
  `alignment_over_layers` shares permutations across layers so the best layer's p carries the choice.
- `alignment_bootstrap`: stories resampled within emotion (and rated words resampled), vectors rebuilt
  and denoised, components matched to the full-data PCs, then aligned again.
- `ridge_ceiling`: how much valence/arousal a linear reader finds in the full vectors at all
  (leave-one-emotion-out kernel ridge, penalty by GCV, scored by predictive R², the choice repeated in every
  permutation).
- `cv_pca`: cross-validated PCA (Stringer et al. 2019): the variance each component holds that
  reproduces across disjoint halves of the stories, against its plain share.
- `circumplex_verdict`: the pre-registered reading ("present on the axes", "present but rotated",
  "valence only", "arousal only", "absent"), from the constants below, fixed before any model was read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import EmolibError
from ..extraction.vectors import Direction
from .geometry import Bootstrap, PCAResult, orient_by_anchors, pca, pearson, resampled_pca, story_groups
from .reliability import _halves, vectors_from_stories

# Pre-registered (issue 26), before any model's aligned numbers were computed.
SIGNIFICANCE = 0.05  # an aligned r counts as present when its permutation p is below this
ON_AXES_DEGREES = 22.5  # valence within this angle of PC1 (and no reflection): the plane sits on the axes
N_PERMUTATIONS = 2000
COLLINEAR = 1e-8  # second singular value of the cross-product below this share of the first: no unique rotation


def _standardise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    spread = centred.std(axis=0, keepdims=True)
    if np.any(spread == 0):
        raise EmolibError("a coordinate is constant over the rated words; there is no configuration to align")
    return centred / spread


def _rotations(cross: np.ndarray) -> np.ndarray:
    """Orthogonal Procrustes solutions R = U Vᵀ for a stack of (…, 2, 2) cross-products Xᵀ Y."""
    u, _, v_t = np.linalg.svd(cross)
    return u @ v_t


@dataclass
class Alignment:
    """`model` (n, 2) standardised model coordinates, `human` (n, 2) standardised ratings, `rotation` R with
    `model @ R ≈ human`. `angle`: where human valence lies in the PC plane, in degrees from PC1 towards PC2."""

    model: np.ndarray
    human: np.ndarray
    rotation: np.ndarray
    words: list[str] = field(default_factory=list)

    @property
    def aligned(self) -> np.ndarray:
        return self.model @ self.rotation

    @property
    def reflected(self) -> bool:
        return bool(np.linalg.det(self.rotation) < 0)

    @property
    def angle(self) -> float:
        return float(np.degrees(np.arctan2(self.rotation[1, 0], self.rotation[0, 0])))

    @property
    def r_valence(self) -> float:
        return pearson(self.aligned[:, 0], self.human[:, 0])

    @property
    def r_arousal(self) -> float:
        return pearson(self.aligned[:, 1], self.human[:, 1])

    def frame(self) -> pd.DataFrame:
        """Per word: aligned model coordinates and the human ones (both standardised), for the figure."""
        return pd.DataFrame({"aligned valence": self.aligned[:, 0], "aligned arousal": self.aligned[:, 1],
                             "human valence": self.human[:, 0], "human arousal": self.human[:, 1]},
                            index=pd.Index(self.words, name="emotion"))


def procrustes_alignment(model_xy: np.ndarray, human_xy: np.ndarray, words: Sequence[str] = ()) -> Alignment:
    """Both configurations standardised per column, then the rotation or reflection R minimising
    ‖model·R − human‖ (no scaling: standardising already put both on one scale)."""
    model, human = _standardise(model_xy), _standardise(human_xy)
    if model.shape != human.shape or model.shape[1] != 2:
        raise EmolibError(f"alignment needs two (n, 2) configurations, got {model.shape} and {human.shape}")
    singular = np.linalg.svd(model.T @ human, compute_uv=False)
    if singular[1] <= COLLINEAR * singular[0]:
        # collinear points (e.g. a resample holding two distinct words): rotation and reflection fit equally
        # well, so which one the SVD returns depends on the CPU's rounding, not on the data
        raise EmolibError("the configuration is collinear (fewer than three distinct points?); no rotation is "
                          "determined")
    return Alignment(model, human, _rotations(model.T @ human), list(words))


def _aligned_rs(model: np.ndarray, humans: np.ndarray) -> np.ndarray:
    """Aligned (r_valence, r_arousal) of one standardised model configuration (n, 2) against a stack of
    standardised human configurations (P, n, 2): (P, 2). Standardised columns make r a mean product."""
    rotations = _rotations(np.einsum("ni,pnj->pij", model, humans))
    aligned = np.einsum("ni,pij->pnj", model, rotations)
    aligned = (aligned - aligned.mean(axis=1, keepdims=True)) / aligned.std(axis=1, keepdims=True)
    return (aligned * humans).mean(axis=1)


def _permuted(human: np.ndarray, n_perm: int, rng: np.random.Generator) -> np.ndarray:
    """Row permutations of a configuration: each word keeps its (valence, arousal) pair."""
    return np.stack([human[rng.permutation(len(human))] for _ in range(n_perm)])


def _p(null: np.ndarray, observed: float) -> float:
    return float((1 + (null >= observed - 1e-12).sum()) / (len(null) + 1))


def alignment_test(model_xy: np.ndarray, human_xy: np.ndarray, n_perm: int = N_PERMUTATIONS, seed: int = 0,
                   words: Sequence[str] = ()) -> dict:
    """The alignment with permutation p-values: human rows shuffled, the rotation fitted again each time,
    so p counts the freedom the rotation has. The observed statistic is included in the null."""
    found = procrustes_alignment(model_xy, human_xy, words)
    null = _aligned_rs(found.model, _permuted(found.human, n_perm, np.random.default_rng(seed)))
    return {"r_valence": found.r_valence, "p_valence": _p(null[:, 0], found.r_valence),
            "r_arousal": found.r_arousal, "p_arousal": _p(null[:, 1], found.r_arousal),
            "angle": found.angle, "reflected": found.reflected, "words": len(found.model), "n_perm": n_perm}


def alignment_over_layers(coordinates: dict[int, np.ndarray], human_xy: np.ndarray, n_perm: int = N_PERMUTATIONS,
                          seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """Per layer, the aligned r's; one set of permutations is shared by every layer, so the largest aligned
    valence r is tested against the null distribution of the largest (the layer choice is in the null)."""
    human = _standardise(human_xy)
    perms = _permuted(human, n_perm, np.random.default_rng(seed))
    rows, null_max = [], np.full((n_perm, 2), -np.inf)
    for layer, xy in coordinates.items():
        found = procrustes_alignment(xy, human_xy)
        null = _aligned_rs(found.model, perms)
        null_max = np.maximum(null_max, null)
        rows.append({"layer": layer, "aligned r (valence)": found.r_valence, "aligned r (arousal)": found.r_arousal,
                     "angle": found.angle, "reflected": found.reflected,
                     "p (valence)": _p(null[:, 0], found.r_valence), "p (arousal)": _p(null[:, 1], found.r_arousal)})
    table = pd.DataFrame(rows)
    best = int(table["aligned r (valence)"].idxmax())
    r_best = float(table.loc[best, "aligned r (valence)"])
    return table, {"best_layer": int(table.loc[best, "layer"]), "best_r": r_best,
                   "p_max": _p(null_max[:, 0], r_best), "null_95": float(np.quantile(null_max[:, 0], 0.95))}


def plane(vectors: np.ndarray, emotions: Sequence[str], rated: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, PCAResult]:
    """(PC1, PC2) of the rated emotions (PCs of all emotions, anchor-oriented) and their (valence, arousal)."""
    result = orient_by_anchors(pca(vectors, emotions, n=2))
    rows = [list(emotions).index(e) for e in rated.index]
    return result.scores[rows, :2], rated[["valence", "arousal"]].to_numpy(float), result


def alignment_bootstrap(story_acts: np.ndarray, labels: np.ndarray, emotions: Sequence[str], neutral_basis: np.ndarray,
                        reference: PCAResult, rated: pd.DataFrame, n_boot: int = 500, seed: int = 0,
                        resample_words: bool = True, candidates: int = 3) -> dict[str, np.ndarray]:
    """Story bootstrap of the alignment: stories resampled within each emotion, vectors rebuilt and
    denoised, the replicate's top `candidates` components matched to `reference`'s PC1/PC2 (order and
    sign, `geometry.match_components`), rated words resampled, and the alignment fitted again."""
    rng = np.random.default_rng(seed)
    acts, groups = story_groups(story_acts, labels, len(emotions))
    rows = np.array([list(emotions).index(e) for e in rated.index])
    human = rated[["valence", "arousal"]].to_numpy(float)
    basis = np.asarray(neutral_basis, np.float64).reshape(-1, acts.shape[1])
    out = {"r_valence": np.empty(n_boot), "r_arousal": np.empty(n_boot), "angle": np.empty(n_boot)}
    for b in range(n_boot):
        result, order, signs = resampled_pca(acts, groups, basis, emotions, reference, candidates, rng)
        pick = rng.integers(0, len(rows), len(rows)) if resample_words else np.arange(len(rows))
        try:
            found = procrustes_alignment((result.scores[:, order] * signs)[rows[pick]], human[pick])
        except EmolibError:  # a resample of identical or collinear words: no unique alignment
            out["r_valence"][b] = out["r_arousal"][b] = out["angle"][b] = np.nan
            continue
        out["r_valence"][b], out["r_arousal"][b], out["angle"][b] = found.r_valence, found.r_arousal, found.angle
    return out


def angle_interval(angles: np.ndarray, centre: float, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap angles, unwrapped around `centre` (angles live on a circle)."""
    wrapped = centre + (np.asarray(angles, float) - centre + 180.0) % 360.0 - 180.0
    return Bootstrap.interval(wrapped[np.isfinite(wrapped)], level)


# ---------------------------------------------------------------------------------------------------
# The ceiling: what a linear reader finds in the full vectors


GRID = np.logspace(-4, 3, 15)  # ridge penalties, relative to the mean eigenvalue of the centred kernel


def nested_loo_predictions(kernel: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """Leave-one-out predictions of kernel ridge with an unpenalised intercept, the penalty chosen *inside each
    fold* by GCV on the other n − 1 words (from `GRID`, relative to the fold's mean eigenvalue), for every column
    of `columns` (n, P) at once. `kernel` (n, n) is the words' Gram matrix (any centring: each fold re-centres
    it on its own training words, so the held-out word never shapes the features' centre or the penalty)."""
    kernel = np.asarray(kernel, np.float64)
    columns = np.asarray(columns, np.float64)
    n = len(kernel)
    out = np.empty_like(columns)
    for i in range(n):
        train = np.delete(np.arange(n), i)
        k_tt, k_ti = kernel[np.ix_(train, train)], kernel[train, i]
        row_mean = k_tt.mean(axis=1)
        centred = k_tt - row_mean[:, None] - row_mean[None, :] + row_mean.mean()
        cross = k_ti - row_mean - k_ti.mean() + row_mean.mean()  # (x_j − μ)·(x_i − μ) for the training words j
        eigenvalues, eigenvectors = np.linalg.eigh(centred)
        eigenvalues = np.clip(eigenvalues, 0, None)
        y = columns[train]
        mean = y.mean(axis=0)
        z = eigenvectors.T @ (y - mean)  # (m, P)
        reach = cross @ eigenvectors  # (m,)
        m, scale = len(train), max(eigenvalues.mean(), 1e-300)
        best_score, best = np.full(columns.shape[1], np.inf), np.zeros(columns.shape[1])
        for penalty in GRID * scale:
            shrink = penalty / (eigenvalues + penalty)
            gcv = m * ((shrink[:, None] * z) ** 2).sum(axis=0) / (m - 1 - (eigenvalues / (eigenvalues + penalty)).sum()) ** 2
            prediction = mean + (reach / (eigenvalues + penalty)) @ z
            better = gcv < best_score
            best_score[better], best[better] = gcv[better], prediction[better]
        out[i] = best
    return out


def ridge_fit(kernel: np.ndarray, y: np.ndarray) -> np.ndarray:
    """In-sample fitted values of kernel ridge with an unpenalised intercept, the penalty chosen by GCV over `GRID`."""
    kernel, y = np.asarray(kernel, np.float64), np.asarray(y, np.float64)
    n = len(y)
    centre = np.eye(n) - 1.0 / n
    eigenvalues, eigenvectors = np.linalg.eigh(centre @ kernel @ centre)
    eigenvalues = np.clip(eigenvalues, 0, None)
    z = eigenvectors.T @ (y - y.mean())
    best, fitted = np.inf, None
    for penalty in GRID * max(eigenvalues.mean(), 1e-300):
        shrink = eigenvalues / (eigenvalues + penalty)
        gcv = n * (((1 - shrink) * z) ** 2).sum() / (n - 1 - shrink.sum()) ** 2
        if gcv < best:
            best, fitted = gcv, y.mean() + eigenvectors @ (shrink * z)
    return fitted


def _q2(columns: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    return 1 - ((columns - predictions) ** 2).sum(0) / ((columns - columns.mean(0)) ** 2).sum(0).clip(1e-300)


def word_kernel(vectors: np.ndarray, emotions: Sequence[str], words: Sequence[str]) -> np.ndarray:
    """The rated words' Gram matrix, scaled to a mean diagonal of 1 (so kernels of different sources can be summed
    with equal weight)."""
    rows = [list(emotions).index(e) for e in words]
    x = np.asarray(vectors, np.float64)[rows]
    x = x - x.mean(axis=0, keepdims=True)
    kernel = x @ x.T
    return kernel / max(float(np.mean(np.diag(kernel))), 1e-300)


def ridge_ceiling(vectors: np.ndarray, emotions: Sequence[str], ratings: pd.Series, n_perm: int = N_PERMUTATIONS,
                  seed: int = 0) -> dict:
    """How well a linear read-out of the full vectors predicts held-out emotions' ratings: kernel ridge trained on
    the other rated emotions (leave one emotion out; the penalty chosen by GCV inside each fold, on the training
    words alone). Scored by the predictive R², q² = 1 − Σ(y − ŷ₋ᵢ)² / Σ(y − ȳ)², and reported as r = √q² (0 where
    q² ≤ 0), a correlation-scale number to set beside the PC r's. (The plain correlation of held-out predictions is
    a poor score here: with nothing to read, the predictions are the other words' mean, which anti-correlates
    perfectly with the held-out word.) p from shuffled ratings, with the penalties chosen again for each shuffle."""
    kernel = word_kernel(vectors, emotions, list(ratings.index))
    y = ratings.to_numpy(float)
    rng = np.random.default_rng(seed)
    columns = np.column_stack([y] + [rng.permutation(y) for _ in range(n_perm)])
    q2 = _q2(columns, nested_loo_predictions(kernel, columns))
    return {"r": float(np.sqrt(max(q2[0], 0.0))), "q2": float(q2[0]), "p": _p(q2[1:], float(q2[0])), "words": len(y),
            "n_perm": n_perm, "penalty": "chosen inside each fold"}


def readout_gain(model_kernel: np.ndarray, base_kernel: np.ndarray, ratings: np.ndarray, n_perm: int = N_PERMUTATIONS,
                 seed: int = 0, model_alone: bool = True) -> dict:
    """What a read-out of the model adds to one of a baseline's: held-out q² of the baseline alone, of the model
    alone and of both (their kernels summed), and the partial r = √(max(q²_both − q²_base, 0) / (1 − q²_base)) — the
    share of what the baseline leaves unexplained that the model explains out of sample. p: Freedman-Lane (the
    ratings' residual on the baseline's own fit shuffled and added back, everything refitted with the penalties
    chosen again). `model_alone=False` skips the model's own read-out ("r model" NaN), a third of the work, for a
    bootstrap that reads only the partial r."""
    y = np.asarray(ratings, np.float64)
    both = model_kernel + base_kernel
    base_fit = ridge_fit(base_kernel, y)  # the reduced model's in-sample fit (Freedman-Lane), at GCV's penalty
    rng = np.random.default_rng(seed)
    residual = y - base_fit
    columns = np.column_stack([y] + [base_fit + residual[rng.permutation(len(y))] for _ in range(n_perm)])  # n_perm 0: y
    q_base, q_both = _q2(columns, nested_loo_predictions(base_kernel, columns)), _q2(columns, nested_loo_predictions(both, columns))
    partial = np.sqrt(np.clip(q_both - q_base, 0, None) / np.clip(1 - q_base, 1e-12, None))
    q_model = float(_q2(y[:, None], nested_loo_predictions(model_kernel, y[:, None]))[0]) if model_alone else float("nan")
    root = lambda q: float(np.sqrt(max(q, 0.0))) if q == q else float("nan")  # noqa: E731
    return {"r model": root(q_model), "r baseline": root(float(q_base[0])), "r both": root(float(q_both[0])),
            "partial r": float(partial[0]), "p": _p(partial[1:], float(partial[0])) if n_perm else float("nan")}


# ---------------------------------------------------------------------------------------------------
# Cross-validated PCA


def _half_vectors(acts: np.ndarray, labels: np.ndarray, mask: np.ndarray, n_emotions: int,
                  basis: np.ndarray | None) -> np.ndarray:
    """Chapter 3's vectors from the stories in `mask` only."""
    return vectors_from_stories(acts[mask], labels[mask], n_emotions, basis)


def cv_pca(story_acts: np.ndarray, labels: np.ndarray, topics: Sequence[int], emotions: Sequence[str],
           neutral_basis: np.ndarray | None, rated: pd.DataFrame | None = None, n_components: int = 10,
           n_splits: int = 10, seed: int = 0) -> pd.DataFrame:
    """Stringer et al. (2019)'s cross-validated spectrum (the total signal share is unbiased; a top component's
    own share is still biased upwards, since the half that found it shares its noise with its own scores): components found on one half of each emotion's
    stories (split within topic cells), their variance measured as the covariance between the two halves'
    projections, so noise that does not repeat across halves averages out. Both halves take each role.

    Per component: the plain share of variance (full vectors) and the cross-validated share (its variance that
    repeats across halves, over the same total), and — with `rated` — r of the other half's scores with valence and arousal (anchor-oriented
    on the finding half, averaged through Fisher z)."""
    acts = np.asarray(story_acts, np.float64)
    labels, topics = np.asarray(labels), np.asarray(topics)
    # an emotion with one story has no two halves: it is left out (and counted), as split-half reliability does
    usable = np.flatnonzero(np.bincount(labels, minlength=len(emotions)) >= 2)
    if len(usable) < 3:
        raise EmolibError(f"cvPCA needs at least 3 emotions with two or more stories; {len(usable)} have them")
    left_out = [emotions[i] for i in range(len(emotions)) if i not in set(usable.tolist())]
    keep = np.isin(labels, usable)
    acts, topics, labels = acts[keep], topics[keep], np.searchsorted(usable, labels[keep])
    emotions = [emotions[i] for i in usable]
    if rated is not None:
        rated = rated[rated.index.isin(emotions)]
    n_emotions = len(emotions)
    rng = np.random.default_rng(seed)
    k = min(n_components, n_emotions - 1)
    signal, total, z = np.zeros(k), 0.0, np.zeros((k, 2))
    rows = [list(emotions).index(e) for e in rated.index] if rated is not None else []
    runs = splits = 0
    for _ in range(n_splits):
        first = _halves(labels, topics, rng)
        if any(not (first & (labels == i)).any() or not (~first & (labels == i)).any() for i in range(n_emotions)):
            continue
        splits += 1
        halves = (_half_vectors(acts, labels, first, n_emotions, neutral_basis),
                  _half_vectors(acts, labels, ~first, n_emotions, neutral_basis))
        for find, test in ((0, 1), (1, 0)):
            found = orient_by_anchors(pca(halves[find], emotions, n=k))
            test_scores = (halves[test] - halves[test].mean(0)) @ found.components.T
            signal += (found.scores * test_scores).sum(axis=0) / n_emotions
            total += float((halves[find] * halves[test]).sum()) / n_emotions
            if rows:
                for j, target in ((0, "valence"), (1, "arousal")):
                    rs = [pearson(test_scores[rows, c], rated[target].to_numpy(float)) for c in range(k)]
                    z[:, j] += np.arctanh(np.clip(rs, -0.999999, 0.999999))
            runs += 1
    if not runs:
        raise EmolibError("no split left both halves with a story of every emotion")
    full = _half_vectors(acts, labels, np.ones(len(labels), bool), n_emotions, neutral_basis)
    plain = pca(full, emotions, n=k)
    variance = float((full ** 2).sum()) / n_emotions  # the full vectors' total variance, the plain shares' base
    table = pd.DataFrame({"component": [f"PC{c + 1}" for c in range(k)], "plain share": plain.explained[:k],
                          "cross-validated share": signal / runs / max(variance, 1e-300)})
    if rows:  # only PC1 and PC2 are oriented (by the anchors); later components' signs are arbitrary per split
        for j, target in ((0, "valence"), (1, "arousal")):
            column = np.tanh(z[:, j] / runs)
            column[2:] = np.nan
            table[f"held-out r ({target})"] = column
    # how much of the full vectors' variance repeats across halves (the rest is story-sampling noise)
    table.attrs["signal share of total variance"] = float(total / runs / max(variance, 1e-300))
    table.attrs["splits"] = splits
    table.attrs["emotions"] = n_emotions
    table.attrs["left out"] = left_out  # emotions with fewer than two stories
    return table


# ---------------------------------------------------------------------------------------------------
# The verdict


def circumplex_verdict(alignment: dict, level: float = SIGNIFICANCE, on_axes: float = ON_AXES_DEGREES) -> str:
    """The pre-registered reading of `alignment_test`'s result."""
    valence, arousal = alignment["p_valence"] < level, alignment["p_arousal"] < level
    if valence and arousal:
        if abs(alignment["angle"]) <= on_axes and not alignment["reflected"]:
            return "present on the axes"
        return "present but rotated"
    if valence:
        return "valence only"
    if arousal:
        return "arousal only"
    return "absent"


def aligned_directions(vectors: np.ndarray, emotions: Sequence[str], rated: pd.DataFrame) -> dict[str, np.ndarray]:
    """The residual-stream directions to push along aligned valence and aligned arousal (unit, (d,)). The aligned
    coordinates are a = ((s − μ) / σ) · R with s the PC scores, so a push u changes them by (C u / σ) · R; the push
    that moves aligned axis j alone is u = Cᵀ (σ ⊙ R[:, j]) (C's rows are orthonormal). (Cᵀ R[:, j] / σ, the
    direction that *reads* axis j, would move the other axis too whenever PC1 and PC2 spread unequally.)"""
    model_xy, human_xy, result = plane(vectors, emotions, rated)
    found = procrustes_alignment(model_xy, human_xy)
    spread = model_xy.std(axis=0)
    out = {}
    for j, name in enumerate(("valence", "arousal")):
        direction = result.components[:2].T @ (found.rotation[:, j] * spread)
        out[name] = direction / np.linalg.norm(direction)
    return out


def steering_directions(vectors, layers: Sequence[int], rated: pd.DataFrame) -> dict[str, Direction]:
    """{"aligned valence": Direction, "aligned arousal": Direction} at `layers` of an `EmotionVectors`: chapter 4's
    rotated axes as steering directions (unit at each layer, each layer aligned on its own PCs), so chapter 7's
    causal test follows the geometry."""
    layers = tuple(dict.fromkeys(int(layer) for layer in layers))
    per_layer = [aligned_directions(vectors.at(layer).numpy(), vectors.emotions, rated) for layer in layers]
    # one axis across layers: each later layer's direction is signed so that the emotions' scores on it correlate
    # positively with their scores at the first layer (an axis the ratings do not pin down, arousal where it is
    # absent, could otherwise come out flipped at the read layer and read the push backwards)
    first = {name: vectors.at(layers[0]).numpy() @ per_layer[0][name] for name in ("valence", "arousal")}
    for slot in range(1, len(layers)):
        for name in ("valence", "arousal"):
            scores = vectors.at(layers[slot]).numpy() @ per_layer[slot][name]
            if pearson(scores, first[name]) < 0:
                per_layer[slot][name] = -per_layer[slot][name]
    return {f"aligned {name}": Direction(layers, torch.tensor(np.stack([d[name] for d in per_layer]), dtype=torch.float32),
                                         f"aligned {name}") for name in ("valence", "arousal")}
