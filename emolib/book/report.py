"""Chapter 4's analyses in one call: every table and number the geometry chapter shows, and the key
numbers it saves, from a `stages.Ready` (vectors + the pre-registered layer).

    geo = report.geometry(stages.setup("270m", "smollm2", load=False))
    geo.correlations, geo.robustness, geo.fits_table, geo.results()
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..analysis import baselines as B
from ..analysis import circumplex as C
from ..analysis import geometry as G
from ..analysis import reliability as R
from ..errors import EmolibError
from ..extraction.stages import Ready
from ..stories.corpus import corpus_dir
from ..stories.design import Design
from .compare import geometry_beside_published


@dataclass
class GeometryReport:
    ready: Ready
    settings: dict[str, Any]
    ratings: dict[str, pd.DataFrame]
    primary: pd.DataFrame
    result: G.PCAResult
    variance: pd.DataFrame
    scores: pd.DataFrame  # PC1, PC2, human valence/arousal, stories per emotion
    loadings: pd.DataFrame
    correlations: pd.DataFrame
    cosine: np.ndarray  # ordered by clustering
    cluster_names: list[str]
    pairs: pd.DataFrame
    hierarchical: pd.DataFrame
    kmeans: pd.DataFrame
    by_layer: pd.DataFrame
    best: dict[str, Any]
    layer_similarity: np.ndarray
    split_half: pd.DataFrame
    curve: pd.DataFrame
    fits: dict[str, dict]
    probes: list[G.ProbeResult]
    valence: dict[str, dict]
    robustness: pd.DataFrame
    options: dict[str, Any] = field(default_factory=dict)
    circumplex: dict[str, dict] = field(default_factory=dict)  # per word set: what `results()` saves
    aligned: dict[str, pd.DataFrame] = field(default_factory=dict)  # per word set: the aligned plane, per word
    circumplex_by_layer: pd.DataFrame | None = None  # aligned r's and ridge read-outs per layer (primary words)
    circumplex_best: dict[str, Any] = field(default_factory=dict)
    cv_spectrum: pd.DataFrame | None = None
    baselines: dict[str, pd.DataFrame] = field(default_factory=dict)  # per word set: model vs text-only baselines
    baselines_by_layer: pd.DataFrame | None = None  # per layer: r, the bag of words' r, partial r | bag of words
    baselines_best: dict[str, Any] = field(default_factory=dict)
    baselines_note: str = ""  # what the baselines are (vocabulary, layer 0 or not)

    @property
    def layer(self) -> int:
        return self.ready.layer

    @property
    def stories_sha(self) -> str:
        """A hash of the stories each emotion's bootstrap resamples (ids, in order): two models with the same hash and
        seed drew the same stories in every replicate, so their replicates pair."""
        import hashlib

        ids = [text_id for e in self.ready.vectors.emotions for text_id in self.ready.built.stories[e]]
        return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]

    @property
    def correlations_shown(self) -> pd.DataFrame:
        """The correlations table as shown: p at the permutation floor printed as "≤ floor", no replicates."""
        shown = self.correlations.drop(columns="replicates").copy()
        shown["permutation p"] = [format_p(p, PERMUTATIONS) if np.isfinite(p) else "" for p in shown["permutation p"]]
        return shown

    @property
    def layer_bands(self) -> pd.DataFrame:
        """r with its interval per layer for valence and arousal (long format)."""
        renames = (({"r(PC1, valence)": "r", "valence low": "low", "valence high": "high"}, "PC1 vs valence"),
                   ({"r(PC2, arousal)": "r", "arousal low": "low", "arousal high": "high"}, "PC2 vs arousal"))
        return pd.concat([self.by_layer.rename(columns=names).assign(test=test) for names, test in renames])[
            ["layer", "r", "low", "high", "test"]]

    @property
    def best_layer_line(self) -> str:
        b = self.best
        return (f"largest r(PC1, valence) over {b['layers']} layers: {b['best_r']:.2f} at layer {b['best_layer']}; "
                f"max-over-layers permutation p = {b['p']:.4f} (95th percentile of the null maximum: {b['null_95']:.2f})")

    @property
    def fits_table(self) -> pd.DataFrame:
        return pd.DataFrame({name: {"r with infinitely many stories (fit)": fit["r_inf"],
                                    "one story's reliability (fit)": fit["rho"],
                                    "parameters at a bound": ", ".join(fit.get("at_bound") or []) or "none",
                                    "r measured with every story": (fit.get("full_data") or {}).get("r"),
                                    "r the fit predicts there": fit.get("full_data_predicted"),
                                    "stories per emotion for r = 0.5": R.supported_extrapolation(fit, "0.5"),
                                    "stories per emotion for r = 0.8": R.supported_extrapolation(fit, "0.8"),
                                    "95% interval (r = 0.8)": _interval_text((fit.get("stories_needed_ci") or {}).get("0.8")),
                                    "largest n measured": fit["largest_n_measured"]} for name, fit in self.fits.items()})

    @property
    def baseline_table(self) -> pd.DataFrame:
        """Per word set, headline and baseline: model r, baseline r, partial r [95% CI], p and the verdict."""
        frames = []
        for name, table in self.baselines.items():
            shown = table.copy()
            shown["words"] = f"{name} ({int(table['words'].iloc[0])})"
            shown["95% CI"] = [f"{low:.2f} to {high:.2f}" for low, high in table["95% CI"]]
            shown["p"] = [format_p(p, n) for p, n in zip(table["p"], table["n_perm"])]
            shown["verdict"] = [B.verdict(row) for row in table.to_dict("records")]
            frames.append(shown.drop(columns=["n_perm", "n_boot"]))
        return pd.concat(frames).set_index(["words", "headline", "baseline"]) if frames else pd.DataFrame()

    @property
    def baseline_layers_long(self) -> pd.DataFrame:
        """The per-layer figure's lines: the model's r(PC1, valence), the bag of words' r, the partial r."""
        return self.baselines_by_layer.melt(id_vars="layer", value_vars=["r(PC1, valence)", "bag of words r",
                                                                         "partial r | bag of words"],
                                            var_name="measure", value_name="r")

    @property
    def cv_line(self) -> str:
        """What the cross-validated spectrum used (splits, emotions, those left out), or why it was not computed."""
        attrs = self.cv_spectrum.attrs if self.cv_spectrum is not None else {"not computed": "no spectrum"}
        if "not computed" in attrs:
            return f"cross-validated spectrum: not computed at this scale ({attrs['not computed']})"
        left = attrs.get("left out") or []
        return (f"share of the vectors' variance that repeats across halves of the stories: "
                f"{attrs['signal share of total variance']:.1%} ({attrs['splits']} splits x 2 roles, {attrs['emotions']} "
                f"emotions" + (f"; left out, fewer than two stories: {', '.join(left)}" if left else "") + ")")

    @property
    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame([p.row() for p in self.probes]).set_index("probe")

    def _test(self, test: str, source: str | None = None) -> dict:
        """One correlation as saved: of the primary ratings, or of `source` ("russell-mehrabian", ...)."""
        label = (self.correlations.index.get_level_values(0)[0] if source is None
                 else self.ratings[source].attrs["source"].split(",")[0])
        row = self.correlations.loc[(label, test)]
        return {"r": float(row["r"]), "ci": row["95% CI"], "p": float(row["permutation p"]), "words": int(row["words"]),
                "p_floor": 1 / (PERMUTATIONS + 1), "interval": "Fisher z, story bootstrap",
                # the replicates, with what makes them pairable across models: the same stories per emotion and seed
                "replicates": row["replicates"], "stories_sha": self.stories_sha, "seed": self.options.get("seed")}

    @property
    def like_for_like(self) -> dict[str, dict] | None:
        """PC1/PC2 against the 45 Russell-Mehrabian words, the words Anthropic's r is over (None without them)."""
        if "russell-mehrabian" not in self.ratings:
            return None
        return {"valence": self._test("PC1 vs valence", "russell-mehrabian"),
                "arousal": self._test("PC2 vs arousal", "russell-mehrabian")}

    @property
    def circumplex_table(self) -> pd.DataFrame:
        """Per word set: the axes' r beside the rotation-aware alignment, the read-out ceiling and the verdict."""
        rows = {}
        for name, c in self.circumplex.items():
            a, ridge = c["alignment"], c["ridge"]
            rows[f"{name} ({c['words']} words)"] = {
                "PC1 vs valence, r": c["axes"]["valence"], "PC2 vs arousal, r": c["axes"]["arousal"],
                "aligned valence, r": a["r_valence"], "95% CI (valence)": _pair_text(a["ci_valence"]),
                "p (valence)": a["p_valence"], "aligned arousal, r": a["r_arousal"],
                "95% CI (arousal)": _pair_text(a["ci_arousal"]), "p (arousal)": a["p_arousal"],
                "valence's angle from PC1 (°)": a["angle"], "95% CI (angle)": _pair_text(a["ci_angle"], "{:+.1f}"),
                "reflected": a["reflected"], "held-out read-out, valence r": ridge["valence"]["r"],
                "p (read-out, valence)": ridge["valence"]["p"], "held-out read-out, arousal r": ridge["arousal"]["r"],
                "p (read-out, arousal)": ridge["arousal"]["p"], "verdict (pre-registered)": c["verdict"]}
        return pd.DataFrame(rows)

    def beside_published(self, model: str) -> pd.DataFrame:
        """This run's headline numbers (what chapter 4 saves) beside Anthropic's, rain1955's and gemotions'."""
        return geometry_beside_published(self.results(), f"this run ({model}, layer {self.layer})")

    def results(self) -> dict[str, Any]:
        """The key numbers chapter 4 saves for the comparison chapter (book/<model>/results/04_geometry.json)."""
        km, b, built = self.kmeans, self.best, self.ready.built
        curve_columns = ["r_valence", "r_arousal"] + (["probe_top1"] if "probe_top1" in self.curve else [])
        return {
            "layer": self.layer, "n_layers": self.ready.profile.n_layers, "emotions": len(self.ready.vectors),
            "norms": self.primary.attrs["source"], "pc1_variance": float(self.result.explained[0]),
            "pc2_variance": float(self.result.explained[1]),
            "valence": self._test("PC1 vs valence"), "arousal": self._test("PC2 vs arousal"),
            "like_for_like": self.like_for_like,
            "probe_top1": float(self.probes[0].top1), "probe_chance": float(self.probes[0].chance1),
            "logistic_top1": float(self.probes[2].top1), "valence_auroc": float(self.valence["probe"]["auroc"]),
            "largest_kmeans_cluster": f"{km['cluster'].iloc[0]} ({int(km['size'].iloc[0])})",
            "best_valence_layer": b["best_layer"], "best_valence_r": b["best_r"], "max_layer_p": b["p"],
            "orientation": "fixed anchor emotions (emolib.analysis.geometry.ANCHORS)",
            "topic_centred": {row: {k: float(v) for k, v in values.items()} for row, values in self.robustness.iterrows()},
            "split_half": {str(int(r.layer)): {"half": float(r["split-half r"]), "spearman_brown": float(r["Spearman-Brown"])}
                           for _, r in self.split_half.iterrows()},
            "scaling": {"curve": self.curve.groupby("n")[curve_columns].mean().reset_index().to_dict("records"),
                        "fits": self.fits, "draws": self.options["scaling_draws"]},
            "probes": {p.name: {"top1": p.top1, "chance": p.chance1, "n": p.n} for p in self.probes},
            "valence_two_way": {"accuracy": self.valence["probe"]["two_way_accuracy"],
                                "majority": self.valence["probe"]["majority"]},
            "stories_per_emotion": int(np.median([len(v) for v in built.stories.values()])),
            "circumplex": self.circumplex,
            "circumplex_best_layer": self.circumplex_best,
            "baselines": {name: table.to_dict("records") for name, table in self.baselines.items()},
            "baselines_best_layer": self.baselines_best,
            "cv_pca": ({"components": self.cv_spectrum.to_dict("records"),
                        "signal_share": self.cv_spectrum.attrs["signal share of total variance"],
                        "splits": self.cv_spectrum.attrs["splits"], "emotions": self.cv_spectrum.attrs["emotions"]}
                       if self.cv_spectrum is not None and "splits" in self.cv_spectrum.attrs else None),
        }


