"""How far to trust the geometry: orientation fixed in advance, topic centring, split-half reliability,
scaling with stories per emotion, and a max-over-layers null for the "best layer".

Everything here works on per-story activations at a layer (`VectorBuild.story_activations`): vectors
are rebuilt from stories exactly as chapter 3 builds them (emotion mean minus the mean over emotions,
the neutral components projected out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import EmolibError
from .geometry import orient_by_anchors, pca, pearson, probe, topic_centre, valence_probe
from .geometry import probe as run_probe  # scaling_curve's `probe` flag shadows the name there


def vectors_from_stories(acts: np.ndarray, labels: np.ndarray, n_emotions: int, basis: np.ndarray | None) -> np.ndarray:
    """Emotion vectors as chapter 3 builds them: mean per emotion minus the mean over emotions, denoised."""
    x = np.asarray(acts, np.float64)
    means = np.stack([x[labels == i].mean(axis=0) for i in range(n_emotions)])
    vectors = means - means.mean(axis=0, keepdims=True)
    if basis is not None and len(basis):
        vectors = vectors - (vectors @ basis.T) @ basis
    return vectors


@dataclass
class Headline:
    pc1_variance: float
    pc2_variance: float
    valence_r: float
    arousal_r: float


def headline(vectors: np.ndarray, emotions: Sequence[str], valence: pd.Series, arousal: pd.Series) -> Headline:
    """PC1/PC2 variance and their anchor-oriented correlations with human valence and arousal."""
    result = orient_by_anchors(pca(vectors, list(emotions), n=2))
    rows_v = [list(emotions).index(e) for e in valence.index]
    rows_a = [list(emotions).index(e) for e in arousal.index]
    return Headline(float(result.explained[0]), float(result.explained[1]),
                    pearson(result.scores[rows_v, 0], valence.values), pearson(result.scores[rows_a, 1], arousal.values))


# ---------------------------------------------------------------------------------------------------
# Split-half reliability


def _halves(labels: np.ndarray, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random half of each (emotion, topic) cell's stories, so that every emotion with two or more stories has
    one in each half: within an emotion, the odd stories of its cells (one per cell of odd size) alternate
    between the halves from a random start, in a random order of its cells. (A cell of one story sent to a
    random half on its own left an emotion of two one-story cells unsplit half the time: at the quick scale's
    1 story x 2 topics no split of all 171 emotions existed.)"""
    first = np.zeros(len(labels), bool)
    for emotion in np.unique(labels):
        cells = np.unique(topics[labels == emotion])
        next_odd = bool(rng.random() < 0.5)  # which half the emotion's next odd story goes to
        for topic in rng.permutation(cells):
            members = rng.permutation(np.flatnonzero((labels == emotion) & (topics == topic)))
            take = len(members) // 2
            if len(members) % 2:
                take += int(next_odd)
                next_odd = not next_odd
            first[members[:take]] = True
    return first


def split_half(acts: np.ndarray, labels: np.ndarray, topics: Sequence[int], n_emotions: int, basis: np.ndarray | None,
               n_splits: int = 20, seed: int = 0) -> dict[str, float]:
    """How alike two independent halves' vectors are: per emotion, Pearson r between the vector built from
    one half of its stories and the vector from the other (split within each topic cell), averaged over
    emotions through Fisher z and over random splits; Spearman–Brown-corrected to the full story count.
    An emotion with a single kept story (a cell the rewrites never filled) has no two halves: it is left
    out, and `emotions` says how many were used."""
    rng = np.random.default_rng(seed)
    labels, topics = np.asarray(labels), np.asarray(topics)
    usable = np.flatnonzero(np.bincount(labels, minlength=n_emotions) >= 2)
    if len(usable) < 2:
        raise EmolibError("split-half reliability needs at least 2 emotions with 2 or more stories each; "
                          "write more stories per emotion (a larger scale or stories_per_cell)")
    keep = np.isin(labels, usable)
    acts, topics = acts[keep], topics[keep]
    labels, n_emotions = np.searchsorted(usable, labels[keep]), len(usable)
    values = []
    for _ in range(n_splits):
        first = _halves(labels, topics, rng)
        if any(not ((labels == i) & first).any() or not ((labels == i) & ~first).any() for i in range(n_emotions)):
            continue
        a = vectors_from_stories(acts[first], labels[first], n_emotions, basis)
        b = vectors_from_stories(acts[~first], labels[~first], n_emotions, basis)
        a, b = a - a.mean(axis=1, keepdims=True), b - b.mean(axis=1, keepdims=True)
        r = (a * b).sum(1) / np.sqrt((a * a).sum(1) * (b * b).sum(1))
        values.append(np.tanh(np.arctanh(np.clip(r, -0.999999, 0.999999)).mean()))
    half = float(np.mean(values))
    return {"half": half, "spearman_brown": 2 * half / (1 + half), "splits": len(values), "emotions": n_emotions}


