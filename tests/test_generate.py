"""Writers: the fast local path against plain `generate`, and the HTTP backend against a stub server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from emolib import models
from emolib.errors import EmolibError, WriterError
from emolib.stories import corpus as C
from emolib.writers import generate


def _prompts(n: int = 6) -> tuple[list[list[dict]], list[int]]:
    settings = C.CorpusSettings(writer="tiny")
    jobs = C.story_jobs(settings, ["happy", "sad", "calm"], C.select_topics(n // 3 or 1), 1)
    # prompts of different lengths, so left padding and the shared prefix both matter
    messages = [job.messages for job in jobs]
    messages[0] = [{"role": "user", "content": "Write one word."}]
    return messages, [job.seed for job in jobs]


@pytest.mark.parametrize("name", ["tiny", "tiny-llama", "tiny-gemma4", "tiny-e4b", "tiny-31b"])
@pytest.mark.parametrize("repetition_penalty", [1.0, 1.3])
def test_fast_path_is_token_identical_to_generate_under_greedy(name, repetition_penalty):
    loaded = models.load(name)
    messages, seeds = _prompts()
    plain = generate.LocalWriter(loaded, batch_size=6, quantize=None, fast=False)
    fast = generate.LocalWriter(loaded, batch_size=6, quantize=None)
    expected = plain.generate(messages, seeds, max_new_tokens=24, temperature=0, repetition_penalty=repetition_penalty)
    got = fast.generate(messages, seeds, max_new_tokens=24, temperature=0, repetition_penalty=repetition_penalty)
    assert [g.text for g in got] == [e.text for e in expected]
    assert [g.n_tokens for g in got] == [e.n_tokens for e in expected]


def test_each_row_samples_from_its_own_seed(tiny_llama):
    writer = generate.LocalWriter(tiny_llama, batch_size=6, quantize=None)
    messages, seeds = _prompts()
    together = writer.generate(messages, seeds, max_new_tokens=20)
    writer.batch_size = 2
    apart = writer.generate(messages[::-1], seeds[::-1], max_new_tokens=20)[::-1]
    assert [a.text for a in apart] == [t.text for t in together]
    other = writer.generate(messages, [s + 1 for s in seeds], max_new_tokens=20)
    assert [o.text for o in other] != [t.text for t in together]


def test_int8_writer_is_reproducible_for_the_same_batches():
    writer = generate.LocalWriter(models.load("tiny"), batch_size=6, quantize="int8")
    assert writer.quantize == "int8"
    assert not any(isinstance(m, torch.nn.Linear) and type(m) is torch.nn.Linear for m in writer.loaded.model.modules())
    messages, seeds = _prompts()
    first = writer.generate(messages, seeds, max_new_tokens=20)
    assert [g.text for g in writer.generate(messages, seeds, max_new_tokens=20)] == [g.text for g in first]


def test_sampler_draws_from_the_nucleus():
    torch.manual_seed(0)
    logits = torch.randn(1, 500) * 3
    generators = [torch.Generator().manual_seed(7)]
    counts = torch.zeros(500)
    for _ in range(20000):
        counts[generate.sample_next(logits, 1.0, 0.9, generators, candidates=32)] += 1
    probs = logits.softmax(-1)[0]
    ordered, order = probs.sort(descending=True)
    keep = ordered.cumsum(0) - ordered < 0.9
    expected = torch.zeros(500)
    expected[order[keep]] = ordered[keep] / ordered[keep].sum()
    assert (counts / 20000 - expected).abs().max() < 0.01
    assert bool(((counts > 0) <= (expected > 0)).all())


def test_a_draw_survives_last_bit_changes_in_the_logits():
    """Another CPU's kernels change logits in their last bits; near-tied tokens then swap sort positions.
    Noise keyed by token id keeps each token's draw, so the sampled token stays the same."""
    torch.manual_seed(1)
    flat = torch.randn(1, 50_000) * 0.5  # a random model's nearly uniform next-token distribution
    moved = flat + 1e-6 * torch.randn_like(flat)  # near-tied neighbours (~2e-5 apart) swap places
    same = 0
    for seed in range(300):
        a = generate.sample_next(flat, 1.0, 0.95, [torch.Generator().manual_seed(seed)], candidates=64)
        b = generate.sample_next(moved, 1.0, 0.95, [torch.Generator().manual_seed(seed)], candidates=64)
        same += int(a == b)
    assert same >= 297


