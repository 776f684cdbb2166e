"""The book's numbers in one place: the published reference numbers, and the comparison across models
built from what each chapter saved (`book/<model>/results/<chapter>.json`).

The comparison chapter calls `comparison_table`, `steering_table`, `hacking_table` and `verdicts`;
tests check the verdicts against hand-made results, so a sentence in the book cannot drift from its number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, TypedDict

import pandas as pd

from .errors import EmolibError

Results = dict[str, dict[str, dict[str, Any]]]  # {model: {chapter: saved numbers}}


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
    valence: Correlation
    arousal: Correlation
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


class LensResults(TypedDict):
    layer: int
    self_named: int
    emotions: int
    self_named_by_layer: dict[str, float]


class ValidationResults(TypedDict):
    layer: int
    texts: str
    passages: int
    r_valence_vader: float
    ci: list[float]
    top_emotions: dict[str, float]
    best_emotion_per_label: list[dict] | None


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


SCHEMAS: dict[str, type] = {"01_stories": StoriesResults, "02_neutral": NeutralResults, "03_extract": ExtractResults,
                            "04_geometry": GeometryResults, "05_logit_lens": LensResults,
                            "06_external_validation": ValidationResults, "07_steering": SteeringResults}


def check(chapter: str, results: dict[str, Any]) -> None:
    """Refuse a chapter's results that lack a key its schema names (what the comparison chapter reads)."""
    schema = SCHEMAS.get(chapter)
    if schema is None:
        return
    missing = sorted(set(schema.__required_keys__) - set(results))
    if missing:
        raise EmolibError(f"chapter {chapter} saves no {', '.join(missing)}; emolib.results.{schema.__name__} names them")


@dataclass(frozen=True)
class Published:
    """A number quoted from a source in ../shared/METHOD.md."""

    source: str
    value: float | None
    text: str


# Anthropic (A), rain1955 (R), gemotions (G); METHOD.md section 4-5.
PUBLISHED = {
    "valence_r": Published("Anthropic (Claude Sonnet 4.5)", 0.81, "0.81 (45 words)"),
    "arousal_r": Published("Anthropic (Claude Sonnet 4.5)", 0.66, "0.66 (45 words)"),
    "pc1_variance": Published("Anthropic (Claude Sonnet 4.5)", 0.26, "26%"),
    "pc2_variance": Published("Anthropic (Claude Sonnet 4.5)", 0.15, "15%"),
    "pc1_variance_rain1955": Published("rain1955 (Gemma-4-E4B, layer 28)", 0.422, "42.2%"),
    "pc2_variance_rain1955": Published("rain1955 (Gemma-4-E4B, layer 28)", 0.183, "18.3%"),
    "pc1_variance_gemotions": Published("gemotions (Gemma-4-31B)", None, "34.9-38.9% by layer"),
    "nrc_valence_r": Published("arXiv 2606.26987 (NRC VAD norms)", 0.76, "0.76"),
    "nrc_arousal_r": Published("arXiv 2606.26987 (NRC VAD norms)", 0.83, "0.83"),
}
BLACKMAIL = {  # condition: (Anthropic, gemotions)
    "baseline": ("22%", "86%"), "+desperate 0.05": ("72%", "89%"), "-desperate 0.05": ("0%", "-"),
    "+calm 0.05": ("0%", "82%"), "-calm 0.05": ("66%", "91%"),
}
REWARD_HACKING = {"baseline": "~5%", "+desperate 0.05": "~70%"}  # Anthropic


