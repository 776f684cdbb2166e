"""Extraction benchmark: emolib against the loop a user would otherwise write, on the same texts, in one run.

    python benchmarks/extract.py                 # 270m, 48 texts (and 480 for the memory check)
    python benchmarks/extract.py --model smollm2 --texts 32

Prints, side by side:
- the naive loop — one text at a time, `output_hidden_states=True`, the full model with its LM head —
  against emolib (hooks that reduce in place, stop after the deepest layer, length-sorted batches
  under a token budget): tokens/s and the speed-up, after checking both give the same means;
- achieved FLOP/s on the model's own FLOPs (decoder blocks + attention) over this machine's fp32 matmul
  FLOP/s, measured in the same run (the roofline fraction);
- peak RSS of an extraction of N and of 10*N texts, each in a fresh process (memory must stay flat).
Targets: >= 5x the naive loop, >= 70 % of the measured matmul FLOP/s (the `limit` in
benchmarks/results/extract-<model>.json), RSS(10N) < 1.2 x RSS(N).

Not a test: timings on shared machines are noisy, so only ratios measured in the same run are reported.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emolib.stories import corpus as C  # noqa: E402
from emolib.stories import design as D  # noqa: E402
from benchmarks.record import matmul_flops, write  # noqa: E402
from emolib.extraction import extract  # noqa: E402
from emolib import models  # noqa: E402


def benchmark_texts(n: int, tokenizer) -> tuple[list[str], list[str]]:
    """Kept stories from the embedded corpus if it exists, else deterministic topic-based filler text."""
    folder = C.corpus_dir("smollm2")
    texts: list[str] = []
    if (folder / "stories.jsonl").exists():
        texts = D.select(C.Corpus(folder)).stories.sort_values("id")["text"].tolist()
    topics = C.load_topics()
    while len(texts) < n:  # filler: topics strung together, ~150-250 tokens each
        i = len(texts)
        texts.append(". ".join(topics[(i + j) % 100] for j in range(8 + i % 5)) + ".")
    texts = [texts[i % len(texts)] for i in range(n)]
    return [f"b{i}" for i in range(n)], texts


def model_flops(loaded, token_counts: list[int], layers: int) -> float:
    """FLOPs of the decoder blocks up to `layers` on these texts: 2 x weights x tokens, plus attention."""
    config = models.text_config(loaded.model)
    blocks = models.decoder_layers(loaded.model)[:layers]
    weights = sum(p.numel() for block in blocks for p in block.parameters() if p.ndim == 2)
    heads = config.num_attention_heads * (getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    linear = 2 * weights * sum(token_counts)
    attention = sum(4 * t * t * heads for t in token_counts) * layers  # QK^T and AV, full (non-causal) count
    return float(linear + attention)


def naive(loaded, token_ids: list[list[int]], layers: list[int]) -> tuple[torch.Tensor, float]:
    """What a user writes first: one text at a time, all hidden states, the whole model."""
    means = torch.empty(len(token_ids), len(layers), loaded.hidden_size)
    started = time.perf_counter()
    with torch.inference_mode():
        for row, ids in enumerate(token_ids):
            hidden = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states
            for slot, layer in enumerate(layers):
                means[row, slot] = hidden[layer + 1][0, extract.TOKEN_START:].float().mean(0)
    return means, time.perf_counter() - started


def child_rss(model: str, n: int, token_budget: int) -> dict:
    """Extract n texts in a fresh process; its peak RSS (MiB) and throughput."""
    code = f"""