def _pair_text(pair, form: str = "{:.2f}") -> str:
    return "-" if not pair else f"{form.format(pair[0])} to {form.format(pair[1])}"


def _circumplex(ready: Ready, acts, labels, topics, ratings: dict[str, pd.DataFrame], primary: str, n_boot: int,
                n_perm: int, n_splits: int, seed: int) -> dict[str, Any]:
    """Issue 26: per word set, the rotation-aware alignment at the pre-registered layer (p from a row-
    permutation null, interval from the story bootstrap with components matched), the leave-one-emotion-out
    ridge ceiling and the pre-registered verdict; per layer for the primary words; the cvPCA spectrum."""
    vectors, layer = ready.vectors, ready.layer
    emotions, basis = vectors.emotions, ready.built.neutral_basis(layer)
    at_layer = vectors.at(layer).numpy()
    saved, aligned = {}, {}
    for name, rated in ratings.items():
        model_xy, human_xy, _ = C.plane(at_layer, emotions, rated)
        test = C.alignment_test(model_xy, human_xy, n_perm=n_perm, seed=seed, words=list(rated.index))
        boot = C.alignment_bootstrap(acts, labels, emotions, basis, G.orient_by_anchors(G.pca(at_layer, emotions, n=3)),
                                     rated, n_boot=n_boot, seed=seed)
        for target in ("valence", "arousal"):  # on Fisher's z scale: inside [-1, 1], asymmetric near the ends
            test[f"ci_{target}"] = list(G.Bootstrap.fisher_interval(test[f"r_{target}"], boot[f"r_{target}"][
                np.isfinite(boot[f"r_{target}"])]))
        test["ci_angle"] = list(C.angle_interval(boot["angle"], test["angle"]))
        ridge = {target: C.ridge_ceiling(at_layer, emotions, rated[target], n_perm=n_perm, seed=seed)
                 for target in ("valence", "arousal")}
        saved[name] = {"words": len(rated), "axes": {"valence": G.pearson(model_xy[:, 0], human_xy[:, 0]),
                                                     "arousal": G.pearson(model_xy[:, 1], human_xy[:, 1])},
                       "alignment": test, "ridge": ridge, "verdict": C.circumplex_verdict(test)}
        aligned[name] = C.procrustes_alignment(model_xy, human_xy, list(rated.index)).frame()
    rated = ratings[primary]
    coordinates = {each: C.plane(vectors.at(each).numpy(), emotions, rated)[0] for each in vectors.layers}
    human_xy = rated[["valence", "arousal"]].to_numpy(float)
    by_layer, best = C.alignment_over_layers(coordinates, human_xy, n_perm=n_perm, seed=seed)
    for target in ("valence", "arousal"):
        ceiling = [C.ridge_ceiling(vectors.at(each).numpy(), emotions, rated[target], n_perm=n_perm, seed=seed)
                   for each in vectors.layers]
        by_layer[f"held-out read-out r ({target})"] = [c["r"] for c in ceiling]
        by_layer[f"held-out read-out p ({target})"] = [c["p"] for c in ceiling]
    try:
        spectrum = C.cv_pca(acts, labels, topics, emotions, basis, rated, n_splits=n_splits, seed=seed)
    except EmolibError as error:  # a scale too small for it: the chapter says so in one line and goes on
        spectrum = pd.DataFrame()
        spectrum.attrs["not computed"] = str(error)
    return {"saved": saved, "aligned": aligned, "by_layer": by_layer, "best": {**best, "words": primary},
            "spectrum": spectrum}


