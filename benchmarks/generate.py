"""Story-writing benchmark: emolib's local writer against what a user would otherwise run, in one run.

    python benchmarks/generate.py                  # SmolLM2-135M-Instruct, 128 story prompts x 128 tokens, 3 repeats
    python benchmarks/generate.py --ablation       # also: each technique switched off in turn, and 16-128 slots

Rows, all on the same story prompts with the same sampling (temperature 0.8, top-p 0.95, repetition
penalty 1.1), fp32 on this machine's cores:
  (a) transformers `generate`, one prompt at a time (the per-stream rate; the first prompts only)
  (b) transformers `generate`, batched with left padding (as many rows as (c) has slots)
  (c) emolib `LocalWriter`: slab KV cache, shared prompt prefix computed once, per-row seeded sampling,
      continuous batching (a finished row's slot takes the next prompt)
  (d) llama.cpp through llama-cpp-python on the very same GGUF file, single stream — only when it is
      installed (`pip install llama-cpp-python` compiles llama.cpp, ~15 min on 2 cores: a benchmark-only
      extra, never a requirement of emolib or its CI)
(b), (c) and (d) run 3 times interleaved; each ratio is the median of the per-repeat ratios. Each row
prints tokens/s and the leak rate and mean length of its stories, so speed is never bought with
quality; (c) also its mean slot occupancy and its model FLOP/s (2 x weights incl. the LM head, plus
attention over the mean context) as a share of the fp32 GEMM rate measured in the same run (`limit`).
Targets: (c) >= 3x (d), >= 2.5x (b), >= 60 % of the limit. Numbers: benchmarks/results/generate.json.
Not a test: numbers on shared machines are noisy; only ratios from the same run are reported.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emolib.stories import corpus as C  # noqa: E402
from benchmarks.record import matmul_flops, median, write  # noqa: E402
from emolib.writers import generate  # noqa: E402
from emolib import models  # noqa: E402
from emolib.book import plan  # noqa: E402

SAMPLING = dict(temperature=0.8, top_p=0.95, repetition_penalty=1.1)


def story_prompts(n: int) -> tuple[list[C.Job], list[list[dict]], list[int]]:
    settings = C.CorpusSettings(writer="smollm2")
    emotions = C.load_emotions()
    jobs = C.story_jobs(settings, emotions[: max(1, n // 2 + 1)], C.select_topics(2), 1)[:n]
    return jobs, [job.messages for job in jobs], [job.seed for job in jobs]


def quality(jobs: list[C.Job], texts: list[str]) -> str:
    stories = [(job.emotion, story) for job, text in zip(jobs, texts) for story in C.split_stories(text, False) or [""]]
    leaks = sum(bool(C.find_leaks(story, emotion)) for emotion, story in stories)
    words = [len(story.split()) for _, story in stories]
    return f"leak {leaks / len(stories):5.1%}, mean {statistics.mean(words):5.1f} words (n={len(stories)})"


def run_writer(writer: generate.LocalWriter, messages, seeds, new_tokens: int) -> tuple[float, list[str]]:
    started = time.perf_counter()
    outputs = writer.generate(messages, seeds, max_new_tokens=new_tokens, **SAMPLING)
    elapsed = time.perf_counter() - started
    return sum(o.n_tokens for o in outputs) / elapsed, [o.text for o in outputs]


def run_llama_cpp(gguf: Path, messages, seeds, new_tokens: int) -> tuple[float, list[str]]:
    from llama_cpp import Llama

    llm = Llama(model_path=str(gguf), n_ctx=1024, n_threads=torch.get_num_threads(), verbose=False)
    tokens, texts = 0, []
    started = time.perf_counter()
    for chat, seed in zip(messages, seeds):
        out = llm.create_chat_completion(messages=chat, max_tokens=new_tokens, temperature=SAMPLING["temperature"],
                                         top_p=SAMPLING["top_p"], repeat_penalty=SAMPLING["repetition_penalty"],
                                         top_k=0, seed=seed)
        tokens += out["usage"]["completion_tokens"]
        texts.append(out["choices"][0]["message"]["content"])
    return tokens / (time.perf_counter() - started), texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--sequential-prompts", type=int, default=6, help="prompts for rows (a) and (d)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--slots", type=int, default=64, help="(c)'s batch slots; (b) batches as many prompts")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of (b), (c), (d)")
    parser.add_argument("--ablation", nargs="?", const="all", default=None,
                        help="switch each technique off in turn; 'continuous' for that row alone")
    parser.add_argument("--name", default="generate", help="results file: benchmarks/results/<name>.json")
    args = parser.parse_args()

    loaded = models.load("smollm2")
    jobs, messages, seeds = story_prompts(args.prompts)
    few = args.sequential_prompts
    print(f"SmolLM2-135M-Instruct fp32, {torch.get_num_threads()} threads; {len(messages)} story prompts, "
          f"{args.new_tokens} new tokens, {SAMPLING}")
    limit = matmul_flops()
    llama = importlib.util.find_spec("llama_cpp") is not None
    rates: dict[str, list[float]] = {"c": [], "b": [], "d": []}
    occupancy, texts_c, texts_b = [], [], []
    for repeat in range(args.repeats):  # interleaved, so a noisy neighbour hits every row alike
        fast = generate.LocalWriter(loaded, batch_size=args.slots, continuous=True)
        rate, texts_c = run_writer(fast, messages, seeds, args.new_tokens)
        rates["c"].append(rate)
        occupancy.append(fast.stats.occupancy)
        plain = generate.LocalWriter(loaded, batch_size=args.slots, fast=False)
        rate, texts_b = run_writer(plain, messages, seeds, args.new_tokens)
        rates["b"].append(rate)
        if llama:
            rate, texts_d = run_llama_cpp(models._smollm2_gguf(), messages[:few], seeds[:few], args.new_tokens)
            rates["d"].append(rate)
        print(f"  repeat {repeat + 1}: (c) {rates['c'][-1]:.1f}  (b) {rates['b'][-1]:.1f}"
              + (f"  (d) {rates['d'][-1]:.1f}" if llama else "") + " tok/s")
    plain = generate.LocalWriter(loaded, batch_size=1, fast=False)
    rate_a, texts_a = run_writer(plain, messages[:few], seeds[:few], args.new_tokens)
    # model FLOPs of a generated token: the blocks' and LM head's matmuls plus attention over the mean context
    context = statistics.mean(len(fast.encode(m)) for m in messages) + args.new_tokens / 2
    per_token = plan.SHAPES["smollm2"].flops_per_token(lm_head=True, context=round(context))
    rows = {
        "(a) transformers generate, one at a time": {"tokens_per_s": rate_a, "quality": quality(jobs[:few], texts_a)},
        f"(b) transformers generate, batched {args.slots}": {"tokens_per_s": median(rates["b"]), "repeats": rates["b"],
                                                              "quality": quality(jobs, texts_b)},
        f"(c) emolib LocalWriter, {args.slots} slots, continuous batching": {
            "tokens_per_s": median(rates["c"]), "repeats": rates["c"], "occupancy": median(occupancy),
            "model_flops_per_s": median(rates["c"]) * per_token, "quality": quality(jobs, texts_c)},
    }
    if llama:
        rows["(d) llama.cpp single stream, same GGUF"] = {"tokens_per_s": median(rates["d"]), "repeats": rates["d"],
                                                          "quality": quality(jobs[:few], texts_d)}
    ratios = {"(c) / (b) batched generate": median([c / b for c, b in zip(rates["c"], rates["b"])]),
              "(c) / (a) generate one at a time": median(rates["c"]) / rate_a,
              "(c) share of limit": median(rates["c"]) * per_token / limit}
    if llama:
        ratios["(c) / (d) llama.cpp single stream"] = median([c / d for c, d in zip(rates["c"], rates["d"])])
    if args.ablation:
        rows.update(ablation(loaded, jobs, messages, seeds, args, per_token, limit))
    for label, row in rows.items():
        share = f"  {row['model_flops_per_s'] / limit:4.0%} of limit" if "model_flops_per_s" in row else ""
        print(f"{label:62s} {row['tokens_per_s']:7.1f} tok/s{share}  {row.get('quality', '')}")
    for label, value in ratios.items():
        print(f"  {label}: {value:.2f}" + ("" if "share" in label else "x"))
    print(f"  (c) mean slot occupancy {median(occupancy):.1%}; limit {limit / 1e9:.0f} GFLOP/s (fp32 GEMM, this run); "
          f"{per_token / 1e9:.3f} GFLOP per generated token")
    write(args.name, {"prompts": len(messages), "new_tokens": args.new_tokens, "slots": args.slots,
                       "sampling": SAMPLING, "repeats": args.repeats, "flops_per_token": per_token,
                       "limit": {"what": "best fp32 GEMM (2048^3) FLOP/s measured in this run", "flops_per_s": limit},
                       "rows": rows, "ratios": ratios,
                       "targets": {"(c) / (d) llama.cpp single stream": 3.0, "(c) / (b) batched generate": 2.5,
                                   "(c) share of limit": 0.6}})


def ablation(loaded, jobs, messages, seeds, args, per_token: float, limit: float) -> dict[str, dict]:
    """Each technique of the writer switched off in turn, and the slot count varied (roofline per batch size)."""
    rows = {}
    variants = [("  without shared prefix", dict(share_prefix=False)),
                ("  without continuous batching", dict(continuous=False)),
                ("  128 slots", dict(batch_size=128)), ("  32 slots", dict(batch_size=32)),
                ("  16 slots", dict(batch_size=16)),
                ("  with int8 linears (lossy, opt-in)", dict(quantize="int8"))]
    for label, options in [v for v in variants if args.ablation == "all" or "continuous" in v[1]]:
        variant = generate.LocalWriter(models.load("smollm2") if "quantize" in options else loaded,
                                       **{"batch_size": args.slots, "continuous": True, **options})
        rate, texts = run_writer(variant, messages, seeds, args.new_tokens)
        rows[label] = {"tokens_per_s": rate, "model_flops_per_s": rate * per_token, "occupancy": variant.stats.occupancy,
                       "quality": quality(jobs, texts)}
    return rows


if __name__ == "__main__":
    main()
