"""The comparison's tables and sentences come from the saved numbers: checked on hand-made results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emolib.book import compare
from emolib.book import results as RS


def _geometry(r_val: float, p_val: float, r_aro: float = 0.1, p_aro: float = 0.3, max_p: float = 0.2,
              r_inf: float | None = 0.9, needed: float | None = 120.0) -> dict:
    return {
        "layer": 12, "n_layers": 18, "pc1_variance": 0.12, "pc2_variance": 0.07,
        "valence": {"r": r_val, "ci": f"{r_val - 0.1:.2f} to {r_val + 0.1:.2f}", "p": p_val, "words": 126},
        "arousal": {"r": r_aro, "ci": "0.00 to 0.20", "p": p_aro, "words": 126},
        "like_for_like": None,
        "best_valence_r": r_val + 0.05, "best_valence_layer": 15, "max_layer_p": max_p,
        "probe_top1": 0.03, "probe_chance": 1 / 171, "valence_auroc": 0.66,
        "split_half": {"12": {"half": 0.4, "spearman_brown": 0.57}},
        "scaling": {"fits": {"r_valence": {"r_inf": r_inf, "rho": 0.05, "stories_needed": {"0.8": needed},
                                           "stories_needed_ci": {"0.8": [80.0, 200.0] if needed else [float("inf")] * 2},
                                           "largest_n_measured": 24}}},
        "topic_centred": {"topic-centred": {"r(PC1, valence)": r_val - 0.01, "r(PC2, arousal)": r_aro}},
    }


def _steering(text_slope_low: float, lexicon_p: float | None = None) -> dict:
    """One steered emotion; VADER's slope is significant when `text_slope_low` > 0 (p 0.001, else 0.4); the lexicon's
    p is `lexicon_p` (default: the same as VADER's)."""
    vader_p = 0.001 if text_slope_low > 0 else 0.4
    lexicon = vader_p if lexicon_p is None else lexicon_p
    holm = sorted([vader_p, lexicon])  # chapter 7's Holm over its family (one emotion x the two readers)
    holm_of = {holm[0]: min(1.0, 2 * holm[0]), holm[1]: max(min(1.0, 2 * holm[0]), holm[1])}
    return {"slopes": [
        {"emotion": "happy", "metric": "projection", "slope per unit α": 2000.0, "low": 1000.0, "high": 3000.0,
         "bootstrap p": 0.001},
        {"emotion": "happy", "metric": "valence", "slope per unit α": 0.5, "low": text_slope_low, "high": 0.9,
         "bootstrap p": vader_p, "Holm p (text readers)": holm_of[vader_p]},
        {"emotion": "happy", "metric": "lexicon valence", "slope per unit α": 0.2, "low": text_slope_low / 2, "high": 0.4,
         "bootstrap p": lexicon, "Holm p (text readers)": holm_of[lexicon]},
    ], "blackmail": [{"condition": "baseline", "k": 0, "n": 6, "rate": 0.0, "low": 0.0, "high": 0.39}],
        "reward_hacking": {"rates": [{"condition": "baseline", "k": 1, "n": 16, "rate": 1 / 16, "low": 0.01, "high": 0.28},
                                     {"condition": "+desperate 0.05", "k": 2, "n": 16, "rate": 2 / 16, "low": 0.03, "high": 0.36}]}}


TITLES = {"a": "Model A", "b": "Model B"}


def test_verdicts_follow_the_numbers():
    results = {"a": {"04_geometry": _geometry(0.55, 0.001, max_p=0.01), "07_steering": _steering(0.1)},
               "b": {"04_geometry": _geometry(0.10, 0.3, r_inf=0.5, needed=None), "07_steering": _steering(-0.2)}}
    text = "\n".join(compare.verdicts(results, ["a", "b"], TITLES))
    assert "PC1 does track human valence (r = 0.55 [0.45, 0.65], p 0.001) — same direction as Anthropic's 0.81, weaker" in text
    assert "PC1 does not track human valence (r = 0.10 [0.00, 0.20], p 0.3) — unlike Anthropic's 0.81." in text
    assert "significant once the choice of layer is accounted for (max-over-layers p = 0.01)" in text
    assert "not significant once the choice of layer is accounted for (max-over-layers p = 0.2)" in text
    assert "r = 0.8 would need about 120 stories per emotion" in text
    assert "r = 0.8 lies above the fitted ceiling" in text
    assert "moves with α for happy (both readers: valence rises, as its valence predicts)" in text
    assert "Holm-corrected over chapter 7's 2 tests" in text
    assert "does not move detectably with α by either reader" in text
    assert "Reward hacking: baseline 1/16 (Anthropic ~5%)" in text
    assert "**Across families:** the valence axis is found in Model A but not in Model B at the analysis layer." in text


@pytest.mark.parametrize("curve", ["rising", "flat"])
def test_a_scaling_fit_at_its_bound_gives_no_extrapolated_count(curve):
    """The same verdicts for a model whose attenuation fit (emolib.analysis.reliability.fit_scaling, as chapter 4 runs it) sits
    at a bound. rising: mean r = 0.1 sqrt(n), which never levels off, puts the ceiling at its bound (r_inf = 1.0) and
    the fit's n(r = 0.8), about 150, is extrapolated from that bound (the curve itself reaches 0.8 at n = 64). flat:
    mean r = 0.9 at every n puts one story's reliability at its bound (rho = 1) and n(r = 0.8) at about 0. Neither
    number is a measurement, so the verdict must not print "r = 0.8 would need about N stories"; passing the fit's
    n through whatever its parameters are (today's code does) breaks this."""
    from emolib.analysis import reliability as R

    n = np.array([1, 2, 3, 4, 6, 8, 12, 16, 20, 24], float)
    fit = R.fit_scaling(n, 0.1 * np.sqrt(n) if curve == "rising" else np.full(n.size, 0.9))
    at_bound = abs(fit.r_inf) > 1 - 1e-6 if curve == "rising" else fit.rho > 1 - 1e-4
    assert at_bound and fit.n_for["0.8"] is not None  # the case: a fit at its bound that still offers a number
    geometry = _geometry(0.55, 0.001)
    geometry["scaling"]["fits"]["r_valence"] = {"r_inf": fit.r_inf, "rho": fit.rho, "stories_needed": fit.n_for,
                                                "largest_n_measured": 24}
    lines = compare.verdicts({"a": {"04_geometry": geometry}}, ["a"], TITLES)
    more = [line for line in lines if line.startswith("- More stories:")]
    assert len(more) == 1  # the fit is still reported
    if curve == "rising":
        assert "does not level off within the stories measured (its ceiling sits at the bound, 1.0)" in more[0]
    assert "would need about" not in more[0], more[0]


def test_a_negative_significant_r_is_not_called_a_replication():
    results = {"a": {"04_geometry": _geometry(-0.4, 0.001)}}
    text = "\n".join(compare.verdicts(results, ["a"], TITLES))
    assert "PC1 does not track human valence (r = -0.40" in text


def test_tables_put_models_beside_the_published_numbers():
    geometry = _geometry(0.55, 0.001)
    geometry["like_for_like"] = {"valence": {"r": 0.62, "ci": "0.52 to 0.72", "p": 0.002, "words": 45},
                                 "arousal": {"r": 0.2, "ci": "0.00 to 0.40", "p": 0.1, "words": 45}}
    results = {"a": {"04_geometry": geometry, "07_steering": _steering(0.1),
                     "01_stories": {"scale": "full", "kept_per_emotion": {"min": 24, "median": 24.0},
                                    "fidelity": {"chosen": {"valence_r": 0.3}}}}}
    table = compare.comparison_table(results, ["a"], TITLES)
    like = "PC1 vs human valence, r (Russell-Mehrabian words, like Anthropic's)"
    assert table.index[table.index.str.startswith("PC1 vs human valence")].tolist()[0] == like  # like for like first
    assert table.loc[like, "Model A"].startswith("0.62 (0.52 to 0.72; p 0.002; 45 words)")
    assert table.loc[like, RS.ANTHROPIC] == "0.81 (45 words)"
    extension = "PC1 vs human valence, r (Warriner's words: the extension)"
    assert table.loc[extension, "Model A"].startswith("0.55 (0.45 to 0.65; p 0.001; 126 words)")
    assert table.loc[extension, RS.ANTHROPIC] == "-"
    assert table.loc["scale (stories per emotion, min)", "Model A"] == "full (24)"
    assert table.loc["split-half reliability (Spearman-Brown)", "Model A"] == "0.57"
    assert table.loc["stories per emotion for valence r = 0.8 (extrapolated)", "Model A"] == "120 [80, 200] (r∞ 0.90)"
    hacks = compare.hacking_table(results, ["a"], TITLES)
    assert hacks.loc["+desperate 0.05", RS.ANTHROPIC] == "~70%"
    assert hacks.loc["baseline", "Model A"] == "6% [1%, 28%] (1/16)"
    assert compare.blackmail_table(results, ["a"], TITLES).loc["baseline", RS.GEMOTIONS] == "86%"
    assert len(compare.headline_figure(results, ["a"], TITLES).data) == 2


def test_a_text_moving_against_the_emotions_valence_is_said_so():
    steering = _steering(0.1)
    for row in steering["slopes"][1:]:
        row.update({"slope per unit α": -0.6, "low": -1.2, "high": -0.1})
    text = "\n".join(compare.verdicts({"a": {"04_geometry": _geometry(0.5, 0.01), "07_steering": steering}}, ["a"], TITLES))
    assert "happy (both readers: valence falls, against its valence)" in text


def test_the_texts_valence_needs_both_readers_after_correction():
    """Issue 23.3: one reader moving is said as such, never as "the text's valence moves". The correction is chapter
    7's own (Holm over its steered emotions x the two readers, saved with each slope): the comparison states the
    chapter's verdict, so a second model in the book never changes the first's, and a raw p below 0.05 whose
    corrected p is not does not count."""
    one = _steering(0.1, lexicon_p=0.5)
    text = "\n".join(compare.verdicts({"a": {"04_geometry": _geometry(0.5, 0.01), "07_steering": one}}, ["a"], TITLES))
    assert "happy (VADER only rises)" in text and "both readers" not in text
    weak = _steering(0.1, lexicon_p=0.02)
    for row in weak["slopes"][1:]:
        row.update({"bootstrap p": 0.02, "Holm p (text readers)": 0.04})
    alone = "\n".join(compare.verdicts({"a": {"04_geometry": _geometry(0.5, 0.01), "07_steering": weak}}, ["a"], TITLES))
    assert "both readers: valence rises" in alone and "Holm-corrected over chapter 7's 2 tests" in alone
    family = compare.verdicts({"a": {"04_geometry": _geometry(0.5, 0.01), "07_steering": weak},
                               "b": {"04_geometry": _geometry(0.5, 0.01), "07_steering": _steering(0.1, lexicon_p=0.02)}},
                              ["a", "b"], TITLES)
    a_lines = "\n".join(family[: family.index("")])
    assert "both readers: valence rises" in a_lines  # model b's tests do not enter model a's family
    corrected_away = _steering(0.1)
    for row in corrected_away["slopes"][1:]:
        row.update({"bootstrap p": 0.03, "Holm p (text readers)": 0.06})
    text = "\n".join(compare.verdicts({"a": {"04_geometry": _geometry(0.5, 0.01), "07_steering": corrected_away}},
                                      ["a"], TITLES))
    assert "does not move detectably" in text


def test_every_chapter_saves_what_its_schema_names():
    """The executed tiny chapters' saved numbers carry every key of their typed schema (and saving refuses
    results that lack one)."""
    import json
    from pathlib import Path

    import pytest

    from emolib.errors import EmolibError

    folder = Path(__file__).resolve().parent / "notebooks" / "results"
    for chapter in RS.SCHEMAS:
        saved = json.loads((folder / f"{chapter}.json").read_text())
        RS.check(chapter, saved)
    with pytest.raises(EmolibError, match=r"chapter 05_logit_lens saves no self_named, self_named_chance, self_named_label_null; emolib.book.results.LensResults"):
        RS.check("05_logit_lens", {"layer": 1, "emotions": 3, "self_named_by_layer": {}})


def test_published_numbers_are_typed_once():
    """The comparison's published columns, the chapter-4 table and the verdicts all read results.PUBLISHED."""
    results = {"a": {"04_geometry": _geometry(0.55, 0.001)}}
    table = compare.comparison_table(results, ["a"], TITLES)
    assert table.loc["PC1 share of variance (cross-validated)", RS.RAIN1955] == RS.PUBLISHED["pc1_variance"][RS.RAIN1955].text
    chapter4 = compare.geometry_beside_published(results["a"]["04_geometry"], "this run")
    assert chapter4.loc["PC1 vs human valence, r (Russell-Mehrabian words, like Anthropic's)", RS.ANTHROPIC] == "0.81 (45 words)"
    assert chapter4.loc["PC1 share of variance (cross-validated)", "this run"] == "12.0%"
    rate = pd.DataFrame({"rate": [0.5], "low": [0.1], "high": [0.9], "k": [1], "n": [2]}, index=["baseline"])
    beside = compare.rates_beside_published(rate, RS.BLACKMAIL, "ours", (RS.ANTHROPIC, RS.GEMOTIONS))
    assert beside.loc["baseline", "ours"] == "50% [10%, 90%] (1/2)"
    assert beside.loc["-calm 0.05", RS.GEMOTIONS] == "91%" and beside.loc["-calm 0.05", "ours"] == "-"


def test_results_load_typed(tmp_path):
    import json

    (tmp_path / "m" / "results").mkdir(parents=True)
    (tmp_path / "m" / "results" / "04_geometry.json").write_text(json.dumps(_geometry(0.5, 0.01)))
    (tmp_path / "m" / "results" / "notes.json").write_text("{}")
    loaded = RS.load(tmp_path)
    assert loaded["m"].geometry["valence"]["r"] == 0.5 and loaded["m"].steering is None and "notes" in loaded["m"].other


def test_the_prompt_study_says_when_the_guard_alone_chose():
    """Issue 23.8: benchmarks/results/prompts.json has one wording inside the leak guard ('label', 13 % leaks;
    'feels' 23 %, 'strong' 28 %), so chapter 1 must not present the choice as a fidelity result confirmed on the
    other half."""
    from emolib.analysis import fidelity

    summary = fidelity.prompt_study_summary()
    assert summary["eligible"] == ["label"] and summary["compared"] == ["label", "feels", "strong"]
    assert fidelity.describe_prompt_study().startswith("Only one of the 3 wordings passed the leak guard ('label';")
    assert set(fidelity.prompt_study()["passes the leak guard"]) == {"yes", "no", "(follow-up)"}


def test_verdicts_lead_with_the_like_for_like_words_and_flag_a_self_reading_model():
    """Issue 23.8/26.1: the valence verdict is over the 45 Russell-Mehrabian words where chapter 4 saved them (the
    126 Warriner words follow as the extension), and a model reading its own stories is flagged."""
    geometry = _geometry(0.30, 0.2)
    geometry["like_for_like"] = {"valence": {"r": 0.55, "ci": "0.3 to 0.8", "p": 0.001, "words": 45},
                                 "arousal": {"r": -0.05, "ci": "-0.3 to 0.2", "p": 0.6, "words": 45}}
    results = {"a": {"04_geometry": geometry, "01_stories": {"writer": "a"}},
               "b": {"04_geometry": _geometry(0.30, 0.2), "01_stories": {"writer": "a"}}}
    lines = compare.verdicts(results, ["a", "b"], TITLES)
    text = "\n".join(lines)
    assert ("- Valence (45 Russell-Mehrabian words, like Anthropic's): PC1 does track human valence (r = 0.55 [0.3, 0.8], "
            "p 0.001)") in text
    assert "- On 126 Warriner words (the extension): r(PC1, valence) = 0.30 (p = 0.2)" in text
    assert sum("Caveat: Model A reads the stories it wrote itself" in line for line in lines) == 1
    assert not any("Caveat: Model B" in line for line in lines)
    assert "found in Model A but not in Model B" in text


def test_the_circumplex_rows_and_verdict_come_from_the_saved_alignment():
    geometry = _geometry(0.41, 0.001)
    alignment = {"r_valence": 0.74, "p_valence": 0.0005, "r_arousal": 0.42, "p_arousal": 0.004, "angle": -46.0,
                 "reflected": False, "ci_valence": [0.6, 0.88], "ci_arousal": [0.2, 0.64], "ci_angle": [-60.0, -30.0]}
    geometry["circumplex"] = {"russell-mehrabian": {
        "words": 45, "axes": {"valence": 0.54, "arousal": -0.06}, "alignment": alignment,
        "ridge": {"valence": {"r": 0.81, "p": 0.0005}, "arousal": {"r": 0.3, "p": 0.03}}, "verdict": "present but rotated"}}
    geometry["cv_pca"] = {"components": [{"component": "PC1", "plain share": 0.11, "cross-validated share": 0.07},
                                         {"component": "PC2", "plain share": 0.08, "cross-validated share": 0.05}],
                          "signal_share": 0.4, "splits": 10}
    table = compare.comparison_table({"a": {"04_geometry": geometry}}, ["a"], TITLES)
    assert table.loc["circumplex, Russell-Mehrabian words: aligned valence r [CI] (p)", "Model A"] == "0.74 [0.60, 0.88] (p=0.0005)"
    assert table.loc["circumplex, Russell-Mehrabian words: valence's angle from PC1", "Model A"] == "-46°"
    assert table.loc["circumplex, Russell-Mehrabian words: verdict (pre-registered)", "Model A"] == "present but rotated"
    assert table.loc["circumplex, Warriner's words: angle; verdict", "Model A"] == "-; -"
    assert table.loc["cross-validated spectrum: signal share (cvPCA)", "Model A"].startswith("40% of the variance")
    lines = "\n".join(compare.verdicts({"a": {"04_geometry": geometry}}, ["a"], TITLES))
    assert "valence lies at -46° from PC1" in lines and "Verdict (pre-registered): present but rotated." in lines
    assert "PC1 r = 0.54 with valence" in lines


def test_the_intro_findings_read_the_deep_set_and_show_a_dash_for_an_unexecuted_chapter():
    """The intro's findings table (book/_generated/findings.md) is rows of the comparison: the deep set's headline
    and its bag-of-words gain read from chapter 4's `deep` block; a chapter not executed shows "-", never a number."""
    geometry = _geometry(0.41, 0.001)
    bow = {"headline": "PC1", "baseline": "bag of words", "words": 45, "r (model)": 0.76, "r (baseline)": 0.75,
           "partial r (model | baseline)": 0.35, "95% CI": [-0.03, 0.70], "p": 0.012, "n_perm": 2000}
    geometry["deep"] = {"headline": [{"index": "24 stories (the published vectors)", "r(PC1, valence)": 0.66,
                                      "95% CI": "0.37 to 0.83", "permutation p": "≤ 0.0001", "words": 45,
                                      "stories per rated emotion (median)": 24.0},
                                     {"index": "deep set", "r(PC1, valence)": 0.7613, "95% CI": "0.57 to 0.87",
                                      "permutation p": "≤ 0.0001", "words": 45, "stories per rated emotion (median)": 96.0}],
                        "baselines": [bow]}
    text = compare.findings_markdown({"a": {"04_geometry": geometry}}, ["a"], TITLES)
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1].rstrip(" |") for line in text.splitlines()[2:]}
    assert len(rows) == len(compare.FINDING_ROWS)
    assert rows["deep set (issue 37): PC1 vs valence, r (Russell-Mehrabian words)"].startswith("0.76 (0.57 to 0.87; p ≤ 0.0001")
    assert "partial r 0.35 [-0.03, 0.70] (p 0.012)" in rows["deep set: beyond the words, PC1 vs valence (Russell-Mehrabian words)"]
    assert rows["in context: a number in the prompt (chapter 8)"] == "-"
    assert rows["sycophancy: switching to the user's wrong answer"] == "-"


def test_the_comparison_reads_chapter_8s_model_reader_whatever_the_key_order():
    """Saved results sort their keys: for a model named after "bag of words" (smollm2) the bag of words comes first.
    The comparison's chapter 8 rows must still read the model, not the words or the model's layer 0."""
    from emolib.book import compare
    from emolib.book.results import ModelResults

    def signs(hits: int) -> dict:
        return {"hits": hits, "pairs": 24, "p": 0.5, "S": 0.0, "significant": 0, "templates": []}

    found = {"signs": {"bag of words": signs(0), "smollm2": signs(12), "smollm2 layer 0": signs(7)}}
    assert compare.in_context_model(found) == "smollm2"
    cell = compare._in_context("numbers")(ModelResults.of({"08_in_context": found}))
    assert cell.startswith("12/24 pairs") and "bag of words 0/24" in cell
