"""Controlled stimuli (chapter 8): questions only a model, not its stories' words, can answer (issue 36).

The geometry of chapter 4 could come from the stories' words (`emolib.analysis.baselines`). Anthropic answered
that objection with prompts in which the words cannot carry the answer; this module asks the same questions of
any model, each with a prediction written before anything ran (`emolib/data/in_context.json`):

- **numerical intensity**: one template, one number changed (a medicine dose, hours without water, ...): does an
  emotion's reading rise or fall with the number as predicted? Spearman ρ per (template, emotion), an exact
  permutation p in the predicted direction, and the count of pairs with the predicted sign (a sign test);
- **implicit scenarios**: situations that imply one emotion without naming it: top-1 / top-3 accuracy of the
  reading among the scenarios' emotions, against chance and a label-permutation p;
- **negation** ("I am X." against "I am not X."), **person binding** ("A felt X, but B felt Y. ... A": X read at
  A's mention, Y at B's) and **speaker** (an emotional user message read at its last token and where the
  assistant's reply begins): each a pre-registered contrast over items with an exact sign-flip p.

Every prompt is read where the reply begins — the user message in a plain "User: … / Assistant:" frame for a
base model, the chat template for an instruct model (`frame`) — except person binding, read at the name's last
token in plain text. A reading is the residual at that position, at one layer, projected on each emotion's unit
vector. Beside each, the bag of words (chapter 4's, fitted on the stories) reads the same prompts: numbers are
not words to it, so it cannot follow a number, and binding and speaker differ in no word for it (the same text read
at two positions, or two texts that differ in a name); for negation it reads the word "not" (whatever "not" projects
on each emotion's vector is what it reports), and the scenarios are where it can compete.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from ..errors import EmolibError
from ..models.hooks import decoder_layers, forward_hooks, text_decoder
from ..stats import holm
from ..stories.prompts import with_bos

LEVEL = 0.05  # a contrast or a pair counts when its one-sided p is below this (fixed with the predictions)


@lru_cache(maxsize=1)
def stimuli() -> dict[str, Any]:
    """The stimuli and their predictions (emolib/data/in_context.json)."""
    return json.loads(resources.files("emolib").joinpath("data", "in_context.json").read_text())


def restrict(spec: dict[str, Any], emotions: Sequence[str]) -> dict[str, Any]:
    """The stimuli whose emotions these vectors hold (vectors of a few emotions run what they can; a design left
    with too little to test is empty, and the chapter says so). The dose template keeps its place when it survives."""
    have = set(emotions)
    kept = []
    for index, template in enumerate(spec["numerical"]):
        predicted = {e: v for e, v in template["predicted"].items() if e in have}
        if predicted:
            kept.append((index, {**template, "predicted": predicted}))
    dose = spec["dose_tokens"]
    slot = next((k for k, (index, _) in enumerate(kept) if index == dose["template"]), 0 if kept else None)
    if slot is None:
        dose = {**dose, "template": None, "emotion": ""}
    else:
        predicted = kept[slot][1]["predicted"]
        dose = {**dose, "template": slot, "emotion": dose["emotion"] if dose["emotion"] in predicted else next(iter(predicted))}
    return {**spec, "numerical": [t for _, t in kept], "dose_tokens": dose,
            "scenarios": [i for i in spec["scenarios"] if i["emotion"] in have],
            "negation": [e for e in spec["negation"] if e in have],
            "binding": {**spec["binding"], "pairs": [p for p in spec["binding"]["pairs"] if set(p) <= have]},
            "speaker": {**spec["speaker"], "messages": [m for m in spec["speaker"]["messages"] if m["emotion"] in have],
                        "caring": [e for e in spec["speaker"]["caring"] if e in have]}}


def frame(tokenizer: Any, user_text: str) -> str:
    """`user_text` as a user's message, rendered up to where the assistant's reply begins: the chat template with
    its generation prompt for an instruct model, "User: … / Assistant:" (after `<bos>`) for a base model."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
    return with_bos(tokenizer, f"User: {user_text}\nAssistant:")


def plain(tokenizer: Any, text: str) -> str:
    return with_bos(tokenizer, text)


class _Stop(Exception):
    """Ends a forward pass after the deepest block read."""


