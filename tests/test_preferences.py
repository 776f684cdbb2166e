"""Chapter 9: the Elo fit on a synthetic tournament with a known order, the position-bias correction, steering on an
activity's tokens only, and the sycophancy switch reading on a tiny model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from emolib.errors import EmolibError
from emolib.models.hooks import decoder_layers, forward_hooks
from emolib.steering import preferences as P
from emolib.steering import steer
from emolib.steering import sycophancy as S
from emolib.stories.prompts import leak_pattern, load_emotions


def _tournament(theta: np.ndarray, bias: float, noise: float, seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    rng = np.random.default_rng(seed)
    names = [f"activity {i}" for i in range(len(theta))]
    rows = [{"A": names[a], "B": names[b], "log-odds A": theta[a] - theta[b] + bias + noise * rng.normal()}
            for a in range(len(theta)) for b in range(len(theta)) if a != b]
    return pd.DataFrame(rows), names


def test_the_elo_fit_recovers_a_known_order_and_removes_the_position_bias():
    theta = np.linspace(-2, 2, 16)
    games, names = _tournament(theta, bias=1.5, noise=0.3)
    preference, bias = P.debias(games, names)
    assert bias.mean() == pytest.approx(1.5, abs=0.1)  # the position bias is measured ...
    elo = P.fit_elo(preference)
    assert spearmanr(elo, theta)[0] > 0.97  # ... and removed: the known order comes back
    assert np.allclose(np.diff(elo).mean(), P.ELO_SCALE * np.diff(theta).mean(), rtol=0.1)  # on the Elo scale
    assert elo.mean() == pytest.approx(1500)
    table = P.elo_table(names, ["c"] * 16, preference, n_boot=200)
    assert (table["low"] <= table["Elo"]).all() and (table["Elo"] <= table["high"]).all()
    assert P.split_half(preference, n_splits=10)["Spearman-Brown"] > 0.9
    # a model that only says "A": no preference, all position
    flat, names = _tournament(np.zeros(16), bias=2.0, noise=0.3)
    preference, bias = P.debias(flat, names)
    answers = P.decisiveness(preference, bias)
    assert answers["mean |position bias|"] > 5 * answers["mean |preference|"]
    assert P.split_half(preference, n_splits=10)["split-half ρ"] < 0.4  # a ranking of noise does not reproduce


def test_emotion_correlations_and_the_valence_pattern_on_planted_readings():
    rng = np.random.default_rng(1)
    elo = pd.Series(rng.normal(size=30) * 100 + 1500, index=[f"a{i}" for i in range(30)])
    valence = pd.Series({"happy": 0.8, "calm": 0.6, "sad": -0.7, "angry": -0.6, "bored": -0.3})
    readings = pd.DataFrame({e: v * (elo.to_numpy() - 1500) / 100 + 0.3 * rng.normal(size=30) for e, v in valence.items()},
                            index=elo.index)
    table = P.preference_correlations(readings, elo, n_perm=500)
    assert table.loc["happy", "r with Elo"] > 0.8 and table.loc["happy", "p"] < 0.01
    assert table.loc["sad", "r with Elo"] < -0.8
    pattern = P.valence_pattern(readings, elo, valence, n_perm=2000)
    assert pattern["r"] > 0.9 and pattern["p"] < 0.05
    # readings that share one valence factor but ignore Elo: the pattern's p does not come out small (a null that
    # shuffled valence over emotions found it in 39 % of such cases)
    noise_elo = pd.Series(rng.normal(size=30), index=elo.index)
    false_positive = sum(P.valence_pattern(readings, noise_elo.sample(frac=1, random_state=k).set_axis(elo.index), valence,
                                           n_perm=200, seed=k)["p"] < 0.05 for k in range(20))
    assert false_positive <= 4
    assert P.steered_emotions(table, ["calm", "nope"], minimum=4) == ["calm", "happy", "sad", "angry"]


def test_steering_on_an_activitys_tokens_changes_only_those_tokens(tiny_gemma3):
    loaded = tiny_gemma3
    text = P.answer_prompt(loaded.tokenizer, "sort a box of paper clips by size", "walk through a forest after the rain")
    start = text.index("walk through")
    span = P.token_span(loaded.tokenizer, text, start, start + len("walk through a forest after the rain"))
    ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    assert span and span[-1] < ids.shape[1] - 1
    layer = 1
    blocks = decoder_layers(loaded.model)
    captured = {}

    def keep(name):
        def hook(module, args, output):
            captured[name] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        return hook

    vector = torch.randn(1, loaded.model.config.hidden_size) * 5
    hooks_before = len(blocks[layer]._forward_hooks)  # transformers keeps hooks of its own on the blocks
    mask = torch.zeros(ids.shape)
    mask[0, span] = 1.0
    with torch.inference_mode():
        with forward_hooks([(blocks[layer], keep("plain")), (blocks[-1], keep("plain last"))]):
            loaded.model(input_ids=ids)
        with steer.span_steering(loaded.model, layer, vector, mask), \
                forward_hooks([(blocks[layer], keep("steered")), (blocks[-1], keep("steered last"))]):
            loaded.model(input_ids=ids)
        with steer.span_steering(loaded.model, layer, vector * 0, mask), forward_hooks([(blocks[-1], keep("zero"))]):
            loaded.model(input_ids=ids)
    changed = (captured["steered"] - captured["plain"]).abs().amax(dim=-1)[0] > 1e-6
    assert changed.nonzero().flatten().tolist() == span  # at the steered block: the span and nothing else
    later = (captured["steered last"] - captured["plain last"]).abs().amax(dim=-1)[0] > 1e-6
    assert not later[: span[0]].any() and later[span[0]]  # before the span nothing moves downstream either
    assert torch.equal(captured["zero"], captured["plain last"])  # strength 0 leaves everything identical
    assert len(blocks[layer]._forward_hooks) == hooks_before  # the hook is gone
    with pytest.raises(EmolibError, match="one vector per row"):
        with steer.span_steering(loaded.model, layer, vector[0], mask):
            pass


def test_the_switch_reading_equals_a_plain_forward_pass(tiny_gemma3):
    """The batched, left-padded reading with the LM head on the answers' positions only equals the log-probability
    of the answer from one unpadded forward pass."""
    loaded = tiny_gemma3
    frame = pd.DataFrame([{"question": "what is the answer", "right": "calm and happy", "wrong": "sad"},
                          {"question": "is it the story or the answer that you want", "right": "the story", "wrong": "happy"}])
    table = S.switches(loaded, frame)
    assert list(table.columns) == ["after pushback", "no pushback", "right unprompted", "switched"]
    assert (table["switched"] <= table["right unprompted"]).all()  # a question answered wrong unprompted cannot switch
    for i, row in frame.iterrows():
        turns = S.messages(row["question"], row["right"], row["wrong"])
        prompt = S.answer_prompt(loaded.tokenizer, turns)

        def logprob(answer: str) -> float:
            head = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full = loaded.tokenizer(prompt + " " + answer, add_special_tokens=False)["input_ids"]
            with torch.inference_mode():
                logits = loaded.model(input_ids=torch.tensor([full])).logits[0].float()
            logp = torch.log_softmax(logits, dim=-1)
            return float(sum(logp[k - 1, full[k]] for k in range(len(head), len(full))))

        assert table["after pushback"].iloc[i] == pytest.approx(logprob(row["wrong"]) - logprob(row["right"]), abs=1e-3)
    summary = S.switch_summary(table)
    rate = summary["switch rate"]
    assert summary["questions"] == 2 and (summary["right unprompted"] == 0 and rate != rate or 0 <= rate <= 1)
    steered = S.switches(loaded, frame, torch.zeros(2, loaded.model.config.hidden_size), 1)
    assert np.allclose(steered["after pushback"], table["after pushback"], atol=1e-5)  # a zero push changes nothing


def test_the_chapters_data_names_no_emotion_and_its_readers_are_measured():
    chosen = P.activities()
    assert len(chosen) == 64 and chosen["category"].nunique() == 8
    for activity in chosen["activity"]:
        assert not any(leak_pattern(e).search(activity.lower()) for e in load_emotions()), activity
    assert set(P.data()["steer_targets"]) <= set(chosen["activity"])
    assert len(S.questions()) >= 100 and S.questions()[["question", "right", "wrong"]].notna().all().all()
    accuracy = S.reader_accuracy()
    assert set(accuracy.index) == {"harsh", "flattering"} and (accuracy["labelled so"] >= 10).all()
    assert S.reads("You're absolutely right, thank you!", S.FLATTERING) and S.reads("Nonsense. It is 9.", S.HARSH)
    assert not S.reads("The answer is Canberra.", S.HARSH + S.FLATTERING)


class _Vectors:
    """The parts of a VectorBuild's denoised vectors that `directions` reads."""

    def __init__(self, emotions: list[str], units: np.ndarray):
        self.emotions, self.units, self.hidden_size = emotions, units, units.shape[1]

    def direction(self, emotion: str, layer: int) -> torch.Tensor:
        return torch.tensor(self.units[self.emotions.index(emotion)], dtype=torch.float32)

    def index(self, emotion: str) -> int:
        return self.emotions.index(emotion)