def test_token_noise_is_exponential_and_keyed():
    ids = torch.arange(200_000)
    noise = generate.token_noise(ids, key=12345)
    assert noise.dtype == torch.float64 and bool((noise > 0).all())
    assert abs(noise.mean().item() - 1) < 0.01 and abs(noise.var().item() - 1) < 0.02
    assert torch.equal(generate.token_noise(ids.flip(0), key=12345), noise.flip(0))  # by id, not by place
    other = generate.token_noise(ids, key=12346)
    assert abs(torch.corrcoef(torch.stack([noise, other]))[0, 1].item()) < 0.01


def test_min_new_tokens_and_prefill(tiny_gemma3):
    writer = generate.LocalWriter(tiny_gemma3, batch_size=4, quantize=None)
    prefilled = [[{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": "<NEW STORY>\n"}]]
    out = writer.generate(prefilled, [1], max_new_tokens=12, min_new_tokens=12)[0]
    assert out.text.startswith("<NEW STORY>\n") and out.n_tokens == 12 and not out.finished


def test_a_model_without_chat_template_cannot_write():
    loaded = models.load("tiny")
    loaded.tokenizer.chat_template = None
    with pytest.raises(EmolibError, match="no chat template"):
        generate.LocalWriter(loaded)


def test_measure_throughput_reports_both_modes(tiny_llama):
    writer = generate.LocalWriter(tiny_llama, batch_size=64, quantize=None)
    speed = generate.measure_throughput(writer, _prompts()[0], new_tokens=8)
    assert speed["sequential_tokens_per_s"] > 0 and speed["batched_tokens_per_s"] > 0
    assert writer.batch_size == 64


# --- the OpenAI-compatible backend, against a stub server on 127.0.0.1 ------------------------------


class Stub:
    """A scripted chat-completions server: each request takes the next behaviour from `script`."""

    def __init__(self, script: list[str]):
        self.script = list(script)
        self.requests: list[dict] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                behaviour = stub.script.pop(0) if stub.script else "ok"
                if behaviour == "slow":
                    time.sleep(1.0)
                if behaviour in ("500", "429", "404"):
                    self.send_response(int(behaviour))
                    self.end_headers()
                    self.wfile.write(b"nope")
                    return
                if behaviour == "malformed":
                    payload = b'{"choices": [{"message": {}}]'
                else:
                    text = f"story for seed {body['seed']}. The end."
                    payload = json.dumps({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                                          "usage": {"completion_tokens": 9}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def stub():
    servers = []

    def make(script):
        servers.append(Stub(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def test_http_writer_sends_the_chat_and_parses_the_answer(stub):
    server = stub([])
    writer = generate.OpenAIWriter(server.url, "my-writer", api_key="k", backoff=0.01)
    messages = [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<NEW STORY>\n"}]] * 2
    outputs = writer.generate(messages, [5, 6], max_new_tokens=50, temperature=0.7, top_p=0.9, repetition_penalty=1.1)
    assert [o.text for o in outputs] == ["story for seed 5. The end.", "story for seed 6. The end."]
    assert all(o.finished and o.n_tokens == 9 for o in outputs)
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer k"
    body = request["body"]
    assert body["model"] == "my-writer" and body["max_tokens"] == 50 and body["repetition_penalty"] == 1.1
    assert body["messages"] == [{"role": "user", "content": "hi"}]  # the pre-fill is not sent


def test_http_writer_retries_server_errors_and_malformed_json(stub):
    server = stub(["500", "malformed", "429"])
    writer = generate.OpenAIWriter(server.url, "w", retries=3, backoff=0.01, concurrency=1)
    assert writer.generate([[{"role": "user", "content": "x"}]], [1])[0].text.startswith("story")
    assert len(server.requests) == 4


def test_http_writer_gives_up_with_one_line(stub):
    server = stub(["malformed"] * 10)
    writer = generate.OpenAIWriter(server.url, "w", retries=2, backoff=0.01, concurrency=1)
    with pytest.raises(WriterError, match=r"failed 3 times \(malformed answer") as caught:
        writer.generate([[{"role": "user", "content": "x"}]], [1])
    assert "\n" not in str(caught.value)


def test_http_writer_times_out(stub):
    server = stub(["slow", "slow"])
    writer = generate.OpenAIWriter(server.url, "w", timeout=0.2, retries=1, backoff=0.01, concurrency=1)
    with pytest.raises(WriterError, match=r"no answer within 0.2 s"):
        writer.generate([[{"role": "user", "content": "x"}]], [1])


def test_http_writer_does_not_retry_a_refusal(stub):
    server = stub(["404"])
    writer = generate.OpenAIWriter(server.url, "missing-model", backoff=0.01)
    with pytest.raises(WriterError, match=r"HTTP 404.*'missing-model'"):
        writer.generate([[{"role": "user", "content": "x"}]], [1])
    assert len(server.requests) == 1


def test_http_writer_down():
    writer = generate.OpenAIWriter("http://127.0.0.1:9/v1", "w", retries=1, backoff=0.01)
    started = time.perf_counter()
    with pytest.raises(WriterError, match="cannot connect"):
        writer.generate([[{"role": "user", "content": "x"}]], [1])
    assert time.perf_counter() - started < 5
    with pytest.raises(EmolibError, match="must start with http"):
        generate.OpenAIWriter("localhost:8000", "w")


def test_long_prompts_make_smaller_batches(tiny_llama):
    writer = generate.LocalWriter(tiny_llama, batch_size=4, quantize=None, token_budget=100)
    batches = writer._batches([10, 50, 12, 40, 11, 30, 9])
    assert sorted(i for batch in batches for i in batch) == list(range(7))
    for batch in batches:
        longest = max([10, 50, 12, 40, 11, 30, 9][i] for i in batch)
        assert len(batch) <= 4 and (len(batch) * longest <= 100 or len(batch) == 1)
    assert batches[0] == [6, 0, 4, 2]  # shortest first


def test_the_repetition_penalty_ignores_the_prompt(tiny_llama):
    """The penalty counts generated tokens only: a first token that already occurs in the prompt is
    still chosen under a huge penalty (the old rule, prompt included, would have pushed it away)."""
    import torch

    writer = generate.LocalWriter(tiny_llama, batch_size=4, quantize=None)
    vocab = len(writer.loaded.tokenizer)
    rng = torch.Generator().manual_seed(0)
    checked = 0
    for _ in range(20):
        prompt = torch.randint(3, vocab, (40,), generator=rng).tolist()
        plain = writer._decode([prompt], [0], 2, 0.0, 1.0, 1.0, 0)[0]
        if plain[0] not in prompt:
            continue
        penalised = writer._decode([prompt], [0], 2, 0.0, 1.0, 100.0, 0)[0]
        assert penalised[0] == plain[0]
        checked += 1
    assert checked, "no prompt whose greedy first token occurs in the prompt"


@pytest.mark.parametrize("name", ["tiny", "tiny-llama", "tiny-gemma4", "tiny-e4b", "tiny-31b"])
def test_equal_length_prompts_share_their_prefix_on_every_structure(name):
    """Identical prompts (the blackmail and reward-hacking trials) take the shared-prefix path, where
    KV-shared layers (E4B) own no cache of their own: still token-identical to `generate`."""
    loaded = models.load(name)
    messages = [[{"role": "user", "content": "write about the rain and the door"}]] * 3
    fast = generate.LocalWriter(loaded, batch_size=4, quantize=None)
    plain = generate.LocalWriter(loaded, batch_size=4, quantize=None, fast=False)
    got = fast.generate(messages, [1, 2, 3], max_new_tokens=16, temperature=0, repetition_penalty=1.2)
    expected = plain.generate(messages, [1, 2, 3], max_new_tokens=16, temperature=0, repetition_penalty=1.2)
    assert [g.text for g in got] == [e.text for e in expected]


def test_a_killed_writing_run_on_e4b_structure_resumes_to_the_same_texts(tmp_path):
    """Resume is bit-identical on the KV-shared structure too: the batch cut short is redone with the same rows."""
    from emolib.stories import corpus as C

    loaded = models.load("tiny-e4b")
    settings = C.CorpusSettings(writer="tiny-e4b", max_new_tokens=12)
    jobs = C.story_jobs(settings, ["happy", "sad", "calm"], C.select_topics(2), 1)
    reference = C.Corpus(tmp_path / "ref", settings)
    C.write_jobs(reference, jobs, generate.LocalWriter(loaded, batch_size=4, quantize=None), batch_size=4, progress=False)

    def die(written):
        raise KeyboardInterrupt("killed")

    killed = C.Corpus(tmp_path / "killed", settings)
    with pytest.raises(KeyboardInterrupt):
        C.write_jobs(killed, jobs, generate.LocalWriter(loaded, batch_size=4, quantize=None), batch_size=4, progress=False,
                     on_batch=die)
    C.write_jobs(C.Corpus(killed.folder, settings), jobs, generate.LocalWriter(loaded, batch_size=4, quantize=None),
                 batch_size=4, progress=False)
    texts = lambda corpus: sorted((r["id"], r["text"]) for r in C.Corpus(corpus.folder).stories.records)  # noqa: E731
    assert texts(killed) == texts(reference) and len(texts(reference)) == len(jobs)


@pytest.fixture
def lively_llama():
    """tiny-llama with larger random weights: its greedy text varies by prompt (the default init repeats
    one token), so rows end at different steps and token identity means something."""
    loaded = models.load("tiny-llama")
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            if parameter.dim() > 1:
                parameter.copy_(torch.randn(parameter.shape, generator=rng) * 0.2)
    return loaded


def _staggered_eos(writer, messages, seeds) -> int:
    """A token greedy decoding emits at different steps in different rows, to serve as end of text: rows
    then end at different times and hand their slots on."""
    probe = generate.LocalWriter(writer.loaded, batch_size=len(messages), quantize=None)
    ids = probe._decode([probe.encode(m) for m in messages], seeds, 24, 0.0, 1.0, 1.0, 0)
    first: dict[int, list[int]] = {}  # token -> the step it first appears at, per row holding it
    for row in ids:
        for token in set(row[:20]):
            first.setdefault(token, []).append(row.index(token))
    usable = {t: steps for t, steps in first.items() if min(steps) >= 2}
    return max(usable, key=lambda t: (len(set(usable[t])), -t))


@pytest.mark.parametrize("repetition_penalty", [1.0, 1.3])
def test_continuous_batching_is_token_identical_to_generate(lively_llama, repetition_penalty):
    """Two slots, six prompts of different lengths, rows ending at different steps: every admitted prompt is
    prefilled into a freed slot and still decodes exactly as `generate` decodes it alone in a padded batch."""
    messages, seeds = _prompts()
    fast = generate.LocalWriter(lively_llama, batch_size=2, quantize=None, continuous=True)
    plain = generate.LocalWriter(lively_llama, batch_size=6, quantize=None, fast=False)
    fast.eos_id = plain.eos_id = _staggered_eos(plain, messages, seeds)
    expected = plain.generate(messages, seeds, max_new_tokens=24, temperature=0, repetition_penalty=repetition_penalty)
    got = fast.generate(messages, seeds, max_new_tokens=24, temperature=0, repetition_penalty=repetition_penalty,
                        min_new_tokens=2)
    assert len({e.n_tokens for e in expected}) > 2, "rows should end at different steps"
    assert fast.stats.admissions == 6 and fast.stats.occupancy > 0.9
    expected_min = plain.generate(messages, seeds, max_new_tokens=24, temperature=0,
                                  repetition_penalty=repetition_penalty, min_new_tokens=2)
    assert [g.text for g in got] == [e.text for e in expected_min]
    assert [(g.n_tokens, g.finished) for g in got] == [(e.n_tokens, e.finished) for e in expected_min]


def test_continuous_batching_relays_out_a_full_slab_and_samples_reproducibly(lively_llama):
    """Many more prompts than slots: the slab fills and live rows are moved; the same call gives the same
    texts, each row's own seed decides its text, and the slots stay fuller than consecutive batches."""
    messages, seeds = _prompts(18)
    writer = generate.LocalWriter(lively_llama, batch_size=3, quantize=None, continuous=True)
    writer.eos_id = first_eos = _staggered_eos(writer, messages, seeds)
    first = writer.generate(messages, seeds, max_new_tokens=20, repetition_penalty=1.1)
    assert writer.stats.relayouts > 0 and writer.stats.admissions == len(messages)
    again = writer.generate(messages, seeds, max_new_tokens=20, repetition_penalty=1.1)
    assert [g.text for g in again] == [g.text for g in first]
    other = writer.generate(messages, [s + 1 for s in seeds], max_new_tokens=20, repetition_penalty=1.1)
    assert sum(a.text != b.text for a, b in zip(first, other)) >= len(first) // 2
    occupancy = {}
    for continuous in (True, False):  # greedy, so rows end at the staggered end token
        writer = generate.LocalWriter(lively_llama, batch_size=3, quantize=None, continuous=continuous)
        writer.eos_id = first_eos
        writer.generate(messages, seeds, max_new_tokens=48, temperature=0)
        occupancy[continuous] = writer.stats.occupancy
    assert occupancy[True] > occupancy[False] and occupancy[True] > 0.9


def test_a_killed_continuous_writing_run_resumes_to_the_same_texts(tmp_path):
    """With continuous batching a writing call holds several slots' worth of prompts; a kill redoes the
    cut-short call with the same prompts, so the corpus ends bit-identical to an uninterrupted run's."""
    from emolib.stories import corpus as C

    loaded = models.load("tiny-llama")
    settings = C.CorpusSettings(writer="tiny-llama", max_new_tokens=12)
    jobs = C.story_jobs(settings, ["happy", "sad", "calm", "afraid", "proud"], C.select_topics(4), 1)
    writer = lambda: generate.LocalWriter(loaded, batch_size=2, quantize=None, continuous=True)  # noqa: E731
    assert writer().call_size == 8 and len(jobs) == 20
    reference = C.Corpus(tmp_path / "ref", settings)
    C.write_jobs(reference, jobs, writer(), batch_size=2, progress=False)

    class KilledMidCall(generate.LocalWriter):  # dies inside its second call, after that call was logged
        calls = 0

        def generate(self, *args, **kwargs):
            KilledMidCall.calls += 1
            if KilledMidCall.calls == 2:
                raise KeyboardInterrupt("killed")
            return super().generate(*args, **kwargs)

    killed = C.Corpus(tmp_path / "killed", settings)
    with pytest.raises(KeyboardInterrupt):
        C.write_jobs(killed, jobs, KilledMidCall(loaded, batch_size=2, quantize=None, continuous=True), batch_size=2, progress=False)
    assert len(C.Corpus(killed.folder).stories.records) == 8 and len(C.Corpus(killed.folder).batches.records) == 2
    C.write_jobs(C.Corpus(killed.folder, settings), jobs, writer(), batch_size=2, progress=False)
    texts = lambda corpus: sorted((r["id"], r["text"]) for r in C.Corpus(corpus.folder).stories.records)  # noqa: E731
    assert texts(killed) == texts(reference) and len(texts(reference)) == len(jobs)


def test_continuous_batching_is_on_by_default_only_on_a_gpu(tiny_llama):
    """On a CPU a step's cost grows with its rows, and the measured writer was ~5 % slower with refills:
    consecutive batches by default there; a GPU writer refills its slots."""
    assert generate.LocalWriter(tiny_llama, quantize=None).continuous is (tiny_llama.device.type == "cuda")
    assert generate.LocalWriter(tiny_llama, quantize=None, continuous=True).call_size == 4 * 64


def test_a_steering_stage_bar_counts_tokens_within_the_call(tmp_path, monkeypatch, tiny_llama):
    """Steering stages (dose-response, blackmail, reward hacking) show `generate`'s own bar. It counts the
    token budget as rows decode, so it moves inside a batch and its ETA is not a batch-long stall read as
    days ("1/1120 [01:28<27:29:52]"); it ends exactly at rows x max_new_tokens, with the texts beside it."""
    import re

    from emolib.models import decoder_layers

    side = tmp_path / "progress.txt"
    monkeypatch.setenv("EMOLIB_PROGRESS", str(side))
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    seen = []

    def slow(module, args, output):  # past tqdm's 2 s refresh within one batch
        time.sleep(0.05)
        if len(seen) < 200:
            seen.append(side.read_text() if side.exists() else "")

    messages, seeds = _prompts(6)
    writer = generate.LocalWriter(tiny_llama, batch_size=4, quantize=None)
    handle = decoder_layers(tiny_llama.model)[0].register_forward_hook(slow)
    try:
        out = writer.generate(messages, seeds, max_new_tokens=24, progress="dose-response")
    finally:
        handle.remove()
    assert len(out) == 6 and len(seen) >= 40
    counts = [int(float(n)) for text in seen for n in re.findall(r"\| *(\d+(?:\.\d+)?)/144 ", text)]
    assert counts and max(counts) > 6, seen[-1][-300:]  # more than one unit per text before the call returns
    final = side.read_text()
    assert "144/144" in final and "6/6 texts" in final
