"""The comparison across models: tables, a figure and the "what agrees / what does not" sentences, all
computed from what each chapter saved (`emolib.book.results.ModelResults`) beside `results.PUBLISHED`.

Tests check the verdicts against hand-made results, so a sentence in the book cannot drift from its number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import pandas as pd

from ..analysis.baselines import verdict as verdict_of
from ..analysis.geometry import available_norms, human_norms
from ..analysis.reliability import at_bound, supported_extrapolation
from ..stats import wilson
from ..steering.experiments import TEXT_READERS, text_verdicts
from . import plots  # noqa: F401 (registers the renderer the figures here are displayed with, text/html included)
from .results import (
    ANTHROPIC,
    BLACKMAIL,
    GEMOTIONS,
    PUBLISHED,
    RAIN1955,
    REWARD_HACKING,
    SOURCES,
    ModelResults,
    Published,
    published_text,
)

Models = Mapping[str, ModelResults]


def typed(results: Mapping[str, ModelResults | dict[str, dict[str, Any]]]) -> dict[str, ModelResults]:
    """Accept {model: ModelResults} or {model: {chapter: saved numbers}}."""
    return {m: r if isinstance(r, ModelResults) else ModelResults.of(r) for m, r in results.items()}


def _fmt(value: Any, fmt: str = "{:.2f}") -> str:
    """A number as `fmt`; "-" where it was not computed (None, or nan saved as null)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return value if isinstance(value, str) else fmt.format(value)


def _r(geo: dict | None, test: str, like_for_like: bool = False) -> str:
    data = ((geo or {}).get("like_for_like") or {}).get(test) if like_for_like else (geo or {}).get(test)
    if not data:
        return "-"
    floor = data.get("p_floor")
    return (f"{data['r']:.2f} ({data['ci']}; p {_p_text(data['p'], round(1 / floor) - 1 if floor else None)}; "
            f"{data['words']} words)")


def _like_for_like(geo: dict) -> tuple[dict, dict, str]:
    """The valence and arousal tests the verdicts lead with: over the 45 Russell-Mehrabian words (Anthropic's)
    where chapter 4 saved them, else over the primary ratings."""
    like = geo.get("like_for_like")
    if like:
        return like["valence"], like["arousal"], f"{like['valence']['words']} Russell-Mehrabian words, like Anthropic's"
    return geo["valence"], geo["arousal"], f"{geo['valence']['words']} words"


def _valence_fit(geo: dict | None) -> dict | None:
    fit = ((geo or {}).get("scaling") or {}).get("fits", {}).get("r_valence")
    return fit if fit and fit.get("r_inf") is not None else None


def _needed(r: ModelResults) -> str:
    fit = _valence_fit(r.geometry)
    if fit is None:
        return "-"
    n = supported_extrapolation(fit)
    if n is not None:
        low, high = fit["stories_needed_ci"]["0.8"]
        return f"{n:,.0f} [{low:,.0f}, {high:,.0f}] (r∞ {fit['r_inf']:.2f})"
    return f"not determined by the curve ({_fit_state(fit)})"


def _fit_state(fit: dict) -> str:
    """Why a fit gives no extrapolated count, in words."""
    bound = at_bound(fit["r_inf"], fit["rho"])
    if "r_inf" in bound:
        return f"ceiling at its bound, {fit['r_inf']:.1f}"
    if "rho" in bound:
        return f"one story's reliability at its bound, {fit['rho']:.2g}"
    if (fit.get("stories_needed") or {}).get("0.8") is None:
        return f"r∞ {fit['r_inf']:.2f} < 0.8"
    return f"r∞ {fit['r_inf']:.2f}; the bootstrap interval is open-ended"


def _split_half(r: ModelResults) -> str:
    geo = r.geometry or {}
    return _fmt(geo.get("split_half", {}).get(str(geo.get("layer")), {}).get("spearman_brown"))


def _shuffled_control(geo: dict) -> dict | None:
    """The shuffled-label control of the nearest-vector, topic-centred probe (what its accuracy is judged against)."""
    return next((v for k, v in (geo.get("probes") or {}).items()
                 if k.startswith("nearest emotion vector") and "shuffled" in k and "Russell" not in k), None)


def _probe(r: ModelResults) -> str:
    geo = r.geometry or {}
    if geo.get("probe_top1") is None:
        return "-"
    control = _shuffled_control(geo)
    return (f"{geo['probe_top1']:.1%} (shuffled-label control {control['top1']:.1%}; chance {geo['probe_chance']:.1%})"
            if control else f"{geo['probe_top1']:.1%} (chance {geo['probe_chance']:.1%})")


def _variance(component: int) -> Callable[[ModelResults], str]:
    """A PC's share of variance: the raw share beside the cross-validated (signal) share, which is what compares
    across models whose vectors hold different amounts of story noise."""
    def cell(r: ModelResults) -> str:
        geo = r.geometry or {}
        raw = geo.get(f"pc{component}_variance")
        if raw is None:
            return "-"
        cv = ((geo.get("cv_pca") or {}).get("components") or [])
        share = cv[component - 1]["cross-validated share"] if len(cv) >= component else None
        return f"{raw:.1%}" + (f" (cross-validated {share:.1%})" if share is not None else "")
    return cell


def _centred_r(r: ModelResults) -> str:
    row = ((r.geometry or {}).get("topic_centred") or {}).get("topic-centred")
    return "-" if not row else f"{row['r(PC1, valence)']:.2f} / {row['r(PC2, arousal)']:.2f}"


def _scale(r: ModelResults) -> str:
    stories = r.stories or {}
    return f"{_fmt(stories.get('scale'), '{}')} ({_fmt(stories.get('kept_per_emotion', {}).get('min'), '{}')})"


def _layer(r: ModelResults) -> str:
    geo = r.geometry or {}
    return f"{_fmt(geo.get('layer'), '{}')} of {_fmt(geo.get('n_layers'), '{}')}"


def _best_layer(r: ModelResults) -> str:
    geo = r.geometry or {}
    return (f"{_fmt(geo.get('best_valence_r'))} at layer {_fmt(geo.get('best_valence_layer'), '{}')} "
            f"(p={_fmt(geo.get('max_layer_p'), '{:.3g}')})")


def _lens(r: ModelResults) -> str:
    lens = r.lens or {}
    null = lens.get("self_named_label_null")
    return (f"{_fmt(lens.get('self_named'), '{}')} of {_fmt(lens.get('emotions'), '{}')}"
            + (f" (label-permutation null mean {null['mean']:.1f}, p {_p_text(null['p'], null['permutations'])})" if null else ""))


