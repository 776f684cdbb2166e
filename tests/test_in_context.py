"""Chapter 8's controlled stimuli: the statistics on readers whose answer is planted, the bag of words' blindness
to numbers, the stimuli's own hygiene, and the model path on a tiny model."""

from __future__ import annotations

import re

import numpy as np
import pytest

from emolib.analysis import baselines as B
from emolib.analysis import in_context as I
from emolib.stories.prompts import leak_pattern, load_emotions


def _number(text: str) -> float:
    """The number a template's {x} took in `text`."""
    for template in I.stimuli()["numerical"]:
        found = re.fullmatch(re.escape(template["template"]).replace(r"\{x\}", r"([\d,]+)"), text)
        if found:
            return float(found.group(1).replace(",", ""))
    raise AssertionError(text)


def test_a_planted_numeric_dependence_is_found_with_the_right_sign():
    """A reader whose every emotion follows the number exactly as predicted gets all 24 pairs right, each at the
    exact permutation floor; one that reads the number backwards gets none; a reader blind to the number gets no
    order at all (ρ = 0, not counted as the predicted sign)."""
    predicted = {e: s for t in I.stimuli()["numerical"] for e, s in t["predicted"].items()}

    def planted(sign_of):
        return I.Reader("planted", lambda texts, emotions, positions=None: np.array(
            [[sign_of(e) * np.log(_number(t)) for e in emotions] for t in texts]))

    table = I.numerical(planted(lambda e: 1), str)
    # (an emotion predicted to rise in one template and fall in another cannot be planted both ways by one sign)
    right = I.numerical(I.Reader("right", lambda texts, emotions, positions=None: np.array(
        [[_template_sign(t, e) * np.log(_number(t)) for e in emotions] for t in texts])), str)
    assert right["predicted sign"].all() and (right["p (one-sided)"] < 0.001).all()
    counted = I.sign_count(right)
    assert (counted["hits"], counted["pairs"], counted["significant"]) == (24, 24, 24)
    assert counted["S"] == pytest.approx(24.0) and counted["p"] < 1e-3  # every template at its maximum
    assert all(t["p (one-sided, exact)"] < 1e-3 for t in counted["templates"])
    # the pairs of one template move together: a template-level shuffle, not 24 coin flips, is the null
    one_template = right[right["template"] == right["template"].iloc[0]]
    assert len(one_template) == 4
    wrong = I.numerical(I.Reader("wrong", lambda texts, emotions, positions=None: np.array(
        [[-_template_sign(t, e) * np.log(_number(t)) for e in emotions] for t in texts])), str)
    assert not wrong["predicted sign"].any() and (wrong["p (one-sided)"] > 0.99).all()
    blind = I.numerical(I.Reader("blind", lambda texts, emotions, positions=None: np.ones((len(texts), len(emotions)))), str)
    assert (blind["Spearman ρ"] == 0).all() and not blind["predicted sign"].any()
    assert len(table) == 24 and set(predicted) >= {"afraid", "calm"}


def _template_sign(text: str, emotion: str) -> int:
    for template in I.stimuli()["numerical"]:
        head = template["template"].split("{x}")[0]
        if text.startswith(head):
            return template["predicted"][emotion]
    raise AssertionError(text)


def test_the_bag_of_words_cannot_read_a_number():
    bag = B.bag_of_words(["I took the pills for a headache today", "we lost the dog on the trail",
                          "the pills and the dog and the trail", "a headache is a pill problem"])
    vectors = np.random.default_rng(0).normal(size=(171, bag.vocabulary))
    reader = I.bow_reader(bag, vectors, load_emotions())
    table = I.numerical(reader, str)
    assert (table["Spearman ρ"] == 0).all()  # every prompt of a template is the same bag of words