@torch.inference_mode()
def residuals(loaded, texts: Sequence[str], layers: Sequence[int], positions: Sequence[int | None] | None = None,
              every_position: bool = False) -> list[np.ndarray]:
    """Per text (rendered already), the residual stream (block outputs) at `layers`: at one position (None: the
    last token; a negative index counts from the end) as (L, d), or `every_position` as (T, L, d). One forward
    pass per text, stopped after the deepest block (no LM head)."""
    blocks = decoder_layers(loaded.model)
    layers = [int(layer) for layer in layers]
    if not layers or max(layers) >= len(blocks) or min(layers) < 0:
        raise EmolibError(f"layers must lie in 0..{len(blocks) - 1}, got {layers}")
    deepest, out = max(layers), []
    positions = list(positions) if positions is not None else [None] * len(texts)
    for text, position in zip(texts, positions):
        ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(loaded.device)
        captured: dict[int, torch.Tensor] = {}

        def hook(layer: int):
            def keep(module, args, output):
                captured[layer] = (output[0] if isinstance(output, tuple) else output)[0].float().cpu()
                if layer == deepest:
                    raise _Stop
            return keep

        with forward_hooks((blocks[layer], hook(layer)) for layer in dict.fromkeys(layers)):
            try:
                text_decoder(loaded.model)(input_ids=ids, use_cache=False)
            except _Stop:
                pass
        stack = torch.stack([captured[layer] for layer in layers], dim=1)  # (T, L, d)
        out.append(stack.numpy().astype(np.float64) if every_position else
                   stack[-1 if position is None else position].numpy().astype(np.float64))
    return out


def units(vectors, emotions: Sequence[str], layer: int) -> np.ndarray:
    """(E, d) unit vectors of `emotions` at `layer`."""
    return np.stack([vectors.direction(e, layer).numpy() for e in emotions]).astype(np.float64)


def readings(loaded, vectors, texts: Sequence[str], emotions: Sequence[str], layer: int,
             positions: Sequence[int | None] | None = None) -> np.ndarray:
    """(N, E): each text's residual at `layer` (at its position) projected on each emotion's unit vector."""
    hidden = np.stack([h[0] for h in residuals(loaded, texts, [layer], positions)])
    return hidden @ units(vectors, emotions, layer).T


# ---------------------------------------------------------------------------------------------------
# Statistics


def ranks(readings: Sequence[float]) -> np.ndarray:
    """Average ranks, with readings closer than a millionth of their largest magnitude counted as ties: the last
    bits a reader's CPU changes must not reorder prompts that a model barely tells apart."""
    from scipy.stats import rankdata

    x = np.asarray(readings, np.float64)
    scale = float(np.max(np.abs(x))) if x.size else 0.0
    return rankdata(np.round(x / scale, 6) if scale > 0 else x)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy.stats import rankdata

    a, b = rankdata(x), ranks(y)
    if np.std(b) == 0 or np.std(a) == 0:
        return 0.0  # a reading that does not change with the number: no ordering at all
    return float(np.corrcoef(a, b)[0, 1])


@lru_cache(maxsize=None)
def _orders(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))))


def spearman_p(values: Sequence[float], scores: Sequence[float], sign: int) -> float:
    """Exact one-sided permutation p of Spearman's ρ in the predicted direction (all orders of up to 8 values)."""
    from scipy.stats import rankdata

    if len(values) > 8:
        raise EmolibError("the exact permutation p takes at most 8 values per template")
    a, b = rankdata(values), ranks(scores)
    if np.std(a) == 0 or np.std(b) == 0:
        return 1.0  # no order to test
    a, b = (a - a.mean()) / a.std(), (b - b.mean()) / b.std()
    null = sign * (b[_orders(len(b))] @ a) / len(a)  # every order of the scores' ranks against the values'
    return float(np.mean(null >= sign * float(a @ b) / len(a) - 1e-12))


def sign_flip_p(differences: Sequence[float]) -> float:
    """One-sided p that the mean difference exceeds 0 under exchangeable signs: exact over all 2^n sign patterns up
    to n = 16, else a Monte Carlo estimate from 100,000 random ones (seeded, with the observed pattern counted)."""
    d = np.asarray(differences, np.float64)
    observed = d.mean()
    if len(d) <= 16:  # exact: every sign pattern, the observed one among them
        signs = np.array(list(itertools.product((1, -1), repeat=len(d))))
        return float(np.mean((signs * d).mean(axis=1) >= observed - 1e-12))
    signs = np.random.default_rng(0).choice((1, -1), size=(100_000, len(d)))
    return float((1 + ((signs * d).mean(axis=1) >= observed - 1e-12).sum()) / (len(signs) + 1))


def sign_test_p(hits: int, n: int) -> float:
    """One-sided binomial p of at least `hits` predicted signs out of `n` when each sign is a coin flip."""
    return float(sum(math.comb(n, k) for k in range(hits, n + 1)) / 2 ** n)


# ---------------------------------------------------------------------------------------------------
# The four designs


@dataclass
class Reader:
    """What reads a prompt: the model at a layer (its emotion vectors), or the bag of words (its story vectors)."""

    name: str
    read: Any  # (texts, emotions, positions | None) -> (N, E)
    framed: bool = False  # reads the prompt inside the model's frame (a model's layer), not its raw words


def model_reader(loaded, vectors, layer: int, name: str = "model") -> Reader:
    return Reader(name, lambda texts, emotions, positions=None: readings(loaded, vectors, texts, emotions, layer, positions),
                  framed=True)