def _circumplex(words: str, read: str) -> Callable[[ModelResults], str]:
    """One cell of issue 26's circumplex rows: `read` is "valence"/"arousal" (aligned r [CI], p), "angle",
    "ceiling" (ridge valence / arousal r) or "verdict"."""
    def cell(r: ModelResults) -> str:
        c = ((r.geometry or {}).get("circumplex") or {}).get(words)
        if not c:
            return "-"
        a = c["alignment"]
        if read in ("valence", "arousal"):
            ci = a.get(f"ci_{read}")
            return f"{a[f'r_{read}']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "") + f" (p={a[f'p_{read}']:.2g})"
        if read == "angle":
            return f"{a['angle']:+.0f}°" + (" (reflected)" if a.get("reflected") else "")
        if read == "ceiling":
            v, ar = c["ridge"]["valence"], c["ridge"]["arousal"]
            return f"{v['r']:.2f} (p={v['p']:.2g}) / {ar['r']:.2f} (p={ar['p']:.2g})"
        return c["verdict"]
    return cell


def _signal_share(r: ModelResults) -> str:
    cv = (r.geometry or {}).get("cv_pca")
    if not cv:
        return "-"
    first = cv["components"][:2]
    return (f"{cv['signal_share']:.0%} of the variance; PC1 {first[0]['cross-validated share']:.1%}, "
            f"PC2 {first[1]['cross-validated share']:.1%}")


def _p_text(p: float, n_perm: int | None) -> str:
    """A permutation p, "≤ floor" where no permutation reached the observed value."""
    if p is None or p != p:
        return "-"
    if n_perm:
        floor = 1 / (n_perm + 1)
        if p <= floor + 1e-12:
            return f"≤ {floor:.2g}"
    return f"{p:.2g}"


def _deep_headline(r: ModelResults) -> str:
    """Issue 37's row: r(PC1, valence) on the deep set's vectors (Russell-Mehrabian words) [CI] (p), stories per word."""
    rows = ((r.geometry or {}).get("deep") or {}).get("headline") or []
    row = next((row for row in rows if row.get("index") == "deep set"), None)
    if row is None:
        return "-"
    return (f"{row['r(PC1, valence)']:.2f} ({row['95% CI']}; p {row['permutation p']}; {row['words']} words, "
            f"median {row['stories per rated emotion (median)']:.0f} stories each)")


def _beyond_words(words: str, headline: str, deep: bool = False) -> Callable[[ModelResults], str]:
    """Issue 36's row: model r, bag-of-words r, layer-0 r, the partial r over the bag of words [95% CI] and p
    (`deep`: on the deep set's vectors and its bag of words)."""
    def cell(r: ModelResults) -> str:
        geometry = (((r.geometry or {}).get("deep") or {}) if deep else (r.geometry or {}))
        found = geometry.get("baselines") or {}  # per word set; the deep set's: the Russell-Mehrabian rows alone
        rows = [row for row in (found.get(words, []) if isinstance(found, dict) else found if words == "russell-mehrabian"
                                else []) if row["headline"] == headline]
        bow = next((row for row in rows if row["baseline"] == "bag of words"), None)
        if bow is None:
            return "-"
        first = next((row for row in rows if row["baseline"] != "bag of words"), None)
        low, high = bow["95% CI"]
        return (f"model {bow['r (model)']:.2f}; bag of words {bow['r (baseline)']:.2f}"
                + (f"; {first['baseline']} {first['r (baseline)']:.2f}" if first else "")
                + f"; partial r {bow['partial r (model | baseline)']:.2f} [{low:.2f}, {high:.2f}] "
                  f"(p {_p_text(bow['p'], bow.get('n_perm'))})"
                + (f"; over {first['baseline']}: {first['partial r (model | baseline)']:.2f} [{first['95% CI'][0]:.2f}, "
                   f"{first['95% CI'][1]:.2f}] (p {_p_text(first['p'], first.get('n_perm'))})" if first else ""))
    return cell


def in_context_model(found: dict[str, Any]) -> str:
    """Chapter 8's analysed-model reader among its saved readers (saved with sorted keys, so "bag of words" may come
    first): the one that is neither the bag of words nor a model's layer 0."""
    return next(name for name in found["signs"] if name != "bag of words" and not name.endswith(" layer 0"))


def _in_context(read: str) -> Callable[[ModelResults], str]:
    """Chapter 8's rows: "numbers", "scenarios" or a contrast's index ("negation", "binding", "speaker")."""
    def cell(r: ModelResults) -> str:
        found = r.in_context
        if not found:
            return "-"
        model = in_context_model(found)
        if read == "numbers":
            s, w = found["signs"][model], found["signs"].get("bag of words")
            if not s["pairs"]:
                return "not computed (no template's emotions among the vectors)"
            return (f"{s['hits']}/{s['pairs']} pairs with the predicted sign; templates' joint permutation p {s['p']:.2g} "
                    f"({'as predicted' if s['p'] < 0.05 else 'not detected'})" + (f"; bag of words {w['hits']}/{w['pairs']}" if w else ""))
        if read == "scenarios":
            a, w = found["scenarios"][model], found["scenarios"].get("bag of words")
            if a.get("top1") is None or a["top1"] != a["top1"]:
                return "not computed (fewer than three of the scenarios' emotions among the vectors)"
            return (f"top-1 {a['top1']:.0%}, top-3 {a['top3']:.0%} (chance {a['chance_top1']:.0%} / {a['chance_top3']:.0%}; "
                    f"p {a['p_top1']:.2g} / {a['p_top3']:.2g})" + (f"; bag of words {w['top1']:.0%} / {w['top3']:.0%}" if w else ""))
        index = {"negation": 0, "binding": 1, "speaker": 2, "caring": 3}[read]
        c = found["contrasts"][model][index]
        if not c["items"] or c["p (sign-flip, one-sided)"] is None:
            return "not computed (none of its emotions among the vectors)"
        opposite = c.get("p (the opposite direction)")
        said = ("as predicted" if c["p (sign-flip, one-sided)"] < 0.05 else
                "the opposite direction, uncorrected" if opposite is not None and opposite < 0.05 else "not detected")
        return (f"{c['items in the predicted direction']}/{c['items']} items as predicted, p {c['p (sign-flip, one-sided)']:.2g} "
                f"({said})")
    return cell


def _real_text(r: ModelResults) -> str:
    valid = r.validation or {}
    if valid.get("r_valence_vader") is None:
        return "-"
    words, first = valid.get("bag_of_words"), valid.get("layer_0")
    return (f"{valid['r_valence_vader']:.2f} (random {valid.get('random_direction_95', float('nan')):.2f})"
            + (f"; bag of words {words['r baseline']:.2f}, partial r {words['partial r']:.2f} (p {words['p']:.2g})" if words else "")
            + (f"; layer 0 {first['r baseline']:.2f}, partial r {first['partial r']:.2f} (p {first['p']:.2g})" if first else ""))


