"""E4B / 31B readiness: the cost of a run before it starts, and the 4-bit path without CUDA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from emolib import models
from emolib.book import plan
from emolib.errors import EmolibError

ROOT = Path(__file__).resolve().parents[1]


def test_shapes_match_the_published_parameter_counts():
    # 31B: "30.7B text scale"; E4B: ~4B of blocks plus 2.8B of per-layer embeddings (lookups, no FLOPs)
    assert plan.SHAPES["31b"].params == pytest.approx(30.7e9, rel=0.02)
    e4b = plan.SHAPES["e4b"]
    assert e4b.params - e4b.vocab * e4b.layers * e4b.per_layer_input == pytest.approx(4.6e9, rel=0.1)
    assert plan.SHAPES["270m"].params == pytest.approx(268e6, rel=0.02)
    assert plan.SHAPES["smollm2"].params == pytest.approx(134.5e6, rel=0.02)
    # KV-shared layers project no keys or values: the upper layers of E4B are cheaper than the lower ones
    assert e4b.layer_params(30) < e4b.layer_params(6)


def test_the_plan_counts_texts_tokens_flops_memory_and_disk():
    made = plan.make_plan("31b", {"scale": "full"}, device="cpu", rate=1e11)
    assert (made["stories"], made["emotions"], made["topics"], made["per_cell"]) == (4104, 171, 12, 2)
    assert made["prompts"] == 5130 and made["dialogues"] == 100 and made["dtype"] == "nf4"
    assert made["layers"] == list(range(5, 60, 5))
    assert made["read_tokens"] == 4104 * plan.STORY_TOKENS + 100 * plan.DIALOGUE_TOKENS
    assert made["extract_flops"] == pytest.approx(made["read_tokens"] * plan.SHAPES["31b"].flops_per_token(55))
    assert 14 < made["weights_gib"] < 18  # 30.7 B parameters in NF4
    assert made["activations_gib"] == pytest.approx((4104 + 100) * 11 * 5377 * 4 / 2 ** 30)
    text = plan.format_plan(made)
    assert "4,104 kept stories" in text and "time on this CPU" in text and "time on H100" in text
    bf16 = plan.make_plan("31b", {"scale": "quick"}, device="H100", dtype="bfloat16")
    assert bf16["weights_gib"] == pytest.approx(30.7e9 * 2 / 2 ** 30, rel=0.02) and list(bf16["times"]) == ["H100 (assumed peak)"]
    with pytest.raises(EmolibError, match="unknown scale 'huge'"):
        plan.make_plan("e4b", {"scale": "huge"}, device="H100")


def test_the_plan_check_compares_with_a_finished_run():
    extract = {"tokens": 100_000, "seconds": 200.0, "layers": list(range(18))}
    rate = 100_000 * plan.SHAPES["270m"].flops_per_token(17) / (200.0 * plan.EFFICIENCY["cpu"]["extract"])
    check = plan.check_against_run("270m", extract, rate)
    assert check["ratio"] == pytest.approx(1.0) and check["measured_s"] == 200.0
    assert plan.check_against_run("270m", None, rate) is None
    # a rerun that reused its shards and read one swapped story is no measurement of the rate
    assert plan.check_against_run("270m", {**extract, "tokens": 83, "seconds": 0.2}, rate) is None


def test_the_cli_prints_a_plan():
    out = subprocess.run([sys.executable, "-m", "emolib", "plan", "--model", "e4b", "-p", "scale", "full", "--device", "H100"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plan for e4b (google/gemma-4-E4B-it), scale full" in out.stdout and "extraction ~" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "emolib", "plan", "--model", "e4b", "-p", "dtype", "int3"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and "parameter dtype='int3': must be one of" in bad.stderr


@pytest.fixture
def fake_31b(tmp_path, monkeypatch):
    """A tiny checkpoint with 31B's structure saved where the 31b profile looks for its weights."""
    loaded = models.load("tiny-31b")
    folder = tmp_path / "gemma-4-31B-it"
    loaded.model.save_pretrained(folder)
    loaded.tokenizer.save_pretrained(folder)
    monkeypatch.setenv("EMOLIB_31B_PATH", str(folder))
    return folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_4bit_without_cuda_says_so_in_one_line_and_how_to_run_bf16(fake_31b):
    with pytest.raises(EmolibError, match=r"31b: 4-bit \(bitsandbytes NF4\) needs a CUDA GPU and none is visible; run it in "
                                          r"bf16 instead with `-p dtype bf16`"):
        models.check_available("31b")
    assert models.load_tokenizer("31b") is not None  # the tokenizer needs no GPU
    loaded = models.load("31b", dtype="bf16")  # the advice works: a plain bf16 load through device_map="auto"
    assert loaded.dtype == torch.bfloat16 and loaded.provenance["quantization"] is None
    reference = models.load("tiny-31b").model
    for name, tensor in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name].float(), tensor.to(torch.bfloat16).float()), name
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([[2, 10, 11, 12]])).logits
    assert torch.isfinite(logits).all()
    with pytest.raises(EmolibError, match="dtype must be one of"):
        models.load("31b", dtype="int3")
