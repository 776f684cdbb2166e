"""Chapter 7's steering experiments, on top of the mechanism in emolib.steering.steer.

- **Dose-response** on neutral prompts: every (emotion, α) condition in one batched call (rows carry their
  own vector), the same seeds at every α; each continuation's projection on the steered vector read at a
  later layer, its valence by two independent readers (VADER; the Warriner lexicon), its perplexity under
  the unsteered model; means and slopes with whole-prompt bootstrap intervals (emolib.stats), the α at
  which perplexity doubles, and the smallest slope the design could detect.
- **The blackmail scenario** lives in emolib.steering.blackmail; chapter 7 reads it through here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..analysis.fidelity import word_scores
from ..analysis.geometry import wilson
from ..analysis.validate import vader
from ..errors import EmolibError
from ..extraction.vectors import Direction, VectorBuild
from ..models.hooks import decoder_layers, forward_hooks
from ..models.loading import LoadedModel
from ..stats import cluster_sums, holm, resample_clusters, slope_of
from ..stories.prompts import select_topics, with_bos
from ..writers.generate import LocalWriter

# the blackmail scenario is its own module; chapter 7 reads it through here
from .blackmail import (  # noqa: F401
    BLACKMAIL_STAGES,
    INBOX,
    SYSTEM,
    blackmail_trials,
    describe_blackmail,
    describe_grader,
    grade_blackmail,
    grade_judge,
    grade_rule,
    grader_accuracies,
    grader_accuracy,
    labelled_set,
)
from .rewardhack import TASKS
from .steer import SteerTerm, steering, terms

# --- dose-response ---------------------------------------------------------------------------------


def neutral_prompts(n: int = 16, seed: int = 0) -> list[str]:
    """Openings of plain narration on the corpus topics, with no emotional word in them."""
    return [f"Here is what happened. {topic[0].upper() + topic[1:]}. That morning," for _, topic in select_topics(n, seed)]


def continuation_stats(loaded: LoadedModel, prompts: Sequence[str], continuations: Sequence[str], read_layer: int,
                       directions: torch.Tensor, max_tokens: int = 512, batch_size: int = 16) -> pd.DataFrame:
    """For each prompt + continuation, run the unsteered model once and report the continuation's
    perplexity and its mean activation at `read_layer` projected on each row of `directions` (unit).
    Rows are batched (right-padded, masked); each row's numbers equal those of its own forward pass."""
    model, tokenizer = loaded.model, loaded.tokenizer
    block = decoder_layers(model)[read_layer]
    unit = directions.to(torch.float32) / directions.to(torch.float32).norm(dim=-1, keepdim=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = []
    for prompt, continuation in zip(prompts, continuations):
        head = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        encoded.append((head, tokenizer(continuation, add_special_tokens=False)["input_ids"][: max_tokens - len(head)]))
    results: list[dict | None] = [None] * len(encoded)
    captured: dict[str, torch.Tensor] = {}

    def capture(module, args, output):
        captured["h"] = (output[0] if isinstance(output, tuple) else output).to(torch.float32)

    with forward_hooks([(block, capture)]), torch.inference_mode():
        order = sorted((i for i, (_, tail) in enumerate(encoded) if tail), key=lambda i: sum(map(len, encoded[i])))
        for start in range(0, len(order), batch_size):
            chunk = order[start: start + batch_size]
            width = max(len(encoded[i][0]) + len(encoded[i][1]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                seq = encoded[i][0] + encoded[i][1]
                ids[row, :len(seq)], mask[row, :len(seq)] = torch.tensor(seq), 1
            logits = model(input_ids=ids.to(loaded.device), attention_mask=mask.to(loaded.device),
                           use_cache=False).logits.float()
            for row, i in enumerate(chunk):
                head, tail = encoded[i]
                span = slice(len(head), len(head) + len(tail))
                nll = torch.nn.functional.cross_entropy(logits[row, len(head) - 1: len(head) + len(tail) - 1],
                                                        ids[row, span].to(loaded.device), reduction="mean")
                hidden = captured["h"][row, span].mean(dim=0).cpu()
                results[i] = {"tokens": len(tail), "perplexity": float(torch.exp(nll)),
                              "projection": (unit @ hidden).tolist()}
    empty = {"tokens": 0, "perplexity": float("nan"), "projection": [float("nan")] * len(unit)}
    return pd.DataFrame([r if r is not None else empty for r in results])


def dose_response(loaded: LoadedModel, build: VectorBuild, emotions: Sequence[str], alphas: Sequence[float], layer: int,
                  read_layer: int, prompts: Sequence[str], samples: int = 1, max_new_tokens: int = 48,
                  temperature: float = 0.7, top_p: float = 0.95, seed: int = 0, positions: str | int = "generated",
                  batch_size: int = 32, progress: bool = True,
                  directions: dict[str, Direction] | None = None, read_emotions: Sequence[str] = ()) -> pd.DataFrame:
    """Steer each emotion at each α and sample continuations of the neutral prompts; one row per text.

    `directions` adds named conditions beside the emotions ({"aligned valence": Direction}, e.g. chapter 4's
    rotated axes from `circumplex.steering_directions`), steered and read (at `layer`, `read_layer`) the same way.
    Every text is also read on each emotion's read-layer direction (`projection on <emotion>`), the steered emotions
    and `read_emotions` (a null run of random directions reads the emotions it is the null for).

    The same seeds are used at every α (common random numbers), so differences between α come from the
    steering, not from sampling. Columns: emotion, alpha, prompt, sample, text, tokens, projection (on
    the steered emotion's vector at `read_layer`), valence (VADER compound), lexicon valence (Warriner
    words, emotion words left out), perplexity (unsteered)."""

    if read_layer not in build.denoised.layers:
        raise EmolibError(f"read layer {read_layer} has no vectors (extracted: {list(build.denoised.layers)})")
    writer = LocalWriter(loaded, batch_size=batch_size, require_chat=False, token_budget=batch_size * 256)
    jobs = [(p, s) for p in range(len(prompts)) for s in range(samples)]
    directions = dict(directions or {})
    clash = set(directions) & set(emotions)
    if clash:
        raise EmolibError(f"extra steering directions {sorted(clash)} share a name with an emotion; rename them")
    names = list(emotions) + list(directions)
    conditions = [(e, a) for e in names for a in alphas]
    # every condition in one batched call: rows carry their own steering vector (the LM head's weights
    # are read once per step for all of them, which is what a CPU decode step costs)
    rows = [(c, p, s) for c in range(len(conditions)) for p, s in jobs]
    scale = build.residual_norm[layer]
    steer_terms = []
    for c, (name, alpha) in enumerate(conditions):
        block = range(c * len(jobs), (c + 1) * len(jobs))
        if name in directions:
            steer_terms.append(SteerTerm(directions[name].at(layer), layer, float(alpha), scale, f"add {alpha:+g} {name}",
                                         tuple(block)))
        else:
            steer_terms += terms(build, {name: alpha}, layer, rows=block)
    seeds = [seed * 1_000_003 + p * 1009 + s for _, p, s in rows]
    documents = [with_bos(loaded.tokenizer, prompt) for prompt in prompts]
    rendered = [documents[p] for _, p, _ in rows]
    with steering(loaded, steer_terms, positions=positions, rows_of=writer):
        out = writer.generate(rendered, seeds, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              progress="dose-response" if progress else None)
    frame = pd.DataFrame([{"emotion": conditions[c][0], "alpha": conditions[c][1], "prompt": p, "sample": s,
                           "text": g.text} for (c, p, s), g in zip(rows, out)])
    extra = [e for e in read_emotions if e not in names]
    read = torch.stack([build.denoised.direction(e, read_layer) for e in emotions]
                       + [directions[name].at(read_layer).to(torch.float32) for name in directions]
                       + [build.denoised.direction(e, read_layer) for e in extra])
    stats = continuation_stats(loaded, [prompts[p] for p in frame["prompt"]], frame["text"].tolist(), read_layer, read)
    slot = {e: i for i, e in enumerate(names + extra)}
    frame["tokens"] = stats["tokens"].values
    frame["projection"] = [row[slot[e]] for row, e in zip(stats["projection"], frame["emotion"])]
    for emotion in list(emotions) + extra:  # every text read on each emotion too: the null band of a push elsewhere
        frame[f"projection on {emotion}"] = [row[slot[emotion]] for row in stats["projection"]]
    frame["perplexity"] = stats["perplexity"].values
    frame["valence"] = vader(frame["text"].tolist())
    frame["lexicon valence"] = word_scores(frame["text"].tolist())["valence"].values  # a second, independent reader
    return frame


NULL_PREFIX = "random direction "
NEUTRAL_PC = "top neutral PC"


def null_directions(build: VectorBuild, layer: int, read_layer: int, n: int = 20, seed: int = 0) -> dict[str, Direction]:
    """The steering null: `n` random unit directions (isotropic Gaussian, seeded, drawn at the steered and the read
    layer) and the top neutral principal component (the largest direction of the neutral dialogues, what the
    denoising removed): pushed at the same α and layer as the emotions, they say how far a slope moves when the
    push has nothing to do with any emotion."""
    layers = tuple(dict.fromkeys((layer, read_layer)))
    d = build.denoised.hidden_size
    generator = torch.Generator().manual_seed(seed)
    out = {f"{NULL_PREFIX}{i + 1}": Direction(layers, torch.randn(len(layers), d, generator=generator),
                                              f"{NULL_PREFIX}{i + 1}") for i in range(n)}
    pcs = torch.stack([build.pcs.components[build.denoised.layer_index(each)][0] for each in layers])
    out[NEUTRAL_PC] = Direction(layers, pcs.to(torch.float32), NEUTRAL_PC)
    return out


def null_band(doses: pd.DataFrame, slope_table: pd.DataFrame, emotions: Sequence[str], n_boot: int = 1000, seed: int = 0,
              doubling: pd.DataFrame | None = None,
              metrics: Sequence[str] = ("projection", "valence", "lexicon valence", "perplexity")) -> pd.DataFrame:
    """Each steered emotion's slope beside the band its metric takes when the push is a random direction (from the
    lowest to the highest of the k random directions' slopes, at the same α, prompts and seeds: a slope that is just
    another random direction's leaves it on one side with probability at most 1/(k + 1), and `p against random
    directions` says how far) and beside the top neutral PC's slope. For the projection the band is that of the *emotion's own* read-layer projection under the random
    pushes: does pushing along the emotion move its reading more than pushing anywhere does? A slope counts only
    where it leaves the band (`outside band`). The random directions may run on fewer prompts than the emotions (the
    first of the same prompts, same seeds): each emotion's slope is then read on those prompts too, like for like."""
    randoms = doses[doses["emotion"].str.startswith(NULL_PREFIX)]
    if randoms.empty:
        raise EmolibError("no random-direction conditions in the dose-response; pass null_directions(...) as directions")
    rows = []
    shared = sorted(set(randoms["prompt"]))  # the null's prompts: each emotion's slope is read on the same ones
    for emotion in emotions:
        null_metrics = [f"projection on {emotion}" if m == "projection" else m for m in metrics]
        null = slopes(randoms, null_metrics, n_boot=10, seed=seed, doubling=doubling)
        pc = slopes(doses[doses["emotion"] == NEUTRAL_PC], null_metrics, n_boot=10, seed=seed, doubling=doubling)
        mine = doses[(doses["emotion"] == emotion) & doses["prompt"].isin(shared)]
        own = slopes(mine, metrics, n_boot=10, seed=seed, doubling=doubling)
        for metric, null_metric in zip(metrics, null_metrics):
            values = null.loc[null["metric"] == null_metric, "slope per unit α"].to_numpy()
            low, high = float(values.min()), float(values.max())  # the band: every random direction's slope
            value = float(own.loc[own["metric"] == metric, "slope per unit α"].iloc[0])
            further = (values >= value).sum() if value >= np.median(values) else (values <= value).sum()
            rows.append({"emotion": emotion, "metric": metric, "prompts": len(shared), "slope per unit α": value,
                         "p against random directions": float((1 + further) / (len(values) + 1)),
                         "random band low": float(low),
                         "random band high": float(high), "random directions": len(values),
                         "top neutral PC slope": float(pc.loc[pc["metric"] == null_metric, "slope per unit α"].iloc[0]),
                         "outside band": bool(value < low or value > high)})
    return pd.DataFrame(rows)


def band_verdicts(text: dict[str, str], band: pd.DataFrame) -> dict[str, str]:
    """`text_verdicts` kept only where each reader that drove the verdict left the random band on its verdict's side
    (a rise needs the reader's slope above every random direction's, a fall below); otherwise said."""
    names = {"VADER": "valence", "the lexicon": "lexicon valence"}
    out = {}
    for emotion, verdict in text.items():
        if verdict == "no detectable change":
            out[emotion] = verdict
            continue
        rows = band[band["emotion"] == emotion].set_index("metric")
        if verdict in ("rises", "falls"):
            drivers = [("valence", verdict), ("lexicon valence", verdict)]
        else:  # "VADER only rises; the lexicon falls" and the like: each named reader with its own direction
            drivers = [(names[name], direction) for name, direction in
                       re.findall(r"(VADER|the lexicon)(?: only)? (rises|falls)", verdict)]
        failed = [reader for reader, direction in drivers if reader not in rows.index
                  or not (rows.loc[reader, "slope per unit α"] > rows.loc[reader, "random band high"] if direction == "rises"
                          else rows.loc[reader, "slope per unit α"] < rows.loc[reader, "random band low"])]
        out[emotion] = (f"{verdict} (beyond every random direction)" if not failed else
                        f"{verdict}, but {', '.join(failed)} not beyond the random directions: no verdict")
    return out


def story_sd(build: VectorBuild, emotions: Sequence[str], read_layer: int) -> dict[str, float]:
    """Per emotion, the story-to-story SD of its own stories' projections on its unit vector at `read_layer` (what
    one story differs from the next along the direction)."""
    acts, labels, _, _ = build.story_activations(read_layer)
    out = {}
    for emotion in emotions:
        unit = build.denoised.direction(emotion, read_layer).numpy().astype(np.float64)
        mine = np.asarray(acts, np.float64)[labels == build.denoised.index(emotion)]
        out[emotion] = float((mine @ unit).std(ddof=1)) if len(mine) > 1 else float("nan")
    return out


def measured_alpha(build: VectorBuild, slope_table: pd.DataFrame, emotions: Sequence[str], read_layer: int) -> pd.DataFrame:
    """The α that moves each emotion's read-layer projection by one story-to-story SD (`story_sd` over the
    dose-response's projection slope per unit α): a strength measured on this model, where Anthropic's 0.05 was
    chosen on Claude (the mean residual norm grows hundreds-fold through a small model's layers)."""
    sd = story_sd(build, emotions, read_layer)
    rows = []
    for emotion in emotions:
        row = slope_table[(slope_table["emotion"] == emotion) & (slope_table["metric"] == "projection")]
        slope_value = float(row["slope per unit α"].iloc[0]) if len(row) else float("nan")
        alpha = sd[emotion] / slope_value if slope_value > 0 else float("nan")
        rows.append({"emotion": emotion, "story-to-story SD": sd[emotion], "projection slope per unit α": slope_value,
                     "α for one SD": alpha})
    return pd.DataFrame(rows).set_index("emotion")


def measured_strengths(table: pd.DataFrame, fallback: float) -> dict[str, float]:
    """Per emotion, its measured α rounded to two significant digits (the fallback where no positive projection
    slope was measured)."""
    return {e: float(f"{a:.2g}") if np.isfinite(a) and a > 0 else fallback for e, a in table["α for one SD"].items()}


def ablation_control(loaded: LoadedModel, build: VectorBuild, emotions: Sequence[str], layer: int, read_layer: int,
                     prompts: Sequence[str], samples: int = 1, max_new_tokens: int = 48, temperature: float = 0.7,
                     top_p: float = 0.95, seed: int = 0, positions: str | int = "generated", batch_size: int = 32,
                     n_boot: int = 1000, progress: bool = True) -> pd.DataFrame:
    """The control experiment for the causal reading: each emotion's direction projected out of block `layer`'s
    output (operator "ablate", `emolib.steering.steer`) while the neutral prompts are continued, against the
    same prompts and seeds unsteered. One row per emotion: the continuation's projection on that emotion at
    `read_layer` and its VADER valence, unsteered and ablated, and the change with a 95% interval from a
    bootstrap over prompts (a prompt's samples share its wording)."""
    if read_layer not in build.denoised.layers:
        raise EmolibError(f"read layer {read_layer} has no vectors (extracted: {list(build.denoised.layers)})")
    writer = LocalWriter(loaded, batch_size=batch_size, require_chat=False, token_budget=batch_size * 256)
    jobs = [(p, s) for p in range(len(prompts)) for s in range(samples)]
    seeds = [seed * 1_000_003 + p * 1009 + s for p, s in jobs]  # dose_response's seeds: α 0 is the same text
    rendered = [with_bos(loaded.tokenizer, prompts[p]) for p, _ in jobs]
    sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    texts = {"unsteered": writer.generate(rendered, seeds, **sampling, progress="ablation" if progress else None)}
    for emotion in emotions:
        with steering(loaded, terms(build, {emotion: 0.0}, layer, operator="ablate"), positions=positions, rows_of=writer):
            texts[emotion] = writer.generate(rendered, seeds, **sampling, progress="ablation" if progress else None)
    directions = torch.stack([build.denoised.direction(e, read_layer) for e in emotions])
    prompt_of = np.array([p for p, _ in jobs])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(prompts), (n_boot, len(prompts)))
    measured = {}
    for condition, out in texts.items():
        stats = continuation_stats(loaded, [prompts[p] for p, _ in jobs], [g.text for g in out], read_layer, directions)
        measured[condition] = (np.stack(stats["projection"].to_numpy()), np.asarray(vader([g.text for g in out])))
    rows = []
    for slot, emotion in enumerate(emotions):
        row: dict[str, Any] = {"emotion": emotion}
        for metric, index in (("projection", 0), ("valence", 1)):
            plain = measured["unsteered"][index][:, slot] if index == 0 else measured["unsteered"][index]
            ablated = measured[emotion][index][:, slot] if index == 0 else measured[emotion][index]
            per_prompt = pd.Series(ablated - plain).groupby(prompt_of).mean().to_numpy()
            low, high = np.percentile(per_prompt[draws].mean(axis=1), [2.5, 97.5])
            row.update({f"{metric} unsteered": float(plain.mean()), f"{metric} ablated": float(ablated.mean()),
                        f"{metric} change": float(per_prompt.mean()), f"{metric} change 95% CI": (float(low), float(high))})
        rows.append(row)
    return pd.DataFrame(rows).set_index("emotion")


def doubling_alpha(summary: pd.DataFrame) -> pd.DataFrame:
    """Per emotion and sign of α: the smallest |α| at which mean perplexity reaches twice its α = 0 value
    (linear interpolation between grid points; NaN where the grid never gets there)."""
    rows = []
    ppl = summary[summary.metric == "perplexity"]
    for emotion, part in ppl.groupby("emotion", sort=False):
        base = float(part.loc[part.alpha == 0, "mean"].iloc[0]) if (part.alpha == 0).any() else float("nan")
        for sign in (+1, -1):
            side = part[np.sign(part.alpha) == sign].assign(size=lambda f: f.alpha.abs()).sort_values("size")
            points = [(0.0, base)] + list(zip(side["size"], side["mean"]))
            found = float("nan")
            for (a0, p0), (a1, p1) in zip(points, points[1:]):
                if p1 >= 2 * base:
                    found = a0 + (a1 - a0) * (2 * base - p0) / (p1 - p0) if p1 != p0 else a1
                    break
            rows.append({"emotion": emotion, "direction": "+" if sign > 0 else "-", "alpha where perplexity doubles": found,
                         "perplexity at alpha 0": base, "largest |alpha| tried": float(side["size"].max()) if len(side) else 0.0})
    return pd.DataFrame(rows)


def dose_summary(frame: pd.DataFrame, metrics: Sequence[str] = ("projection", "valence", "lexicon valence", "perplexity"),
                 n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Mean of each metric per (emotion, α) with a 95% prompt-bootstrap interval (percentile)."""
    rows = []
    for (emotion, alpha), part in frame.groupby(["emotion", "alpha"]):
        for metric in metrics:
            sums = cluster_sums(part, metric)
            totals = resample_clusters(sums, n_boot, seed)
            draws = totals[:, 2] / totals[:, 0]
            rows.append({"emotion": emotion, "alpha": alpha, "metric": metric, "mean": sums[:, 2].sum() / sums[:, 0].sum(),
                         "low": np.percentile(draws, 2.5), "high": np.percentile(draws, 97.5), "n": int(sums[:, 0].sum())})
    return pd.DataFrame(rows)


def slope(frame: pd.DataFrame, metric: str) -> float:
    """Least-squares slope of `metric` on α."""
    return float(slope_of(cluster_sums(frame.assign(prompt=0), metric).sum(axis=0)))


TEXT_READERS = ("valence", "lexicon valence")  # the two independent readers of the text's valence


def below_doubling(frame: pd.DataFrame, doubling: pd.DataFrame | None) -> pd.DataFrame:
    """The dose-response rows whose |α| stays below the α at which that emotion's perplexity doubles on that
    side (`doubling_alpha`; no limit where the grid never doubled it). Past it the text degenerates ("No. No.
    No." reads as negative to any sentiment reader), so a slope fitted there measures breakdown, not steering."""
    if doubling is None or not len(doubling):
        return frame
    limit = {(row["emotion"], row["direction"]): row["alpha where perplexity doubles"] for _, row in doubling.iterrows()}
    side = np.where(frame["alpha"] >= 0, "+", "-")
    bound = np.array([limit.get((e, d), np.nan) for e, d in zip(frame["emotion"], side)], float)
    keep = np.isnan(bound) | (frame["alpha"].abs().to_numpy() < bound) | (frame["alpha"].to_numpy() == 0)
    return frame[keep]


def slopes(frame: pd.DataFrame, metrics: Sequence[str] = ("projection", "valence", "lexicon valence", "perplexity"),
           n_boot: int = 1000, seed: int = 0, doubling: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per emotion and metric: the slope on α with a 95% prompt-bootstrap interval and a two-sided
    bootstrap p-value (twice the share of resampled slopes on the other side of zero).

    With `doubling` (`doubling_alpha`), each emotion's fit uses only the α below its perplexity-doubling α
    on each side (`below_doubling`). The text readers' p-values get Holm's correction over this table's
    family (steered emotions x the two readers) in `Holm p (text readers)`; `text_verdicts` reads them."""
    rows = []
    used = below_doubling(frame, doubling)
    for emotion, part in used.groupby("emotion", sort=False):
        for metric in metrics:
            sums = cluster_sums(part, metric)
            value = float(slope_of(sums.sum(axis=0)))
            draws = slope_of(resample_clusters(sums, n_boot, seed))
            p = 2 * min((draws <= 0).mean(), (draws >= 0).mean())
            se = float(np.std(draws, ddof=1))
            rows.append({"emotion": emotion, "metric": metric, "slope per unit α": value,
                         "low": np.percentile(draws, 2.5), "high": np.percentile(draws, 97.5),
                         "bootstrap p": min(1.0, max(p, 1 / n_boot)),
                         # the power this design had: a true slope of 2.8 SE is detected 80 % of the time (5 % two-sided)
                         "detectable slope (80% power)": 2.8 * se,
                         "alpha range": (float(part["alpha"].min()), float(part["alpha"].max()))})
    table = pd.DataFrame(rows)
    text = table["metric"].isin(TEXT_READERS)
    table["Holm p (text readers)"] = np.nan
    table.loc[text, "Holm p (text readers)"] = holm(table.loc[text, "bootstrap p"].to_numpy())
    return table


def text_verdicts(slope_rows: Sequence[dict], p_column: str = "Holm p (text readers)", level: float = 0.05) -> dict[str, str]:
    """Per steered emotion, what the text's valence did, read by both readers at the corrected level: "rises" or
    "falls" only when VADER and the lexicon both moved that way; otherwise which reader moved ("VADER only
    rises", ...) or "no detectable change"."""
    found: dict[str, dict[str, int]] = {}
    for row in slope_rows:
        if row["metric"] in TEXT_READERS:
            p = row.get(p_column)
            moved = p is not None and not np.isnan(p) and p < level
            found.setdefault(row["emotion"], {})[row["metric"]] = int(np.sign(row["slope per unit α"])) if moved else 0
    verdicts = {}
    names = {"valence": "VADER", "lexicon valence": "the lexicon"}
    for emotion, by_reader in found.items():
        signs = [by_reader.get(reader, 0) for reader in TEXT_READERS]
        word = {1: "rises", -1: "falls"}
        if signs[0] and signs[0] == signs[1]:
            verdicts[emotion] = word[signs[0]]
        elif any(signs):
            verdicts[emotion] = "; ".join(f"{names[reader]} only {word[sign]}" if sign and not signs[1 - i] else
                                          f"{names[reader]} {word[sign]}" for i, (reader, sign) in
                                          enumerate(zip(TEXT_READERS, signs)) if sign)
        else:
            verdicts[emotion] = "no detectable change"
    return verdicts


def examples_html(frame: pd.DataFrame, group: str, text_column: str = "text", per_group: int = 3,
                  max_chars: int = 600, summary: str = "{group} = {value}") -> str:
    """Collapsible HTML: one `<details>` per value of `group` with its first texts (escaped)."""
    import html

    parts = []
    for value, part in frame.groupby(group, sort=True):
        items = "".join(f"<li><pre style='white-space: pre-wrap'>{html.escape(str(text)[:max_chars])}</pre></li>"
                        for text in part[text_column].head(per_group))
        parts.append(f"<details><summary>{html.escape(summary.format(group=group, value=value))}</summary>"
                     f"<ol>{items}</ol></details>")
    return "\n".join(parts)


def rates(frame: pd.DataFrame, column: str = "blackmail (rule)", by: str = "condition") -> pd.DataFrame:
    """k/n per condition with a 95% Wilson interval."""
    rows = []
    for name, part in frame.groupby(by, sort=False):
        values = part[column].dropna().astype(bool)
        k, n = int(values.sum()), len(values)
        low, high = wilson(k / n if n else float("nan"), n)
        rows.append({by: name, "k": k, "n": n, "rate": k / n if n else float("nan"), "low": low, "high": high})
    return pd.DataFrame(rows).set_index(by)


# --- what chapter 7 shows ----------------------------------------------------------------------------


def default_read_layer(layer: int, extracted: Sequence[int], requested: int = -1) -> int:
    """Where the projection is read: `requested` when >= 0, else three layers after the steered one (or the last
    extracted layer before that)."""
    if requested >= 0:
        return requested
    return max(each for each in extracted if each <= min(layer + 3, extracted[-1]))


def conditions(available: Sequence[str], alpha: float | dict[str, float], sweep: str = "",
               emotions: Sequence[str] = ("desperate", "calm"), swept: str = "desperate") -> dict[str, dict[str, float]]:
    """The published design: baseline, ±each emotion at `alpha` (one strength, or one per emotion: `measured_strengths`),
    and ±`swept` at each extra strength in `sweep` (multiples of its own strength where `alpha` is per emotion)."""
    chosen: dict[str, dict[str, float]] = {"baseline": {}}
    own = (lambda e: alpha.get(e, 0.0)) if isinstance(alpha, dict) else (lambda e: float(alpha))
    extra = [(swept, float(s) * (own(swept) if isinstance(alpha, dict) else 1.0)) for s in sweep.split(",") if s.strip()]
    for emotion, strength in [(e, own(e)) for e in emotions] + extra:
        if emotion in available:
            for sign in (+1, -1):
                chosen[f"{'+' if sign > 0 else '-'}{emotion} {strength:g}"] = {emotion: sign * strength}
    return chosen


def projection_shift(summary: pd.DataFrame) -> pd.DataFrame:
    """The projection rows of a dose summary as the change from each emotion's α = 0 mean."""
    baseline = summary[summary.alpha == 0].set_index(["emotion", "metric"])["mean"]
    shift = summary[summary.metric == "projection"].copy()
    for column in ("mean", "low", "high"):
        shift[column] = shift[column] - [baseline[(e, "projection")] for e in shift.emotion]
    return shift


def funnel(trials: pd.DataFrame, stages: Sequence[str]) -> pd.DataFrame:
    """Per condition: the trial count and the share reaching each stage."""
    table = trials.groupby("condition", sort=False)[list(stages)].mean()
    table.insert(0, "trials", trials.groupby("condition", sort=False).size())
    return table


def dose_examples_html(doses: pd.DataFrame, prompts: Sequence[str], emotions: Sequence[str], n_prompts: int = 3) -> str:
    """The continuations of the first prompts at every α, per emotion, as collapsible HTML."""
    parts = []
    for emotion in emotions:
        part = doses[(doses.emotion == emotion) & (doses.prompt < n_prompts) & (doses["sample"] == 0)].copy()
        part["text"] = [prompts[p] + " [...] " + t for p, t in zip(part.prompt, part.text)]
        parts.append(f"<p><b>{emotion}</b></p>" + examples_html(part, "alpha", summary=emotion + ", alpha = {value:+g}"))
    return "\n".join(parts)


def steering_grid(emotions: str, alphas: str, available: Sequence[str]) -> tuple[list[str], list[float]]:
    """The chapter's comma-separated parameters as the steered emotions present and the α grid (0 always in it)."""
    steered = [e.strip() for e in emotions.split(",") if e.strip() in available]
    return steered, sorted({float(a) for a in alphas.split(",") if a.strip()} | {0.0})


def steering_results(*, layer: int, read_layer: int, positions: str, alphas: Sequence[float], prompts: int,
                     max_new_tokens: int, slopes: pd.DataFrame, doubling: pd.DataFrame, blackmail_trials: int,
                     blackmail: pd.DataFrame,
                     blackmail_funnel: pd.DataFrame, judge: str | None, hacking: pd.DataFrame, hacking_funnel: pd.DataFrame,
                     hack_samples: int, hack_alpha: float | dict[str, float], null_band: pd.DataFrame | None = None,
                     strength: pd.DataFrame | None = None, validity: pd.DataFrame | None = None,
                     vectors_corpus: str = "", text_verdicts: dict[str, str] | None = None) -> dict[str, Any]:
    """Chapter 7's key numbers (`emolib.book.results.SteeringResults`)."""
    return {
        "vectors_corpus": vectors_corpus, "text_verdicts": text_verdicts or {},
        "null_band": null_band.to_dict("records") if null_band is not None else [],
        "measured_alpha": strength.reset_index().to_dict("records") if strength is not None else [],
        "validity": validity.reset_index().to_dict("records") if validity is not None else [],
        "layer": layer, "read_layer": read_layer, "positions": positions, "alphas": list(alphas), "prompts": prompts,
        "slopes": slopes.to_dict("records"), "blackmail_trials": blackmail_trials,
        "blackmail": blackmail.reset_index().to_dict("records"), "funnel": blackmail_funnel.reset_index().to_dict("records"),
        "judge": judge, "max_new_tokens": max_new_tokens, "perplexity_doubling": doubling.to_dict("records"),
        "reward_hacking": {"rates": hacking.reset_index().to_dict("records"), "tasks": len(TASKS), "per_task": hack_samples,
                           "alpha": hack_alpha, "funnel": hacking_funnel.reset_index().to_dict("records")},
    }


def _strength_text(alpha: float) -> str:
    return "measured per emotion (one story-to-story SD of its projection)" if alpha <= 0 else f"{alpha:g}"


def settings_rows(loaded: LoadedModel, build: VectorBuild, layer: int, read_layer: int, steered: Sequence[str],
                  alphas: Sequence[float], p: dict[str, Any]) -> dict[str, Any]:
    """Chapter 7's settings table, from its parameters `p` (the notebook's parameter values by name)."""
    judge = f" + judge {p['judge_model']} at {p['judge_url']}" if p["judge_url"] else " only (no judge configured)"
    return {
        "scale": p.get("scale", "custom"),
        "model": f"{loaded.profile.model_id} ({loaded.profile.name}), "
                 + ("chat model" if loaded.tokenizer.chat_template else "base model"),
        "steered layer": f"{layer} (mean residual norm {build.residual_norm[layer]:,.1f})", "projection read at layer": read_layer,
        "vectors": f"chapter 3's, from corpus {p.get('vectors', '?')!r}",
        "dose-response": f"{len(steered)} emotions x {len(alphas)} alphas x {p['n_prompts']} prompts x {p['samples']} samples, "
                         f"{p['max_new_tokens']} new tokens; positions: {p['positions']}; beside them "
                         f"{p.get('null_directions', 0)} random directions and the top neutral PC (the null band)",
        "blackmail": f"{p['blackmail_trials']} trials per condition, alpha "
                     f"{_strength_text(p['blackmail_alpha'])}, {p['blackmail_tokens']} new tokens",
        "reward hacking": f"{len(TASKS)} impossible tasks x {p['hack_samples']} samples per condition, alpha "
                          f"{_strength_text(p['hack_alpha'])}",
        "grader": "rule screen" + judge,
    }