def _preferences(read: str) -> Callable[[ModelResults], str]:
    """Chapter 9's rows: "ranking", "pattern", "steering" or "sycophancy"."""
    def cell(r: ModelResults) -> str:
        found = r.preferences
        if not found:
            return "-"
        if read == "ranking":
            rel, dec = found["reliability"], found["decisiveness"]
            return (f"split-half ρ {_fmt(rel['split-half ρ'])}; mean |preference| {_fmt(dec['mean |preference|'])} vs position "
                    f"bias {_fmt(dec['mean |position bias|'])}" + (" (noise)" if found["ranking_is_noise"] else ""))
        if read == "pattern":
            v = found["valence_pattern"]
            return f"r(preference r, valence) {_fmt(v['r'])} (p {_fmt(v['p'], '{:.2g}')}; Anthropic: blissful 0.71, hostile −0.74)"
        if read == "steering":
            a = found["steering"]["across"]
            return (f"r(preference r, ΔElo) {_fmt(a['r'])} [{_fmt(a['ci'][0])}, {_fmt(a['ci'][1])}] (p {_fmt(a['p'], '{:.2g}')}) over "
                    f"{a['emotions']} emotions (Anthropic 0.85)")
        rates = {row["condition"]: row for row in found["sycophancy"]["rates"]}
        base = rates.get("baseline")
        moved = [row for row in found["sycophancy"]["changes"] if (row["Holm p"] or 1.0) < 0.05
                 and not row["condition"].startswith("random direction")]
        return ((f"baseline switch rate {_fmt(base['switch rate'], '{:.0%}')} ({base['switched']}/{base['right unprompted']} answered right "
                 "unprompted); " if base else "")
                + ("Holm-significant: " + ", ".join(f"{row['condition']} {row['switched share change']:+.0%}" for row in moved)
                   if moved else "no condition moves it (Holm)"))
    return cell


def _geo(key: str, fmt: str = "{:.2f}") -> Callable[[ModelResults], str]:
    return lambda r: _fmt((r.geometry or {}).get(key), fmt)


# row label: (how to read it for a model, the PUBLISHED quantity quoted beside it or None)
ROWS: dict[str, tuple[Callable[[ModelResults], str], str | None]] = {
    "scale (stories per emotion, min)": (_scale, None),
    "story fidelity: lexicon valence r": (lambda r: _fmt(((r.stories or {}).get("fidelity") or {}).get("chosen", {})
                                                         .get("valence_r")), None),
    "analysis layer (pre-registered)": (_layer, "analysis_layer"),
    "PC1 share of variance (cross-validated)": (_variance(1), "pc1_variance"),
    "PC2 share of variance (cross-validated)": (_variance(2), "pc2_variance"),
    "PC1 vs human valence, r (Russell-Mehrabian words, like Anthropic's)": (lambda r: _r(r.geometry, "valence", True),
                                                                            "valence_r"),
    "PC2 vs human arousal, r (Russell-Mehrabian words)": (lambda r: _r(r.geometry, "arousal", True), "arousal_r"),
    "PC1 vs human valence, r (Warriner's words: the extension)": (lambda r: _r(r.geometry, "valence"), None),
    "PC2 vs human arousal, r (Warriner's words)": (lambda r: _r(r.geometry, "arousal"), None),
    "same, topic-centred (valence / arousal)": (_centred_r, None),
    "circumplex, Russell-Mehrabian words: aligned valence r [CI] (p)": (_circumplex("russell-mehrabian", "valence"), None),
    "circumplex, Russell-Mehrabian words: aligned arousal r [CI] (p)": (_circumplex("russell-mehrabian", "arousal"), None),
    "circumplex, Russell-Mehrabian words: valence's angle from PC1": (_circumplex("russell-mehrabian", "angle"), None),
    "circumplex, Russell-Mehrabian words: verdict (pre-registered)": (_circumplex("russell-mehrabian", "verdict"), None),
    "circumplex, Warriner's words: aligned valence / arousal r": (
        lambda r: " / ".join(_circumplex("warriner", k)(r) for k in ("valence", "arousal")), None),
    "circumplex, Warriner's words: angle; verdict": (
        lambda r: "; ".join(_circumplex("warriner", k)(r) for k in ("angle", "verdict")), None),
    "held-out linear read-out (out of sample), valence / arousal r (Russell-Mehrabian words)": (_circumplex("russell-mehrabian", "ceiling"), None),
    "held-out linear read-out (out of sample), valence / arousal r (Warriner's words)": (_circumplex("warriner", "ceiling"), None),
    "beyond the words, PC1 vs valence (Russell-Mehrabian words): model / bag of words / layer 0 r, partial r over the "
    "words [95% CI] (p)": (_beyond_words("russell-mehrabian", "PC1"), None),
    "beyond the words, aligned plane (Russell-Mehrabian words)": (_beyond_words("russell-mehrabian", "aligned plane"), None),
    "beyond the words, held-out read-out (Russell-Mehrabian words)": (_beyond_words("russell-mehrabian", "held-out read-out"), None),
    "beyond the words, PC1 vs valence (Warriner's words)": (_beyond_words("warriner", "PC1"), None),
    "deep set (issue 37): PC1 vs valence, r (Russell-Mehrabian words)": (_deep_headline, None),
    "deep set: beyond the words, PC1 vs valence (Russell-Mehrabian words)": (_beyond_words("russell-mehrabian", "PC1", True), None),
    "in context: a number in the prompt (chapter 8)": (_in_context("numbers"), None),
    "in context: implied situations, 16 scenarios": (_in_context("scenarios"), None),
    "in context: negation ('I am X' vs 'I am not X')": (_in_context("negation"), None),
    "in context: person binding": (_in_context("binding"), None),
    "in context: the user's emotion follows the speaker": (_in_context("speaker"), None),
    "in context: caring rises where the assistant speaks": (_in_context("caring"), None),
    "preferences: the A-vs-B ranking (chapter 9)": (_preferences("ranking"), None),
    "preferences: emotions track them by valence": (_preferences("pattern"), None),
    "preferences: steering an activity's tokens": (_preferences("steering"), None),
    "sycophancy: switching to the user's wrong answer": (_preferences("sycophancy"), None),
    "cross-validated spectrum: signal share (cvPCA)": (_signal_share, None),
    "best layer's valence r (max-over-layers p)": (_best_layer, "across_layers"),
    "split-half reliability (Spearman-Brown)": (_split_half, None),
    "stories per emotion for valence r = 0.8 (extrapolated)": (_needed, None),
    "held-out top-1, topic-centred (shuffled-label control; chance)": (_probe, None),
    "held-out valence AUROC": (_geo("valence_auroc"), None),
    "largest k-means cluster (k=10)": (_geo("largest_kmeans_cluster", "{}"), "clusters"),
    "logit lens: emotions naming themselves": (_lens, "logit_lens"),
    "real text: r(valence axis, VADER) (random directions' 95th percentile |r|; bag of words and layer-0 r, partial r over each)": (
        lambda r: _real_text(r), "real_text"),
}


def comparison_table(results: Models, models: list[str], titles: dict[str, str]) -> pd.DataFrame:
    """One row per headline number, one column per model, then the published columns."""
    results = typed(results)
    table = pd.DataFrame({titles[m]: [read(results[m]) for read, _ in ROWS.values()] for m in models}, index=list(ROWS))
    for source in SOURCES:
        table[source] = [published_text(quantity, source) if quantity else "-" for _, quantity in ROWS.values()]
    return table