def standard_readers(loaded, vectors, layer: int, model: str, bow, bow_vectors: np.ndarray) -> list[Reader]:
    """Chapter 8's readers: the model at the analysis layer (first: the one whose tests count), the bag of words of the
    stories (words without a model), and the model's layer 0 where its vectors exist (the embeddings after one block: a
    number or a "not" is one attention step away there, so what layer 0 already reads is not the layers' doing)."""
    readers = [model_reader(loaded, vectors, layer, name=model), bow_reader(bow, bow_vectors, vectors.emotions)]
    if 0 in vectors.layers and layer != 0:
        readers.append(model_reader(loaded, vectors, 0, name=f"{model} layer 0"))
    return readers


def bow_reader(bow, bow_vectors: np.ndarray, emotions_all: Sequence[str]) -> Reader:
    """The bag of words reading the raw text (no frame: it reads words): TF-IDF row projected on the bag of words'
    unit emotion vectors (chapter 4's, from the stories)."""
    unit = np.asarray(bow_vectors, np.float64)
    unit = unit / np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-300)
    index = {e: i for i, e in enumerate(emotions_all)}

    def read(texts, emotions, positions=None):
        rows = bow.transform(texts).astype(np.float64)
        return rows @ unit[[index[e] for e in emotions]].T
    return Reader("bag of words", read)


def numerical(reader: Reader, render, spec: dict[str, Any] | None = None) -> pd.DataFrame:
    """Per (template, emotion): the prediction, Spearman ρ of the reading with the number, the exact one-sided p in the
    predicted direction, and whether the sign came out as predicted (ρ = 0 counts as not). The table's `attrs` hold the
    test that counts (`template_test`): the emotions of one template read the same prompts, so the template, not the
    pair, is the unit."""
    rows, per_template = [], []
    for template in (spec or stimuli())["numerical"]:
        emotions = list(template["predicted"])
        texts = [render(template["template"].format(x=f"{x:,}")) for x in template["values"]]
        scores = reader.read(texts, emotions)
        signs = np.array([int(template["predicted"][e]) for e in emotions])
        for j, emotion in enumerate(emotions):
            rho = spearman(template["values"], scores[:, j])
            rows.append({"template": template["name"], "emotion": emotion, "predicted": "rises" if signs[j] > 0 else "falls",
                         "Spearman ρ": rho, "p (one-sided)": spearman_p(template["values"], scores[:, j], int(signs[j])),
                         "predicted sign": bool(signs[j] * rho > 0)})
        per_template.append((template["name"], template["values"], scores, signs))
    table = pd.DataFrame(rows, columns=["template", "emotion", "predicted", "Spearman ρ", "p (one-sided)", "predicted sign"])
    table.attrs["templates"], table.attrs["overall"] = template_test(per_template)
    return table