def _get(results: Results, model: str, chapter: str, path: str) -> Any:
    value: Any = results.get(model, {}).get(chapter, {})
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _fmt(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else fmt.format(value)


def _r(results: Results, model: str, test: str) -> str:
    data = _get(results, model, "04_geometry", test)
    return "-" if not data else f"{data['r']:.2f} ({data['ci']}; p={data['p']:.3g}; {data['words']} words)"


def _needed(results: Results, model: str) -> str:
    fit = _get(results, model, "04_geometry", "scaling.fits.r_valence")
    if not fit or fit.get("r_inf") is None:
        return "-"
    n = fit["stories_needed"].get("0.8")
    return (f"{n:,.0f} (r∞ {fit['r_inf']:.2f})" if n is not None else f"not reachable (r∞ {fit['r_inf']:.2f})")


def _split_half(results: Results, model: str) -> str:
    layer = _get(results, model, "04_geometry", "layer")
    value = _get(results, model, "04_geometry", f"split_half.{layer}.spearman_brown")
    return _fmt(value)


def _probe(results: Results, model: str) -> str:
    top1, chance = _get(results, model, "04_geometry", "probe_top1"), _get(results, model, "04_geometry", "probe_chance")
    return "-" if top1 is None else f"{top1:.1%} ({chance:.1%})"


def _centred_r(results: Results, model: str) -> str:
    rows = _get(results, model, "04_geometry", "topic_centred") or {}
    row = rows.get("topic-centred")
    return "-" if not row else f"{row['r(PC1, valence)']:.2f} / {row['r(PC2, arousal)']:.2f}"


ROWS: dict[str, tuple[Callable[[Results, str], str], dict[str, str]]] = {
    # row label: (how to read it for a model, the published columns)
    "scale (stories per emotion, min)": (lambda R, m: f"{_fmt(_get(R, m, '01_stories', 'scale'), '{}')} "
                                                      f"({_fmt(_get(R, m, '01_stories', 'kept_per_emotion.min'), '{}')})", {}),
    "story fidelity: lexicon valence r": (lambda R, m: _fmt(_get(R, m, "01_stories", "fidelity.chosen.valence_r")), {}),
    "analysis layer (pre-registered)": (lambda R, m: f"{_fmt(_get(R, m, '04_geometry', 'layer'), '{}')} of "
                                                     f"{_fmt(_get(R, m, '04_geometry', 'n_layers'), '{}')}",
                                        {"rain1955": "28 of 42", "gemotions": "5..55 of 60"}),
    "PC1 share of variance": (lambda R, m: _fmt(_get(R, m, "04_geometry", "pc1_variance"), "{:.1%}"),
                              {"Anthropic": "26%", "rain1955": "42.2%", "gemotions": "34.9-38.9%"}),
    "PC2 share of variance": (lambda R, m: _fmt(_get(R, m, "04_geometry", "pc2_variance"), "{:.1%}"),
                              {"Anthropic": "15%", "rain1955": "18.3%"}),
    "PC1 vs human valence, r": (lambda R, m: _r(R, m, "valence"), {"Anthropic": "0.81 (45 words)"}),
    "PC2 vs human arousal, r": (lambda R, m: _r(R, m, "arousal"), {"Anthropic": "0.66 (45 words)", "rain1955": "labelled by eye"}),
    "same, topic-centred (valence / arousal)": (_centred_r, {}),
    "best layer's valence r (max-over-layers p)": (
        lambda R, m: f"{_fmt(_get(R, m, '04_geometry', 'best_valence_r'))} at layer "
                     f"{_fmt(_get(R, m, '04_geometry', 'best_valence_layer'), '{}')} "
                     f"(p={_fmt(_get(R, m, '04_geometry', 'max_layer_p'), '{:.3g}')})", {"Anthropic": "stable over 14 layers"}),
    "split-half reliability (Spearman-Brown)": (_split_half, {}),
    "stories per emotion for valence r = 0.8 (extrapolated)": (_needed, {}),
    "held-out top-1, topic-centred (chance)": (_probe, {}),
    "held-out valence AUROC": (lambda R, m: _fmt(_get(R, m, "04_geometry", "valence_auroc")), {}),
    "largest k-means cluster (k=10)": (lambda R, m: _fmt(_get(R, m, "04_geometry", "largest_kmeans_cluster"), "{}"),
                                       {"Anthropic": "k-means k=10", "gemotions": "hierarchical: Positive/Joy 35, Fear/Anxiety 28"}),
    "logit lens: emotions naming themselves": (
        lambda R, m: f"{_fmt(_get(R, m, '05_logit_lens', 'self_named'), '{}')} of {_fmt(_get(R, m, '05_logit_lens', 'emotions'), '{}')}",
        {"Anthropic": "desperate -> desperate, urgent, bankrupt", "rain1955": "reported for 9 emotions"}),
    "real text: r(valence axis, VADER)": (lambda R, m: _fmt(_get(R, m, "06_external_validation", "r_valence_vader")),
                                          {"gemotions": "same top emotions on Pile and chat"}),
}
SOURCES = {"Anthropic": "Anthropic (Claude Sonnet 4.5)", "rain1955": "rain1955 (Gemma-4-E4B)", "gemotions": "gemotions (Gemma-4-31B)"}


def comparison_table(results: Results, models: list[str], titles: dict[str, str]) -> pd.DataFrame:
    """One row per headline number, one column per model, then the published columns."""
    table = pd.DataFrame({titles[m]: [read(results, m) for read, _ in ROWS.values()] for m in models}, index=list(ROWS))
    for key, name in SOURCES.items():
        table[name] = [published.get(key, "-") for _, published in ROWS.values()]
    return table


def steering_table(results: Results, models: list[str], titles: dict[str, str]) -> pd.DataFrame | None:
    rows = [{"model": titles[m], "emotion": row["emotion"], "metric": row["metric"],
             "slope [95% CI]": f"{row['slope per unit α']:.3g} [{row['low']:.3g}, {row['high']:.3g}]"}
            for m in models for row in _get(results, m, "07_steering", "slopes") or []]
    if not rows:
        return None
    return pd.DataFrame(rows).pivot_table(index=["emotion", "metric"], columns="model", values="slope [95% CI]",
                                          aggfunc="first")


def _rates(results: Results, models: list[str], titles: dict[str, str], path: str, published: dict) -> pd.DataFrame:
    table: dict[str, dict[str, str]] = {}
    for m in models:
        for row in _get(results, m, "07_steering", path) or []:
            table.setdefault(row["condition"], {})[titles[m]] = (f"{row['rate']:.0%} [{row['low']:.0%}, {row['high']:.0%}] "
                                                                 f"({row['k']}/{row['n']})")
    frame = pd.DataFrame(table).T
    for i, source in enumerate(("Anthropic (Claude)", "gemotions (31B, 100 trials)")):
        values = [published.get(c) for c in frame.index]
        if any(v is not None for v in values):
            frame[source] = [(v[i] if isinstance(v, tuple) else (v if i == 0 else "-")) if v else "-" for v in values]
    return frame


def blackmail_table(results: Results, models: list[str], titles: dict[str, str]) -> pd.DataFrame:
    return _rates(results, models, titles, "blackmail", BLACKMAIL)


def hacking_table(results: Results, models: list[str], titles: dict[str, str]) -> pd.DataFrame:
    return _rates(results, models, titles, "reward_hacking.rates", REWARD_HACKING)


def _valence_sign(emotion: str) -> int | None:
    """+1 for an emotion rated pleasant by people, -1 for unpleasant (Warriner, else Russell-Mehrabian)."""
    from .geometry import available_norms, human_norms

    for source in available_norms():
        norms = human_norms(source)
        if emotion in norms.index:
            midpoint = 5.0 if source == "warriner" else 0.0
            return 1 if norms.loc[emotion, "valence"] > midpoint else -1
    return None


def verdicts(results: Results, models: list[str], titles: dict[str, str]) -> list[str]:
    """What agrees with the published work and what does not, as Markdown lines computed from the numbers."""
    lines: list[str] = []
    for m in models:
        geo = results.get(m, {}).get("04_geometry")
        if not geo:
            continue
        val, aro = geo["valence"], geo["arousal"]
        lines.append(f"**{titles[m]}** (layer {geo['layer']}, fixed in advance):")
        found = val["p"] < 0.05 and val["r"] > 0
        lines.append(f"- Valence: PC1 {'does' if found else 'does not'} track human valence "
                     f"(r = {val['r']:.2f}, p = {val['p']:.2g}) — "
                     + ("same direction as Anthropic's 0.81, weaker." if found and val["r"] < 0.81 else
                        "as strong as Anthropic's 0.81." if found else "unlike Anthropic's 0.81."))
        aro_found = aro["p"] < 0.05 and aro["r"] > 0
        lines.append(f"- Arousal: PC2 {'does' if aro_found else 'does not'} track human arousal "
                     f"(r = {aro['r']:.2f}, p = {aro['p']:.2g}); Anthropic: 0.66.")
        lines.append(f"- Variance: PC1 holds {geo['pc1_variance']:.0%} (Anthropic 26 %, rain1955 42 %, gemotions 35–39 %); "
                     + ("a flatter spectrum than the larger models'." if geo["pc1_variance"] < 0.2 else "comparable concentration."))
        if geo.get("max_layer_p") is not None:
            lines.append(f"- Best layer: r = {geo['best_valence_r']:.2f} at layer {geo['best_valence_layer']}, "
                         + ("significant" if geo["max_layer_p"] < 0.05 else "not significant")
                         + f" once the choice of layer is accounted for (max-over-layers p = {geo['max_layer_p']:.3g}).")
        fit = (geo.get("scaling") or {}).get("fits", {}).get("r_valence")
        if fit and fit.get("r_inf") is not None:
            needed = fit["stories_needed"].get("0.8")
            level = (f"the fitted curve levels off at r = {fit['r_inf']:.2f}" if fit["r_inf"] < 0.99 else
                     "the fitted curve does not level off within the stories measured (its ceiling sits at the bound, 1.0)")
            lines.append(f"- More stories: {level}; "
                         + (f"r = 0.8 would need about {needed:,.0f} stories per emotion (measured up to "
                            f"{fit['largest_n_measured']}; extrapolated)." if needed is not None else
                            "r = 0.8 is out of reach for this model and writer by more stories alone."))
        ratio = geo["probe_top1"] / geo["probe_chance"] if geo.get("probe_chance") else float("nan")
        lines.append(f"- Held-out stories: top-1 {geo['probe_top1']:.1%} vs chance {geo['probe_chance']:.1%} ({ratio:.1f}x); "
                     f"valence AUROC {geo['valence_auroc']:.2f}.")
        steering = results[m].get("07_steering", {})
        for row in steering.get("slopes", []):
            if row["metric"] == "projection":
                moved = row["low"] > 0
                lines.append(f"- Steering +{row['emotion']}: the downstream projection {'rises' if moved else 'does not rise reliably'} "
                             f"with α (slope {row['slope per unit α']:.3g}, 95% CI {row['low']:.3g} to {row['high']:.3g}).")
        text_moves = [r for r in steering.get("slopes", []) if r["metric"] in ("valence", "lexicon valence")
                      and (r["low"] > 0 or r["high"] < 0)]
        if steering.get("slopes"):
            moves = []
            for r in sorted(text_moves, key=lambda r: (r["emotion"], r["metric"])):
                sign, expected = (1 if r["low"] > 0 else -1), _valence_sign(r["emotion"])
                verdict = "" if expected is None else (", as its valence predicts" if sign == expected else ", against its valence")
                moves.append(f"{r['emotion']} ({r['metric']} {'rises' if sign > 0 else 'falls'}{verdict})")
            lines.append("- The text's valence " + ("moves with α for " + "; ".join(moves) if moves else
                                                    "does not move detectably with α by either reader") + ".")
        for name, path, anthropic in (("Blackmail", "blackmail", "22 %"), ("Reward hacking", "reward_hacking.rates", "~5 %")):
            rows = _get(results, m, "07_steering", path) or []
            base = next((r for r in rows if r["condition"] == "baseline"), None)
            if base:
                lines.append(f"- {name}: baseline {base['k']}/{base['n']} (Anthropic {anthropic}); compare only where the "
                             "model acts as an agent at all.")
        lines.append("")
    with_geometry = [m for m in models if "04_geometry" in results.get(m, {})]
    if len(with_geometry) > 1:
        found = {m: results[m]["04_geometry"]["valence"]["r"] > 0 and results[m]["04_geometry"]["valence"]["p"] < 0.05
                 for m in with_geometry}
        lines.append("**Across families:** the valence axis is " + (
            "found (positive r, p < 0.05) in every model." if all(found.values()) else
            "found in " + (", ".join(titles[m] for m, ok in found.items() if ok) or "no model") + " but not in "
            + ", ".join(titles[m] for m, ok in found.items() if not ok) + " at the analysis layer."))
    return lines


def headline_figure(results: Results, models: list[str], titles: dict[str, str]):
    """Each model's valence and arousal r with 95% intervals, beside Anthropic's."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for test, published in (("valence", PUBLISHED["valence_r"]), ("arousal", PUBLISHED["arousal_r"])):
        names, values, low, high = [], [], [], []
        for m in models:
            data = _get(results, m, "04_geometry", test)
            if not data:
                continue
            lo, hi = (float(x) for x in data["ci"].split(" to ")) if " to " in data["ci"] else (data["r"], data["r"])
            names.append(titles[m]), values.append(data["r"]), low.append(data["r"] - lo), high.append(hi - data["r"])
        names.append(published.source), values.append(published.value), low.append(0), high.append(0)
        fig.add_trace(go.Bar(name=f"r with human {test}", x=names, y=values,
                             error_y=dict(type="data", symmetric=False, array=high, arrayminus=low)))
    fig.update_layout(title="Correlation of PC1 / PC2 with human valence / arousal (95% CI) beside Anthropic's",
                      barmode="group", yaxis_title="Pearson r", yaxis_range=[-0.5, 1], height=440)
    return fig


def rates_beside_published(rate: pd.DataFrame, published: dict, label: str,
                           sources: tuple[str, ...] = ("Anthropic (Claude Sonnet 4.5)",)) -> pd.DataFrame:
    """A chapter's rates (k/n with Wilson intervals) beside the published ones, one row per published
    condition present in either."""
    conditions = list(dict.fromkeys([*published, *rate.index]))
    table = {label: [f"{rate.loc[c, 'rate']:.0%} [{rate.loc[c, 'low']:.0%}, {rate.loc[c, 'high']:.0%}] "
                     f"({rate.loc[c, 'k']}/{rate.loc[c, 'n']})" if c in rate.index else "-" for c in conditions]}
    for i, source in enumerate(sources):
        table[source] = [(published[c][i] if isinstance(published[c], tuple) else published[c]) if c in published else "-"
                         for c in conditions]
    return pd.DataFrame(table, index=conditions)
