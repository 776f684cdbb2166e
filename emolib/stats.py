"""Statistics the analyses share: correlation with a permutation test and a bootstrap interval, the Wilson
interval of a rate, AUROC, and the cluster (whole-prompt) bootstrap of means and slopes that steering uses.

geometry, validate and the steering experiments import from here, so every chapter computes an interval
the same way.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson r; nan (without numpy's warning) where either side does not vary."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2 or not (np.ptp(x) > 0 and np.ptp(y) > 0):
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def permutation_p(x: Sequence[float], y: Sequence[float], n: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of |r| against shuffled pairings (with the +1 correction)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    observed = abs(pearson(x, y))
    rng = np.random.default_rng(seed)
    xc = (x - x.mean()) / x.std()
    shuffled = np.stack([rng.permutation(y) for _ in range(n)])
    shuffled = (shuffled - shuffled.mean(1, keepdims=True)) / shuffled.std(1, keepdims=True)
    null = np.abs(shuffled @ xc / len(x))
    return float((1 + (null >= observed - 1e-12).sum()) / (n + 1))


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)  # at k = 0 or n the bound is 0 or 1 (not -1e-17)


def auroc(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """Area under the ROC curve: the chance a positive text outscores a negative one."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, np.asarray(scores, float)))


def bootstrap_r(x: Sequence[float], y: Sequence[float], n: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Pearson r with a percentile bootstrap 95% interval (resampling texts)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(x), size=(n, len(x)))
    rs = [np.corrcoef(x[d], y[d])[0, 1] for d in draws]
    low, high = np.nanpercentile(rs, [2.5, 97.5])
    return float(np.corrcoef(x, y)[0, 1]), float(low), float(high)


def cluster_sums(frame: pd.DataFrame, metric: str, cluster: str = "prompt") -> np.ndarray:
    """Per cluster (prompt): n, Σα, Σy, Σα², Σαy — enough to resample means and slopes quickly."""
    data = frame[[cluster, "alpha", metric]].dropna()
    x, y, key = data["alpha"].astype(float), data[metric].astype(float), data[cluster]
    sums = pd.DataFrame({"n": x.groupby(key).size(), "x": x.groupby(key).sum(), "y": y.groupby(key).sum(),
                         "xx": (x * x).groupby(key).sum(), "xy": (x * y).groupby(key).sum()})
    return sums.to_numpy(dtype=np.float64)


def resample_clusters(sums: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Totals of `n_boot` cluster bootstrap samples: whole prompts are drawn with replacement, because
    a prompt's continuations at different α share its wording and seeds and are not independent."""
    rng = np.random.default_rng(seed)
    return sums[rng.integers(0, len(sums), (n_boot, len(sums)))].sum(axis=1)


def slope_of(totals: np.ndarray) -> np.ndarray:
    n, x, y, xx, xy = (totals[..., i] for i in range(5))
    return (xy - x * y / n) / np.maximum(xx - x * x / n, 1e-300)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down; controls the family-wise error rate at any dependence):
    the k-th smallest p is multiplied by (m - k + 1), made monotone, capped at 1. NaN stays NaN."""
    p = np.asarray(p_values, float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out