# The intro's "What the book found" (book/_generated/findings.md): the rows a reader needs for the central claim,
# each beside its text-only baseline or null, read from the same saved numbers as the comparison.
FINDING_ROWS = ("scale (stories per emotion, min)",
                "PC1 vs human valence, r (Russell-Mehrabian words, like Anthropic's)",
                "beyond the words, PC1 vs valence (Russell-Mehrabian words): model / bag of words / layer 0 r, partial r over the "
                "words [95% CI] (p)",
                "beyond the words, PC1 vs valence (Warriner's words)",
                "deep set (issue 37): PC1 vs valence, r (Russell-Mehrabian words)",
                "deep set: beyond the words, PC1 vs valence (Russell-Mehrabian words)",
                "circumplex, Russell-Mehrabian words: verdict (pre-registered)",
                "in context: a number in the prompt (chapter 8)", "in context: implied situations, 16 scenarios",
                "in context: negation ('I am X' vs 'I am not X')", "in context: the user's emotion follows the speaker",
                "preferences: the A-vs-B ranking (chapter 9)", "preferences: emotions track them by valence",
                "sycophancy: switching to the user's wrong answer")


def findings_markdown(results: Models, models: list[str], titles: dict[str, str]) -> str:
    """FINDING_ROWS as a markdown table, one column per model ("-" where a chapter was not executed)."""
    table = comparison_table(results, models, titles).loc[list(FINDING_ROWS), [titles[m] for m in models]]
    cell = lambda text: str(text).replace("|", "/")  # noqa: E731
    lines = ["| | " + " | ".join(table.columns) + " |", "|---" * (len(table.columns) + 1) + "|"]
    lines += [f"| {cell(label)} | " + " | ".join(cell(v) for v in row) + " |" for label, row in table.iterrows()]
    return "\n".join(lines) + "\n"


GEOMETRY_ROWS = ("PC1 share of variance (cross-validated)", "PC2 share of variance (cross-validated)",
                 "PC1 vs human valence, r (Russell-Mehrabian words, like Anthropic's)",
                 "PC2 vs human arousal, r (Russell-Mehrabian words)",
                 "PC1 vs human valence, r (Warriner's words: the extension)", "PC2 vs human arousal, r (Warriner's words)",
                 "same, topic-centred (valence / arousal)",
                 "circumplex, Russell-Mehrabian words: aligned valence r [CI] (p)",
                 "circumplex, Russell-Mehrabian words: aligned arousal r [CI] (p)",
                 "circumplex, Russell-Mehrabian words: valence's angle from PC1",
                 "circumplex, Russell-Mehrabian words: verdict (pre-registered)",
                 "held-out linear read-out (out of sample), valence / arousal r (Russell-Mehrabian words)",
                 "cross-validated spectrum: signal share (cvPCA)", "best layer's valence r (max-over-layers p)",
                 "largest k-means cluster (k=10)", "held-out top-1, topic-centred (shuffled-label control; chance)",
                 "held-out valence AUROC", "beyond the words, PC1 vs valence (Russell-Mehrabian words): model / bag of words / "
                 "layer 0 r, partial r over the words [95% CI] (p)")


def geometry_beside_published(geometry: dict[str, Any], label: str) -> pd.DataFrame:
    """Chapter 4's headline numbers (what it saves, `GeometryResults`) beside the published ones: the
    comparison's rows for one run."""
    table = comparison_table({"run": ModelResults(geometry=geometry)}, ["run"], {"run": label})  # type: ignore[arg-type]
    return table.loc[list(GEOMETRY_ROWS)]


def headline_figure(results: Models, models: list[str], titles: dict[str, str]):
    """Each model's valence and arousal r with 95% intervals, beside Anthropic's."""
    import plotly.graph_objects as go

    results = typed(results)
    fig = go.Figure()
    for test in ("valence", "arousal"):
        published = PUBLISHED[f"{test}_r"][ANTHROPIC]
        names, values, low, high = [], [], [], []
        for m in models:
            geo = results[m].geometry or {}
            data = (geo.get("like_for_like") or {}).get(test) or geo.get(test)  # like for like where saved
            if not data:
                continue
            lo, hi = _interval(data["ci"])
            lo, hi = (data["r"], data["r"]) if lo is None else (lo, hi)
            names.append(titles[m]), values.append(data["r"]), low.append(data["r"] - lo), high.append(hi - data["r"])
        names.append(ANTHROPIC), values.append(published.value), low.append(0), high.append(0)
        fig.add_trace(go.Bar(name=f"r with human {test}", x=names, y=values,
                             error_y=dict(type="data", symmetric=False, array=high, arrayminus=low)))
    fig.update_layout(title="Correlation of PC1 / PC2 with human valence / arousal (95% CI; Russell-Mehrabian's 45 words "
                            "where saved, as Anthropic's) beside Anthropic's",
                      barmode="group", yaxis_title="Pearson r", yaxis_range=[-0.5, 1], height=440)
    return fig


def steering_table(results: Models, models: list[str], titles: dict[str, str]) -> pd.DataFrame | None:
    results = typed(results)
    rows = [{"model": titles[m], "emotion": row["emotion"], "metric": row["metric"],
             "slope [95% CI]": f"{row['slope per unit α']:.3g} [{row['low']:.3g}, {row['high']:.3g}]"}
            for m in models for row in (results[m].steering or {}).get("slopes", [])]
    if not rows:
        return None
    return pd.DataFrame(rows).pivot_table(index=["emotion", "metric"], columns="model", values="slope [95% CI]",
                                          aggfunc="first")


def _rate_text(row: Mapping[str, Any]) -> str:
    return f"{row['rate']:.0%} [{row['low']:.0%}, {row['high']:.0%}] ({int(row['k'])}/{int(row['n'])})"


def _beside(rows: dict[str, dict[str, str]], published: dict[str, dict[str, Published]],
            sources: tuple[str, ...]) -> pd.DataFrame:
    conditions = list(dict.fromkeys([*published, *rows]))
    frame = pd.DataFrame({c: rows.get(c, {}) for c in conditions}).T.reindex(conditions).fillna("-")
    for source in sources:
        frame[source] = [published_text(c, source, published) for c in conditions]
    return frame


def _steering_rates(r: ModelResults, kind: str) -> list[dict]:
    steering = r.steering or {}
    return steering.get("blackmail", []) if kind == "blackmail" else steering.get("reward_hacking", {}).get("rates", [])


def _rate_table(results: Models, models: list[str], titles: dict[str, str], kind: str) -> pd.DataFrame:
    results = typed(results)
    rows: dict[str, dict[str, str]] = {}
    for m in models:
        for row in _steering_rates(results[m], kind):
            rows.setdefault(row["condition"], {})[titles[m]] = _rate_text(row)
    return _beside(rows, *((BLACKMAIL, (ANTHROPIC, GEMOTIONS)) if kind == "blackmail" else (REWARD_HACKING, (ANTHROPIC,))))


