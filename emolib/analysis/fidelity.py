"""Story fidelity: does a story carry its emotion, judged from its words alone (no analysed model)?

Two independent readers:
- **Lexicon**: the mean human valence and arousal (Warriner et al. 2013, 1..9) of a story's rated
  words, with every form of the 171 emotion words left out, so that a leak cannot help. Averaged per
  emotion and correlated across emotions with the emotion word's own rating; the bootstrap resamples
  stories within each emotion.
- **VADER** (Hutto & Gilbert 2014): the share of stories whose compound sentiment falls on the same
  side as the emotion word's valence (Warriner > 5: pleasant; < 5: unpleasant).
This is the floor an analysed model must beat, not its ceiling: what the stories' words carry without any
model (chapter 4 sets every headline beside a bag of words of the same stories).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import EmolibError
from ..stories.prompts import load_emotions, word_forms
from .geometry import human_norms, pearson, wilson
from .validate import vader

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
VADER_NEUTRAL = 0.05  # |compound| below this is neutral (VADER's own convention)


@lru_cache(maxsize=1)
def _excluded_words() -> frozenset[str]:
    """Every form of every emotion word (each part of a phrase too), as the leak filter knows them."""
    words: set[str] = set()
    for emotion in load_emotions():
        for part in re.split(r"[\s-]+", emotion.lower()):
            words |= word_forms(part) | {part}
    return frozenset(words)


@lru_cache(maxsize=1)
def _lexicon() -> dict[str, tuple[float, float]]:

    frame = human_norms("warriner")
    excluded = _excluded_words()
    return {w: (v, a) for w, v, a in zip(frame.index, frame["valence"], frame["arousal"]) if w not in excluded}


def word_scores(texts: Sequence[str]) -> pd.DataFrame:
    """Per text: mean Warriner valence and arousal of its rated words (emotion words excluded) and how
    many words were rated."""
    lexicon = _lexicon()
    rows = []
    for text in texts:
        rated = [lexicon[w] for w in _WORD.findall(str(text).lower()) if w in lexicon]
        mean = np.mean(rated, axis=0) if rated else (np.nan, np.nan)
        rows.append({"valence": float(mean[0]), "arousal": float(mean[1]), "rated_words": len(rated)})
    return pd.DataFrame(rows)


@dataclass
class Fidelity:
    """How well stories carry their emotion; `r` with 95% intervals (r +- 1.96 bootstrap SE, stories resampled
    within emotion)."""

    stories: int
    emotions: int  # emotions with a Warriner rating of their own word
    valence_r: float
    valence_ci: tuple[float, float]
    arousal_r: float
    arousal_ci: tuple[float, float]
    vader_agreement: float  # share of stories on the emotion's side of valence
    vader_ci: tuple[float, float]
    vader_neutral: float  # share of stories VADER calls neutral

    def row(self) -> dict:
        return {"stories": self.stories, "emotions": self.emotions,
                "lexicon valence r": f"{self.valence_r:.2f} [{self.valence_ci[0]:.2f}, {self.valence_ci[1]:.2f}]",
                "lexicon arousal r": f"{self.arousal_r:.2f} [{self.arousal_ci[0]:.2f}, {self.arousal_ci[1]:.2f}]",
                "VADER right side": f"{self.vader_agreement:.1%} [{self.vader_ci[0]:.1%}, {self.vader_ci[1]:.1%}]",
                "VADER neutral": f"{self.vader_neutral:.1%}"}

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self, label: str) -> pd.DataFrame:
        """The row as a one-column table headed `label`."""
        return pd.DataFrame([self.row()], index=[label]).T


def story_fidelity(stories: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> Fidelity:
    """Fidelity of `stories` (columns `emotion`, `text`): lexicon r across emotions and VADER agreement."""
    if stories.empty:
        raise EmolibError("no stories to score for fidelity")
    norms = human_norms("warriner")
    scores = word_scores(stories["text"].tolist())
    frame = pd.DataFrame({"emotion": stories["emotion"].values, "valence": scores["valence"].values,
                          "arousal": scores["arousal"].values}).dropna()
    frame = frame[frame["emotion"].isin(norms.index)]
    emotions = sorted(frame["emotion"].unique())
    if len(emotions) < 3:
        raise EmolibError(f"story fidelity needs stories of at least 3 rated emotions, got {len(emotions)}")
    target = norms.loc[emotions]
    groups = [frame.index[frame["emotion"] == e].to_numpy() for e in emotions]
    values = frame[["valence", "arousal"]].to_numpy()
    position = {label: i for i, label in enumerate(frame.index)}
    groups = [np.array([position[g] for g in group]) for group in groups]

    def correlations(pick: list[np.ndarray]) -> tuple[float, float]:
        means = np.stack([values[g].mean(axis=0) for g in pick])
        return pearson(means[:, 0], target["valence"]), pearson(means[:, 1], target["arousal"])

    r_val, r_aro = correlations(groups)
    rng = np.random.default_rng(seed)
    draws = np.array([correlations([rng.choice(g, size=len(g)) for g in groups]) for _ in range(n_boot)])
    # r +- 1.96 bootstrap SE, as chapter 4 does: resampled stories repeat, which makes each replicate's emotion
    # means noisier and pulls its r down, so percentiles of the replicates would sit below the estimate
    spread = 1.96 * np.nanstd(draws, axis=0, ddof=1)
    low, high = np.array([r_val, r_aro]) - spread, np.array([r_val, r_aro]) + spread

    compound = vader(stories["text"].tolist())
    pleasant = norms["valence"].reindex(stories["emotion"].values).to_numpy() > 5
    rated = ~np.isnan(norms["valence"].reindex(stories["emotion"].values).to_numpy())
    side = np.where(compound > VADER_NEUTRAL, 1, np.where(compound < -VADER_NEUTRAL, -1, 0))[rated]
    right = (side == np.where(pleasant[rated], 1, -1))
    agreement = float(right.mean()) if right.size else float("nan")
    return Fidelity(len(frame), len(emotions), r_val, (float(low[0]), float(high[0])), r_aro,
                    (float(low[1]), float(high[1])), agreement, wilson(agreement, int(right.size)),
                    float((side == 0).mean()) if side.size else float("nan"))


def _study_path():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "prompts.json"


def prompt_study_summary() -> dict | None:
    """benchmarks/prompts.py's comparison of wordings (None where it has not been run)."""
    import json

    path = _study_path()
    if not path.exists():
        return None
    study = json.loads(path.read_text())
    base = study["variants"]["label"]["selection"]["leak_rate"]
    compared = [name for name in ("label", "feels", "strong") if name in study["variants"]]
    eligible = [name for name in compared if study["variants"][name]["selection"]["leak_rate"] <= base + LEAK_GUARD]
    return {"chosen": study["chosen"], "rule": study["rule"], "compared": compared, "eligible": eligible, "variants": {
        name: {half: {"valence_r": row[half]["fidelity"]["valence_r"], "valence_ci": row[half]["fidelity"]["valence_ci"],
                      "arousal_r": row[half]["fidelity"]["arousal_r"], "vader_agreement": row[half]["fidelity"]["vader_agreement"],
                      "leak_rate": row[half]["leak_rate"], "kept_per_prompt": row[half]["kept_per_prompt"],
                      "median_tokens": row[half]["median_tokens"], "cut_by_cap": row[half]["cut_by_cap"]}
               for half in ("selection", "confirmation")}
        for name, row in study["variants"].items()}}


