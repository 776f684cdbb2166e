"""The book's numbers in one place: what each chapter saves (one TypedDict per chapter, checked when
saved), a typed reader of those files, and the one table of published reference numbers that chapters,
the comparison (`emolib.book.compare`) and tests quote.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from ..errors import EmolibError

# --- what each chapter saves (book/<model>/results/<chapter>.json): checked when saved ----------------------

class Counts(TypedDict):
    min: int
    median: float


class StoriesResults(TypedDict):
    writer: str
    scale: str
    emotions: int
    topics: int
    per_cell: int
    prompt: str
    prompts: int
    stories: int
    status: dict[str, int]
    leak_rate: float
    kept_per_emotion: Counts
    fill_rate: float
    short_cells: list[str]
    retry_rounds: int
    fidelity: dict[str, Any]  # {"chosen": fidelity.Fidelity as a dict, "study": benchmarks/prompts.py's summary}
    tokens_per_second: float | None
    seconds: float | None
    corpus_sha256: str
    seed: int


class NeutralResults(TypedDict):
    writer: str
    dialogues: int
    status: dict[str, int]
    tokens_per_second: float | None
    seconds: float | None
    neutral_sha256: str
    seed: int


class ExtractResults(TypedDict):
    model_id: str
    provenance: dict[str, Any]
    layers: list[int]
    stories: int
    neutral: int
    emotions: int
    stories_per_emotion: Counts
    neutral_k: dict[str, int]
    tokens: int | None
    tokens_per_second: float | None
    seconds: float | None
    vectors_sha256: str
    activations: str
    deep: dict[str, Any] | None  # the deep story set's extraction (issue 37), where this run read the corpus it extends


class Correlation(TypedDict):
    r: float
    ci: str
    p: float
    words: int


class GeometryResults(TypedDict):
    layer: int
    n_layers: int
    emotions: int
    norms: str
    pc1_variance: float
    pc2_variance: float
    valence: Correlation  # over the primary ratings (Warriner's words where installed)
    arousal: Correlation
    like_for_like: dict[str, Correlation] | None  # over the 45 Russell-Mehrabian words, as Anthropic's r
    probe_top1: float
    probe_chance: float
    logistic_top1: float
    valence_auroc: float
    largest_kmeans_cluster: str
    best_valence_layer: int
    best_valence_r: float
    max_layer_p: float
    orientation: str
    topic_centred: dict[str, dict[str, float]]
    split_half: dict[str, dict[str, float]]
    scaling: dict[str, Any]
    probes: dict[str, dict[str, float]]
    valence_two_way: dict[str, float]
    stories_per_emotion: int
    circumplex: dict[str, Any]  # per word set: axes r, Procrustes alignment (r, p, CI, angle), ridge ceiling, verdict
    circumplex_best_layer: dict[str, Any]  # the largest aligned valence r over layers, with its max-over-layers p
    cv_pca: dict[str, Any] | None  # the cross-validated spectrum (Stringer et al. 2019)
    baselines: dict[str, list[dict]]  # per word set: model vs bag of words / layer 0, partial r [CI], p (issue 36)
    baselines_best_layer: dict[str, Any]  # the largest partial r over the bag of words across layers, max-over-layers p
    deep: dict[str, Any] | None  # the deep story set's section (issue 37), where chapter 3 built its vectors


class LensResults(TypedDict):
    layer: int
    self_named: int
    emotions: int
    self_named_by_layer: dict[str, float]
    self_named_chance: dict[str, float]
    self_named_label_null: dict[str, float]  # the vectors handed to the emotions in random order (issue 36)


class ValidationResults(TypedDict):
    layer: int
    texts: str
    passages: int
    r_valence_vader: float
    ci: list[float]
    ci_resampling: str
    r_within_labels: float | None
    random_direction_95: float
    random_direction_p: float
    positive_share: float
    top_emotions: dict[str, float]
    best_emotion_per_label: list[dict] | None
    bag_of_words: dict[str, float] | None  # the bag of words' valence axis on the passages, and the model's gain (issue 36)
    layer_0: dict[str, float] | None  # the model's layer-0 valence axis on the passages, and the analysis layer's gain over it


class SteeringResults(TypedDict):
    layer: int
    read_layer: int
    positions: str | int
    alphas: list[float]
    prompts: int
    slopes: list[dict]
    blackmail_trials: int
    blackmail: list[dict]
    funnel: list[dict]
    judge: str | None
    max_new_tokens: int
    perplexity_doubling: list[dict]
    reward_hacking: dict[str, Any]
    vectors_corpus: str  # the corpus whose vectors were steered (the deep set where chapter 3 built it)
    null_band: list[dict]  # each slope beside the band of random directions (issue 36)
    measured_alpha: list[dict]  # the α moving each projection by one story-to-story SD
    validity: list[dict]  # each steered vector's split-half cosine and nearest emotions (issue 37)
    text_verdicts: dict[str, str]  # the text readers' verdicts, kept only outside the random band


class InContextResults(TypedDict):
    layer: int
    vectors_corpus: str
    signs: dict[str, dict[str, Any]]  # per reader: predicted signs of the numerical pairs, sign test p
    numerical: dict[str, list[dict]]
    scenarios: dict[str, dict[str, Any]]  # per reader: top-1 / top-3 accuracy, chance, p
    contrasts: dict[str, list[dict]]  # per reader (the model, the bag of words, the model's layer 0): negation, binding, speaker (two)
    dose_by_layer: list[dict]


class PreferencesResults(TypedDict):
    layer: int
    vectors_corpus: str
    activities: int
    pairs: int
    reliability: dict[str, float]  # split-half ρ of the Elo ranking
    decisiveness: dict[str, float]  # mean |preference| against the position bias
    ranking_is_noise: bool
    valence_pattern: dict[str, float]  # r(preference r, human valence) across emotions
    correlations: list[dict]
    steering: dict[str, Any]  # ΔElo per emotion, the random band, r(preference r, ΔElo)
    sycophancy: dict[str, Any]  # switch rates per condition, changes with Holm p, the random band, replies' shares


SCHEMAS: dict[str, type] = {"01_stories": StoriesResults, "02_neutral": NeutralResults, "03_extract": ExtractResults,
                            "04_geometry": GeometryResults, "05_logit_lens": LensResults,
                            "06_external_validation": ValidationResults, "07_steering": SteeringResults,
                            "08_in_context": InContextResults, "09_preferences": PreferencesResults}


def check(chapter: str, results: dict[str, Any]) -> None:
    """Refuse a chapter's results that lack a key its schema names (what the comparison chapter reads)."""
    schema = SCHEMAS.get(chapter)
    if schema is None:
        return
    missing = sorted(set(schema.__required_keys__) - set(results))
    if missing:
        raise EmolibError(f"chapter {chapter} saves no {', '.join(missing)}; emolib.book.results.{schema.__name__} names them")


