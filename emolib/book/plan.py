"""What a run will cost, before it starts: texts and tokens to write and to read, FLOPs, wall time on the
present device (a quick measured throughput) or on a stated reference GPU, weight memory in the chosen
dtype or quantization, and the activations' disk size.

    python -m emolib plan --model 31b -p scale full

Model shapes are the checkpoints' config numbers (the same sources as emolib.models.tiny.REAL_STRUCTURE), so a
plan needs no weights. Token counts per text come from the embedded runs (the writer's stories average
~190 new tokens with the chosen prompt and cap; dialogues ~330 analysed-model tokens). Efficiencies
(achieved share of the device's matmul rate) are measured here on CPU and assumed, and printed, for GPUs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from ..errors import EmolibError
from ..models.profiles import _dtype_name, get_profile
from ..stories.corpus import corpus_dir
from ..stories.design import SCALES, Design, get_scale
from ..threads import running_elsewhere


@dataclass(frozen=True)
class Shape:
    """The numbers of a checkpoint's config that decide compute and memory."""
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    global_head_dim: int | None = None  # full-attention layers (Gemma 4)
    global_kv_heads: int | None = None
    full_every: int = 0  # every n-th layer is full attention (0: all layers alike)
    kv_shared_layers: int = 0
    per_layer_input: int = 0  # Gemma 4 E-series per-layer embeddings (lookups, no FLOPs)
    k_eq_v: bool = False
    source: str = ""

    def layer_params(self, index: int) -> int:
        full = self.full_every and (index + 1) % self.full_every == 0
        hd = (self.global_head_dim or self.head_dim) if full else self.head_dim
        kv = (self.global_kv_heads or self.kv_heads) if full else self.kv_heads
        shared = index >= self.layers - self.kv_shared_layers
        q_o = 2 * self.hidden * self.heads * hd
        k_v = 0 if shared else self.hidden * kv * hd * (1 if (self.k_eq_v and full) else 2)
        ple = 2 * self.hidden * self.per_layer_input
        return q_o + k_v + 3 * self.hidden * self.intermediate + ple

    @property
    def params(self) -> int:
        embed = self.vocab * self.hidden + self.vocab * self.layers * self.per_layer_input
        return embed + sum(self.layer_params(i) for i in range(self.layers))

    def flops_per_token(self, through_layer: int | None = None, lm_head: bool = False, context: int = 256) -> float:
        """Forward FLOPs of one token up to and including block `through_layer` (all: None)."""
        last = self.layers - 1 if through_layer is None else through_layer
        matmuls = sum(2 * self.layer_params(i) for i in range(last + 1))
        attention = 4 * context * self.heads * self.head_dim * (last + 1)
        return matmuls + attention + (2 * self.vocab * self.hidden if lm_head else 0)


SHAPES: dict[str, Shape] = {
    "270m": Shape(640, 2048, 18, 4, 1, 256, 262_144, source="google/gemma-3-270m config.json"),
    "smollm2": Shape(576, 1536, 30, 9, 3, 64, 49_152, source="HuggingFaceTB/SmolLM2-135M-Instruct config.json"),
    "e4b": Shape(2560, 10240, 42, 8, 2, 256, 262_144, global_head_dim=512, full_every=6, kv_shared_layers=18,
                 per_layer_input=256, source="google/gemma-4-E4B-it config.json (see emolib.models.tiny.REAL_STRUCTURE)"),
    "31b": Shape(5376, 21504, 60, 32, 16, 256, 262_144, global_head_dim=512, global_kv_heads=4, full_every=6, k_eq_v=True,
                 source="google/gemma-4-31B-it config.json (see emolib.models.tiny.REAL_STRUCTURE)"),
}

