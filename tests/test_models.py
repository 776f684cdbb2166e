"""Model profiles, offline weight resolution, and layer discovery on every wrapper kind."""

from __future__ import annotations

import time

import pytest
import torch

from emolib import models
from emolib.errors import EmolibError, MissingWeightsError


def test_profiles_cover_the_design_card():
    assert {"270m", "smollm2", "e4b", "31b", "tiny"} <= set(models.PROFILES)
    assert models.PROFILES["e4b"].n_layers == 42 and models.PROFILES["e4b"].default_layers == (28,)
    assert models.PROFILES["31b"].default_layers == tuple(range(5, 60, 5))
    assert models.PROFILES["31b"].quantization == "bnb-4bit"
    assert models.PROFILES["270m"].default_layers == tuple(range(18))
    assert not models.PROFILES["270m"].has_chat_template and models.PROFILES["smollm2"].has_chat_template


def test_unknown_model_names_the_choices():
    with pytest.raises(EmolibError, match=r"unknown model 'gemma-9000'.*270m, smollm2"):
        models.get_profile("gemma-9000")


def test_layers_out_of_range_say_the_valid_range():
    profile = models.get_profile("270m")
    assert models.check_layers(profile, None) == tuple(range(18))
    assert models.check_layers(profile, [12, 3, 12]) == (3, 12)
    with pytest.raises(EmolibError, match=r"\[18\] out of range for 270m: it has 18 decoder layers, indices 0..17"):
        models.check_layers(profile, [3, 18])


@pytest.mark.parametrize("name", ["e4b", "31b"])
def test_missing_gemma4_weights_fail_fast_in_one_line(name, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    profile = models.get_profile(name)
    monkeypatch.delenv(profile.weights_env, raising=False)
    started = time.perf_counter()
    with pytest.raises(MissingWeightsError) as caught:
        models.check_available(name)
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert "\n" not in message
    assert profile.model_id in message and profile.weights_env in message and "hf download" in message
    # a notebook shows it as that one line, not a traceback
    assert caught.value._render_traceback_() == [f"MissingWeightsError: {message}"]


def test_weights_env_pointing_at_a_folder_is_used(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("EMOLIB_E4B_PATH", str(tmp_path))
    assert models.resolve_hf_weights(models.get_profile("e4b")) == tmp_path


@pytest.mark.parametrize("name,wrapper", [
    ("tiny", "Gemma3ForCausalLM"),
    ("tiny-gemma4", "Gemma4ForCausalLM"),
    ("tiny-gemma3-mm", "Gemma3ForConditionalGeneration"),
    ("tiny-gemma4-mm", "Gemma4ForConditionalGeneration"),
    ("tiny-llama", "LlamaForCausalLM"),
])
def test_layer_discovery_on_every_wrapper(name, wrapper):
    loaded = models.load(name, device="cpu")
    assert type(loaded.model).__name__ == wrapper
    layers = models.decoder_layers(loaded.model)
    assert len(layers) == loaded.profile.n_layers == 4
    assert models.final_norm(loaded.model) is models.text_decoder(loaded.model).norm
    # layer i is the output of block i: it equals output_hidden_states[i + 1] for every block but the
    # last (transformers returns the last one after the final norm)
    captured = {}
    handles = [layer.register_forward_hook(lambda m, a, out, i=i: captured.__setitem__(i, out[0] if isinstance(out, tuple) else out))
               for i, layer in enumerate(layers)]
    try:
        ids = loaded.tokenizer("the cat sat on the mat", return_tensors="pt")["input_ids"]
        with torch.no_grad():
            hidden = loaded.model(input_ids=ids, output_hidden_states=True).hidden_states
    finally:
        for handle in handles:
            handle.remove()
    for i in range(len(layers) - 1):
        torch.testing.assert_close(captured[i], hidden[i + 1])
    assert loaded.hidden_size == 64


def test_tiny_models_are_deterministic_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = models.load("tiny").model
    after = torch.rand(1)
    second = models.load("tiny").model
    assert torch.equal(before, after)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