@dataclass
class ModelResults:
    """One model's saved numbers, chapter by chapter (None: that chapter has not run for it)."""

    stories: StoriesResults | None = None
    neutral: NeutralResults | None = None
    extract: ExtractResults | None = None
    geometry: GeometryResults | None = None
    lens: LensResults | None = None
    validation: ValidationResults | None = None
    steering: SteeringResults | None = None
    in_context: InContextResults | None = None
    preferences: PreferencesResults | None = None
    other: dict[str, dict[str, Any]] = field(default_factory=dict)  # chapters without a schema

    @classmethod
    def of(cls, chapters: dict[str, dict[str, Any]]) -> "ModelResults":
        """From {chapter file stem: saved numbers}, as `load` reads them (tests build them by hand)."""
        known = {chapter: chapters[chapter] for chapter in FIELDS if chapter in chapters}
        return cls(**{FIELDS[c]: v for c, v in known.items()},
                   other={c: v for c, v in chapters.items() if c not in FIELDS})


FIELDS = {"01_stories": "stories", "02_neutral": "neutral", "03_extract": "extract", "04_geometry": "geometry",
          "05_logit_lens": "lens", "06_external_validation": "validation", "07_steering": "steering",
          "08_in_context": "in_context", "09_preferences": "preferences"}