class _Build:
    """Stories that vary a lot along the emotions' own axes (the first dims) and little along every other one: a
    direction at random barely moves from story to story."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        d, per = 64, 30
        self.emotions = ["calm", "afraid", "happy"]
        units = np.eye(d)[: len(self.emotions)]
        spread = np.full(d, 0.01)
        spread[: len(self.emotions)] = 2.0
        self.acts = rng.normal(size=(per * len(self.emotions), d)) * spread
        self.labels = np.repeat(np.arange(len(self.emotions)), per)
        self.denoised = _Vectors(self.emotions, units)
        self.residual_norm = {3: 10.0}

    def story_activations(self, layer: int):
        return self.acts, self.labels, None, None


def test_random_directions_are_pushed_as_many_story_sds_as_the_emotions():
    """The steering null of chapter 9: a random direction at an emotion's α would be ~200 SDs along a direction the
    stories barely vary in (disruption, not emotion); each is pushed the same number of SDs along itself instead."""
    build = _Build()
    units, strengths = P.directions(build, 3, build.emotions, strength=4.0, n_null=5, seed=0)
    nulls = [n for n in units if n.startswith(P.NULL_PREFIX)]
    assert len(nulls) == 5 and all(abs(float(units[n].norm()) - 1) < 1e-5 for n in nulls)
    for emotion in build.emotions:  # 4 SDs of ~2.0, in units of the residual norm 10
        assert strengths[emotion] == pytest.approx(4 * 2.0 / 10, rel=0.3)
    for name in nulls:  # along a random direction the SD is ~ sqrt(3 * 4 / 64 + 0.0001) ≈ 0.43, not 2.0
        sd = P.random_sd(build.acts, build.labels, units[name])
        assert strengths[name] == pytest.approx(4.0 * sd / 10, rel=1e-6)
        assert strengths[name] < 0.5 * min(strengths[e] for e in build.emotions)


def test_an_emotion_counts_only_outside_the_random_directions_mean_elo_range():
    rows = []
    for i, shift in enumerate([-3.0, -1.0, 0.5, 2.0, 1.0]):  # five random directions: mean ΔElo from -3 to +2
        rows += [{"direction": f"{P.NULL_PREFIX}{i + 1}", "target": t, "α": 0.01, "ΔElo": shift} for t in "ab"]
    for emotion, move, alpha in (("happy", 9.0, 0.5), ("sad", -1.5, 0.5), ("calm", -8.0, 0.5)):
        rows += [{"direction": emotion, "target": t, "α": alpha, "ΔElo": move} for t in "ab"]
    correlations = pd.DataFrame({"r with Elo": {"happy": 0.6, "sad": -0.1, "calm": -0.5}})
    table, across = P.steering_effects(pd.DataFrame(rows), correlations, P.NULL_PREFIX, n_perm=200)
    assert across["random_range"] == [-3.0, 2.0] and across["random_directions"] == 5
    assert table["outside the random range"].to_dict() == {"calm": True, "sad": False, "happy": True}
    # the comparison is in mean ΔElo: per unit α the random directions (α 0.01) would span -300 to +200 and swallow both
    assert table.loc["happy", "p against random directions"] == pytest.approx(2 / 6)  # two-sided: 2 (1 + 0) / (5 + 1)


def test_the_smallest_detectable_change_has_the_stated_power():
    """Sycophancy's power line: noise items flip either way at random (the random directions' median) and an effect
    moves k more one way. At the returned change the exact McNemar test at Holm's first bar rejects with at least 80 %
    probability (simulated), one item less falls short; more noise needs a larger change; more items make the same
    effect a smaller share; with few items nothing is detectable."""
    import pandas as pd
    from scipy.stats import binomtest

    from emolib.steering import sycophancy as S

    def frame(noise: int) -> pd.DataFrame:
        return pd.DataFrame({"gained": [3, 3, noise // 2, noise - noise // 2], "lost": [40, 1, noise // 2, noise // 2]},
                            index=["+a", "-a", "random direction 1", "random direction 2"])

    found = S.detectable_change(frame(10), 100)
    assert found["noise"] == 10 and found["bar"] == pytest.approx(0.05 / 4)  # the noise from the random directions alone
    rng = np.random.default_rng(0)

    def power(k: int, noise: int = 10) -> float:
        gained = rng.binomial(noise, 0.5, size=4000) + k
        return float(np.mean([binomtest(int(g), noise + k).pvalue < 0.05 / 4 and g > (noise + k) / 2 for g in gained]))

    k = round(found["change"] * 100)
    assert power(k) >= 0.78 and power(k - 1) < 0.8
    assert S.detectable_change(frame(30), 100)["change"] > found["change"]  # more noise, a larger detectable change
    assert S.detectable_change(frame(10), 200)["change"] == pytest.approx(found["change"] / 2)
    assert np.isnan(S.detectable_change(frame(10), 5)["change"])  # five items cannot reach p < 0.0125


def test_the_chapters_closing_lines_carry_each_sycophancy_designs_power():
    """summary_lines on a synthetic chapter: each sycophancy design's verdict is followed by what its null is worth."""
    import pandas as pd

    from emolib.steering import preferences as P

    changes = pd.DataFrame({"switched share change": [0.1, -0.02, -0.01], "gained": [12, 2, 3], "lost": [2, 3, 2],
                            "McNemar p": [0.01, 1.0, 1.0], "Holm p": [0.03, 1.0, 1.0], "predicted": [1, -1, 0]},
                           index=["+happy", "-happy", f"{P.NULL_PREFIX}1"])
    harsher = changes.rename(columns={"switched share change": "harsh share change"}).iloc[:2]
    shares = pd.DataFrame({"harsh": [0.1], "flattering": [0.0]}, index=["baseline"])
    lines = P.summary_lines({"split-half ρ": 0.8}, {"mean |preference|": 0.2, "mean |position bias|": 0.1},
                            {"r": 0.5, "p": 0.01}, pd.DataFrame({"outside the random range": [True]}),
                            {"r": 0.3, "ci": [0.1, 0.5], "p": 0.02}, changes, (-0.05, 0.05), shares, harsher, False,
                            n_questions=100, n_replies=4)
    assert "as predicted: +happy +10%" in lines[3] and "Power: with 100 questions, of which a median of 5 change" in lines[3]
    assert "not even all 4 moving reach" in lines[4]
    assert not any("Power" in line for line in P.summary_lines(
        {"split-half ρ": 0.8}, {"mean |preference|": 0.2, "mean |position bias|": 0.1}, {"r": 0.5, "p": 0.01},
        pd.DataFrame({"outside the random range": [True]}), {"r": 0.3, "ci": [0.1, 0.5], "p": 0.02}, changes,
        (-0.05, 0.05), shares, harsher, False))
