"""E4B- and 31B-shaped random models on a GPU: extraction and a steered decode, tokens/s and share of peak.

    python benchmarks/gpu_shapes.py                 # on a CUDA machine: E4B and 31B in bf16 (31B: ~62 GB of weights)
    python benchmarks/gpu_shapes.py --tiny          # the same code on the tiny-e4b / tiny-31b shapes, on CPU (a smoke run)

Random weights with the real configs' numbers (emolib.book.plan.SHAPES, the structure of emolib.models.tiny.REAL_STRUCTURE):
no download, so it runs wherever a GPU is lent. Extraction runs emolib's own hook-and-stop pass over 64
texts of 256 tokens to the profile's deepest default layer; the decode steers the analysis layer at
every generated position for 64 rows x 64 new tokens through emolib's writer. Each row reports tokens/s
and achieved FLOP/s over the measured bf16 matmul peak. Writes benchmarks/results/gpu_shapes.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emolib.extraction import extract  # noqa: E402
from emolib.writers import generate  # noqa: E402
from emolib import models  # noqa: E402
from emolib.book import plan  # noqa: E402
from emolib.steering import steer  # noqa: E402
from emolib.models.tiny import REAL_STRUCTURE, tiny_tokenizer  # noqa: E402


def build(name: str, device: str, dtype: torch.dtype, tiny: bool) -> torch.nn.Module:
    import transformers as tf

    if tiny:
        profile = models.get_profile(f"tiny-{name}")
        from emolib.models.tiny import tiny_model

        return tiny_model(profile, len(tiny_tokenizer())).to(device=device, dtype=dtype)
    shape = plan.SHAPES[name]
    structure = {k: v for k, v in REAL_STRUCTURE[f"tiny-{name}"].items()
                 if k in ("attention_k_eq_v", "final_logit_softcapping")}
    types = ["full_attention" if (i + 1) % shape.full_every == 0 else "sliding_attention" for i in range(shape.layers)]
    text = tf.Gemma4TextConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
        global_head_dim=shape.global_head_dim, num_global_key_value_heads=shape.global_kv_heads,
        num_kv_shared_layers=shape.kv_shared_layers, hidden_size_per_layer_input=shape.per_layer_input,
        vocab_size_per_layer_input=shape.vocab, layer_types=types, sliding_window=512 if name == "e4b" else 1024, **structure)
    config = tf.Gemma4Config(text_config=text, vision_config=None, audio_config=None)
    with torch.device("meta"):
        model = tf.Gemma4ForConditionalGeneration(config)
    model = model.to_empty(device=device).to(dtype)
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    return model.eval()


def matmul_peak(device: str, dtype: torch.dtype) -> float:
    size = 8192 if device == "cuda" else 1024
    a = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ a
    sync()
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 1.0:
        a @ a
        count += 1
    sync()
    return 2 * size ** 3 * count / (time.perf_counter() - started)


def run(name: str, device: str, dtype: torch.dtype, tiny: bool, peak: float) -> dict:
    model = build(name, device, dtype, tiny)
    profile = models.get_profile(f"tiny-{name}" if tiny else name)
    loaded = models.LoadedModel(model, tiny_tokenizer(), profile, torch.device(device), dtype)
    layers = profile.default_layers
    vocab = model.config.get_text_config().vocab_size
    texts, length = (64, 256) if not tiny else (8, 64)
    ids = torch.randint(3, vocab, (texts, length), device=device)
    mask = torch.ones_like(ids)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    extract.reduce_batch(model, layers, ids[:2], mask[:2], 50 if not tiny else 8)
    sync()
    started = time.perf_counter()
    for start in range(0, texts, 16):
        extract.reduce_batch(model, layers, ids[start:start + 16], mask[start:start + 16], 50 if not tiny else 8)
    sync()
    extract_s = time.perf_counter() - started
    shape = plan.SHAPES[name]
    extract_flops = texts * length * shape.flops_per_token(max(layers), context=length) if not tiny else float("nan")
    writer = generate.LocalWriter(loaded, batch_size=64, require_chat=False, token_budget=1 << 30)
    direction = torch.randn(model.config.get_text_config().hidden_size)
    term = steer.SteerTerm(direction, profile.analysis_layer, 0.1, scale=1.0)
    prompts = [" ".join(["the"] * 32)] * (64 if not tiny else 8)
    started = time.perf_counter()
    with steer.steering(loaded, [term], positions="generated"):
        out = writer.generate(prompts, list(range(len(prompts))), max_new_tokens=64 if not tiny else 16, temperature=0.8)
    sync()
    decode_s = time.perf_counter() - started
    new_tokens = sum(g.n_tokens for g in out)
    decode_flops = new_tokens * shape.flops_per_token(lm_head=True) if not tiny else float("nan")
    return {"model": name, "tiny": tiny, "dtype": str(dtype).removeprefix("torch."), "layers": list(layers),
            "extract_tokens_per_s": texts * length / extract_s, "extract_share_of_peak": extract_flops / extract_s / peak,
            "decode_tokens_per_s": new_tokens / decode_s, "decode_share_of_peak": decode_flops / decode_s / peak,
            "peak_flops": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny-e4b / tiny-31b shapes on CPU (a smoke run)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if device == "cpu" and not args.tiny:
        print("no CUDA GPU here: run with --tiny for a CPU smoke run of the same code")
        return 2
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    peak = matmul_peak(device, dtype)
    rows = [run(name, device, dtype, args.tiny, peak) for name in ("e4b", "31b")]
    for row in rows:
        print(f"{row['model']:>4} ({row['dtype']}): extraction {row['extract_tokens_per_s']:,.0f} tok/s "
              f"({row['extract_share_of_peak']:.0%} of peak), steered decode {row['decode_tokens_per_s']:,.0f} tok/s "
              f"({row['decode_share_of_peak']:.1%} of peak)")
    if not args.tiny:
        out = ROOT / "benchmarks" / "results" / "gpu_shapes.json"
        out.write_text(json.dumps({"device": torch.cuda.get_device_name(0), "platform": platform.platform(),
                                   "limit": peak, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