def _baselines(ready: Ready, ratings: dict[str, pd.DataFrame], primary: str, n_boot: int, n_perm: int,
               seed: int) -> dict[str, Any]:
    """Issue 36: the text-only baselines through the book's own steps (`emolib.analysis.baselines`): per word set,
    the model's headline r's beside the bag of words' and layer 0's, and its partial r over each; per layer, the
    model's r beside the bag of words' with the partial r (max-over-layers p)."""
    built, layer = ready.built, ready.layer
    texts, weights = B.story_texts(built)
    bag = B.bag_of_words(texts)
    bow = B.bow_features(bag, built, weights)
    sources = [bow]
    first = min(built.denoised.layers)
    if first != layer:
        sources.append(B.model_features(built, first, weights))
    model = B.model_features(built, layer, weights)
    tables = {name: B.baseline_table(model, sources, rated, n_boot=n_boot, n_perm=n_perm, seed=seed)
              for name, rated in ratings.items()}
    by_layer, best = B.by_layer(built, bow, ratings[primary], weights, n_perm=n_perm, seed=seed)
    note = (f"bag of words: TF-IDF of the {len(texts):,} stories, {bag.vocabulary:,} words (every form of the 171 emotion "
            f"words removed); layer {first}: the analysed model's {'first block' if first == 0 else 'first extracted block'}")
    return {"tables": tables, "by_layer": by_layer, "best": {**best, "words": primary}, "note": note}


