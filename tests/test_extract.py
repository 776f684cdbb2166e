"""Extraction: hooks agree with transformers, padding does not matter, shards resume bit-identically."""

from __future__ import annotations

import json

import pytest
import torch

from emolib.extraction import extract
from emolib import models
from emolib.errors import EmolibError

WORDS = "the morning light fell on the kitchen table while she waited for the letter and the rain".split()


def _texts(n: int, seed: int = 0) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [" ".join(WORDS[int(j)] for j in torch.randint(len(WORDS), (60 + int(torch.randint(40, (1,), generator=generator)),),
                                                          generator=generator)) for _ in range(n)]


@pytest.mark.parametrize("name", ["tiny", "tiny-gemma4", "tiny-gemma4-mm", "tiny-llama", "tiny-e4b", "tiny-31b"])
def test_means_equal_output_hidden_states(name):
    loaded = models.load(name)
    texts = _texts(3)
    encoded = [loaded.tokenizer(t)["input_ids"] for t in texts]
    ids, mask = extract._pad(encoded, 0, "left")
    layers = [0, 2]  # stop after block 2 of 4
    means, norms = extract.reduce_batch(loaded.model, layers, ids, mask, token_start=50)
    for row, tokens in enumerate(encoded):
        single = torch.tensor([tokens])
        with torch.no_grad():
            hidden = loaded.model(input_ids=single, output_hidden_states=True).hidden_states
        for slot, layer in enumerate(layers):
            states = hidden[layer + 1][0, 50:]
            torch.testing.assert_close(means[row, slot], states.mean(0), rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(norms[row, slot], states.norm(dim=-1).mean(), rtol=1e-4, atol=1e-5)


def test_left_and_right_padding_give_the_same_means(tiny_gemma3):
    encoded = [tiny_gemma3.tokenizer(t)["input_ids"] for t in _texts(4, seed=1)]
    left = extract.reduce_batch(tiny_gemma3.model, [1, 3], *extract._pad(encoded, 0, "left"))
    right = extract.reduce_batch(tiny_gemma3.model, [1, 3], *extract._pad(encoded, 0, "right"))
    torch.testing.assert_close(left[0], right[0], rtol=1e-5, atol=1e-5)


def test_the_forward_pass_stops_after_the_deepest_layer(tiny_gemma3):
    called = []
    handles = [layer.register_forward_hook(lambda m, a, o, i=i: called.append(i))
               for i, layer in enumerate(models.decoder_layers(tiny_gemma3.model))]
    norm_calls = []
    handles.append(models.final_norm(tiny_gemma3.model).register_forward_hook(lambda *a: norm_calls.append(1)))
    try:
        encoded = [tiny_gemma3.tokenizer(_texts(1)[0])["input_ids"]]
        extract.reduce_batch(tiny_gemma3.model, [1], *extract._pad(encoded, 0))
    finally:
        for handle in handles:
            handle.remove()
    assert called == [0, 1] and norm_calls == []
    # hooks are gone even though the pass was stopped by an exception
    assert all(not layer._forward_hooks for layer in models.decoder_layers(tiny_gemma3.model))


def test_short_texts_are_reported_not_extracted(tiny_gemma3):
    texts, short = extract.Texts.tokenize(["a", "b"], ["word " * 10, _texts(1)[0]], tiny_gemma3.tokenizer)
    assert short == ["a"] and texts.ids == ["b"]
    with pytest.raises(EmolibError, match="no token at position >= 50"):
        extract.reduce_batch(tiny_gemma3.model, [0], *extract._pad([[2, 3, 4]], 0))


def test_batches_respect_the_token_budget():
    lengths = [100, 80, 300, 60, 90, 100, 70]
    batches = extract.plan_batches(lengths, token_budget=300)
    assert sorted(i for batch in batches for i in batch) == list(range(7))
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 300 or len(batch) == 1


def _store_and_texts(tmp_path, tiny, n=40):
    texts, _ = extract.Texts.tokenize([f"t{i}" for i in range(n)], _texts(n, seed=2), tiny.tokenizer)
    return extract.ActivationStore(tmp_path / "acts"), texts


def test_a_killed_extraction_resumes_bit_identically(tmp_path, tiny_gemma3, monkeypatch):
    layers = (0, 1, 2, 3)
    reference, texts = _store_and_texts(tmp_path / "a", tiny_gemma3)
    reference.extract(tiny_gemma3, layers, texts, token_budget=300, shard_texts=8, progress=False)
    expected = reference.load(texts.ids)

    interrupted, _ = _store_and_texts(tmp_path / "b", tiny_gemma3)
    calls = {"n": 0}
    original = extract.reduce_batch

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("killed")
        return original(*args, **kwargs)

    monkeypatch.setattr(extract, "reduce_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        interrupted.extract(tiny_gemma3, layers, texts, token_budget=300, shard_texts=8, progress=False)
    monkeypatch.setattr(extract, "reduce_batch", original)
    stats = interrupted.extract(tiny_gemma3, layers, texts, token_budget=300, shard_texts=8, progress=False)
    assert 0 < stats["already_done"] < stats["shards"]
    got = interrupted.load(texts.ids)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_a_corrupted_shard_is_detected_and_recomputed(tmp_path, tiny_gemma3):
    store, texts = _store_and_texts(tmp_path, tiny_gemma3, n=16)
    store.extract(tiny_gemma3, (1, 3), texts, shard_texts=8, progress=False)
    expected = store.load(texts.ids)
    shard = store.shard_path("shard-00001")
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF  # flip bits in the tensor data
    shard.write_bytes(bytes(data))
    with pytest.raises(EmolibError, match="shard-00001.safetensors is missing or corrupted"):
        store.load(texts.ids)
    store.shard_path("shard-00000").write_bytes(store.shard_path("shard-00000").read_bytes()[:100])  # truncated
    stats = store.extract(tiny_gemma3, (1, 3), texts, shard_texts=8, progress=False)
    assert stats["already_done"] == 0
    got = store.load(texts.ids)
    assert torch.equal(got[0], expected[0])


def test_the_corpus_can_grow_without_recomputing(tmp_path, tiny_gemma3):
    store, texts = _store_and_texts(tmp_path, tiny_gemma3, n=24)
    first = extract.Texts(texts.ids[:16], texts.texts[:16], texts.token_ids[:16])
    store.extract(tiny_gemma3, (2,), first, shard_texts=8, progress=False)
    stats = store.extract(tiny_gemma3, (2,), texts, shard_texts=8, progress=False)
    assert (stats["already_done"], stats["shards"]) == (2, 3)
    manifest = json.loads((store.folder / "manifest.json").read_text())
    assert manifest["texts"] == 24 and manifest["layer_convention"].startswith("layer i = output of decoder block i")
    assert manifest["model_id"] == "emolib/tiny" and len(manifest["shards"]) == 3
    with pytest.raises(EmolibError, match="other settings \\(layers\\)"):
        store.extract(tiny_gemma3, (1, 2), texts, progress=False)


def test_a_deep_set_copies_its_bases_shards_and_computes_only_the_new_texts(tmp_path, tiny_gemma3):
    """A deep story set holds its base's texts again: the base's whole shards are copied (same settings, every text
    wanted), only the new texts are computed, and every mean equals a store computed from nothing."""
    base_store, texts = _store_and_texts(tmp_path, tiny_gemma3, n=24)
    base = extract.Texts(texts.ids[:16], texts.texts[:16], texts.token_ids[:16])
    base_store.extract(tiny_gemma3, (1, 2), base, shard_texts=8, progress=False)
    deep = extract.ActivationStore(tmp_path / "deep")
    stats = deep.extract(tiny_gemma3, (1, 2), texts, shard_texts=8, progress=False, reuse=[base_store.folder])
    assert (stats["shards"], stats["already_done"]) == (3, 2)  # two copied, one computed
    plan = json.loads((deep.folder / "plan.json").read_text())
    assert [shard.get("copied_from", "") for shard in plan["shards"]][:2] == ["acts/shard-00000", "acts/shard-00001"]
    fresh = extract.ActivationStore(tmp_path / "fresh")
    fresh.extract(tiny_gemma3, (1, 2), texts, shard_texts=8, progress=False)
    for a, b in zip(deep.load(texts.ids), fresh.load(texts.ids)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    other_layers = extract.ActivationStore(tmp_path / "other-layers")
    stats = other_layers.extract(tiny_gemma3, (2,), texts, shard_texts=8, progress=False, reuse=[base_store.folder])
    assert stats["already_done"] == 0  # a store made with other settings is never copied


def _tiny_corpus(runs_root, n_per_emotion: int = 3):
    """A small corpus written by the tiny model itself, plus hand-written neutral dialogues."""
    from emolib.stories import corpus as C
    from emolib.writers import generate

    settings = C.CorpusSettings(writer="tiny", max_new_tokens=120)
    store = C.Corpus(runs_root / "corpus" / "tiny", settings)
    jobs = C.story_jobs(settings, ["happy", "sad", "calm"], C.select_topics(n_per_emotion), 1)
    writer = generate.LocalWriter(models.load("tiny"), batch_size=16)
    C.write_jobs(store, jobs, writer, progress=False)
    for job in C.neutral_jobs(settings, C.select_topics(6), 1):
        turns = [("Person", "How do I repot a plant " + "and water it " * 8 + "?"),
                 ("AI", "Take the plant out, loosen the roots, " + "add fresh soil, " * 10 + f"step {job.seed}."),
                 ("Person", "How long does that take?"), ("AI", "About " + "twenty minutes, " * 6 + "in total.")]
        store.save_dialogue(job, turns, 0)


def test_two_processes_split_the_shards_and_match_one(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from emolib.extraction import vectors as V

    monkeypatch.setenv("EMOLIB_RUNS", str(tmp_path))
    _tiny_corpus(tmp_path)
    env = {**os.environ, "EMOLIB_RUNS": str(tmp_path), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    command = ["-m", "emolib", "extract", "--model", "tiny", "--corpus", "tiny", "--layers", "all", "--shard-texts", "3"]
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             "29517", *command], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0:" in result.stdout and "rank 1:" in result.stdout
    store = extract.ActivationStore(extract.activations_dir("tiny", "tiny", (0, 1, 2, 3)))
    manifest = json.loads((store.folder / "manifest.json").read_text())
    plan = json.loads((store.folder / "plan.json").read_text())
    assert len(manifest["shards"]) == len(plan["shards"]) >= 4 and manifest["missing_shards"] == []
    distributed = sorted(p.name for p in store.folder.glob("shard-*.safetensors"))

    single_runs = tmp_path / "single"
    single_runs.mkdir()
    monkeypatch.setenv("EMOLIB_RUNS", str(single_runs))
    (single_runs / "corpus").symlink_to(tmp_path / "corpus")
    one = subprocess.run([sys.executable, *command], capture_output=True, text=True,
                         env={**env, "EMOLIB_RUNS": str(single_runs)}, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    single = extract.ActivationStore(extract.activations_dir("tiny", "tiny", (0, 1, 2, 3)))
    assert sorted(p.name for p in single.folder.glob("shard-*.safetensors")) == distributed
    ids = [text_id for shard in plan["shards"] for text_id, _ in shard["texts"]]
    a, b = store.load(ids), single.load(ids)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # and the vectors built from them
    from emolib.stories import corpus as C
    from emolib.stories import design as D

    chosen = D.select(C.Corpus(tmp_path / "corpus" / "tiny"))
    stories, neutral = chosen.stories, chosen.neutral
    by_emotion = stories.groupby("emotion")["id"].apply(list).to_dict()
    built = V.build(store, by_emotion, neutral["id"].tolist())
    assert built.denoised.vectors.shape == (3, 4, 64) and set(built.counts) == {"happy", "sad", "calm"}
