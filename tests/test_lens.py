"""Logit lens: the model's own norm convention, and planted directions read back."""

from __future__ import annotations

import pytest
import torch

from emolib.analysis import lens
from emolib import models


@pytest.mark.parametrize("name,gain", [("tiny", "1+w"), ("tiny-gemma4", "w"), ("tiny-llama", "w"), ("tiny-e4b", "w"),
                                       ("tiny-31b", "w")])
def test_lens_uses_each_familys_norm_convention(name, gain):
    loaded = models.load(name)
    norm = models.final_norm(loaded.model)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(-0.5, 0.5, norm.weight.numel()))  # make the convention matter
    vectors = torch.randn(3, loaded.hidden_size) * 1000
    eps = getattr(norm, "eps", None) or getattr(norm, "variance_epsilon")
    scaled = vectors / torch.sqrt(vectors.pow(2).mean(-1, keepdim=True) + eps)
    scaled = scaled * ((1 + norm.weight) if gain == "1+w" else norm.weight)
    expected = scaled @ loaded.model.get_output_embeddings().weight.T
    if lens.softcap(loaded.model):  # Gemma 4 E4B / 31B cap their logits at 30
        expected = torch.tanh(expected / 30.0) * 30.0
    torch.testing.assert_close(lens.lens_logits(loaded.model, vectors, chunk=100), expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", ["tiny", "tiny-gemma4", "tiny-gemma4-mm", "tiny-llama", "tiny-e4b", "tiny-31b"])
def test_the_lens_of_the_last_block_is_the_models_own_logits(name):
    """Norm convention, multimodal wrapper and softcap together: read the last block's output through the
    lens and get exactly what the model predicts."""
    loaded = models.load(name)
    captured = {}
    block = models.decoder_layers(loaded.model)[-1]
    handle = block.register_forward_hook(lambda m, a, out: captured.update(h=(out[0] if isinstance(out, tuple) else out)))
    try:
        ids = torch.tensor([[2, 10, 11, 12, 13, 14]])
        with torch.inference_mode():
            logits = loaded.model(input_ids=ids).logits[0]
    finally:
        handle.remove()
    torch.testing.assert_close(lens.lens_logits(loaded.model, captured["h"][0]), logits.float(), rtol=1e-4, atol=1e-4)


def test_a_planted_direction_reads_back_as_its_word(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    head = tiny_llama.model.get_output_embeddings().weight
    ids = [tokenizer.convert_tokens_to_ids(w) for w in ("happy", "afraid")]
    logits = lens.lens_logits(tiny_llama.model, head[ids] * 50)
    tops = lens.top_tokens(logits, tokenizer, k=3)
    assert tops[0][0][0] == "happy" and tops[1][0][0] == "afraid"
    bottom = lens.top_tokens(-logits, tokenizer, k=1, bottom=True)
    assert bottom[0][0][0] == "happy"
    assert lens.lens_hits(logits, tokenizer, ["happy", "afraid"], k=3).tolist() == [True, True]
    table = lens.lens_table(tiny_llama.model, tokenizer, head[ids] * 50, ["happy", "afraid"], k=2)
    assert table.loc["happy", "top tokens"].startswith("happy")
    assert set(lens.PUBLISHED_LENS) == {"happy", "desperate", "afraid", "calm", "angry", "sad", "loving", "guilty"}


def test_words_only_drops_fragments(tiny_llama):
    tokenizer = tiny_llama.tokenizer
    logits = torch.zeros(1, len(tokenizer))
    for token, value in (("<unk>", 9.0), (",", 8.0), ("rain", 7.0)):
        logits[0, tokenizer.convert_tokens_to_ids(token)] = value
    assert lens.top_tokens(logits, tokenizer, k=1)[0] == [("rain", 7.0)]
    assert lens.top_tokens(logits, tokenizer, k=1, words_only=False)[0][0][1] == 9.0


def test_the_self_naming_count_has_a_random_direction_baseline(tiny_llama):
    """Issue 23.8: planted directions that read back as their own words beat random directions of the same norm
    (p at its floor), while random directions drawn as the "vectors" land at chance (p unremarkable)."""
    tokenizer = tiny_llama.tokenizer
    head = tiny_llama.model.get_output_embeddings().weight.detach()
    words = ["happy", "afraid"]
    planted = head[[tokenizer.convert_tokens_to_ids(w) for w in words]] * 50
    observed = int(lens.lens_hits(lens.lens_logits(tiny_llama.model, planted), tokenizer, words, 3).sum())
    chance = lens.chance_self_named(tiny_llama.model, tokenizer, planted, words, observed, k=3, draws=19)
    assert observed == 2 and chance["mean"] < 0.5 and chance["p"] == pytest.approx(1 / 20)
    noise = torch.randn(planted.shape, generator=torch.Generator().manual_seed(5)) * 50
    none = int(lens.lens_hits(lens.lens_logits(tiny_llama.model, noise), tokenizer, words, 3).sum())
    assert lens.chance_self_named(tiny_llama.model, tokenizer, noise, words, none, k=3, draws=19)["p"] > 0.5