# Reference devices for a plan made where the device is absent: dense matmul peak (FLOP/s), memory (GiB).
DEVICES = {
    "H100": {"peak": {"bfloat16": 989e12, "nf4": 989e12}, "memory": 80},
    "RTX 4090": {"peak": {"bfloat16": 165e12, "nf4": 165e12}, "memory": 24},
}
# Achieved share of peak, measured on this project's CPU runs (extraction ~0.73, local writer ~0.27 of the
# fp32 matmul rate) and assumed for GPUs (HF forward passes in bf16: ~0.35; batched sampling: ~0.10; NF4
# dequantizes weights on the fly: half again).
EFFICIENCY = {"cpu": {"extract": 0.73, "write": 0.27}, "gpu": {"extract": 0.35}}
# A small writer on a GPU is bound by kernel launches, not FLOPs: batched decoding of SmolLM2-135M is
# assumed at 10,000 tokens/s (a served, larger writer: use its own measured rate with `writer_rate`).
GPU_WRITER_TOKENS_PER_S = 10_000
STORY_TOKENS = 190  # new tokens per story with the "label" prompt, cap 320 (benchmarks/results/prompts.json)
STORY_KEEP = 0.80  # kept stories per prompt (leaks, short, empty are rewritten): prompts = stories / keep
DIALOGUE_TOKENS = 330  # analysed-model tokens per neutral dialogue (2-6 exchanges)
DIALOGUE_WRITE_TOKENS = 450  # writer tokens per dialogue


def measure_cpu_rate(seconds: float = 1.0) -> float:
    """This machine's fp32 matmul rate (FLOP/s), measured on 1024 x 1024 products for about `seconds`."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return 2 * 1024 ** 3 * count / (time.perf_counter() - started)


def _memory_gib(shape: Shape, dtype: str) -> float:
    bytes_per = {"float32": 4, "bfloat16": 2, "float16": 2, "nf4": 0.5 + 0.5 / 64 * 4}.get(dtype)
    if bytes_per is None:
        raise EmolibError(f"unknown dtype {dtype!r}; use float32, bfloat16, float16 or nf4")
    return shape.params * bytes_per / 2 ** 30


def make_plan(model: str, parameters: dict[str, Any] | None = None, writer: str = "smollm2", device: str = "auto",
              dtype: str | None = None, rate: float | None = None, writer_rate: float | None = None) -> dict[str, Any]:
    """The numbers of a run of every chapter for `model` with the chapters' parameters (`-p`)."""
    profile = get_profile(model)
    shape = SHAPES.get(model) or shape_of(profile)
    p = parameters or {}
    counts = _counts(profile, p)
    writer_shape = SHAPES.get(writer, SHAPES["smollm2"])
    read_tokens = counts["stories"] * STORY_TOKENS + counts["dialogues"] * DIALOGUE_TOKENS
    write_tokens = counts["prompts"] * STORY_TOKENS + counts["dialogues"] * DIALOGUE_WRITE_TOKENS
    extract_flops = read_tokens * shape.flops_per_token(max(counts["layers"]))
    write_flops = write_tokens * writer_shape.flops_per_token(lm_head=True)
    if dtype is None and p.get("dtype") not in (None, "auto"):
        dtype = _dtype_name(p["dtype"])
    dtype = dtype or ("nf4" if profile.quantization == "bnb-4bit" else "float32" if model in ("270m", "smollm2") else "bfloat16")
    times = _times(_devices(device, rate), write_tokens, extract_flops, writer_shape, writer_rate, slow=0.5 if dtype == "nf4" else 1.0)
    stories, layers = counts["stories"], counts["layers"]
    return {
        "model": model, "model_id": profile.model_id, "shape_source": shape.source, **counts, "layers": list(layers),
        "measured": {"rate": next((peak for where, (peak, _) in _devices(device, rate).items() if "CPU" in where), None),
                     "load": _load(), "busy": running_elsewhere()[0], "threads": _threads()},
        "write_tokens": write_tokens, "read_tokens": read_tokens, "write_flops": write_flops, "extract_flops": extract_flops, "dtype": dtype, "params": shape.params,
        "weights_gib": _memory_gib(shape, dtype),
        "activations_gib": (stories + counts["dialogues"]) * len(layers) * (shape.hidden + 1) * 4 / 2 ** 30,
        "times": times, "assumptions": {"story_tokens": STORY_TOKENS, "keep_rate": STORY_KEEP, "dialogue_tokens": DIALOGUE_TOKENS,
                                        "efficiency": EFFICIENCY, "nf4_slowdown": 2.0,
                                        "gpu_writer_tokens_per_s": GPU_WRITER_TOKENS_PER_S},
    }