PERMUTATIONS = 10_000  # geometry.permutation_p's shuffles behind the correlations table's p


def format_p(p: float, n_perm: int) -> str:
    """A permutation p, printed as "≤ floor" where no permutation reached the observed value."""
    floor = 1 / (n_perm + 1)
    return f"≤ {floor:.2g}" if p <= floor + 1e-12 else f"{p:.3g}"


def _interval_text(pair) -> str:
    if not pair:
        return "-"
    return " to ".join("open" if not np.isfinite(v) else f"{v:,.0f}" for v in pair)


def _correlations(ready: Ready, result: G.PCAResult, acts, labels, ratings: dict[str, pd.DataFrame], n_boot: int,
                  seed: int) -> pd.DataFrame:
    """r of PC1/PC2 with each source's valence/arousal: bootstrap interval (stories resampled within emotion,
    vectors rebuilt and denoised), bias, permutation p; and the cross pairings for reference."""
    emotions, layer = ready.vectors.emotions, ready.layer
    rows = []
    for rated in ratings.values():
        v_rows = [emotions.index(e) for e in rated.index]
        boot = G.bootstrap(acts, labels, emotions, ready.built.neutral_basis(layer), result, rated["valence"],
                           rated["arousal"], n_boot=n_boot, seed=seed)
        source = rated.attrs["source"].split(",")[0]
        for name, component, target, draws in (("PC1 vs valence", 0, "valence", boot.r_valence),
                                               ("PC2 vs arousal", 1, "arousal", boot.r_arousal)):
            r = G.pearson(result.scores[v_rows, component], rated[target].values)
            low, high = G.Bootstrap.fisher_interval(r, draws)
            rows.append({"ratings": source, "words": len(rated), "test": name, "r": r, "95% CI": f"{low:.2f} to {high:.2f}",
                         "bootstrap bias": G.Bootstrap.bias(r, draws),
                         "permutation p": G.permutation_p(result.scores[v_rows, component], rated[target].values, seed=seed),
                         "replicates": [float(v) for v in draws]})
        for name, component, target in (("PC1 vs arousal", 0, "arousal"), ("PC2 vs valence", 1, "valence")):
            rows.append({"ratings": source, "words": len(rated), "test": name, "r": G.pearson(result.scores[v_rows, component],
                         rated[target].values), "95% CI": "", "bootstrap bias": np.nan, "permutation p": np.nan,
                         "replicates": None})
    return pd.DataFrame(rows).set_index(["ratings", "test"])