LEAK_GUARD = 0.05  # benchmarks/prompts.py: a wording may leak at most 5 points more often than the original


def describe_prompt_study() -> str | None:
    """What the study's choice rests on, in one sentence: how many wordings passed the leak guard, so a choice
    that the guard alone made is not read as a fidelity result confirmed on the other half."""
    summary = prompt_study_summary()
    if summary is None:
        return None
    eligible, compared = summary["eligible"], summary["compared"]
    rejected = [name for name in compared if name not in eligible]
    leak = {name: summary["variants"][name]["selection"]["leak_rate"] for name in compared}
    if len(eligible) == 1:
        return (f"Only one of the {len(compared)} wordings passed the leak guard ({eligible[0]!r}; "
                + ", ".join(f"{name!r} leaked {leak[name]:.0%} against {leak['label']:.0%}" for name in rejected)
                + f"), so the guard, not fidelity, chose {summary['chosen']!r}; the other half of the emotions confirms "
                  "its numbers, not a ranking.")
    return (f"{len(eligible)} of {len(compared)} wordings passed the leak guard; {summary['chosen']!r} had the highest "
            "lexicon valence r among them on the selection half, and the confirmation half shows whether that held.")


def prompt_study() -> pd.DataFrame | None:
    """The comparison of wordings as a table: one row per wording and half of the emotions."""
    summary = prompt_study_summary()
    if summary is None:
        return None
    rows = []
    for name, halves in summary["variants"].items():
        for half, m in halves.items():
            rows.append({"wording": name + (" (chosen)" if name == summary["chosen"] else ""), "emotions": half,
                         "passes the leak guard": ("yes" if name in summary["eligible"] else
                                                   "no" if name in summary["compared"] else "(follow-up)"),
                         "lexicon valence r": f"{m['valence_r']:.2f} [{m['valence_ci'][0]:.2f}, {m['valence_ci'][1]:.2f}]",
                         "lexicon arousal r": round(m["arousal_r"], 2), "VADER right side": f"{m['vader_agreement']:.1%}",
                         "leak rate": f"{m['leak_rate']:.1%}", "kept per prompt": round(m["kept_per_prompt"], 2),
                         "median tokens": m["median_tokens"], "cut by the cap": f"{m['cut_by_cap']:.1%}"})
    return pd.DataFrame(rows).set_index(["wording", "emotions"])


def describe_vader(fid: Fidelity) -> str:
    """One line on VADER's agreement: at chance where its interval holds 50 % (VADER reads sentiment words, the
    emotion words among them, and these stories never name their emotion), above or below chance otherwise."""
    low, high = fid.vader_ci
    where = ("at chance (its interval holds 50 %): VADER, which leans on sentiment words and the emotion words among "
             "them, does not see on these stories, which never name their emotion, the valence the lexicon finds"
             if low <= 0.5 <= high else "above chance" if low > 0.5 else "below chance (VADER reads them backwards)")
    return (f"VADER agreement {fid.vader_agreement:.1%} [{low:.1%}, {high:.1%}] of {fid.stories:,} stories, "
            f"{fid.vader_neutral:.1%} scored neutral: {where}.")
