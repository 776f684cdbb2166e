"""Steering operators beyond add (ablate, ablate-then-add) and directions with arithmetic."""

from __future__ import annotations

import pytest
import torch
from test_steer import _block_outputs, _build, _greedy_without_cache

from emolib import models
from emolib.errors import EmolibError
from emolib.steering import steer
from emolib.writers import generate


def test_ablation_removes_the_component_exactly_at_the_hooked_block(tiny_gemma3):
    loaded, layer = tiny_gemma3, 2
    build = _build(loaded)
    steered, plain = _block_outputs(loaded, layer, steer.terms(build, {"sad": 0.0}, layer, operator="ablate"))
    unit = build.denoised.direction("sad", layer)
    assert (steered @ unit).abs().max() < 1e-5 and (plain @ unit).abs().max() > 1e-2
    torch.testing.assert_close(steered, plain - (plain @ unit)[..., None] * unit, rtol=1e-5, atol=1e-5)


def test_ablating_two_directions_removes_their_span(tiny_gemma3):
    loaded, layer = tiny_gemma3, 1
    build = _build(loaded)
    steered, _ = _block_outputs(loaded, layer, steer.terms(build, {"sad": 0.0, "happy": 0.0}, layer, operator="ablate"))
    for emotion in ("sad", "happy"):
        assert (steered @ build.denoised.direction(emotion, layer)).abs().max() < 1e-5


def test_ablate_then_add_sets_the_component_to_alpha_scale(tiny_gemma3):
    loaded, layer, alpha = tiny_gemma3, 1, 0.4
    build = _build(loaded)
    build.residual_norm[layer] = 2.5
    steered, plain = _block_outputs(loaded, layer, steer.terms(build, {"calm": alpha}, layer, operator="ablate_then_add"))
    unit = build.denoised.direction("calm", layer)
    torch.testing.assert_close(steered @ unit, torch.full(steered.shape[:2], alpha * 2.5), rtol=1e-5, atol=1e-5)
    orthogonal = lambda h: h - (h @ unit)[..., None] * unit  # noqa: E731
    torch.testing.assert_close(orthogonal(steered), orthogonal(plain), rtol=1e-5, atol=1e-5)


def test_add_at_alpha_zero_is_the_identity_and_ablation_is_not(tiny_gemma3):
    build = _build(tiny_gemma3)
    steered, plain = _block_outputs(tiny_gemma3, 1, steer.terms(build, {"sad": 0.0}, 1))
    assert torch.equal(steered, plain)
    steered, plain = _block_outputs(tiny_gemma3, 1, steer.terms(build, {"sad": 0.0}, 1, operator="ablate"))
    assert not torch.equal(steered, plain)


@pytest.mark.parametrize("name", ["tiny", "tiny-e4b"])
@pytest.mark.parametrize("operator", ["ablate", "ablate_then_add"])
def test_cached_decode_with_ablation_equals_recomputation(name, operator):
    loaded = models.load(name)
    writer = generate.LocalWriter(loaded, batch_size=4)
    messages = [{"role": "user", "content": "tell me about the cat and the door"}]
    prompt = writer.encode(messages)
    steer_terms = steer.terms(_build(loaded), {"happy": 3.0}, 1, operator=operator)
    with steer.steering(loaded, steer_terms, positions="generated"):
        got = writer.generate([messages], [0], max_new_tokens=10, temperature=0)[0]
    expected = _greedy_without_cache(loaded, prompt, 10, steer_terms, len(prompt))
    expected = expected[: expected.index(writer.eos_id)] if writer.eos_id in expected else expected
    assert got.text == loaded.tokenizer.decode(expected, skip_special_tokens=True)


def test_directions_combine_and_steer(tiny_gemma3):
    build = _build(tiny_gemma3)
    ev = build.denoised
    combined = ev["sad"] - ev["happy"] + 0.5 * ev["calm"]
    expected = ev.vectors[1, 2] - ev.vectors[0, 2] + 0.5 * ev.vectors[2, 2]
    torch.testing.assert_close(combined.at(2), expected)
    assert combined.norm(2) == pytest.approx(float(expected.norm()), rel=1e-6)
    assert (-ev["sad"]).at(0).equal(-ev.vectors[1, 0]) and "sad" in combined.label
    steered, plain = _block_outputs(tiny_gemma3, 2, [steer.term(combined, 2, alpha=0.3, scale=2.0)])
    shift = steered - plain
    torch.testing.assert_close(shift, (0.6 * expected / expected.norm()).expand_as(shift), rtol=1e-5, atol=1e-5)
    with pytest.raises(EmolibError, match="combines with another direction"):
        ev["sad"] + 1.0
    with pytest.raises(EmolibError, match="differ in layers"):
        ev["sad"] - ev.select(layers=[0, 1])["happy"]
    with pytest.raises(EmolibError, match="no vector at layer 9"):
        combined.at(9)


def test_bad_operators_are_one_line(tiny_gemma3):
    build = _build(tiny_gemma3)
    with pytest.raises(EmolibError, match="operator must be one of add, ablate, ablate_then_add"):
        steer.terms(build, {"sad": 1.0}, 1, operator="replace")
    with pytest.raises(EmolibError, match="ablation acts on every row"):
        steer.terms(build, {"sad": 1.0}, 1, rows=[0], operator="ablate")


def test_the_ablation_control_reads_the_ablated_direction_out(tiny_llama):
    """Chapter 7's ablation row: the same prompts and seeds with each direction projected out, read by the
    unsteered model; the ablation changes the text, and each change comes with an interval around it."""
    from emolib.steering import experiments

    build = _build(tiny_llama)
    prompts = ["the morning was quiet and", "she opened the letter and"]
    table = experiments.ablation_control(tiny_llama, build, ["happy", "sad"], 2, 2, prompts, samples=2,
                                         max_new_tokens=16, n_boot=200, positions="all", progress=False)
    assert list(table.index) == ["happy", "sad"]
    assert {"projection unsteered", "projection ablated", "projection change", "valence change 95% CI"} <= set(table.columns)
    low, high = table.loc["happy", "projection change 95% CI"]
    assert low <= table.loc["happy", "projection change"] <= high
    assert table["projection ablated"].ne(table["projection unsteered"]).any()
    torch.testing.assert_close(torch.tensor(table["projection change"].to_numpy()),
                               torch.tensor((table["projection ablated"] - table["projection unsteered"]).to_numpy()),
                               rtol=1e-6, atol=1e-9)


def test_repeated_ablated_directions_in_any_order_remove_the_whole_span(tiny_gemma3):
    """ablate + ablate_then_add of one emotion and ablate of another on one block: a repeated direction
    listed first must not cost the other one its ablation."""
    loaded, layer = tiny_gemma3, 1
    build = _build(loaded)
    both = (steer.terms(build, {"sad": 0.0}, layer, operator="ablate")
            + steer.terms(build, {"sad": 0.0}, layer, operator="ablate_then_add")
            + steer.terms(build, {"calm": 0.0}, layer, operator="ablate"))
    steered, _ = _block_outputs(loaded, layer, both)
    for emotion in ("sad", "calm"):
        assert (steered @ build.denoised.direction(emotion, layer)).abs().max() < 1e-5