def _probes(ready: Ready, acts, labels, topics, seed: int) -> list[G.ProbeResult]:
    """Topic-centred, leave-topics-out probes over all emotions (nearest vector, logistic) and over the 45
    Russell-Mehrabian ones, each with its shuffled-label control."""
    emotions, basis = ready.vectors.emotions, ready.built.neutral_basis(ready.layer)
    probes = [G.probe(acts, labels, topics, len(emotions), kind=kind, shuffle=shuffle, neutral_basis=basis, seed=seed,
                      centre_topics=True) for kind in ("nearest", "logistic") for shuffle in (False, True)]
    subset = [emotions.index(e) for e in G.human_norms("russell-mehrabian").index if e in emotions]
    inside = np.isin(labels, subset)
    relabel = {old: new for new, old in enumerate(subset)}
    sub_labels = np.array([relabel[label] for label in labels[inside]])
    for shuffle in (False, True):
        p = G.probe(acts[inside], sub_labels, topics[inside], len(subset), shuffle=shuffle, neutral_basis=basis, seed=seed,
                    centre_topics=True)
        p.name = p.name.replace("nearest emotion vector", f"nearest vector, {len(subset)} Russell-Mehrabian emotions")
        probes.append(p)
    return probes


def geometry(ready: Ready, norms: str = "warriner", n_boot: int = 500, n_boot_layers: int = 50, n_perm: int = 2000,
             n_splits: int = 20, scaling_draws: int = 10, kmeans_k: int = 10, groups: int = 15,
             seed: int = 0, n_boot_baselines: int = 200) -> GeometryReport:
    """Everything chapter 4 shows, at the pre-registered layer (PCs oriented by fixed anchor emotions)."""
    built, vectors, layer = ready.built, ready.vectors, ready.layer
    emotions = vectors.emotions
    sources = [s for s in (norms, "russell-mehrabian") if s in G.available_norms()]
    ratings = {s: G.norms_for(emotions, s) for s in dict.fromkeys(sources)}
    primary = ratings[sources[0]]
    at_layer = vectors.at(layer).numpy()
    acts, labels, topics, _ = built.story_activations(layer)
    result = G.orient_by_anchors(G.pca(at_layer, emotions))
    scores = result.frame(2)
    scores["valence"], scores["arousal"] = primary["valence"].reindex(scores.index), primary["arousal"].reindex(scores.index)
    scores["stories"] = [len(built.stories[e]) for e in scores.index]
    cos, order = G.cosine_matrix(at_layer), G.cluster_order(at_layer)
    basis = built.neutral_basis(layer)
    probe = G.valence_probe(acts, labels, topics, emotions, primary["valence"], basis, centre_topics=True)
    shuffled = G.valence_probe(acts, np.random.default_rng(seed).permutation(labels), topics, emotions,
                               primary["valence"], basis, centre_topics=True)
    curve, fits = R.scaling(built, layer, primary["valence"], primary["arousal"], draws=scaling_draws, seed=seed)
    plane = _circumplex(ready, acts, labels, topics, ratings, sources[0], n_boot, n_perm, n_splits, seed)
    text_only = _baselines(ready, ratings, sources[0], n_boot_baselines, n_perm, seed)
    return GeometryReport(
        ready=ready, ratings=ratings, primary=primary, result=result, scores=scores,
        settings={"analysed model": f"{ready.profile.model_id} ({ready.profile.name})",
                  "layer": f"{layer} of {ready.profile.n_layers} (fixed in advance)", "emotions": len(emotions),
                  "stories": sum(len(v) for v in built.stories.values()),
                  "stories per emotion": f"median {int(np.median([len(v) for v in built.stories.values()]))}",
                  "human ratings": "; ".join(f"{r.attrs['source']}: {len(r)} words" for r in ratings.values()),
                  "bootstrap": f"{n_boot} replicates (stories resampled within emotion)", "seed": seed,
                  "vectors": built.denoised.metadata.get("construction", ""),
                  "design": str(built.denoised.metadata.get("design") or "unbalanced (older corpus)")},
        variance=pd.DataFrame({"component": [f"PC{i + 1}" for i in range(len(result.explained))],
                               "share of variance": result.explained}),
        loadings=pd.DataFrame({"PC1 lowest": scores["PC1"].nsmallest(10).index, "PC1 highest": scores["PC1"].nlargest(10).index,
                               "PC2 lowest": scores["PC2"].nsmallest(10).index, "PC2 highest": scores["PC2"].nlargest(10).index}),
        correlations=_correlations(ready, result, acts, labels, ratings, n_boot, seed),
        cosine=np.round(cos[np.ix_(order, order)], 3), cluster_names=[emotions[i] for i in order],
        pairs=pd.concat({"most similar": G.top_pairs(cos, emotions, 12),
                         "most opposite": G.top_pairs(cos, emotions, 12, opposite=True)}, axis=1),
        hierarchical=G.describe_clusters(G.hierarchical_clusters(at_layer, groups), at_layer, emotions, primary["valence"]),
        kmeans=G.describe_clusters(G.kmeans_clusters(at_layer, kmeans_k, seed), at_layer, emotions, primary["valence"]),
        by_layer=G.layer_summary(built, primary["valence"], primary["arousal"], n_boot=n_boot_layers, seed=seed),
        best=R.best_layer_test(built, primary["valence"], n_perm=n_perm, seed=seed),
        layer_similarity=np.round(G.layer_similarity(vectors.vectors), 3),
        split_half=R.split_half_by_layer(built, n_splits=n_splits, seed=seed), curve=curve, fits=fits,
        probes=_probes(ready, acts, labels, topics, seed), valence={"probe": probe, "shuffled": shuffled},
        robustness=R.robustness_table(built, layer, primary["valence"], primary["arousal"], seed=seed),
        options={"kmeans_k": kmeans_k, "groups": groups, "scaling_draws": scaling_draws, "seed": seed},
        circumplex=plane["saved"], aligned=plane["aligned"], circumplex_by_layer=plane["by_layer"],
        circumplex_best=plane["best"], cv_spectrum=plane["spectrum"],
        baselines=text_only["tables"], baselines_by_layer=text_only["by_layer"], baselines_best=text_only["best"],
        baselines_note=text_only["note"],
    )


