"""Story-writing benchmark: emolib's local writer against what a user would otherwise run, in one run.

    python benchmarks/generate.py                  # SmolLM2-135M-Instruct, 64 story prompts x 128 tokens
    python benchmarks/generate.py --ablation       # also: each technique of the writer switched off in turn

Rows, all on the same story prompts with the same sampling (temperature 0.8, top-p 0.95, repetition
penalty 1.1, max 128 new tokens), fp32 on this machine's cores:
  (a) transformers `generate`, one prompt at a time (the per-stream rate; run on the first prompts only)
  (b) transformers `generate`, batched with left padding (batch 64)
  (c) emolib `LocalWriter` (slab KV cache, shared prompt prefix computed once, finished rows dropped,
      per-row seeded sampling, batch 128)
  (d) llama.cpp through llama-cpp-python on the very same GGUF file, single stream — only when it is
      installed: `.venv/bin/pip install diskcache llama-cpp-python` (it compiles llama.cpp from source,
      ~15-20 min on 2 cores; CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
      -DLLAMA_BUILD_SERVER=OFF -DGGML_NATIVE=ON" skips what the benchmark does not use; a benchmark-only
      extra, never a requirement of emolib or its CI)
Each row prints tokens/s, its ratio to (c), and the leak rate and mean length of its stories, so speed
is never bought with quality. Targets (issue 9): (c) >= 2x (d) and >= 4x (a).

Measured gains of each technique (2-core AVX2 machine, SmolLM2-135M, fp32; tokens/s of the decode loop):
  plain batched generate, batch 64 ......................................... ~50-67 tok/s
  own decode loop + preallocated KV slab (no torch.cat, ~30 % of a step) .... 183 tok/s at batch 64
  + batch 128 (matmuls reach ~70 % of fp32 peak) ............................ 207 tok/s
  + top-k-bounded nucleus and gather/scatter repetition penalty ............. 224-229 tok/s
  + shared prompt prefix (94 of ~115 prompt tokens) ........................ prefill 9.3 s -> ~2 s per batch
  dynamic int8 linears: +5-10 % at batch 64, but mean KL to fp32 1.8 nats/token and visibly broken
    stories on this small model, so it is off by default (quantize="int8" to opt in)
  custom GQA attention for single-token decode: no gain (bound by reading the fp32 KV cache)
Two full runs on the 2-core machine (2026-11-23), tokens/s, ratios within each run:
  64 prompts:  (c) 154.6 | (a) 12.2 -> 12.7x | (b) 78.9 -> 1.96x | (d) llama.cpp 84.7 -> 1.83x
  128 prompts: (c) 148.1 | (a) 12.1 -> 12.3x | (b) 69.5 -> 2.13x | (d) llama.cpp 58.2 -> 2.54x
  leak rate and mean length agree within noise (4.7 % / 93 words for (c) and (b)). The same machine's
  llama.cpp single stream swung 58-85 tok/s between the runs: the 2x target over (d) holds in one run
  and not the other. What limits (c): the decode step is compute-bound in fp32 at batch >= 64 (the
  matmuls run near the CPU's fp32 peak), and rows finishing early shrink the batch at the end.
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

from emolib import corpus as C  # noqa: E402
from emolib import generate, models  # noqa: E402

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
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--sequential-prompts", type=int, default=8, help="prompts for row (a) and (d)")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--ablation", action="store_true")
    args = parser.parse_args()

    loaded = models.load("smollm2")
    jobs, messages, seeds = story_prompts(args.prompts)
    few = args.sequential_prompts
    print(f"SmolLM2-135M-Instruct fp32, {torch.get_num_threads()} threads; {len(messages)} story prompts, "
          f"{args.new_tokens} new tokens, {SAMPLING}")
    rows: dict[str, tuple[float, str]] = {}

    fast = generate.LocalWriter(loaded, batch_size=128)
    rate, texts = run_writer(fast, messages, seeds, args.new_tokens)
    rows["(c) emolib LocalWriter, batch 128"] = (rate, quality(jobs, texts))

    plain = generate.LocalWriter(loaded, batch_size=1, fast=False)
    rate, texts = run_writer(plain, messages[:few], seeds[:few], args.new_tokens)
    rows[f"(a) transformers generate, one at a time ({few} prompts)"] = (rate, quality(jobs[:few], texts))
    plain.batch_size = 64
    rate, texts = run_writer(plain, messages, seeds, args.new_tokens)
    rows["(b) transformers generate, batched 64"] = (rate, quality(jobs, texts))

    if importlib.util.find_spec("llama_cpp"):
        gguf = models._smollm2_gguf()
        rate, texts = run_llama_cpp(gguf, messages[:few], seeds[:few], args.new_tokens)
        rows[f"(d) llama.cpp single stream, same GGUF ({few} prompts)"] = (rate, quality(jobs[:few], texts))
    else:
        rows["(d) llama.cpp: not installed (pip install llama-cpp-python); TOOLCHAIN.md measured 91 tok/s here"] = (91.0, "-")

    if args.ablation:
        for label, options in [("  without shared prefix", dict(share_prefix=False)),
                               ("  without dropping finished rows", dict(drop_finished=False)),
                               ("  batch 64", dict(batch_size=64)),
                               ("  batch 32", dict(batch_size=32)),
                               ("  with int8 linears (lossy, opt-in)", dict(quantize="int8"))]:
            variant = generate.LocalWriter(models.load("smollm2") if "quantize" in options else loaded,
                                           **{"batch_size": 128, **options})
            rate, texts = run_writer(variant, messages, seeds, args.new_tokens)
            rows[label] = (rate, quality(jobs, texts))

    ours = rows["(c) emolib LocalWriter, batch 128"][0]
    for label, (rate, summary) in rows.items():
        print(f"{label:72s} {rate:7.1f} tok/s  (c)/this {ours / rate:5.2f}x  {summary}")


if __name__ == "__main__":
    main()