def template_test(per_template: list[tuple[str, list, np.ndarray, np.ndarray]], draws: int = 20_000,
                  seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per template: S = Σ over its emotions of (predicted sign × Spearman ρ), with an exact one-sided p from every
    order of the template's prompts applied to all its emotions at once (one shared order keeps their dependence).
    Overall: the sum of the templates' S, its p from the templates' exact nulls drawn independently (Monte Carlo,
    the observed sum counted)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    rows, nulls, observed_total = [], [], 0.0
    for name, values, scores, signs in per_template:
        a = rankdata(values)
        a = (a - a.mean()) / a.std()
        order = np.column_stack([ranks(scores[:, j]) for j in range(scores.shape[1])])  # (values, emotions)
        spread = order.std(axis=0)
        z = np.where(spread > 0, (order - order.mean(axis=0)) / np.maximum(spread, 1e-12), 0.0)  # no order: ρ = 0
        null = ((a[_orders(len(values))] @ z) / len(a)) @ signs  # S under every order of the prompts
        observed = float(((a @ z) / len(a)) @ signs)
        rows.append({"template": name, "S = Σ sign × ρ": observed, "emotions": len(signs),
                     "p (one-sided, exact)": float(np.mean(null >= observed - 1e-12))})
        nulls.append(null)
        observed_total += observed
    if not nulls:  # no template has an emotion of these vectors
        return rows, {"S": float("nan"), "p": float("nan"), "templates": 0, "draws": draws}
    total = np.sum([null[rng.integers(0, len(null), draws)] for null in nulls], axis=0)
    return rows, {"S": observed_total, "p": float((1 + (total >= observed_total - 1e-12).sum()) / (draws + 1)),
                  "templates": len(rows), "draws": draws}


def sign_count(table: pd.DataFrame) -> dict[str, Any]:
    """The pairs with the predicted sign (descriptive: a template's emotions move together) and the test that
    counts, the templates' joint permutation (`template_test`)."""
    hits, n = int(table["predicted sign"].sum()), len(table)
    overall = table.attrs.get("overall") or {}
    return {"hits": hits, "pairs": n, "significant": int((table["p (one-sided)"] < LEVEL).sum()),
            "S": overall.get("S"), "p": overall.get("p", sign_test_p(hits, n)),
            "templates": table.attrs.get("templates", [])}


def dose_by_layer(loaded, vectors, render, layers: Sequence[int], spec: dict[str, Any] | None = None) -> pd.DataFrame:
    """The medicine-dose template at every layer: ρ of each predicted emotion's reading with the dose."""
    spec = spec or stimuli()
    if spec["dose_tokens"]["template"] is None:
        return pd.DataFrame(columns=["layer", "emotion", "predicted", "Spearman ρ"])
    template = spec["numerical"][spec["dose_tokens"]["template"]]
    texts = [render(template["template"].format(x=f"{x:,}")) for x in template["values"]]
    hidden = np.stack(residuals(loaded, texts, layers))  # (N, L, d)
    rows = []
    for slot, layer in enumerate(layers):
        scores = hidden[:, slot] @ units(vectors, list(template["predicted"]), layer).T
        for j, (emotion, sign) in enumerate(template["predicted"].items()):
            rows.append({"layer": int(layer), "emotion": emotion, "predicted": "rises" if sign > 0 else "falls",
                         "Spearman ρ": spearman(template["values"], scores[:, j])})
    return pd.DataFrame(rows)


def dose_tokens(loaded, vectors, render, layer: int, stimuli_spec: dict[str, Any] | None = None) -> pd.DataFrame:
    """Token by token, the low and the high dose (e.g. 1,000 against 8,000 mg): one emotion's reading at each
    token of the two prompts, side by side where the tokens agree."""
    every = stimuli_spec or stimuli()
    spec = every["dose_tokens"]
    if spec["template"] is None:
        return pd.DataFrame()
    template = every["numerical"][spec["template"]]
    texts = [render(template["template"].format(x=f"{spec[k]:,}")) for k in ("low", "high")]
    unit = units(vectors, [spec["emotion"]], layer)[0]
    columns = {}
    for key, text in zip(("low", "high"), texts):
        ids = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
        values = residuals(loaded, [text], [layer], every_position=True)[0][:, 0] @ unit
        columns[key] = pd.Series(values, index=[loaded.tokenizer.decode([i]) for i in ids])
    low, high = columns["low"], columns["high"]
    rows = [{"token (low)": a, "token (high)": b, f"{spec['emotion']} ({spec['low']:,} mg)": x,
             f"{spec['emotion']} ({spec['high']:,} mg)": y}
            for (a, x), (b, y) in itertools.zip_longest(low.items(), high.items(), fillvalue=("", np.nan))]
    table = pd.DataFrame(rows)
    table["difference (high − low)"] = table.iloc[:, 3] - table.iloc[:, 2]
    return table


def _zscore(matrix: np.ndarray) -> np.ndarray:
    centred = matrix - matrix.mean(axis=0, keepdims=True)
    return centred / np.maximum(centred.std(axis=0, keepdims=True), 1e-12)


def scenarios(reader: Reader, render, n_perm: int = 10_000, seed: int = 0,
              spec: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scenario × emotion matrix (each emotion's reading standardised over the scenarios, so an emotion whose
    vector reads high on every prompt does not win every row) and its accuracy: top-1 and top-3 of the right
    emotion among the scenarios' emotions, with chance and a p from shuffling which scenario is which emotion."""
    items = (spec or stimuli())["scenarios"]
    emotions = list(dict.fromkeys(item["emotion"] for item in items))
    if len(emotions) < 3:  # vectors of a few emotions: no ranking to test
        return pd.DataFrame(), {"reader": reader.name, "scenarios": len(items), "emotions": len(emotions), "top1": np.nan,
                                "top3": np.nan, "chance_top1": np.nan, "chance_top3": np.nan, "p_top1": np.nan,
                                "p_top3": np.nan, "mean_rank": np.nan, "hits_top1": []}
    matrix = _zscore(reader.read([render(item["text"]) for item in items], emotions))
    truth = np.array([emotions.index(item["emotion"]) for item in items])
    order = np.argsort(-matrix, axis=1)
    rank = np.array([int(np.flatnonzero(order[i] == truth[i])[0]) for i in range(len(items))])
    rng = np.random.default_rng(seed)

    def hits(labels: np.ndarray, k: int) -> float:
        return float(np.mean([labels[i] in order[i, :k] for i in range(len(items))]))

    null1 = np.array([hits(rng.permutation(truth), 1) for _ in range(n_perm)])
    null3 = np.array([hits(rng.permutation(truth), 3) for _ in range(n_perm)])
    top1, top3 = float(np.mean(rank < 1)), float(np.mean(rank < 3))
    table = pd.DataFrame(matrix, index=pd.Index([f"{item['emotion']}: {item['text'][:60]}…" for item in items],
                                                name="scenario (its emotion)"), columns=emotions)
    return table, {"reader": reader.name, "scenarios": len(items), "emotions": len(emotions), "top1": top1, "top3": top3,
                   "chance_top1": 1 / len(emotions), "chance_top3": 3 / len(emotions),
                   "p_top1": float((1 + (null1 >= top1 - 1e-12).sum()) / (n_perm + 1)),
                   "p_top3": float((1 + (null3 >= top3 - 1e-12).sum()) / (n_perm + 1)),
                   "mean_rank": float(rank.mean() + 1), "hits_top1": [bool(r < 1) for r in rank]}


def against_reader(model: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """The model's top-1 hits against another reader's on the same scenarios: the difference in accuracy with an exact
    one-sided p from swapping the two readers' results scenario by scenario (predicted: the model does better)."""
    a, b = np.asarray(model["hits_top1"], float), np.asarray(other["hits_top1"], float)
    if not len(a) or len(a) != len(b):
        return {"difference": float("nan"), "p": float("nan"), "scenarios differing": 0}
    differing = a != b
    if not differing.any():
        return {"difference": 0.0, "p": 1.0, "scenarios differing": 0}
    return {"difference": float(a.mean() - b.mean()), "p": sign_flip_p((a - b)[differing]),
            "scenarios differing": int(differing.sum())}


def negation(reader: Reader, render, spec: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """"I am X." against "I am not X.": predicted, X reads higher when affirmed (difference > 0 for every item)."""
    words = (spec or stimuli())["negation"]
    if not words:
        return pd.DataFrame(columns=["emotion", "I am X", "I am not X", "difference", "the other emotions' difference (mean)",
                                     "X's difference beyond the others'"]), _contrast(
            reader.name, "negation: X reads higher in 'I am X' than in 'I am not X'", np.zeros(0))
    affirmed = reader.read([render(f"I am {w}.") for w in words], words)
    negated = reader.read([render(f"I am not {w}.") for w in words], words)
    difference = np.diag(affirmed) - np.diag(negated)
    # a generic effect of "not" (every emotion's reading drops alike) would pass the test above; the specific one is
    # X's own drop beyond the other emotions' drop on the same two sentences (described beside, not pre-registered)
    drops = affirmed - negated  # (items, emotions)
    others = (drops.sum(axis=1) - difference) / max(len(words) - 1, 1)
    table = pd.DataFrame({"emotion": words, "I am X": np.diag(affirmed), "I am not X": np.diag(negated),
                          "difference": difference, "the other emotions' difference (mean)": others,
                          "X's difference beyond the others'": difference - others})
    return table, _contrast(reader.name, "negation: X reads higher in 'I am X' than in 'I am not X'", difference)


def binding(reader: Reader, render_plain, stimuli_spec: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """"A felt X, but B felt Y. A few minutes later, A" and the same ending in B: predicted, X reads higher at A's
    mention than at B's and Y higher at B's than at A's. Each emotion pair is told with both names in both roles and
    both emotions in both places of the sentence (so neither a name nor the order of valence can carry the contrast);
    the unit of the test is the emotion pair (its mean over those tellings): an exact sign-flip over the pairs."""
    spec = (stimuli_spec or stimuli())["binding"]
    stem = spec["template"].replace("{first}", "")
    rows = []
    for x, y in spec["pairs"]:
        values = []
        for (a, b), (feel_first, feel_second) in itertools.product(spec["names"], ((x, y), (y, x))):
            for first, second in ((a, b), (b, a)):
                texts = [render_plain(stem.format(a=first, b=second, x=feel_first, y=feel_second) + name)
                         for name in (first, second)]
                scores = reader.read(texts, [feel_first, feel_second])  # rows: read at first, at second
                values.append((scores[0, 0] - scores[1, 0]) + (scores[1, 1] - scores[0, 1]))
        rows.append({"emotion pair": f"{x} / {y}", "tellings": len(values), "difference (mean)": float(np.mean(values))})
    table = pd.DataFrame(rows, columns=["emotion pair", "tellings", "difference (mean)"])
    return table, _contrast(reader.name, "binding: each emotion reads higher at the mention of the person who felt it",
                            table["difference (mean)"].to_numpy())


SPEAKER_PREDICTIONS = ("speaker: the user's emotion reads higher at the user's last token (beyond neutral messages)",
                       "speaker: caring emotions rise where the assistant's reply begins (beyond neutral messages)")


def speaker_blind(name: str, stimuli_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The speaker contrasts of a reader of words: the same words at both positions, so every difference is zero."""
    spec = stimuli_spec["speaker"]
    items = len(spec["messages"])
    return {"user's emotion follows the speaker": _contrast(name, SPEAKER_PREDICTIONS[0], np.zeros(items)),
            "caring rises at the assistant's turn": _contrast(name, SPEAKER_PREDICTIONS[1],
                                                              np.zeros(items if spec["caring"] else 0))}


def speaker(reader: Reader, render, tokenizer: Any, stimuli_spec: dict[str, Any] | None = None
            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """An emotional user message read at its own last token and where the assistant's reply begins, each contrast
    taken against the same two positions of neutral user messages (a difference in differences: a reading that only
    grows or shrinks from one position to the other cancels). Predicted: (1) the user's emotion reads higher at the
    user's last token than at the assistant's first, beyond what neutral messages show (the reading follows who
    speaks); (2) the caring emotions (compassionate, sympathetic, kind, loving: an assistant's reaction) rise from the
    user's last token to the assistant's first more than after a neutral message."""
    spec = (stimuli_spec or stimuli())["speaker"]
    emotions = list(dict.fromkeys([m["emotion"] for m in spec["messages"]] + spec["caring"]))

    def positions(text: str) -> tuple[str, list[int]]:
        rendered = render(text)
        return rendered, [_last_token_of(tokenizer, rendered, text), len(tokenizer(rendered, add_special_tokens=False)["input_ids"]) - 1]

    def read(texts: list[str]) -> np.ndarray:  # (N, 2 positions, emotions)
        rendered = [positions(t) for t in texts]
        return np.stack([reader.read([r, r], emotions, at) for r, at in rendered])

    column_user = "user's emotion: user's last − assistant's first, beyond neutral"
    column_caring = "caring: assistant's first − user's last, beyond neutral"
    prediction_user, prediction_caring = SPEAKER_PREDICTIONS
    if not spec["messages"]:  # no message's emotion is among these vectors
        return pd.DataFrame(columns=["message", "emotion", column_user, column_caring]), {
            "user's emotion follows the speaker": _contrast(reader.name, prediction_user, np.zeros(0)),
            "caring rises at the assistant's turn": _contrast(reader.name, prediction_caring, np.zeros(0))}
    emotional, neutral = read([m["text"] for m in spec["messages"]]), read(spec["neutral"])
    shift = neutral[:, 0] - neutral[:, 1]  # (neutral, emotions): user's last minus assistant's first
    caring = [emotions.index(e) for e in spec["caring"]]
    rows = []
    for item, values in zip(spec["messages"], emotional):
        j = emotions.index(item["emotion"])
        rows.append({"message": item["text"][:70] + "…", "emotion": item["emotion"],
                     column_user: float((values[0, j] - values[1, j]) - shift[:, j].mean()),
                     column_caring: float(np.mean((values[1, caring] - values[0, caring]) + shift[:, caring].mean(axis=0)))
                     if caring else float("nan")})
    table = pd.DataFrame(rows)
    caring_differences = table[column_caring].to_numpy() if caring else np.zeros(0)
    return table, {"user's emotion follows the speaker": _contrast(reader.name, prediction_user, table[column_user].to_numpy()),
                   "caring rises at the assistant's turn": _contrast(reader.name, prediction_caring, caring_differences)}


def _last_token_of(tokenizer: Any, rendered: str, message: str) -> int:
    """The index of the token that ends `message` inside `rendered` (the user's last token): the last token that begins
    inside the message (a final "." merged with the "\n" after it still counts as the message's)."""
    at = rendered.rfind(message)
    if at < 0:
        raise EmolibError("the user's message is not inside its rendered prompt; the chat template changed it")
    end = at + len(message)
    spans = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    inside = [i for i, (start, stop) in enumerate(spans) if start < end and stop > start and stop > at]
    if not inside:
        raise EmolibError("cannot locate the user's message among the prompt's tokens")
    return inside[-1]


def _contrast(reader: str, prediction: str, differences: np.ndarray) -> dict[str, Any]:
    differences = np.asarray(differences, np.float64)
    if not len(differences):  # no stimulus of this design has its emotions in these vectors
        return {"reader": reader, "prediction": prediction, "items": 0, "mean difference": float("nan"),
                "items in the predicted direction": 0, "p (sign-flip, one-sided)": float("nan")}
    moved = bool(np.any(differences != 0))
    return {"reader": reader, "prediction": prediction, "items": int(len(differences)),
            "mean difference": float(differences.mean()), "items in the predicted direction": int((differences > 0).sum()),
            "p (sign-flip, one-sided)": sign_flip_p(differences) if moved else 1.0,
            # the same test the other way: "not detected" and "the opposite of the prediction" are different results
            "p (the opposite direction)": sign_flip_p(-differences) if moved else 1.0}


def verdict(p: float, level: float = LEVEL, p_opposite: float = float("nan")) -> str:
    """The pre-registered verdict; a result significantly the other way (`p_opposite`, the one-sided p in the
    direction not predicted) is named as such instead of folded into "not detected"."""
    if p != p:
        return "not computed (no stimulus has its emotions in these vectors)"
    if p < level:
        return "as predicted"
    if p_opposite < level:
        return (f"not as predicted: the opposite direction (one-sided p that way = {p_opposite:.3g}; not pre-registered, "
                "uncorrected)")
    return "not detected"


# ---------------------------------------------------------------------------------------------------
# Everything chapter 8 shows, in one call


@dataclass
class InContextReport:
    """Chapter 8's tables per reader (the model, the bag of words) and what it saves."""

    layer: int
    numerical: dict[str, pd.DataFrame]
    signs: dict[str, dict[str, Any]]
    dose_layers: pd.DataFrame
    dose_tokens: pd.DataFrame
    scenario_matrix: dict[str, pd.DataFrame]
    scenario_accuracy: dict[str, dict[str, Any]]
    negation: dict[str, pd.DataFrame]
    binding: dict[str, pd.DataFrame]
    speaker: dict[str, pd.DataFrame]
    contrasts: dict[str, list[dict[str, Any]]]  # per reader: negation, binding, the two speaker contrasts

    @property
    def sign_table(self) -> pd.DataFrame:
        return pd.DataFrame({reader: {"pairs with the predicted sign": f"{s['hits']} of {s['pairs']}",
                                      f"pairs with p < {LEVEL} on their own": s["significant"],
                                      "S = Σ sign × ρ over the templates": s["S"],
                                      "p (templates' joint permutation, one-sided)": s["p"]}
                             for reader, s in self.signs.items()}).T

    @property
    def template_table(self) -> pd.DataFrame:
        return pd.concat({reader: pd.DataFrame(s["templates"]).set_index("template") for reader, s in self.signs.items()},
                         axis=1)

    @property
    def numerical_side_by_side(self) -> pd.DataFrame:
        first, *others = self.numerical
        table = self.numerical[first].rename(columns={"Spearman ρ": f"ρ ({first})", "p (one-sided)": f"p ({first})",
                                                      "predicted sign": f"predicted sign ({first})"})
        for reader in others:
            table[f"ρ ({reader})"] = self.numerical[reader]["Spearman ρ"].to_numpy()
        return table

    @property
    def accuracy_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.scenario_accuracy).T

    @property
    def contrast_table(self) -> pd.DataFrame:
        rows = [{**c, "verdict": verdict(c["p (sign-flip, one-sided)"], p_opposite=c.get("p (the opposite direction)", np.nan))}
                for cs in self.contrasts.values() for c in cs]
        return pd.DataFrame(rows).set_index(["prediction", "reader"])

    def results(self) -> dict[str, Any]:
        """Chapter 8's key numbers (`emolib.book.results.InContextResults`)."""
        return {"layer": self.layer, "signs": self.signs,
                "numerical": {r: t.to_dict("records") for r, t in self.numerical.items()},
                "scenarios": self.scenario_accuracy, "contrasts": self.contrasts,
                "dose_by_layer": self.dose_layers.to_dict("records")}


def report(loaded, vectors, layer: int, readers: Sequence[Reader], n_perm: int = 10_000, seed: int = 0) -> InContextReport:
    """Every design for every reader (`readers[0]` the model; a reader of words, such as the bag of words, reads the
    raw text of the same prompts, since a frame's words carry no emotion; `standard_readers` builds the chapter's)."""
    tokenizer = loaded.tokenizer
    spec = restrict(stimuli(), vectors.emotions)
    numerical_tables, signs, matrices, accuracy, negations, bindings, speakers, contrasts = {}, {}, {}, {}, {}, {}, {}, {}
    for reader in readers:
        render = (lambda text: frame(tokenizer, text)) if reader.framed else (lambda text: text)
        render_plain = (lambda text: plain(tokenizer, text)) if reader.framed else (lambda text: text)
        numerical_tables[reader.name] = numerical(reader, render, spec)
        signs[reader.name] = sign_count(numerical_tables[reader.name])
        matrices[reader.name], accuracy[reader.name] = scenarios(reader, render, n_perm, seed, spec)
        negations[reader.name], negation_contrast = negation(reader, render, spec)
        bindings[reader.name], binding_contrast = binding(reader, render_plain, spec)
        if reader.framed:
            speakers[reader.name], speaker_contrasts = speaker(reader, render, tokenizer, spec)
        else:  # the same words at both positions: a reader of words cannot tell them apart
            speaker_contrasts = speaker_blind(reader.name, spec)
        contrasts[reader.name] = [negation_contrast, binding_contrast, *speaker_contrasts.values()]
    render = lambda text: frame(tokenizer, text)  # noqa: E731
    return InContextReport(layer, numerical_tables, signs, dose_by_layer(loaded, vectors, render, vectors.layers, spec),
                           dose_tokens(loaded, vectors, render, layer, spec), matrices, accuracy, negations, bindings, speakers,
                           contrasts)


def summary_lines(found: InContextReport, model: str) -> list[str]:
    """The chapter's closing verdicts, one line per design, computed from its numbers (a design none of whose
    emotions these vectors hold says so instead). The model at the analysis layer is what the tests judge; the bag of
    words and the model's layer 0 stand beside each as what words, and one block of context, already read."""
    signs, words = found.signs[model], found.signs.get("bag of words")
    first = f"{model} layer 0"
    signs0 = found.signs.get(first)
    acc = found.scenario_accuracy[model]
    # the chapter's tests as one family: each verdict at p < LEVEL as pre-registered, and whether it survives Holm's
    # correction over all of them (six tests at p < 0.05 would find one by chance a quarter of the time)
    bow = found.scenario_accuracy.get("bag of words")
    paired = against_reader(acc, bow) if bow and acc["top1"] == acc["top1"] else None
    family = [signs["p"] if signs["pairs"] else float("nan"), acc["p_top1"], paired["p"] if paired else float("nan"),
              *[c["p (sign-flip, one-sided)"] if c["items"] else float("nan") for c in found.contrasts[model]]]
    held, tested = holm(family), sum(p == p for p in family)  # holm leaves the untested (NaN) out of the family

    def judged(index: int, p_opposite: float = float("nan")) -> str:
        p = family[index]
        if p != p or p >= LEVEL:
            return verdict(p, p_opposite=p_opposite)
        after = "and after" if held[index] < LEVEL else "not after"
        return f"{verdict(p)}; Holm over the chapter's {tested} tests p = {held[index]:.3g}, {after} it"

    if signs["pairs"]:
        lines = [f"- A number in the prompt: {signs['hits']} of {signs['pairs']} (template, emotion) pairs moved in the "
                 f"predicted direction; over the {len(signs['templates'])} templates S = {signs['S']:+.2f} (joint permutation "
                 f"p = {signs['p']:.3g}: {judged(0)}); {signs['significant']} pairs reached p < {LEVEL} on their own."
                 + (f" The bag of words: {words['hits']} of {words['pairs']} (it cannot read a number)." if words else "")
                 + (f" The model's layer 0: {signs0['hits']} of {signs0['pairs']} (S = {signs0['S']:+.2f}, p = "
                    f"{signs0['p']:.3g})." if signs0 else "")]
    else:
        lines = ["- A number in the prompt: not computed (no template's emotions are among these vectors)."]
    if acc["top1"] != acc["top1"]:
        lines.append(f"- Implied situations: not computed (only {acc['emotions']} of the scenarios' emotions are among "
                     "these vectors; a ranking needs three).")
    else:
        acc0 = found.scenario_accuracy.get(first)
        lines.append(f"- Implied situations (predicted: the right emotion first more often than chance and than the bag of "
                     f"words): top-1 {acc['top1']:.0%} of {acc['scenarios']} against chance {acc['chance_top1']:.0%} (p = "
                     f"{acc['p_top1']:.3g}: {judged(1)}; top-3 {acc['top3']:.0%})" + (
                         f"; the bag of words: top-1 {bow['top1']:.0%}; the model minus the bag of words "
                         f"{paired['difference']:+.0%} (paired p = {paired['p']:.3g}: {judged(2)})" if paired else "")
                     + (f"; the model's layer 0: top-1 {acc0['top1']:.0%} (p = {acc0['p_top1']:.3g})" if acc0 else "") + ".")
    beside = [(name, found.contrasts[name]) for name in ("bag of words", first) if name in found.contrasts]
    for index, contrast in enumerate(found.contrasts[model], start=3):
        said = contrast["prediction"][0].upper() + contrast["prediction"][1:]
        if not contrast["items"]:
            lines.append(f"- {said}: not computed (none of its emotions are among these vectors).")
            continue
        others = "; ".join(f"{'layer 0' if name == first else name}: {c['items in the predicted direction']} of "
                           f"{c['items']}, p = {c['p (sign-flip, one-sided)']:.3g}"
                           for name, cs in beside for c in cs if c["prediction"] == contrast["prediction"] and c["items"])
        lines.append(f"- {said}: {contrast['items in the predicted direction']} "
                     f"of {contrast['items']} items in the predicted direction, mean difference {contrast['mean difference']:+.3g} "
                     f"(p = {contrast['p (sign-flip, one-sided)']:.3g}): "
                     f"{judged(index, contrast.get('p (the opposite direction)', float('nan')))}"
                     + (f" ({others})." if others else "."))
    table = found.negation.get(model)
    if table is not None and len(table):
        beyond = table["X's difference beyond the others'"].to_numpy(float)
        lines.append(f"- Negation beyond a generic effect of \"not\" (described, not pre-registered): X's own drop exceeds "
                     f"the other {len(table) - 1} emotions' mean drop on the same sentences for {int((beyond > 0).sum())} of "
                     f"{len(beyond)} emotions (mean {beyond.mean():+.3g}, sign-flip p = "
                     f"{sign_flip_p(beyond) if np.any(beyond != 0) else 1.0:.3g}).")
    return lines