def test_stimuli_name_no_emotion_they_are_read_for():
    stimuli = I.stimuli()
    known = set(load_emotions())
    for item in stimuli["scenarios"] + stimuli["speaker"]["messages"]:
        assert item["emotion"] in known
        assert not leak_pattern(item["emotion"]).search(item["text"].lower()), item
    for template in stimuli["numerical"]:
        assert set(template["predicted"]) <= known and 6 <= len(template["values"]) <= 8
        for emotion in template["predicted"]:
            assert not leak_pattern(emotion).search(template["template"].lower())
    assert len(stimuli["scenarios"]) >= 12 and len({s["emotion"] for s in stimuli["scenarios"]}) == len(stimuli["scenarios"])


def test_scenario_accuracy_and_contrasts_on_planted_readers():
    items = I.stimuli()["scenarios"]
    answer = {item["text"]: item["emotion"] for item in items}
    knows = I.Reader("knows", lambda texts, emotions, positions=None: np.array(
        [[1.0 if answer[t] == e else 0.0 for e in emotions] for t in texts]))
    _, accuracy = I.scenarios(knows, str, n_perm=500)
    assert accuracy["top1"] == 1 and accuracy["p_top1"] < 0.01 and accuracy["chance_top1"] == pytest.approx(1 / 16)
    guesses = I.Reader("guesses", lambda texts, emotions, positions=None: np.random.default_rng(len(texts)).normal(
        size=(len(texts), len(emotions))))
    _, chance = I.scenarios(guesses, str, n_perm=500)
    assert chance["p_top3"] > 0.01
    assert I.sign_flip_p([1.0] * 10) == pytest.approx(2 ** -10) and I.sign_flip_p([1, -1, 1, -1]) > 0.3
    assert I.sign_test_p(24, 24) == pytest.approx(2 ** -24) and I.sign_test_p(0, 5) == 1.0
    # negation: a reader that sees "not" reads lower
    negates = I.Reader("negates", lambda texts, emotions, positions=None: np.array(
        [[-1.0 if " not " in t else 1.0 for _ in emotions] for t in texts]))
    table, contrast = I.negation(negates, str)
    assert (table["difference"] == 2).all() and contrast["p (sign-flip, one-sided)"] < 0.001
    # ... but that "not" lowers every emotion alike: nothing beyond the other emotions' drop
    assert np.allclose(table["X's difference beyond the others'"], 0.0)
    # a reader for which "not X" lowers X alone: X's drop beyond the others' is the whole drop
    specific = I.Reader("specific", lambda texts, emotions, positions=None: np.array(
        [[-1.0 if t == f"I am not {e}." else 1.0 if t == f"I am {e}." else 0.0 for e in emotions] for t in texts]))
    table, _ = I.negation(specific, str)
    assert np.allclose(table["X's difference beyond the others'"], 2.0)
    # a contrast significantly the other way is named so, not folded into "not detected"
    reversed_ = I._contrast("r", "x", -np.ones(8))
    assert reversed_["p (sign-flip, one-sided)"] == 1.0 and reversed_["p (the opposite direction)"] == pytest.approx(2 ** -8)
    assert "opposite" in I.verdict(reversed_["p (sign-flip, one-sided)"], p_opposite=reversed_["p (the opposite direction)"])
    assert I.verdict(0.5, p_opposite=0.5) == "not detected" and I.verdict(0.01, p_opposite=0.99) == "as predicted"