# --- the deep story set (issue 37) ------------------------------------------------------------------------------

DEPTHS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96)


@dataclass
class DeepReport:
    """Chapter 4's deep-set section: the like-for-like headline from the deep vectors beside the 24-story ones, the
    text-only baselines at that depth, reliability per depth, and the scaling curve to 96 stories per emotion."""

    layer: int
    emotions: list[str]  # the deepened emotions
    headline: pd.DataFrame  # like for like: r(PC1, valence), 45 words, 24-story and deep vectors
    baselines: pd.DataFrame
    reliability: pd.DataFrame  # per depth: split-half, cross-validated signal share (the deepened emotions)
    curve: pd.DataFrame  # per (n, draw): r_valence, r_arousal_aligned, partial_r_bow; the largest n: every story (harmonic mean)
    fits: dict[str, dict]
    stories_per_emotion: dict[str, float]  # the deepened emotions' stories: median and min

    @property
    def fits_table(self) -> pd.DataFrame:
        return pd.DataFrame({name: {"r with infinitely many stories (fit)": fit["r_inf"], "one story's reliability (fit)": fit["rho"],
                                    "parameters at a bound": ", ".join(fit.get("at_bound") or []) or "none",
                                    "measured at the largest n": fit["largest_measured"],
                                    "stories per emotion for 0.8 (where the curve sets it)": R.supported_extrapolation(fit, "0.8"),
                                    "largest n measured": fit["largest_n_measured"]} for name, fit in self.fits.items()})

    def results(self) -> dict[str, Any]:
        return {"layer": self.layer, "emotions": len(self.emotions), "stories_per_emotion": self.stories_per_emotion,
                "headline": self.headline.reset_index().to_dict("records"), "baselines": self.baselines.to_dict("records"),
                "reliability": self.reliability.to_dict("records"),
                "curve": self.curve.groupby("n").mean(numeric_only=True).reset_index().to_dict("records"), "fits": self.fits}