import json, resource, sys, tempfile, time
sys.path.insert(0, {str(ROOT)!r})
sys.argv = ['x']
from benchmarks.extract import benchmark_texts
from emolib.extraction import extract
from emolib import models
loaded = models.load({model!r})
ids, texts = benchmark_texts({n}, loaded.tokenizer)
texts, _ = extract.Texts.tokenize(ids, texts, loaded.tokenizer)
store = extract.ActivationStore(tempfile.mkdtemp())
stats = store.extract(loaded, loaded.profile.all_layers, texts, token_budget={token_budget}, progress=False)
print(json.dumps({{"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "texts": len(texts.ids),
                  "tokens_per_second": stats["tokens_per_second"]}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    if result.returncode:
        raise SystemExit(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="270m")
    parser.add_argument("--texts", type=int, default=48)
    parser.add_argument("--token-budget", type=int, default=0, help="0: emolib's default for the device")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()

    loaded = models.load(args.model)
    layers = list(loaded.profile.all_layers)
    ids, raw = benchmark_texts(args.texts, loaded.tokenizer)
    texts, _ = extract.Texts.tokenize(ids, raw, loaded.tokenizer)
    tokens = [len(t) for t in texts.token_ids]
    print(f"{args.model}: {len(texts.ids)} texts, {sum(tokens):,} tokens (mean {sum(tokens) / len(tokens):.0f}), "
          f"{len(layers)} layers, {torch.get_num_threads()} threads")

    peak = matmul_flops()
    reference, naive_seconds = naive(loaded, texts.token_ids, layers)
    store = extract.ActivationStore(tempfile.mkdtemp())
    started = time.perf_counter()
    store.extract(loaded, layers, texts, token_budget=args.token_budget, progress=False)
    fast_seconds = time.perf_counter() - started
    fast, _ = store.load(texts.ids)
    # transformers returns its last hidden state after the final norm; compare the blocks before it
    difference = (fast[:, :-1] - reference[:, :-1]).abs().max() / reference[:, :-1].abs().max()

    flops = model_flops(loaded, tokens, len(layers))
    naive_tps, fast_tps = sum(tokens) / naive_seconds, sum(tokens) / fast_seconds
    print(f"  same means (relative max difference, blocks 0..{len(layers) - 2}): {float(difference):.1e}")
    print(f"  naive loop (batch 1, all hidden states, LM head): {naive_tps:8.0f} tokens/s")
    print(f"  emolib (hooks, stop after layer {layers[-1]}, sorted batches): {fast_tps:8.0f} tokens/s")
    print(f"  speed-up: {fast_tps / naive_tps:.1f}x   (target >= 5x)")
    print(f"  fp32 matmul peak measured now: {peak / 1e9:.0f} GFLOP/s; emolib achieved {flops / fast_seconds / 1e9:.0f} "
          f"GFLOP/s of model FLOPs = {flops / fast_seconds / peak:.0%} of peak   (target >= 70 %)")
    memory = None
    if not args.skip_memory:
        small, large = child_rss(args.model, args.texts, args.token_budget), child_rss(args.model, 10 * args.texts, args.token_budget)
        memory = {"texts": [small["texts"], large["texts"]], "rss_mib": [small["rss_mib"], large["rss_mib"]],
                  "ratio": large["rss_mib"] / small["rss_mib"]}
        print(f"  peak RSS: {small['texts']} texts {small['rss_mib']:.0f} MiB, {large['texts']} texts "
              f"{large['rss_mib']:.0f} MiB: ratio {memory['ratio']:.2f}   (target < 1.2)")
    write(f"extract-{args.model}", {
        "model": args.model, "texts": len(texts.ids), "tokens": sum(tokens), "layers": len(layers),
        "limit": {"what": "best fp32 GEMM (2048^3) FLOP/s measured in this run", "flops_per_s": peak},
        "rows": {"naive loop (batch 1, all hidden states, LM head)": {"tokens_per_s": naive_tps},
                 "emolib extraction": {"tokens_per_s": fast_tps, "model_flops_per_s": flops / fast_seconds}},
        "ratios": {"emolib / naive loop": fast_tps / naive_tps, "share of limit": flops / fast_seconds / peak},
        "same_means_relative_max_difference": float(difference), "memory": memory,
        "targets": {"emolib / naive loop": 5.0, "share of limit": 0.7, "memory ratio": 1.2}})


if __name__ == "__main__":
    main()