# ---------------------------------------------------------------------------------------------------
# Scaling: the headline numbers as a function of stories per emotion


def subsample(labels: np.ndarray, topics: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `n` stories per emotion, spread over topics as evenly as the cells allow."""
    chosen = []
    for emotion in np.unique(labels):
        members = np.flatnonzero(labels == emotion)
        order = rng.permutation(members)
        # round-robin over topics, so n stories cover min(n, topics) topics
        by_topic: dict[int, list[int]] = {}
        for index in order:
            by_topic.setdefault(int(topics[index]), []).append(int(index))
        queues = [by_topic[t] for t in rng.permutation(sorted(by_topic))]
        picked: list[int] = []
        while len(picked) < min(n, len(members)):
            for queue in queues:
                if queue and len(picked) < n:
                    picked.append(queue.pop())
        chosen += picked
    return np.array(sorted(chosen))


def scaling_curve(acts: np.ndarray, labels: np.ndarray, topics: Sequence[int], emotions: Sequence[str],
                  basis: np.ndarray | None, valence: pd.Series, arousal: pd.Series, ns: Sequence[int],
                  draws: int = 10, seed: int = 0, probe: bool = True) -> pd.DataFrame:
    """One row per (n, draw): r(PC1, valence), r(PC2, arousal) and held-out probe top-1 from `n` stories per
    emotion drawn from the stored ones (topics spread evenly)."""
    rng = np.random.default_rng(seed)
    labels, topics = np.asarray(labels), np.asarray(topics)
    rows = []
    for n in ns:
        for draw in range(draws):
            pick = subsample(labels, topics, n, rng)
            vectors = vectors_from_stories(acts[pick], labels[pick], len(emotions), basis)
            h = headline(vectors, emotions, valence, arousal)
            row = {"n": n, "draw": draw, "r_valence": h.valence_r, "r_arousal": h.arousal_r}
            if probe and len(np.unique(topics[pick])) > 1:
                row["probe_top1"] = run_probe(topic_centre(acts[pick], topics[pick]), labels[pick], topics[pick],
                                              len(emotions), neutral_basis=basis, seed=seed).top1
            rows.append(row)
    return pd.DataFrame(rows)


_RHO_LOGIT_BOUND = 12.0  # the fit's box for logit(rho): rho in [6e-6, 1 - 6e-6]


@dataclass
class ScalingFit:
    """r(n) = r_inf * sqrt(n rho / (1 + (n - 1) rho)): the attenuation of a correlation by the reliability of
    an n-story mean (Spearman–Brown), fitted to the subsampled means."""

    r_inf: float  # the correlation with infinitely many stories
    rho: float  # reliability of a single story's contribution
    n_for: dict[str, float | None]  # stories per emotion needed for each target r (None: above r_inf)

    def predict(self, n: np.ndarray | float) -> np.ndarray:
        n = np.asarray(n, float)
        return self.r_inf * np.sqrt(n * self.rho / (1 + (n - 1) * self.rho))

    @property
    def at_bound(self) -> list[str]:
        """The parameters the least-squares box stopped (r_inf at +-1, rho at 0 or 1). A parameter at its
        bound was set by the box, not by the data, and so is anything extrapolated from it."""
        return at_bound(self.r_inf, self.rho)


def at_bound(r_inf: float, rho: float) -> list[str]:
    edge = 1 / (1 + np.exp(_RHO_LOGIT_BOUND))
    return ((["r_inf"] if abs(r_inf) > 1 - 1e-4 else [])
            + (["rho"] if rho < edge * 1.5 or rho > 1 - edge * 1.5 or rho > 1 - 1e-4 else []))


def _stories_needed(r_inf: float, rho: float, target: float) -> float | None:
    if r_inf <= target:
        return None
    reliability = (target / r_inf) ** 2
    return float(reliability * (1 - rho) / (rho * (1 - reliability)))


def fit_scaling(n: Sequence[float], r: Sequence[float], targets: Sequence[float] = (0.5, 0.8),
                weights: Sequence[float] | None = None) -> ScalingFit:
    """Least-squares fit of the attenuation model to mean r per n (signed r; a curve that does not rise is
    reported with r_inf near its level). `weights` multiply each point's residual (e.g. to give the
    full-data point the weight of the subsampled means)."""
    from scipy.optimize import least_squares

    n, r = np.asarray(n, float), np.asarray(r, float)
    w = np.ones_like(n) if weights is None else np.asarray(weights, float)

    def residual(params):
        r_inf, logit_rho = params
        rho = 1 / (1 + np.exp(-logit_rho))
        return w * (r_inf * np.sqrt(n * rho / (1 + (n - 1) * rho)) - r)

    fit = least_squares(residual, x0=[float(np.clip(max(r.max(), 0.1), -0.99, 0.99)), -2.0],
                        bounds=([-1.0, -_RHO_LOGIT_BOUND], [1.0, _RHO_LOGIT_BOUND]))
    r_inf, rho = float(fit.x[0]), float(1 / (1 + np.exp(-fit.x[1])))
    return ScalingFit(r_inf, rho, {f"{t:g}": _stories_needed(r_inf, rho, t) for t in targets})


def supported_extrapolation(fit: dict, target: str = "0.8") -> float | None:
    """The stories per emotion a saved fit predicts for `target`, only where the data set it: neither
    parameter at its bound and a finite bootstrap interval (`stories_needed_ci`). None otherwise: the
    curve does not determine the number."""
    if not fit or fit.get("r_inf") is None or at_bound(fit["r_inf"], fit["rho"]):
        return None
    needed = (fit.get("stories_needed") or {}).get(target)
    low, high = ((fit.get("stories_needed_ci") or {}).get(target) or (None, None))
    if needed is None or low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return None
    return float(needed)


def bootstrap_fit(curve: pd.DataFrame, measure: str, full: tuple[float, float] | None,
                  targets: Sequence[float] = (0.5, 0.8), n_boot: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """95 % intervals of the fit's predictions: the subsampling draws are resampled within each n, the means
    refitted (with the full-data point, fixed). A draw whose fit lands at a bound or whose target is above its
    ceiling counts as infinitely many stories, so such an interval is open-ended (inf)."""
    rng = np.random.default_rng(seed)
    groups = [(n, part[measure].to_numpy()) for n, part in curve.groupby("n")]
    predictions: dict[str, list[float]] = {f"{t:g}": [] for t in targets}
    for _ in range(n_boot):
        ns = [float(n) for n, _ in groups]
        means = [float(values[rng.integers(0, len(values), len(values))].mean()) for _, values in groups]
        if full is not None:
            ns, means = ns + [full[0]], means + [full[1]]
        fit = fit_scaling(ns, means, targets)
        for t in targets:
            value = fit.n_for[f"{t:g}"]
            predictions[f"{t:g}"].append(np.inf if value is None or fit.at_bound else value)
    def interval(values: list[float]) -> list[float]:
        bounds = np.percentile(np.minimum(values, 1e300), [2.5, 97.5])  # inf stands for "never": kept open-ended
        return [float(b) if b < 1e299 else float("inf") for b in bounds]

    return {t: interval(v) for t, v in predictions.items()}


# ---------------------------------------------------------------------------------------------------
# The best layer, honestly


def max_layer_null(scores_by_layer: Sequence[np.ndarray], ratings: np.ndarray, n_perm: int = 2000,
                   seed: int = 0) -> dict[str, float]:
    """p-value of the largest signed r over layers against the same maximum under shuffled ratings.

    `scores_by_layer`: per layer, the anchor-oriented PC scores of the rated emotions (same order as
    `ratings`). One permutation of the ratings is shared by every layer, so the null keeps the layers'
    dependence; picking the best layer is part of the statistic."""
    rng = np.random.default_rng(seed)
    y = np.asarray(ratings, float)
    z = np.stack([(s - s.mean()) / s.std() for s in scores_by_layer])  # (L, E)
    observed = z @ ((y - y.mean()) / y.std()) / len(y)
    perms = np.stack([rng.permutation(y) for _ in range(n_perm)])
    perms = (perms - perms.mean(1, keepdims=True)) / perms.std(1, keepdims=True)
    null_max = (perms @ z.T / len(y)).max(axis=1)
    best = int(np.argmax(observed))
    return {"best_slot": best, "best_r": float(observed[best]),
            "p": float((1 + (null_max >= observed[best] - 1e-12).sum()) / (n_perm + 1)),
            "null_95": float(np.quantile(null_max, 0.95))}


# ---------------------------------------------------------------------------------------------------
# The chapter's tables, from a VectorBuild


def robustness_table(build, layer: int, valence: pd.Series, arousal: pd.Series, seed: int = 0) -> pd.DataFrame:
    """The headline numbers at `layer` from plain and from topic-centred story activations."""
    acts, labels, topics, _ = build.story_activations(layer)
    emotions, basis = build.denoised.emotions, build.neutral_basis(layer)
    rows = {}
    for name, centre in (("plain (the chapter's vectors)", False), ("topic-centred", True)):
        x = topic_centre(acts, topics) if centre else acts
        # the plain row is the chapter's own vectors (so it equals the headline); the centred row rebuilds them
        vectors = vectors_from_stories(x, labels, len(emotions), basis) if centre else build.denoised.at(layer).numpy()
        h = headline(vectors, emotions, valence, arousal)
        multi_topic = len(np.unique(topics)) > 1
        rows[name] = {
            "PC1 variance": h.pc1_variance, "PC2 variance": h.pc2_variance,
            "r(PC1, valence)": h.valence_r, "r(PC2, arousal)": h.arousal_r,
            "probe top-1 (nearest)": probe(acts, labels, topics, len(emotions), neutral_basis=basis, seed=seed,
                                           centre_topics=centre).top1 if multi_topic else np.nan,
            "held-out valence AUROC": valence_probe(acts, labels, topics, emotions, valence, basis,
                                                    centre_topics=centre)["auroc"] if multi_topic else np.nan,
        }
    return pd.DataFrame(rows).T


def split_half_by_layer(build, n_splits: int = 20, seed: int = 0) -> pd.DataFrame:
    """Split-half reliability of the emotion vectors at every layer."""
    emotions = build.denoised.emotions
    rows = []
    for layer in build.denoised.layers:
        acts, labels, topics, _ = build.story_activations(layer)
        result = split_half(acts, labels, topics, len(emotions), build.neutral_basis(layer), n_splits, seed)
        rows.append({"layer": layer, "split-half r": result["half"], "Spearman-Brown": result["spearman_brown"],
                     "emotions": result["emotions"]})
    return pd.DataFrame(rows)


def split_half_cosine(build, layer: int, emotions: Sequence[str], n_splits: int = 20, seed: int = 0) -> pd.DataFrame:
    """Per emotion, the cosine between its vector built from one half of its stories and from the other (every
    emotion's stories halved within topic cells, `_halves`; the halves' vectors built and denoised as chapter 3
    builds them), averaged over `n_splits` random splits: how much of a steered direction is the emotion rather
    than the particular stories (issue 37's target: 0.8). Also the full vector's nearest emotions."""
    acts, labels, topics, _ = build.story_activations(layer)
    all_emotions = build.denoised.emotions
    basis = build.neutral_basis(layer)
    counts = np.bincount(labels, minlength=len(all_emotions))
    if (counts < 2).any():
        keep = np.isin(labels, np.flatnonzero(counts >= 2))
        acts, labels, topics = acts[keep], labels[keep], topics[keep]
    rng = np.random.default_rng(seed)
    cosines = {e: [] for e in emotions}
    for _ in range(n_splits):
        first = _halves(labels, topics, rng)
        a = vectors_from_stories(acts[first], labels[first], len(all_emotions), basis)
        b = vectors_from_stories(acts[~first], labels[~first], len(all_emotions), basis)
        for emotion in emotions:
            i = all_emotions.index(emotion)
            if counts[i] >= 2:
                cosines[emotion].append(float(a[i] @ b[i] / max(np.linalg.norm(a[i]) * np.linalg.norm(b[i]), 1e-300)))
    similarity = build.denoised.cosine(layer).numpy()
    rows = []
    for emotion in emotions:
        i = all_emotions.index(emotion)
        order = [j for j in np.argsort(-similarity[i]) if j != i][:4]
        rows.append({"emotion": emotion, "stories": int(counts[i]),
                     "split-half cosine": float(np.mean(cosines[emotion])) if cosines[emotion] else float("nan"),
                     "nearest emotions (cosine)": ", ".join(f"{all_emotions[j]} {similarity[i, j]:.2f}" for j in order)})
    return pd.DataFrame(rows).set_index("emotion")


SCALING_NS = (1, 2, 3, 4, 6, 8, 12, 16, 20, 24, 32, 48, 64, 96)


def scaling(build, layer: int, valence: pd.Series, arousal: pd.Series, draws: int = 10, seed: int = 0,
            targets: Sequence[float] = (0.5, 0.8), n_boot: int = 200) -> tuple[pd.DataFrame, dict]:
    """The subsampling curve at `layer` (n = 1 ... the smallest emotion's story count) and, per measure,
    the attenuation fit with the stories per emotion it predicts for each target r.

    The fit also takes the full-data point (every stored story, at the mean count per emotion: the r the
    chapter reports), and a bootstrap over the draws gives each prediction an interval. Whether a prediction
    is the data's or the box's is `supported_extrapolation`'s call (no parameter at a bound, finite interval)."""
    acts, labels, topics, _ = build.story_activations(layer)
    emotions = build.denoised.emotions
    counts = np.bincount(labels, minlength=len(emotions))
    most = int(counts.min())
    ns = [n for n in SCALING_NS if n <= most] or [most]
    basis = build.neutral_basis(layer)
    curve = scaling_curve(acts, labels, topics, emotions, basis, valence, arousal, ns, draws, seed)
    full_h = headline(vectors_from_stories(acts, labels, len(emotions), basis), emotions, valence, arousal)
    full_n = float(counts.mean())
    summary = curve.groupby("n").agg(["mean", lambda s: s.quantile(0.025), lambda s: s.quantile(0.975)])
    fits: dict[str, dict] = {}
    for measure, full_r in (("r_valence", full_h.valence_r), ("r_arousal", full_h.arousal_r)):
        means = summary[(measure, "mean")]
        entry: dict = {"largest_n_measured": int(means.index.max()), "full_data": {"n": full_n, "r": float(full_r)}}
        if len(means) >= 3:
            fit = fit_scaling(np.r_[means.index.to_numpy(float), full_n], np.r_[means.to_numpy(), full_r], targets)
            entry.update({"r_inf": fit.r_inf, "rho": fit.rho, "stories_needed": fit.n_for, "at_bound": fit.at_bound,
                          "full_data_predicted": float(fit.predict(full_n)),
                          "stories_needed_ci": bootstrap_fit(curve, measure, (full_n, float(full_r)), targets,
                                                             n_boot=n_boot, seed=seed)})
        else:
            entry.update({"r_inf": None, "rho": None, "stories_needed": {}, "at_bound": [], "stories_needed_ci": {}})
        fits[measure] = entry
    return curve, fits


def best_layer_test(build, valence: pd.Series, n_perm: int = 2000, seed: int = 0) -> dict:
    """The best layer's anchor-oriented r(PC1, valence), with its max-over-layers permutation p-value."""
    emotions = build.denoised.emotions
    rows = [emotions.index(e) for e in valence.index]
    scores = [orient_by_anchors(pca(build.denoised.at(layer).numpy(), emotions, n=2)).scores[rows, 0]
              for layer in build.denoised.layers]
    result = max_layer_null(scores, valence.values, n_perm, seed)
    return {**result, "best_layer": int(build.denoised.layers[result["best_slot"]]), "layers": len(scores)}