def _subset(features: B.StoryFeatures, keep: list[str]) -> B.StoryFeatures:
    """The stories of the emotions `keep` only, relabelled 0..len(keep)-1 (vectors then centre on their mean)."""
    index = [features.emotions.index(e) for e in keep]
    rows = np.isin(features.labels, index)
    relabel = {old: new for new, old in enumerate(index)}
    return B.StoryFeatures(features.name, features.acts[rows], np.array([relabel[x] for x in features.labels[rows]]),
                           features.topics[rows], list(keep), features.weights[rows], features.basis)


def deep_geometry(deep: Ready, base: Ready, n_boot: int = 500, n_boot_baselines: int = 200, n_perm: int = 2000,
                  draws: int = 10, seed: int = 0) -> DeepReport:
    """Issue 37 at chapter 4's layer, over the 45 Russell-Mehrabian words (all of them deepened)."""
    layer = deep.layer
    rated = G.norms_for(deep.vectors.emotions, "russell-mehrabian")
    design = Design.load(corpus_dir(deep.vectors.metadata.get("corpus", "")))
    if design is None or design.base is None:
        raise EmolibError("these vectors are not from a deep story set (its design.json names no base corpus)")
    deepened = [e for e in design.emotions if e in deep.vectors.emotions]
    rows = {}
    for name, ready in (("24 stories (the published vectors)", base), ("deep set", deep)):
        acts, labels, _, _ = ready.built.story_activations(layer)
        result = G.orient_by_anchors(G.pca(ready.vectors.at(layer).numpy(), ready.vectors.emotions))
        table = _correlations(ready, result, acts, labels, {"russell-mehrabian": rated}, n_boot, seed)
        row = table.loc[(rated.attrs["source"].split(",")[0], "PC1 vs valence")]
        counts = [len(ready.built.stories[e]) for e in rated.index]
        rows[name] = {"stories per rated emotion (median)": float(np.median(counts)), "r(PC1, valence)": row["r"],
                      "95% CI": row["95% CI"], "permutation p": format_p(row["permutation p"], PERMUTATIONS),
                      "words": int(row["words"])}
    texts, weights = B.story_texts(deep.built)
    bag = B.bag_of_words(texts)
    bow = B.bow_features(bag, deep.built, weights)
    model = B.model_features(deep.built, layer, weights)
    first = min(deep.vectors.layers)
    sources = [bow] + ([B.model_features(deep.built, first, weights)] if first != layer else [])
    baselines = B.baseline_table(model, sources, rated, n_boot=n_boot_baselines, n_perm=n_perm, seed=seed)
    # the deepened emotions alone, at every depth (the others stay at their 24 stories)
    model_d, bow_d = _subset(model, deepened), _subset(bow, deepened)
    rated_d = rated[rated.index.isin(deepened)]
    rng = np.random.default_rng(seed)
    curve, reliability = [], []
    counts_d = np.bincount(model_d.labels)
    # the harmonic mean: a vector's noise goes as 1/n, so uneven counts attenuate like this one common n
    most, typical = int(counts_d.min()), int(len(counts_d) / np.sum(1.0 / counts_d))
    depths = [n for n in DEPTHS if n <= most] + ([most] if most not in DEPTHS else [])
    # the last point takes every story of every deepened emotion, placed at their harmonic-mean count: the cells the
    # keep rule left short cap a few emotions below it (the chapter prints the min), not the whole curve
    every_story = typical if typical > most else None
    depths += [every_story] if every_story else []
    stories = lambda n: (np.arange(len(model_d.labels)) if n == every_story  # noqa: E731
                         else R.subsample(model_d.labels, model_d.topics, n, rng))
    for n in depths:
        for draw in range(draws if n < most else 1):
            pick = stories(n)
            v_model, v_bow = model_d.vectors(pick), bow_d.vectors(pick)
            s_model = B.headline_scores(v_model, deepened, rated_d)
            s_bow = B.headline_scores(v_bow, deepened, rated_d)
            target = rated_d["valence"].to_numpy(float)
            try:
                aligned = C.procrustes_alignment(s_model["aligned plane"], rated_d[["valence", "arousal"]].to_numpy(float))
                arousal = aligned.r_arousal
            except EmolibError:
                arousal = np.nan
            curve.append({"n": n, "draw": draw, "r_valence": G.pearson(s_model["PC1"], target), "r_arousal_aligned": arousal,
                          "partial_r_bow": B.partial_r(s_model["PC1"], target, s_bow["PC1"])})
        if n in (24, most) or n == depths[-1]:
            pick = stories(n)
            half = R.split_half(model_d.acts[pick], model_d.labels[pick], model_d.topics[pick], len(deepened),
                                model_d.basis, n_splits=10, seed=seed)
            spectrum = C.cv_pca(model_d.acts[pick], model_d.labels[pick], model_d.topics[pick], deepened, model_d.basis,
                                n_splits=5, seed=seed)
            reliability.append({"stories per emotion": n, "split-half r": half["half"], "Spearman-Brown": half["spearman_brown"],
                                "cross-validated signal share": spectrum.attrs["signal share of total variance"],
                                "emotions": len(deepened)})
    curve = pd.DataFrame(curve)
    fits = {}
    for measure in ("r_valence", "r_arousal_aligned"):  # the reliability curve fits correlations that only noise
        # attenuates; a partial r over a baseline that itself sharpens with depth need not follow it: no fit for the gain
        means = curve.groupby("n")[measure].mean().dropna()
        if len(means) < 3:
            continue
        fit = R.fit_scaling(means.index.to_numpy(float), means.to_numpy(float))
        interval = R.bootstrap_fit(curve.dropna(subset=[measure]), measure, None, n_boot=100, seed=seed)
        fits[measure] = {"r_inf": fit.r_inf, "rho": fit.rho, "at_bound": fit.at_bound, "stories_needed": fit.n_for,
                         "stories_needed_ci": interval, "largest_n_measured": int(means.index.max()),
                         "largest_measured": float(means.iloc[-1])}
    counts = [len(deep.built.stories[e]) for e in deepened]
    return DeepReport(layer, deepened, pd.DataFrame(rows).T, baselines, pd.DataFrame(reliability), curve, fits,
                      {"median": float(np.median(counts)), "min": int(np.min(counts))})