def load(folder: Path | str) -> dict[str, ModelResults]:
    """{model: ModelResults} for every `<model>/results/*.json` under `folder` (the book directory)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    for path in sorted(Path(folder).glob("*/results/*.json")):
        found.setdefault(path.parent.parent.name, {})[path.stem] = json.loads(path.read_text())
    return {model: ModelResults.of(chapters) for model, chapters in found.items()}


# --- published reference numbers (../shared/METHOD.md sections 4-5): the only place they are typed ----------

@dataclass(frozen=True)
class Published:
    """A number quoted from a source: its value where it is one number, and how the book prints it."""

    value: float | None
    text: str


ANTHROPIC, RAIN1955, GEMOTIONS = "Anthropic (Claude Sonnet 4.5)", "rain1955 (Gemma-4-E4B, layer 28)", "gemotions (Gemma-4-31B)"
NRC = "arXiv 2606.26987 (NRC VAD norms)"
SOURCES = (ANTHROPIC, RAIN1955, GEMOTIONS)

PUBLISHED: dict[str, dict[str, Published]] = {  # quantity: {source: number}
    "analysis_layer": {RAIN1955: Published(28, "28 of 42"), GEMOTIONS: Published(None, "5..55 of 60")},
    "pc1_variance": {ANTHROPIC: Published(0.26, "26%"), RAIN1955: Published(0.422, "42.2%"),
                     GEMOTIONS: Published(None, "34.9-38.9% by layer")},
    "pc2_variance": {ANTHROPIC: Published(0.15, "15%"), RAIN1955: Published(0.183, "18.3%")},
    "valence_r": {ANTHROPIC: Published(0.81, "0.81 (45 words)"), RAIN1955: Published(None, "not measured")},
    "arousal_r": {ANTHROPIC: Published(0.66, "0.66 (45 words)"), RAIN1955: Published(None, "labelled by eye")},
    "nrc_valence_r": {NRC: Published(0.76, "0.76")},
    "nrc_arousal_r": {NRC: Published(0.83, "0.83")},
    "clusters": {ANTHROPIC: Published(10, "k-means k=10"),
                 GEMOTIONS: Published(15, "hierarchical, 15 groups (Positive/Joy 35, Fear/Anxiety 28, ...)")},
    "across_layers": {ANTHROPIC: Published(14, "stable over 14 layers"), GEMOTIONS: Published(None, "valence axis at every layer")},
    "logit_lens": {ANTHROPIC: Published(None, "desperate -> desperate, urgent, bankrupt"),
                   RAIN1955: Published(9, "reported for 9 emotions")},
    "real_text": {GEMOTIONS: Published(None, "same top emotions on Pile and chat")},
}
# Agentic rates per steering condition (alpha in units of the mean residual norm); gemotions ran 4 x 100 trials.
BLACKMAIL: dict[str, dict[str, Published]] = {
    "baseline": {ANTHROPIC: Published(0.22, "22%"), GEMOTIONS: Published(0.86, "86%")},
    "+desperate 0.05": {ANTHROPIC: Published(0.72, "72%"), GEMOTIONS: Published(0.89, "89%")},
    "-desperate 0.05": {ANTHROPIC: Published(0.0, "0%")},
    "+calm 0.05": {ANTHROPIC: Published(0.0, "0%"), GEMOTIONS: Published(0.82, "82%")},
    "-calm 0.05": {ANTHROPIC: Published(0.66, "66%"), GEMOTIONS: Published(0.91, "91%")},
}
REWARD_HACKING: dict[str, dict[str, Published]] = {
    "baseline": {ANTHROPIC: Published(0.05, "~5%")}, "+desperate 0.05": {ANTHROPIC: Published(0.70, "~70%")},
}


def published_text(quantity: str, source: str, table: dict[str, dict[str, Published]] | None = None) -> str:
    """How the book prints a published number ("-" where the source reports none)."""
    number = (PUBLISHED if table is None else table).get(quantity, {}).get(source)
    return "-" if number is None else number.text