def blackmail_table(results: Models, models: list[str], titles: dict[str, str]) -> pd.DataFrame:
    return _rate_table(results, models, titles, "blackmail")


def hacking_table(results: Models, models: list[str], titles: dict[str, str]) -> pd.DataFrame:
    return _rate_table(results, models, titles, "hacking")


def rates_beside_published(rate: pd.DataFrame, published: dict[str, dict[str, Published]], label: str,
                           sources: tuple[str, ...] = (ANTHROPIC,)) -> pd.DataFrame:
    """A chapter's rates (k/n with Wilson intervals) beside the published ones, one row per condition in either."""
    rows = {c: {label: _rate_text(rate.loc[c])} for c in rate.index}
    frame = _beside(rows, published, sources)
    return frame if label in frame else frame.assign(**{label: "-"})[[label, *sources]]


def _valence_sign(emotion: str) -> int | None:
    """+1 for an emotion rated pleasant by people, -1 for unpleasant (Warriner, else Russell-Mehrabian); chapter
    4's aligned valence axis points to the pleasant side by construction."""
    if emotion == "aligned valence":
        return 1
    for source in available_norms():
        norms = human_norms(source)
        if emotion in norms.index:
            midpoint = 5.0 if source == "warriner" else 0.0
            return 1 if norms.loc[emotion, "valence"] > midpoint else -1
    return None


def _geometry_lines(geo: dict[str, Any]) -> list[str]:
    val, aro, words = _like_for_like(geo)
    a_val, a_aro = PUBLISHED["valence_r"][ANTHROPIC].value, PUBLISHED["arousal_r"][ANTHROPIC].value
    found, aro_found = val["p"] < 0.05 and val["r"] > 0, aro["p"] < 0.05 and aro["r"] > 0
    variance = PUBLISHED["pc1_variance"]
    lines = [f"- Valence ({words}): PC1 {'does' if found else 'does not'} track human valence (r = {val['r']:.2f} "
             f"[{val['ci'].replace(' to ', ', ')}], p {_p_text(val['p'], _n_perm(val))}) — " + _against(val, a_val, found),
             f"- Arousal ({words}): PC2 {'does' if aro_found else 'does not'} track human arousal "
             f"(r = {aro['r']:.2f} [{aro['ci'].replace(' to ', ', ')}], p {_p_text(aro['p'], _n_perm(aro))}) — "
             + _against(aro, a_aro, aro_found)]
    if geo.get("like_for_like"):
        ext_val, ext_aro = geo["valence"], geo["arousal"]
        lines.append(f"- On {ext_val['words']} Warriner words (the extension): r(PC1, valence) = {ext_val['r']:.2f} "
                     f"(p = {ext_val['p']:.2g}), r(PC2, arousal) = {ext_aro['r']:.2f} (p = {ext_aro['p']:.2g}).")
    cv = (geo.get("cv_pca") or {}).get("components") or []
    signal = f", of which {cv[0]['cross-validated share']:.1%} repeats across halves of the stories (cross-validated)" if cv else ""
    lines.append(f"- Variance: PC1 holds {geo['pc1_variance']:.0%} of the vectors' variance{signal} (Anthropic "
                 f"{variance[ANTHROPIC].text}, rain1955 {variance[RAIN1955].text}, gemotions {variance[GEMOTIONS].text}, all raw "
                 "shares from far more stories per emotion: a raw share from 24 noisy stories is not comparable to theirs, "
                 "the cross-validated one is the signal).")
    lines += circumplex_lines(geo)
    if geo.get("max_layer_p") is not None:
        lines.append(f"- Best layer: r = {geo['best_valence_r']:.2f} at layer {geo['best_valence_layer']}, "
                     + ("significant" if geo["max_layer_p"] < 0.05 else "not significant")
                     + f" once the choice of layer is accounted for (max-over-layers p = {geo['max_layer_p']:.3g}).")
    fit = _valence_fit(geo)
    if fit:
        needed, bound = supported_extrapolation(fit), at_bound(fit["r_inf"], fit["rho"])
        level = ("the fitted curve does not level off within the stories measured (its ceiling sits at the bound, 1.0)"
                 if "r_inf" in bound else
                 f"one story's reliability sits at its bound ({fit['rho']:.2g}), so the curve's shape is not measured"
                 if "rho" in bound else f"the fitted curve levels off at r = {fit['r_inf']:.2f}")
        full = fit.get("full_data")
        seen = (f" (the fit passes the full-data point: {fit['full_data_predicted']:.2f} predicted, {full['r']:.2f} measured "
                f"at {full['n']:.0f} stories per emotion)" if full and fit.get("full_data_predicted") is not None else "")
        if needed is not None:
            low, high = fit["stories_needed_ci"]["0.8"]
            tail = (f"r = 0.8 would need about {needed:,.0f} stories per emotion (95% interval {low:,.0f} to {high:,.0f}; "
                    f"measured up to {fit['largest_n_measured']}; extrapolated).")
        elif not bound and (fit.get("stories_needed") or {}).get("0.8") is None:
            tail = "r = 0.8 lies above the fitted ceiling: more stories alone would not reach it, if the curve holds."
        else:
            tail = "the curve does not determine how many stories r = 0.8 would need."
        lines.append(f"- More stories: {level}{seen}; {tail}")
    control = _shuffled_control(geo)
    judged = (f"its shuffled-label control {control['top1']:.1%} (chance {geo['probe_chance']:.1%})" if control
              else f"chance {geo['probe_chance']:.1%}")
    lines.append(f"- Held-out stories: top-1 {geo['probe_top1']:.1%} against {judged}; "
                 f"valence AUROC {geo['valence_auroc']:.2f}.")
    lines += _beyond_lines(geo)
    return lines


def _n_perm(data: dict) -> int | None:
    floor = data.get("p_floor")
    return round(1 / floor) - 1 if floor else None


def _against(data: dict, published: float, found: bool) -> str:
    """How one r stands against Anthropic's: weaker or stronger only where the interval excludes theirs."""
    low, high = _interval(data.get("ci"))
    if not found:
        return f"unlike Anthropic's {published}."
    if low is None:
        return f"Anthropic: {published} (no interval to compare with)."
    if high < published:
        return f"same direction as Anthropic's {published}, weaker (the interval excludes it)."
    if low > published:
        return f"stronger than Anthropic's {published} (the interval excludes it)."
    return f"consistent with Anthropic's {published} (the interval holds it)."