def test_the_model_path_reads_the_right_positions(tiny_gemma3):
    """On a tiny model: a reading is the residual at the read position projected on unit vectors (checked against
    the hidden states transformers returns), the user's last token is located inside the chat template, and the
    whole chapter's report runs."""
    import torch

    from emolib.extraction.vectors import EmotionVectors

    loaded = tiny_gemma3
    emotions = sorted({e for t in I.stimuli()["numerical"] for e in t["predicted"]} | {s["emotion"] for s in I.stimuli()["scenarios"]}
                      | set(I.stimuli()["negation"]) | {e for p in I.stimuli()["binding"]["pairs"] for e in p}
                      | {m["emotion"] for m in I.stimuli()["speaker"]["messages"]} | set(I.stimuli()["speaker"]["caring"]))
    d, n_layers = loaded.model.config.hidden_size, loaded.model.config.num_hidden_layers
    vectors = EmotionVectors(emotions, tuple(range(n_layers)), torch.randn(len(emotions), n_layers, d, generator=torch.Generator().manual_seed(0)))
    text = I.frame(loaded.tokenizer, "I am calm and happy")
    ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        states = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
    reading = I.readings(loaded, vectors, [text], ["calm"], 1)
    expected = states[2][0, -1].double().numpy() @ vectors.direction("calm", 1).double().numpy()
    assert reading[0, 0] == pytest.approx(expected, rel=1e-4)
    position = I._last_token_of(loaded.tokenizer, text, "I am calm and happy")
    tokens = loaded.tokenizer.convert_ids_to_tokens(ids[0])
    assert tokens[position] == "happy" and position < len(tokens) - 1
    found = I.report(loaded, vectors, 1, [I.model_reader(loaded, vectors, 1, "tiny"),
                                          I.model_reader(loaded, vectors, 0, "tiny layer 0")], n_perm=50)
    assert found.signs["tiny"]["pairs"] == 24 and len(found.contrast_table) == 8
    assert set(found.results()) >= {"signs", "scenarios", "contrasts"} and set(found.results()["signs"]) == {"tiny", "tiny layer 0"}
    summary = I.summary_lines(found, "tiny")
    assert len(summary) == 7 and "layer 0:" in summary[2] and "The model's layer 0:" in summary[0]
    assert summary[-1].startswith("- Negation beyond a generic effect")
    # a reader of words may come first: its speaker contrasts are the designs' items, all zero
    words = I.Reader("words", lambda texts, emotions, positions=None: np.zeros((len(texts), len(emotions))))
    blind = I.report(loaded, vectors, 1, [words], n_perm=20).contrasts["words"]
    assert [c["items"] for c in blind[2:]] == [c["items"] for c in found.contrasts["tiny"][2:]]
    assert all(c["mean difference"] == 0 and c["p (sign-flip, one-sided)"] == 1.0 for c in blind[2:])
    # layer 0 is read through the model (its own readings, not the analysis layer's)
    assert not np.allclose(found.negation["tiny"]["difference"], found.negation["tiny layer 0"]["difference"])
    # the six tests are one family: a verdict at p < 0.05 says whether it survives Holm's correction over them
    found.signs["tiny"]["p"], found.scenario_accuracy["tiny"]["p_top1"] = 0.012, 0.0007
    for contrast, p in zip(found.contrasts["tiny"], (0.04, 0.6, 0.3, 0.9)):
        contrast["items"], contrast["p (sign-flip, one-sided)"] = max(contrast["items"], 1), p
    lines = I.summary_lines(found, "tiny")
    assert "as predicted; Holm over the chapter's 6 tests p = 0.0042, and after it" in lines[1]
    assert "as predicted; Holm over the chapter's 6 tests p = 0.06, not after it" in lines[0]
    assert "as predicted; Holm over the chapter's 6 tests p = 0.16, not after it" in lines[2]
    assert "Holm" not in lines[3] and "not detected" in lines[3]


def test_the_chapters_readers_put_layer_0_beside_the_model():
    """The model at its layer reads first (its tests count), the bag of words reads raw words, and the model's layer 0
    stands beside them where its vectors exist (not twice when the analysis layer is 0 itself)."""
    class Vectors:
        emotions = ["calm"]

        def __init__(self, layers):
            self.layers = layers

    readers = I.standard_readers(None, Vectors((0, 1, 2)), 2, "m", None, np.ones((1, 3)))
    assert [(r.name, r.framed) for r in readers] == [("m", True), ("bag of words", False), ("m layer 0", True)]
    assert [r.name for r in I.standard_readers(None, Vectors((1, 2)), 2, "m", None, np.ones((1, 3)))] == ["m", "bag of words"]
    assert [r.name for r in I.standard_readers(None, Vectors((0, 1)), 0, "m", None, np.ones((1, 3)))] == ["m", "bag of words"]