def shape_of(profile: Any) -> Shape:
    """The shape of a profile without a recorded one (a local checkpoint folder): its config.json's numbers, read
    offline; nothing is loaded."""
    from transformers import AutoConfig

    if profile.source != "local-folder" or not profile.folder:
        raise EmolibError(f"no shape recorded for {profile.name!r}; plans cover {', '.join(SHAPES)} and local checkpoint folders")
    config = AutoConfig.from_pretrained(profile.folder, local_files_only=True)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(config.num_attention_heads)
    return Shape(int(config.hidden_size), int(getattr(config, "intermediate_size", 4 * config.hidden_size)),
                 int(config.num_hidden_layers), heads, int(getattr(config, "num_key_value_heads", None) or heads),
                 int(getattr(config, "head_dim", None) or config.hidden_size // heads), int(config.vocab_size),
                 source=f"{profile.folder}/config.json (read offline)")


def _load() -> float:
    import os

    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def _threads() -> int:
    import torch

    return torch.get_num_threads()


BUSY_LOAD = 0.5  # other running tasks above this (the kernel's count now, emolib.threads.running_elsewhere): the rate measured here is low


def _counts(profile: Any, p: dict[str, Any]) -> dict[str, Any]:
    """What a run writes and reads: emotions, topics, stories (and prompts with rewrites), dialogues, layers."""
    scale = p.get("scale", "quick")
    chosen = get_scale(scale).fill(n_topics=p.get("n_topics"), per_cell=p.get("stories_per_cell"),
                                   dialogue_topics=p.get("dialogue_topics"))
    emotions = 171 if p.get("emotions", "all") == "all" else len(str(p["emotions"]).split(",")) if p["emotions"] != "quick" else 9
    topics, per_cell = chosen.n_topics, chosen.per_cell
    stories = emotions * topics * per_cell
    layers = profile.default_layers if p.get("layers", "default") == "default" else \
        profile.all_layers if p.get("layers") == "all" else tuple(p["layers"])
    return {"scale": scale, "emotions": emotions, "topics": topics, "per_cell": per_cell, "stories": stories,
            "prompts": math.ceil(stories / STORY_KEEP),
            "dialogues": chosen.dialogue_topics * p.get("dialogues_per_topic", 1),
            "layers": layers}


def _devices(device: str, rate: float | None) -> dict[str, tuple[float, dict[str, float]]]:
    """Where to time the run: (peak FLOP/s, efficiencies) per device row."""
    import torch

    on_gpu = torch.cuda.is_available() if device == "auto" else device not in ("cpu",)
    rows = {}
    if on_gpu and device in ("auto", "cuda"):
        rows[f"this GPU ({torch.cuda.get_device_name(0)}, measured)"] = (rate or _measure_gpu_rate(), EFFICIENCY["gpu"])
    elif device in DEVICES:
        rows[f"{device} (assumed peak)"] = (DEVICES[device]["peak"]["bfloat16"], EFFICIENCY["gpu"])
    else:
        rows["this CPU (measured fp32 matmul rate)"] = (rate or measure_cpu_rate(), EFFICIENCY["cpu"])
        for name, spec in DEVICES.items():
            rows[f"{name} (assumed peak)"] = (spec["peak"]["bfloat16"], EFFICIENCY["gpu"])
    return rows


def _times(rows: dict[str, tuple[float, dict[str, float]]], write_tokens: float, extract_flops: float, writer_shape: Any,
           writer_rate: float | None, slow: float) -> dict[str, dict[str, float]]:
    times = {}
    for where, (peak, eff) in rows.items():
        on_cpu = "CPU" in where
        tokens_per_s = writer_rate or (peak * eff["write"] / writer_shape.flops_per_token(lm_head=True) if on_cpu
                                       else GPU_WRITER_TOKENS_PER_S)
        times[where] = {"write_s": write_tokens / tokens_per_s,
                        "extract_s": extract_flops / (peak * eff["extract"] * (1.0 if on_cpu else slow))}
    return times


def _measure_gpu_rate() -> float:  # pragma: no cover - needs a GPU
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    started, count = time.perf_counter(), 0
    while time.perf_counter() - started < 1.0:
        a @ a
        count += 1
    torch.cuda.synchronize()
    return 2 * 8192 ** 3 * count / (time.perf_counter() - started)


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 72 * 3600 else f"{seconds / 86400:.1f} days"


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as the lines `python -m emolib plan` prints."""
    lines = [
        f"plan for {plan['model']} ({plan['model_id']}), scale {plan['scale']}:",
        f"  write: {plan['stories']:,} kept stories ({plan['emotions']} emotions x {plan['topics']} topics x {plan['per_cell']}), "
        f"~{plan['prompts']:,} prompts with rewrites, + {plan['dialogues']} dialogues = ~{plan['write_tokens']:,} writer tokens "
        f"({plan['write_flops'] / 1e12:,.1f} TFLOP)",
        f"  read: ~{plan['read_tokens']:,} tokens through layers {plan['layers'][0]}..{plan['layers'][-1]} "
        f"({plan['extract_flops'] / 1e12:,.1f} TFLOP, no LM head)",
        f"  weights: {plan['params'] / 1e9:.2f} B parameters = {plan['weights_gib']:.1f} GiB in {plan['dtype']}; "
        f"activations on disk: {plan['activations_gib']:.2f} GiB ({len(plan['layers'])} layers, fp32 means)",
    ]
    measured = plan.get("measured") or {}
    if measured.get("rate"):
        lines.append(f"  how it measured: a 1,024-square fp32 matmul for 1 s here, {measured['rate'] / 1e9:.0f} GFLOP/s on "
                     f"{measured['threads']} thread(s); other tasks running now {measured.get('busy', measured['load']):.0f} "
                     f"(1-minute load average {measured['load']:.1f}, which trails a job that just ended)"
                     + (" — this box is busy: the rate and the CPU times below are worse than a quiet machine's"
                        if measured.get("busy", measured["load"]) > BUSY_LOAD else ""))
    for where, t in plan["times"].items():
        lines.append(f"  time on {where}: writing ~{_duration(t['write_s'])}, extraction ~{_duration(t['extract_s'])}")
    a = plan["assumptions"]
    lines.append(f"  assumptions: {a['story_tokens']} new tokens per story, {a['keep_rate']:.0%} kept per prompt; achieved share "
                 f"of the matmul rate: CPU extraction {a['efficiency']['cpu']['extract']:.0%} and writing "
                 f"{a['efficiency']['cpu']['write']:.0%} (measured here), GPU extraction {a['efficiency']['gpu']['extract']:.0%} "
                 f"(assumed; NF4 half that); a small writer on a GPU ~{a['gpu_writer_tokens_per_s']:,} tokens/s (assumed)")
    lines.append(f"  shape: {plan['shape_source']}")
    return "\n".join(lines)


MIN_CHECK_TOKENS = 10_000  # below this, start-up dominates the measured seconds


def check_against_run(model: str, extract: dict[str, Any] | None, rate: float) -> dict[str, float] | None:
    """Predicted vs measured extraction time of a finished embedded run on this machine (its saved
    03_extract tokens, layers and seconds: `results.ExtractResults`)."""
    extract = extract or {}
    if (extract.get("tokens") or 0) < MIN_CHECK_TOKENS or not extract.get("seconds"):
        return None  # a rerun that found its shards on disk read a handful of tokens: no rate to compare
    shape = SHAPES[model]
    predicted = extract["tokens"] * shape.flops_per_token(max(extract["layers"])) / (rate * EFFICIENCY["cpu"]["extract"])
    # the published run's own rate, and what it predicts for this plan's read tokens (no FLOP model involved)
    return {"tokens": extract["tokens"], "measured_s": extract["seconds"], "predicted_s": predicted,
            "ratio": predicted / extract["seconds"], "tokens_per_second": extract["tokens"] / extract["seconds"]}


def describe(model: str, parameters: dict[str, Any] | None = None, writer: str = "smollm2", corpus: str = "") -> str:
    """The plan's lines for a chapter's first output (a model without a recorded shape says so). With
    `corpus`, the scale is the one that corpus's design file records (what chapter 01 wrote)."""
    if model not in SHAPES and get_profile(model).source != "local-folder":
        return f"no cost plan for {model!r} (plans cover {', '.join(SHAPES)} and checkpoint folders)"
    chosen = {k: v for k, v in (parameters or {}).items() if v not in (None, 0, "")}
    if corpus:

        design = Design.load(corpus_dir(corpus))
        if design is not None:

            scale = design.scale.split(" ")[0]
            chosen["scale"] = scale
            if design.scale not in SCALES:  # a custom size (chapter 02's dialogue_topics is then not known here)
                chosen.update(n_topics=len(design.topics), stories_per_cell=design.per_cell)
    return format_plan(make_plan(model, chosen, writer=writer))