def _beyond_lines(geo: dict[str, Any]) -> list[str]:
    """Issue 36's verdict: what the model adds to its stories' words, per word set."""
    lines = []
    for words, rows in (geo.get("baselines") or {}).items():
        for row in rows:
            if row["headline"] != "PC1":
                continue
            low, high = row["95% CI"]
            corrected = row.get("partial r, corrected for sampling error")
            # pre-registered (chapter 4): the bag of words on the 45 Russell-Mehrabian words; the rest are described
            registered = words.startswith("russell") and row["baseline"] == "bag of words"
            lines.append(f"- Beyond the words ({words}, {row['words']} words; "
                         f"{'predicted: a gain' if registered else 'described, not pre-registered'}): PC1's r with valence is "
                         f"{row['r (model)']:.2f} for the model and {row['r (baseline)']:.2f} for {row['baseline']}; the model's "
                         f"partial r over it is {row['partial r (model | baseline)']:.2f} [{low:.2f}, {high:.2f}] "
                         f"(p {_p_text(row['p'], row.get('n_perm'))})"
                         + (f", {corrected:.2f} once both scores' sampling error is removed (the baseline's reliability "
                            f"{row['baseline reliability']:.2f})" if corrected is not None and corrected == corrected else "")
                         + (f": {verdict_of(row)}." if registered else f"; read by the same rule: {verdict_of(row)}."))
    best = geo.get("baselines_best_layer") or {}
    if best:
        lines.append(f"- Beyond the words, best layer: the largest partial r over the bag of words is {best['best_partial']:.2f} "
                     f"at layer {best['best_layer']} (max-over-layers p {best['p_max']:.3g}).")
    return lines


def circumplex_lines(geo: dict[str, Any]) -> list[str]:
    """Issue 26's rotation-aware reading of the valence-arousal plane, per word set (where chapter 4 saved it)."""
    lines = []
    for name, c in (geo.get("circumplex") or {}).items():
        a, axes = c["alignment"], c.get("axes") or {}
        ci = {k: (f" [{a[f'ci_{k}'][0]:.2f}, {a[f'ci_{k}'][1]:.2f}]" if a.get(f"ci_{k}") else "") for k in ("valence", "arousal")}
        plain = (f"the axes alone give PC1 r = {axes['valence']:.2f} with valence and PC2 r = {axes['arousal']:.2f} with "
                 "arousal; " if axes else "")
        lines.append(f"- Circumplex ({name}, {c['words']} words; rotation-aware, secondary): {plain}after the best rotation"
                     f"{' (a reflection)' if a.get('reflected') else ''} valence lies at {a['angle']:+.0f}° from PC1, aligned "
                     f"r = {a['r_valence']:.2f}{ci['valence']} for valence (p {_p_text(a['p_valence'], a.get('n_perm'))}) and "
                     f"{a['r_arousal']:.2f}{ci['arousal']} for arousal (p {_p_text(a['p_arousal'], a.get('n_perm'))}); a held-out linear read-out of the "
                     f"full vectors finds valence r = {c['ridge']['valence']['r']:.2f} (p {_p_text(c['ridge']['valence']['p'], c['ridge']['valence'].get('n_perm'))}), "
                     f"arousal r = {c['ridge']['arousal']['r']:.2f} (p {_p_text(c['ridge']['arousal']['p'], c['ridge']['arousal'].get('n_perm'))}). "
                     f"Verdict (pre-registered): {c['verdict']}.")
    return lines


def _band_text(r: ModelResults, emotion: str, metric: str) -> str:
    """', outside/inside the random band [low, high] (n directions)' for one slope, where chapter 7 saved the band."""
    row = next((b for b in (r.steering or {}).get("null_band", []) if b["emotion"] == emotion and b["metric"] == metric), None)
    if row is None:
        return ""
    return (f"; {'outside' if row['outside band'] else 'inside'} the band of {row['random directions']} random directions "
            f"[{row['random band low']:.3g}, {row['random band high']:.3g}]")


def _steering_lines(r: ModelResults, text_rows: list[dict]) -> list[str]:
    """`text_rows`: this model's text-reader slopes with their Holm p (chapter 7's family: its steered emotions x the
    two readers, the same family the chapter states), and chapter 7's band-checked verdicts where it saved them."""
    slopes = (r.steering or {}).get("slopes", [])
    lines = [f"- Steering +{row['emotion']}: the downstream projection "
             f"{'rises' if row['low'] > 0 else 'falls' if row['high'] < 0 else 'does not move reliably'} with α (slope {row['slope per unit α']:.3g}, "
             f"95% CI {row['low']:.3g} to {row['high']:.3g}{_alpha_range(row)}{_band_text(r, row['emotion'], 'projection')})."
             for row in slopes if row["metric"] == "projection"]
    if text_rows:
        saved = (r.steering or {}).get("text_verdicts") or text_verdicts(text_rows, "Holm p (text readers)")
        moves = []
        for emotion, verdict in sorted(saved.items()):
            if verdict == "no detectable change":
                continue
            expected = _valence_sign(emotion)
            both = verdict.startswith(("rises", "falls")) and "no verdict" not in verdict
            agrees = "" if expected is None or not both else (
                ", as its valence predicts" if verdict.startswith("rises") == (expected > 0) else ", against its valence")
            moves.append(f"{emotion} ({'both readers: valence ' if both else ''}{verdict}{agrees})")
        n_tests = len(text_rows)
        lines.append("- The text's valence " + ("moves with α for " + "; ".join(moves) if moves else
                                                "does not move detectably with α by either reader")
                     + f" (VADER and the Warriner lexicon, Holm-corrected over chapter 7's {n_tests} tests: steered "
                       "emotions x 2 readers; slopes fitted below each emotion's perplexity-doubling α; a verdict only where "
                       "the slope leaves the band of random directions).")
    for name, kind, published in (("Blackmail", "blackmail", BLACKMAIL), ("Reward hacking", "hacking", REWARD_HACKING)):
        base = next((row for row in _steering_rates(r, kind) if row["condition"] == "baseline"), None)
        if base:
            lines.append(f"- {name}: baseline {base['k']}/{base['n']} (Anthropic {published['baseline'][ANTHROPIC].text}); "
                         "compare only where the model acts as an agent at all.")
    return lines


def _function_lines(r: ModelResults) -> list[str]:
    """Chapters 8 and 9, one line per design, each against its pre-registered prediction."""
    lines = []
    found = r.in_context
    if found:
        lines.append("- In context (chapter 8; the words cannot answer): " + "; ".join(
            f"{label} {_in_context(read)(r)}" for label, read in (("a number in the prompt:", "numbers"),
                                                                  ("implied situations:", "scenarios"), ("negation:", "negation"),
                                                                  ("binding:", "binding"), ("who speaks:", "speaker"),
                                                                  ("caring at the assistant's turn:", "caring"))) + ".")
    prefs = r.preferences
    if prefs:
        v, a = prefs["valence_pattern"], prefs["steering"]["across"]
        lines.append(f"- Preferences (chapter 9): the A-vs-B ranking's split-half ρ {_fmt(prefs['reliability']['split-half ρ'])}"
                     + (" (mostly noise)" if prefs["ranking_is_noise"] else "")
                     + f"; emotions' preference r against their valence r = {_fmt(v['r'])} (p {_fmt(v['p'], '{:.2g}')}); "
                       f"steering an activity's tokens, r(preference r, ΔElo) = {_fmt(a['r'])} [{_fmt(a['ci'][0])}, "
                       f"{_fmt(a['ci'][1])}] (Anthropic 0.85).")
        moved = [row for row in prefs["sycophancy"]["changes"] if (row["Holm p"] or 1.0) < 0.05
                 and not row["condition"].startswith("random direction")]
        lines.append("- Sycophancy (chapter 9): " + ("; ".join(f"{row['condition']} changes the switched share by "
                                                              f"{row['switched share change']:+.0%}" for row in moved)
                                                    if moved else "no steered condition changes the switch rate (Holm)")
                     + " (predicted: +happy, +loving, +calm raise it).")
    return lines


