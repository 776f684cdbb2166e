"""Threads on a shared box: the local writer with 1 and with 2 torch threads, alone and beside a competing job.

    python benchmarks/threads.py            # SmolLM2-135M-Instruct, 32 story prompts x 64 tokens, each setting twice
    python benchmarks/threads.py --prompts 16 --tokens 32 --repeats 1   # 2 minutes (results/threads.json, 2026-12-07)

A reader's first hour (issue 40) ran the writer at 2.2 tokens/s on a 2-core box that one other job shared, with torch's
default of 2 threads; with 1 thread it ran at 24. Two processes that each spin 2 threads on 2 cores preempt each other
in the middle of every parallel region. The competing job here is a second process multiplying matrices with 2 threads
(what another torch job does). Rows: tokens/s of the writer in each (threads, competition) setting, measured in this
run, and the ratio of 1 to 2 threads under competition (the case `emolib.threads` chooses 1 thread for). Numbers:
benchmarks/results/threads.json. Not a test: only ratios from the same run are reported.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.generate import story_prompts  # noqa: E402
from benchmarks.record import median, write  # noqa: E402
from emolib import models  # noqa: E402
from emolib.writers import generate  # noqa: E402

COMPETITOR = ("import torch, time\ntorch.set_num_threads(2)\na = torch.randn(1024, 1024)\n"
              "end = time.time() + 600\nwhile time.time() < end:\n    a @ a\n")


def rate(writer: generate.LocalWriter, messages, seeds, tokens: int) -> float:
    started = time.perf_counter()
    out = writer.generate(messages, seeds, max_new_tokens=tokens, temperature=0.8, top_p=0.95, repetition_penalty=1.1)
    return sum(o.n_tokens for o in out) / (time.perf_counter() - started)


def main(prompts: int = 32, tokens: int = 64, repeats: int = 2) -> dict:
    loaded = models.load("smollm2")
    _, messages, seeds = story_prompts(prompts)
    writer = generate.LocalWriter(loaded, batch_size=prompts)
    rows = {}
    for competing in (False, True):
        competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR]) if competing else None
        try:
            time.sleep(1.0 if competing else 0.0)
            for threads in (1, 2):
                torch.set_num_threads(threads)
                rate(writer, messages[:4], seeds[:4], 8)  # warm-up at this thread count
                values = [rate(writer, messages, seeds, tokens) for _ in range(repeats)]
                rows[f"{threads} thread{'s' if threads > 1 else ''}, {'beside a 2-thread job' if competing else 'alone'}"] = {
                    "tokens_per_second": median(values), "runs": values}
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    ratio = (rows["1 thread, beside a 2-thread job"]["tokens_per_second"]
             / rows["2 threads, beside a 2-thread job"]["tokens_per_second"])
    for name, row in rows.items():
        print(f"{name:32} {row['tokens_per_second']:7.1f} tokens/s")
    print(f"beside a competing job, 1 thread is {ratio:.2f}x 2 threads")
    return write("threads", {"prompts": prompts, "new_tokens": tokens, "repeats": repeats, "rows": rows,
                             "one_over_two_threads_under_competition": ratio})


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="the writer with 1 and 2 threads, alone and beside a 2-thread job")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    main(args.prompts, args.tokens, args.repeats)
