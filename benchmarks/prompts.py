"""Which story prompt makes the writer carry the emotion? A pre-registered comparison, text only.

    python benchmarks/prompts.py            # SmolLM2-135M-Instruct, 45 emotions x 4 topics per wording

Fixed subset: the 45 Russell & Mehrabian emotions x the first 4 topics of the book's topic order. The
emotions are split alphabetically into two halves (even positions: *selection*, odd: *confirmation*).
Wordings (emolib.stories.corpus.STORY_PROMPTS): "label" (the original; the emotion only as a trailing label),
"feels" and "strong" (the emotion inside the instruction sentence), each one story per prompt, then
the winner with 3 stories per prompt split on the <NEW STORY> marker.
The winner is chosen on the selection half only, by story fidelity (lexicon valence r, emolib.analysis.fidelity)
with the leak rate as a guard (a wording whose leak rate exceeds the original's by more than 5 points
is not eligible), and confirmed on the other half. The analysed model's activations are never looked
at. Lengths are written with a generous cap (320 new tokens) to measure where stories end, so the
book's `max_new_tokens` can be chosen by how many stories a cap would cut mid-sentence.
Writes benchmarks/results/prompts.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emolib.stories import corpus as C  # noqa: E402
from emolib.writers import generate  # noqa: E402
from emolib import models  # noqa: E402
from emolib.analysis.fidelity import story_fidelity  # noqa: E402
from emolib.analysis.geometry import human_norms  # noqa: E402

CAP = 320
CAPS = (160, 200, 256, 320)


def run(variant: str, prompt: str, per_prompt: int, emotions: list[str], topics, writer, tokenizer, folder: Path,
        max_new_tokens: int) -> dict:
    settings = C.CorpusSettings(writer="smollm2", story_prompt=C.STORY_PROMPTS[prompt], stories_per_prompt=per_prompt,
                                max_new_tokens=max_new_tokens)
    store = C.Corpus(folder / variant, settings)
    jobs = C.story_jobs(settings, emotions, topics, 1, 0)
    started = time.perf_counter()
    stats = C.write_jobs(store, jobs, writer, batch_size=64)
    frame = C.records_frame(store, jobs, tokenizer)
    stories = frame[frame["kind"] == "story"]
    return {"frame": stories, "seconds": time.perf_counter() - started, "stats": stats, "jobs": jobs}


def summary(stories, emotions: list[str], per_prompt: int) -> dict:
    part = stories[stories["emotion"].isin(emotions)]
    kept = part[part["status"] == "kept"]
    fid = story_fidelity(kept, n_boot=1000)
    by_job = part.groupby("job").first()
    return {
        "stories": int(len(part)), "kept": int(len(kept)), "kept_per_prompt": len(kept) / max(1, len(by_job)),
        "leak_rate": float((part["status"] == "leak").mean()), "short_or_empty": float(part["status"].isin(["short", "empty"]).mean()),
        "median_tokens": float(part["n_tokens"].median()),
        "generated_tokens_per_prompt": float(by_job["generated_tokens"].mean()),
        "cut_by_cap": float((~by_job["finished"]).mean()),
        "fidelity": fid.to_dict(),
    }


def main() -> int:
    folder = ROOT / "runs" / "prompt-study"
    norms = human_norms("russell-mehrabian")
    emotions = sorted(norms.index)
    halves = {"selection": emotions[0::2], "confirmation": emotions[1::2]}
    topics = C.select_topics(4, 0)
    writer = generate.make_writer("smollm2", "", batch_size=64)
    tokenizer = models.load_tokenizer("270m")
    results: dict = {"subset": {"emotions": emotions, "halves": halves, "topics": [t for t, _ in topics]}, "variants": {}}
    frames = {}
    for prompt in ("label", "feels", "strong"):
        out = run(prompt, prompt, 1, emotions, topics, writer, tokenizer, folder, CAP)
        frames[prompt] = out["frame"]
        by_job = out["frame"].groupby("job").first()
        lengths = by_job["generated_tokens"].to_numpy()
        results["variants"][prompt] = {
            "seconds": out["seconds"], **{half: summary(out["frame"], names, 1) for half, names in halves.items()},
            "share_cut_at_cap": {str(cap): float(np.mean(lengths >= cap)) for cap in CAPS},
        }
        print(prompt, json.dumps(results["variants"][prompt]["selection"]["fidelity"]), flush=True)
    base_leak = results["variants"]["label"]["selection"]["leak_rate"]
    eligible = [p for p in ("label", "feels", "strong") if results["variants"][p]["selection"]["leak_rate"] <= base_leak + 0.05]
    chosen = max(eligible, key=lambda p: results["variants"][p]["selection"]["fidelity"]["valence_r"])
    results["chosen"] = chosen
    results["rule"] = ("highest lexicon valence r on the selection half among wordings whose leak rate is at most "
                       "5 points above the original's")
    out = run(f"{chosen}-x3", chosen, 3, emotions, topics[:2], writer, tokenizer, folder, 3 * CAP)
    results["variants"][f"{chosen}-x3"] = {"seconds": out["seconds"], "topics": 2,
                                           **{half: summary(out["frame"], names, 3) for half, names in halves.items()}}
    one = frames[chosen][frames[chosen]["topic_index"].isin([t for t, _ in topics[:2]])]
    results["variants"][f"{chosen}-x1-same-topics"] = {half: summary(one, names, 1) for half, names in halves.items()}
    path = ROOT / "benchmarks" / "results" / "prompts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1, default=float))
    for name, row in results["variants"].items():
        for half in halves:
            f = row[half]["fidelity"]
            print(f"{name:>24} {half:>12}: valence r {f['valence_r']:.2f} [{f['valence_ci'][0]:.2f}, {f['valence_ci'][1]:.2f}] "
                  f"arousal r {f['arousal_r']:.2f} VADER {f['vader_agreement']:.1%} leak {row[half]['leak_rate']:.1%} "
                  f"kept/prompt {row[half]['kept_per_prompt']:.2f} median tokens {row[half]['median_tokens']:.0f} "
                  f"cut {row[half]['cut_by_cap']:.1%}")
    print(f"chosen: {chosen}; written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