def _alpha_range(row: Mapping[str, Any]) -> str:
    span = row.get("alpha range")
    return f"; α from {span[0]:g} to {span[1]:g}" if span else ""


def _self_read(model: str, r: ModelResults, title: str) -> list[str]:
    """A model that analyses stories it wrote itself (the writer's profile is the analysed model's) is flagged
    wherever its numbers are compared."""
    if (r.stories or {}).get("writer") != model:
        return []
    return [f"- Caveat: {title} reads the stories it wrote itself (the writer is the analysed model): the "
            "self-consistency limitation chapter 1 names for rain1955's replication, so its numbers may come easier "
            "than a model reading another's stories."]


def text_slopes_corrected(results: Models, models: list[str]) -> dict[str, list[dict]]:
    """Every model's text-reader slopes with the Holm p chapter 7 computed over its own family (steered emotions x
    the two readers): the comparison states the chapter's verdicts, never a second family's."""
    return {m: [dict(row) for row in (results[m].steering or {}).get("slopes", []) if row["metric"] in TEXT_READERS]
            for m in models}


def verdicts(results: Models, models: list[str], titles: dict[str, str]) -> list[str]:
    """What agrees with the published work and what does not, as Markdown lines computed from the numbers."""
    results = typed(results)
    lines: list[str] = []
    with_geometry = [m for m in models if results[m].geometry]
    text_rows = text_slopes_corrected(results, with_geometry)
    for m in with_geometry:
        geo = results[m].geometry
        lines += [f"**{titles[m]}** (layer {geo['layer']}, fixed in advance):", *_self_read(m, results[m], titles[m]),
                  *_geometry_lines(geo),
                  *_steering_lines(results[m], text_rows[m]), *_function_lines(results[m]), ""]
    if len(with_geometry) > 1:
        found = {m: _like_for_like(results[m].geometry)[0]["r"] > 0 and _like_for_like(results[m].geometry)[0]["p"] < 0.05
                 for m in with_geometry}
        lines.append("**Across families:** the valence axis is " + (
            "found (positive r, p < 0.05) in every model." if all(found.values()) else
            "found in " + (", ".join(titles[m] for m, ok in found.items() if ok) or "no model") + " but not in "
            + ", ".join(titles[m] for m, ok in found.items() if not ok) + " at the analysis layer."))
        for a, b in zip(with_geometry, with_geometry[1:]):
            lines.append(_paired_line(titles[a], _like_for_like(results[a].geometry)[0],
                                      titles[b], _like_for_like(results[b].geometry)[0]))
    return lines


def paired_difference(a: dict, b: dict) -> tuple[float, float, float] | None:
    """r_a − r_b with a 95 % interval (± 1.96 SD of the paired replicates' differences), where both models' bootstraps
    drew the same stories in every replicate (same stories per emotion, same seed); None otherwise."""
    import numpy as np

    if not a.get("replicates") or not b.get("replicates") or a.get("stories_sha") != b.get("stories_sha") \
            or a.get("seed") != b.get("seed") or len(a["replicates"]) != len(b["replicates"]):
        return None
    spread = float(np.nanstd(np.asarray(a["replicates"], float) - np.asarray(b["replicates"], float), ddof=1))
    difference = a["r"] - b["r"]
    return difference, difference - 1.96 * spread, difference + 1.96 * spread


def _paired_line(name_a: str, a: dict, name_b: str, b: dict) -> str:
    """Model against model: a verdict from the paired bootstrap of the difference, never from two separate intervals."""
    found = paired_difference(a, b)
    if found is None:
        return (f"- {name_a} against {name_b}: no paired comparison (their bootstraps did not draw the same stories), so "
                "the book does not say which tracks valence better.")
    difference, low, high = found
    return (f"- {name_a} against {name_b}: r(PC1, valence) differs by {difference:+.2f} [{low:+.2f}, {high:+.2f}] (paired story "
            "bootstrap: the same stories in every replicate) — "
            + ("a real difference." if low > 0 or high < 0 else "no difference detected."))


# --- a reader's run beside the published book ------------------------------------------------------------

Estimate = tuple[float, float | None, float | None]  # value, low, high (95 %)


def _interval(text_or_pair: Any) -> tuple[float | None, float | None]:
    if isinstance(text_or_pair, str) and " to " in text_or_pair:
        low, high = text_or_pair.split(" to ")
        return float(low), float(high)
    if isinstance(text_or_pair, (list, tuple)) and len(text_or_pair) == 2 and None not in text_or_pair:
        return float(text_or_pair[0]), float(text_or_pair[1])
    return None, None


def _leak_rate(r: ModelResults) -> Estimate | None:
    status, rate = (r.stories or {}).get("status") or {}, (r.stories or {}).get("leak_rate")
    total = sum(v for v in status.values() if isinstance(v, (int, float)))
    if rate is None:
        return None
    return (rate, *wilson(rate, int(total))) if total else (rate, None, None)


def _fidelity(r: ModelResults) -> Estimate | None:
    chosen = ((r.stories or {}).get("fidelity") or {}).get("chosen") or {}
    return None if chosen.get("valence_r") is None else (chosen["valence_r"], *_interval(chosen.get("valence_ci")))


def _geometry_r(test: str, like_for_like: bool = False) -> Callable[[ModelResults], Estimate | None]:
    def read(r: ModelResults) -> Estimate | None:
        geo = r.geometry or {}
        data = (geo.get("like_for_like") or {}).get(test) if like_for_like else geo.get(test)
        return None if not data else (data["r"], *_interval(data.get("ci")))
    return read


def _beyond(words: str, baseline: str, read: str) -> Callable[[ModelResults], Estimate | None]:
    """A baseline's PC1 r (`read` "baseline") or the model's partial r over it ("partial") from chapter 4."""
    def value(r: ModelResults) -> Estimate | None:
        row = next((row for row in ((r.geometry or {}).get("baselines") or {}).get(words, [])
                    if row["headline"] == "PC1" and row["baseline"] == baseline), None)
        if row is None:
            return None
        if read == "baseline":
            return row["r (baseline)"], None, None
        return row["partial r (model | baseline)"], *row["95% CI"]
    return value


