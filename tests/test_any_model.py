"""Any local Hugging Face causal LM is an analysed model: a folder (or hf:<folder or cached id>) becomes a
profile from its config alone; extraction, steering, the lens and resume hold for each family."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers as tf

from emolib import models
from emolib.analysis import lens
from emolib.errors import EmolibError
from emolib.extraction import extract
from emolib.extraction.vectors import EmotionVectors
from emolib.models.tiny import tiny_tokenizer
from emolib.steering import steer

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ["llama", "qwen2", "mistral", "gemma2", "gemma3_text", "gemma4_text", "phi3", "gpt_neox"]
WORDS = "the morning light fell on the kitchen table while she waited for the letter and the rain".split()


def _config(family: str, vocab: int):
    ids = dict(pad_token_id=0, eos_token_id=5, bos_token_id=2)
    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  **ids)
    kv = dict(num_key_value_heads=2)
    if family == "llama":
        return tf.LlamaForCausalLM, tf.LlamaConfig(**common, **kv)
    if family == "qwen2":
        return tf.Qwen2ForCausalLM, tf.Qwen2Config(**common, **kv)
    if family == "mistral":
        return tf.MistralForCausalLM, tf.MistralConfig(**common, **kv, sliding_window=None)
    if family == "gemma2":
        return tf.Gemma2ForCausalLM, tf.Gemma2Config(**common, **kv, head_dim=16, sliding_window=16)
    if family == "gemma3_text":
        return tf.Gemma3ForCausalLM, tf.Gemma3TextConfig(**common, **kv, head_dim=16, sliding_window=16)
    if family == "gemma4_text":
        return tf.Gemma4ForCausalLM, tf.Gemma4TextConfig(**common, **kv, head_dim=16, global_head_dim=16,
                                                         sliding_window=16, hidden_size_per_layer_input=16,
                                                         vocab_size_per_layer_input=vocab)
    if family == "phi3":
        return tf.Phi3ForCausalLM, tf.Phi3Config(**common, **kv)
    if family == "gpt_neox":
        return tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(**common)
    raise ValueError(family)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint per family, saved as a researcher's folder would be (weights, config, tokenizer)."""
    tokenizer = tiny_tokenizer()
    vocab = -(-len(tokenizer) // 8) * 8
    folders = {}
    for family in FAMILIES:
        cls, config = _config(family, vocab)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = cls(config)
        folder = tmp_path_factory.mktemp("checkpoints") / f"ckpt-{family}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[family] = folder
    return folders


def _text(n: int = 70, seed: int = 0) -> str:
    generator = torch.Generator().manual_seed(seed)
    return " ".join(WORDS[int(i)] for i in torch.randint(len(WORDS), (n,), generator=generator))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_folder_is_a_profile_from_its_config(checkpoints, family):
    profile = models.get_profile(str(checkpoints[family]))
    assert (profile.source, profile.family, profile.n_layers) == ("local-folder", family, 4)
    assert profile.default_layers == (0, 1, 2, 3) and profile.analysis_layer == 3  # round(2/3 * 4)
    assert profile.name == f"ckpt-{family}" and profile.has_chat_template
    assert models.get_profile(f"hf:{checkpoints[family]}") == profile


@pytest.mark.parametrize("family", FAMILIES)
def test_extraction_steering_and_lens_hold_for_every_family(checkpoints, family):
    loaded = models.load(str(checkpoints[family]))
    assert loaded.dtype == torch.float32 and loaded.device.type == "cpu"
    # extraction: the hooked means equal transformers' hidden states
    texts = [_text(70, 0), _text(85, 1)]
    encoded = [loaded.tokenizer(t)["input_ids"] for t in texts]
    ids, mask = extract._pad(encoded, 0, "left")
    means, _ = extract.reduce_batch(loaded.model, [0, 2], ids, mask, token_start=50)
    for row, tokens in enumerate(encoded):
        with torch.no_grad():
            hidden = loaded.model(input_ids=torch.tensor([tokens]), output_hidden_states=True).hidden_states
        for slot, layer in enumerate([0, 2]):
            torch.testing.assert_close(means[row, slot], hidden[layer + 1][0, 50:].mean(0), rtol=1e-4, atol=1e-5)
    # steering at alpha 0 is the identity
    vectors = EmotionVectors(["happy", "sad"], (0, 1, 2, 3), torch.randn(2, 4, 64, generator=torch.Generator().manual_seed(1)))
    build = SimpleNamespace(denoised=vectors, residual_norm={layer: 1.0 for layer in range(4)})
    short = torch.tensor([encoded[0][:12]])
    with torch.inference_mode():
        before = loaded.model(input_ids=short).logits
        with steer.steering(loaded, steer.terms(build, {"happy": 0.0}, 2)):
            during = loaded.model(input_ids=short).logits
    assert torch.equal(before, during)
    # and a non-zero term adds exactly alpha * scale * unit at the block's output
    block, seen = models.decoder_layers(loaded.model)[2], []
    hook = lambda m, a, out: seen.append((out[0] if isinstance(out, tuple) else out).clone())  # noqa: E731
    with torch.inference_mode():
        with steer.steering(loaded, steer.terms(build, {"happy": 0.5}, 2)):
            handle = block.register_forward_hook(hook)
            loaded.model(input_ids=short)
            handle.remove()
        handle = block.register_forward_hook(hook)
        loaded.model(input_ids=short)
        handle.remove()
    unit = vectors.direction("happy", 2)
    torch.testing.assert_close(seen[0] - seen[1], (0.5 * unit).expand_as(seen[0]), rtol=1e-4, atol=1e-4)
    # the lens of the last block is the model's own prediction
    captured = {}
    block = models.decoder_layers(loaded.model)[-1]
    handle = block.register_forward_hook(lambda m, a, out: captured.update(h=out[0] if isinstance(out, tuple) else out))
    try:
        with torch.inference_mode():
            logits = loaded.model(input_ids=short).logits[0]
    finally:
        handle.remove()
    torch.testing.assert_close(lens.lens_logits(loaded.model, captured["h"][0]), logits.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen2", "gpt_neox"])
def test_a_killed_extraction_of_a_folder_model_resumes_bit_identically(checkpoints, family, tmp_path, monkeypatch):
    loaded = models.load(str(checkpoints[family]))
    texts, _ = extract.Texts.tokenize([f"t{i}" for i in range(12)], [_text(60 + i, i) for i in range(12)], loaded.tokenizer)
    reference = extract.ActivationStore(tmp_path / "a")
    reference.extract(loaded, (1, 3), texts, token_budget=300, shard_texts=2, progress=False)
    original, calls = extract.reduce_batch, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    resumed = extract.ActivationStore(tmp_path / "b")
    monkeypatch.setattr(extract, "reduce_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        resumed.extract(loaded, (1, 3), texts, token_budget=300, shard_texts=2, progress=False)
    monkeypatch.setattr(extract, "reduce_batch", original)
    stats = resumed.extract(loaded, (1, 3), texts, token_budget=300, shard_texts=2, progress=False)
    assert 0 < stats["already_done"] < stats["shards"]
    a, b = reference.load(texts.ids), resumed.load(texts.ids)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_folders_that_are_not_a_causal_lm_say_so_in_one_line(tmp_path):
    with pytest.raises(EmolibError, match="no config.json"):
        models.get_profile(str(tmp_path))
    encoder = tmp_path / "bert"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert",
                                                     "num_hidden_layers": 2}))
    with pytest.raises(EmolibError, match=r"not a causal language model \(architectures \['BertModel'\]"):
        models.get_profile(str(encoder))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "config.json").write_text(json.dumps({"architectures": ["MyForCausalLM"], "model_type": "mine",
                                                    "num_hidden_layers": 2, "auto_map": {"AutoModelForCausalLM": "x.y"}}))
    with pytest.raises(EmolibError, match="never runs \\(no trust_remote_code\\)"):
        models.get_profile(str(remote))
    with pytest.raises(EmolibError, match="not in the Hugging Face cache"):
        models.get_profile("hf:nobody/not-a-model")
    with pytest.raises(EmolibError, match="or a local Hugging Face checkpoint"):
        models.get_profile("not-a-profile")


def test_a_multimodal_checkpoint_reads_its_text_decoder_and_names_do_not_collide(tmp_path):
    """Gemma 3/4 ship as ...ForConditionalGeneration with a text_config: the depth is the text decoder's. A folder
    named like a built-in profile gets a name of its own (its runs/ folders stay apart)."""
    wrapped = models.load("tiny-gemma3-mm")
    folder = tmp_path / "tiny-llama"
    wrapped.model.save_pretrained(folder)
    wrapped.tokenizer.save_pretrained(folder)
    profile = models.get_profile(str(folder))
    assert (profile.family, profile.n_layers) == ("gemma3", 4)
    assert profile.name.startswith("tiny-llama-") and profile.name != "tiny-llama"
    assert models.get_profile(str(folder)) is models.get_profile(str(folder / ".." / "tiny-llama"))
    assert len(models.decoder_layers(models.load(str(folder)).model)) == profile.n_layers