def _external(r: ModelResults) -> Estimate | None:
    valid = r.validation or {}
    return None if valid.get("r_valence_vader") is None else (valid["r_valence_vader"], *_interval(valid.get("ci")))


def _slope(emotion: str, metric: str) -> Callable[[ModelResults], Estimate | None]:
    def read(r: ModelResults) -> Estimate | None:
        for row in (r.steering or {}).get("slopes", []):
            if row["emotion"] == emotion and row["metric"] == metric:
                return row["slope per unit α"], row.get("low"), row.get("high")
        return None
    return read


def _plain(key: str, chapter: str) -> Callable[[ModelResults], Estimate | None]:
    def read(r: ModelResults) -> Estimate | None:
        value = (getattr(r, chapter) or {}).get(key)
        return None if value is None else (float(value), None, None)
    return read


@dataclass(frozen=True)
class Headline:
    """One headline number of a run, where to read it, and whether a run at another scale can check it:
    `scale_free` numbers do not depend on how many stories each emotion's vector averages (the writer's
    leak rate, the mechanics of steering); the geometry's r, story fidelity (it correlates per-emotion means of
    the stories' valence, attenuated by how many there are), the probes and the read-outs do."""

    name: str
    read: Callable[[ModelResults], Estimate | None]
    scale_free: bool


def headlines(results: Models) -> list[Headline]:
    """The numbers a reader's run is compared on (the steering slopes for every emotion it steered)."""
    steered = sorted({row["emotion"] for r in results.values() for row in (r.steering or {}).get("slopes", [])})
    rows = [Headline("leak rate (stories that name their emotion)", _leak_rate, True),
            Headline("story fidelity: r(story valence, emotion valence)", _fidelity, False),  # per-emotion means
            Headline("r(PC1, human valence), Russell-Mehrabian words", _geometry_r("valence", True), False),
            Headline("r(PC2, human arousal), Russell-Mehrabian words", _geometry_r("arousal", True), False),
            Headline("r(PC1, human valence)", _geometry_r("valence"), False),
            Headline("r(PC2, human arousal)", _geometry_r("arousal"), False),
            Headline("best layer's r(PC1, valence)", _plain("best_valence_r", "geometry"), False),
            Headline("bag of words' r(PC1, valence), Russell-Mehrabian words", _beyond("russell-mehrabian", "bag of words",
                                                                                   "baseline"), False),
            Headline("partial r of PC1 over the bag of words, Russell-Mehrabian words",
                     _beyond("russell-mehrabian", "bag of words", "partial"), False),
            Headline("probe top-1 accuracy (held-out topics)", _plain("probe_top1", "geometry"), False),
            Headline("r(projection, VADER valence) on real text", _external, False)]
    for emotion in steered:
        rows.append(Headline(f"steering {emotion}: projection slope per unit α", _slope(emotion, "projection"), True))
        rows.append(Headline(f"steering {emotion}: VADER valence slope per unit α", _slope(emotion, "valence"), False))
    return rows


Z95 = 1.959963984540054  # a 95 % interval is ±Z95 standard errors
AGREES, DIFFERS = "agrees within the run's uncertainty", "differs"
NOT_AT_SCALE, NO_INTERVAL, MISSING = "not comparable at this scale", "no interval: shown only", "not in both"


def judge(published: Estimate | None, yours: Estimate | None, comparable: bool) -> str:
    """The verdict on one number: the difference against the two intervals' combined standard error
    (each 95 % interval taken as ±1.96 SE): |z| < 1.96 agrees, otherwise differs."""
    if published is None or yours is None:
        return MISSING
    if not comparable:
        return NOT_AT_SCALE
    (value, low, high), (mine, my_low, my_high) = published, yours
    if None in (low, high, my_low, my_high):
        return NO_INTERVAL
    se = math.hypot((high - low) / (2 * Z95), (my_high - my_low) / (2 * Z95))
    if se == 0:
        return AGREES if mine == value else DIFFERS
    return AGREES if abs(mine - value) / se < Z95 else DIFFERS


def _estimate_text(estimate: Estimate | None) -> str:
    if estimate is None:
        return "-"
    value, low, high = estimate
    return f"{value:.3g}" + ("" if low is None or high is None else f" [{low:.3g}, {high:.3g}]")


def run_beside_published(published: Models, yours: Models) -> pd.DataFrame:
    """Every headline number of a reader's run beside the published one, with both 95 % intervals and a
    verdict (`judge`): one row per model in both and number. A number that depends on the scale is
    compared only when both were run at the same scale."""
    published, yours = typed(published), typed(yours)
    rows = []
    for model in [m for m in yours if m in published]:
        scales = ((published[model].stories or {}).get("scale"), (yours[model].stories or {}).get("scale"))
        same_scale = scales[0] == scales[1]
        for headline in headlines({model: published[model], "yours": yours[model]}):
            mine, theirs = headline.read(yours[model]), headline.read(published[model])
            rows.append({"model": model, "number": headline.name, "published": _estimate_text(theirs),
                         "your run": _estimate_text(mine), "a run at another scale can check it": headline.scale_free,
                         "verdict": judge(theirs, mine, same_scale or headline.scale_free)})
    return pd.DataFrame(rows, columns=["model", "number", "published", "your run", "a run at another scale can check it",
                                       "verdict"])


def run_summary(table: pd.DataFrame, published: Models, yours: Models) -> str:
    """The page's opening sentences: how many numbers agree or differ, and what the run's scale lets it check."""
    published, yours = typed(published), typed(yours)
    if table.empty:
        return ("Your run has no model in common with the published book, so nothing can be set beside it "
                f"(your run: {', '.join(yours) or 'none'}; published: {', '.join(published) or 'none'}).")
    counts = table["verdict"].value_counts()
    lines = [f"Of {len(table)} numbers, **{counts.get(AGREES, 0)} agree** with the published book within the run's "
             f"uncertainty and **{counts.get(DIFFERS, 0)} differ**; {counts.get(NOT_AT_SCALE, 0)} are not comparable "
             f"at your run's scale and {counts.get(NO_INTERVAL, 0)} carry no interval (shown only)."]
    for model in table["model"].unique():
        theirs, mine = published[model].stories or {}, yours[model].stories or {}
        if theirs.get("scale") != mine.get("scale"):
            checkable = table[(table["model"] == model) & table["a run at another scale can check it"]]["number"]
            lines.append(f"{model}: your run is at the **{mine.get('scale', '?')}** scale (at least "
                         f"{(mine.get('kept_per_emotion') or {}).get('min', '?')} stories per emotion) against the published "
                         f"**{theirs.get('scale', '?')}** scale (at least {(theirs.get('kept_per_emotion') or {}).get('min', '?')}). "
                         "Its intervals are wide, and the geometry's correlations, the probes and the read-outs depend on "
                         "how many stories each vector averages, so only these can be checked: "
                         + "; ".join(checkable) + ".")
    return "\n\n".join(lines)
