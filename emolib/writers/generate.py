"""Writers: the models that write stories and dialogues.

Two backends behind one call, `writer.generate(messages_list, seeds, max_new_tokens, ...)`:
- `LocalWriter`: a chat model loaded by emolib (the embedded `smollm2`), batched with left padding.
- `OpenAIWriter`: any server that speaks the OpenAI chat-completions API (vLLM, Ollama, llama.cpp's
  server) — the path to bigger writers, GPUs and many machines. It talks only to the URL it is given.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from ..errors import EmolibError, WriterError
from ..io import progress_bar
from ..models.loading import LoadedModel, load
from .decode import Decoder, DecodeStats, Sampling, has_sliding_window, sample_next, token_noise  # noqa: F401 (public here too)


@dataclass
class Generation:
    text: str
    n_tokens: int  # generated tokens, EOS excluded
    finished: bool  # ended by the model (EOS) rather than the token limit


def _mix_seeds(seeds: list[int]) -> int:
    value = 0x9E3779B9
    for seed in seeds:
        value = (value * 1_000_003 ^ seed) & 0x7FFFFFFF
    return value


CALL_SLOTS = 4  # prompts per writing call, in slots: a call's tail (its last rows) is then a quarter of it


class LocalWriter:
    """Fast batched sampling from a local chat model.

    Rather than `model.generate`, a short decode loop around the model's own forward pass
    (`emolib.writers.decode`):
    - the KV cache is a preallocated slab (`torch.cat` per step cost ~30 % of a CPU decode step);
    - the prompt prefix shared by all prompts of a call (system prompt and instructions) is computed once;
    - continuous batching (default on a GPU; `continuous=True` anywhere): `batch_size` slots decode together
      and a row that ends hands its slot to the next waiting prompt, so the batch stays full to the end;
      otherwise, and always for models with sliding-window layers, consecutive batches whose finished rows
      are dropped;
    - dynamic int8 linear layers on request (`quantize="int8"`; off: it changes a small model's text);
    - every row samples from its own seeded generator, so its text depends on its seed.
    `live_rows` names, during each forward pass, which of `generate`'s inputs the batch rows are (None
    while a shared prefix is computed once for all), so hooks can treat rows differently (per-row
    steering batches many conditions into one call).
    `fast=False` falls back to plain batched `model.generate` (the reference the tests compare with).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 64, quantize: str | None = None,
                 share_prefix: bool = True, fast: bool = True,
                 token_budget: int = 16384, require_chat: bool = True, continuous: bool | None = None):
        tokenizer = loaded.tokenizer
        if require_chat and not getattr(tokenizer, "chat_template", None):
            raise EmolibError(
                f"{loaded.profile.name} has no chat template, so it cannot be a story writer; "
                "use writer='smollm2' or an OpenAI-compatible server (writer_url=...)"
            )
        self.loaded = loaded
        self.name = loaded.profile.name
        self.batch_size = batch_size
        self.token_budget = token_budget  # rows x longest prompt per batch: long prompts make smaller batches
        # Sliding-window layers count cache slots, so the padding gap after a shared prefix would change
        # what a short row sees: share prefixes only where every layer attends to the whole context.
        # (Prompts of equal length leave no gap, so they share a prefix even then.)
        self.share_prefix = share_prefix
        self.sliding_window = has_sliding_window(loaded.model)
        self.fast = fast
        # Refill a finished row's slot with the next prompt (never on sliding-window models). Default: on a GPU,
        # where a fuller batch costs little more per step; off on a CPU, where a step's cost grows with its rows
        # and the small admission prefills made it ~5 % slower (benchmarks/results/generate*.json).
        self.continuous = loaded.device.type == "cuda" if continuous is None else continuous
        self.stats = DecodeStats()  # summed over calls: how full the slots were
        self.live_rows: torch.Tensor | None = None
        self.prefilling: bool | None = None  # set by the decode loop per forward pass; None: unknown (HF generate)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        if quantize == "auto":
            quantize = "int8" if loaded.device.type == "cpu" and loaded.dtype == torch.float32 else None
        self.quantize = quantize
        if quantize == "int8":
            _quantize_int8(loaded.model)
        elif quantize is not None:
            raise EmolibError(f"quantize must be 'auto', 'int8' or None, got {quantize!r}")

    @property
    def refills(self) -> bool:
        """Whether a call decodes through `batch_size` slots refilled as rows end (else consecutive batches)."""
        return self.fast and self.continuous and not self.sliding_window

    @property
    def call_size(self) -> int:
        """How many prompts a writing run should hand over per call: with continuous batching several
        slots' worth, so that the slots stay full until the last few rows of the call."""
        return self.batch_size * CALL_SLOTS if self.refills else self.batch_size

    def render(self, messages: list[dict]) -> str:
        return self.loaded.tokenizer.apply_chat_template(messages, tokenize=False)

    def chat_markers(self) -> tuple[str, str, str] | None:
        """The chat template's text (opening a user turn, user -> assistant, assistant -> user), found by
        rendering marked messages; None where the template does not render them as plain markers."""
        if not hasattr(self, "_markers"):
            system = [{"role": "system", "content": "\x01S"}]
            try:
                head = self.render(system)
                one = self.loaded.tokenizer.apply_chat_template(system + [{"role": "user", "content": "\x01U"}],
                                                                add_generation_prompt=True, tokenize=False)
                two = self.render(system + [{"role": "user", "content": "\x01U"}, {"role": "assistant", "content": "\x01A"},
                                            {"role": "user", "content": "\x01V"}])
                ok = one.startswith(head) and two.startswith(head) and all(m in two for m in ("\x01U", "\x01A", "\x01V"))
            except Exception:  # templates that reject a system role, or alternate strictly
                ok = False
            self._markers = ((one[len(head): one.index("\x01U")], one[one.index("\x01U") + 2:],
                              two[two.index("\x01A") + 2: two.index("\x01V")]) if ok else None)
        return self._markers

    def encode(self, messages: list[dict] | str) -> list[int]:
        """Chat-template token ids; a final assistant message is a pre-fill that the model continues.
        A string is taken as already rendered text."""
        if isinstance(messages, str):
            return self.loaded.tokenizer.encode(messages, add_special_tokens=False)
        prefill = messages[-1]["role"] == "assistant"
        ids = self.loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=not prefill,
                                                        continue_final_message=prefill, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in newer transformers
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, messages_list: list[list[dict]], seeds: list[int], max_new_tokens: int = 256,
                 temperature: float = 0.8, top_p: float = 0.95, repetition_penalty: float = 1.0,
                 min_new_tokens: int = 0, forcing: list[Any] | None = None,
                 progress: str | None = None, on_progress: Callable[[int], None] | None = None) -> list[Generation]:
        """Sample a continuation per chat. `forcing` (one per row, fast path only) is an object whose
        `after(token) -> list[int]` names tokens to insert next (e.g. the next speaker's label).
        `progress` names a tqdm bar over the token budget, finished texts beside it (None: no bar). `on_progress(n)` is told, as decoding goes,
        how much of the call's token budget (rows x `max_new_tokens`) is used up: the rows' tokens at every
        step, and a finished row's unused budget when it ends, so a caller's bar moves within the call and
        reaches its total exactly when the call returns."""

        prompts = [self.encode(messages) for messages in messages_list]
        if forcing is not None and not self.fast:
            raise EmolibError("forced tokens need the fast decode loop (fast=True)")
        sampling = Sampling(max_new_tokens, temperature, top_p, repetition_penalty, min_new_tokens)
        results: list[Generation | None] = [None] * len(prompts)
        quiet = {} if progress else {"disable": True}  # unset when wanted, so $TQDM_DISABLE can still silence it
        # the bar counts the call's token budget as it is used up, not finished texts: rows of one batch end
        # together, so a count of texts stood still for a batch and then promised "1/1120 [01:28<27:29:52]"
        bar = progress_bar(total=len(prompts) * max_new_tokens, desc=progress, unit="tok", unit_scale=True, **quiet)
        finished = 0

        def used(n: int) -> None:
            bar.update(n)
            if on_progress is not None:
                on_progress(n)

        def done(index: int, new: list[int]) -> None:
            nonlocal finished
            results[index] = self._generation(messages_list[index], new)
            used(max(0, max_new_tokens - len(new)) if self.fast else max_new_tokens)
            finished += 1
            bar.set_postfix_str(f"{finished}/{len(prompts)} texts", refresh=False)

        if self.refills:  # one batch of slots, refilled as rows end
            batches = [sorted(range(len(prompts)), key=lambda i: len(prompts[i]))]
            slots = max(1, min(self.batch_size, self.token_budget // max(len(p) for p in prompts)))
        else:  # consecutive batches, every row of a batch starting together
            batches, slots = self._batches([len(p) for p in prompts]), 0
        try:
            for chunk in batches:
                args = ([prompts[i] for i in chunk], [seeds[i] for i in chunk], sampling)
                if self.fast:
                    self._run(*args, slots or len(chunk), forcing=[forcing[i] for i in chunk] if forcing else None,
                              inputs=chunk, on_done=done, on_tokens=used)
                else:
                    self.live_rows = torch.tensor(chunk)
                    for i, new in zip(chunk, self._hf_generate(*args)):
                        done(i, new)
        finally:
            bar.close()
            self.live_rows, self.prefilling = None, None
        return [result for result in results if result is not None]

    def _generation(self, messages: list[dict] | str, new: list[int]) -> Generation:
        finished = self.eos_id in new
        if finished:
            new = new[: new.index(self.eos_id)]
        text = self.loaded.tokenizer.decode(new, skip_special_tokens=True)
        last = messages[-1] if not isinstance(messages, str) else {"role": "text"}
        if last["role"] == "assistant":  # return the whole assistant message, pre-fill included
            text = last["content"] + text
        return Generation(text, len(new), finished)

    def _run(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling, slots: int, **options: Any) -> list[list[int]]:
        decoder = Decoder(self.loaded.model, self.loaded.device, self.pad_id, self.eos_id, owner=self)
        try:
            return decoder.run(prompts, seeds, sampling, slots, share_prefix=self.share_prefix, **options)
        finally:
            self.stats.add(decoder.stats)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Prompts sorted by length, cut into batches of at most `batch_size` rows and `token_budget`
        padded prompt tokens (a batch of long transcripts pads every row to the longest)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches: list[list[int]] = [[]]
        for index in order:
            current = batches[-1]
            if current and (len(current) >= self.batch_size or (len(current) + 1) * lengths[index] > self.token_budget):
                batches.append(current := [])
            current.append(index)
        return [batch for batch in batches if batch]

    def _decode(self, prompts: list[list[int]], seeds: list[int], max_new_tokens: int, temperature: float,
                top_p: float, repetition_penalty: float, min_new_tokens: int) -> list[list[int]]:
        """One batch of token ids, all rows starting together (no refills): the decode loop on its own."""
        sampling = Sampling(max_new_tokens, temperature, top_p, repetition_penalty, min_new_tokens)
        return self._run(prompts, seeds, sampling, len(prompts))

    @torch.inference_mode()
    def _hf_generate(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling) -> list[list[int]]:
        """Plain batched `model.generate` with left padding: the reference path."""
        max_new_tokens, temperature, top_p = sampling.max_new_tokens, sampling.temperature, sampling.top_p
        repetition_penalty, min_new_tokens = sampling.repetition_penalty, sampling.min_new_tokens
        model, device = self.loaded.model, self.loaded.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt):] = torch.tensor(prompt)
            attention[row, width - len(prompt):] = 1
        torch.manual_seed(_mix_seeds(seeds))
        # the penalty counts generated tokens only, as the fast path does (prompt_ignore_length)
        processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(repetition_penalty, prompt_ignore_length=width)]
                                         if repetition_penalty != 1.0 else [])
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention.to(device),
            max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens or None,
            do_sample=temperature > 0, temperature=temperature if temperature > 0 else None,
            top_p=top_p if temperature > 0 else None, top_k=0 if temperature > 0 else None,
            logits_processor=processors, pad_token_id=self.pad_id, eos_token_id=self.eos_id,
        )
        return [row[width:].tolist() for row in output]


def _quantize_int8(model: torch.nn.Module) -> None:
    """Dynamic int8 for every nn.Linear, in place (CPU decode is bound by reading fp32 weights)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)


class OpenAIWriter:
    """A writer behind an OpenAI-compatible `/v1/chat/completions` endpoint.

    Requests run `concurrency` at a time. Connection errors, timeouts, 429/5xx answers and malformed
    JSON are retried `retries` times with exponential back-off; then a one-line `WriterError`.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 retries: int = 4, backoff: float = 1.0, concurrency: int = 8):
        import requests

        if not base_url.startswith(("http://", "https://")):
            raise EmolibError(f"writer_url must start with http:// or https://, got {base_url!r}")
        self.url = base_url.rstrip("/") + ("/chat/completions" if base_url.rstrip("/").endswith("/v1")
                                           else "/v1/chat/completions")
        self.model = model
        self.name = model
        self.timeout, self.retries, self.backoff, self.concurrency = timeout, retries, backoff, concurrency
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies from the environment: only the URL given
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def generate(self, messages_list: list[list[dict]], seeds: list[int], max_new_tokens: int = 256,
                 temperature: float = 0.8, top_p: float = 0.95, repetition_penalty: float = 1.0,
                 min_new_tokens: int = 0, on_progress: Callable[[int], None] | None = None) -> list[Generation]:
        def one(args: tuple[list[dict], int]) -> Generation:
            messages, seed = args
            if messages[-1]["role"] == "assistant":  # pre-fills are not part of the OpenAI API
                messages = messages[:-1]
            payload: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                                       "temperature": temperature, "top_p": top_p, "seed": seed}
            if repetition_penalty != 1.0:  # vLLM and llama.cpp's server accept it; others ignore it
                payload["repetition_penalty"] = repetition_penalty
            answer = self._request(payload)
            if on_progress is not None:  # a request's whole budget, when it returns
                on_progress(max_new_tokens)
            return answer

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(one, zip(messages_list, seeds)))

    def _request(self, payload: dict) -> Generation:
        import requests

        problem = "no attempt made"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                response = self.session.post(self.url, json=payload, timeout=self.timeout)
            except requests.Timeout:
                problem = f"no answer within {self.timeout:g} s"
                continue
            except requests.ConnectionError as error:
                problem = f"cannot connect ({type(error).__name__})"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise WriterError(f"writer server {self.url} refused the request (HTTP {response.status_code}: "
                                  f"{response.text[:160].strip()}); check writer model name {self.model!r}")
            try:
                body = response.json()
                choice = body["choices"][0]
                text = choice["message"]["content"]
                if not isinstance(text, str):
                    raise TypeError("content is not a string")
            except (ValueError, KeyError, IndexError, TypeError, json.JSONDecodeError) as error:
                problem = f"malformed answer ({type(error).__name__}: {str(error)[:80]})"
                continue
            usage = body.get("usage") or {}
            n_tokens = int(usage.get("completion_tokens") or len(text.split()))
            return Generation(text, n_tokens, choice.get("finish_reason") != "length")
        raise WriterError(f"writer server {self.url} failed {self.retries + 1} times ({problem}); "
                          "check that it is running and reachable, or raise its timeout")


def make_writer(writer: str, writer_url: str = "", batch_size: int = 32, **http_options: Any):
    """`writer_url` set: an HTTP writer serving model `writer`; else the local profile `writer`."""
    if writer_url:
        return OpenAIWriter(writer_url, writer, **http_options)

    return LocalWriter(load(writer), batch_size=batch_size)


def measure_throughput(writer: LocalWriter, messages_list: list[list[dict]], new_tokens: int = 64) -> dict[str, float]:
    """Tokens/s for the same prompts one at a time vs in one batch, each forced to `new_tokens` tokens."""
    seeds = list(range(len(messages_list)))
    timings = {}
    saved = writer.batch_size
    try:
        for label, batch_size in (("sequential", 1), ("batched", len(messages_list))):
            writer.batch_size = batch_size
            started = time.perf_counter()
            outputs = writer.generate(messages_list, seeds, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            elapsed = time.perf_counter() - started
            timings[f"{label}_tokens_per_s"] = sum(o.n_tokens for o in outputs) / elapsed
    finally:
        writer.batch_size = saved
    timings["speedup"] = timings["batched_tokens_per_s"] / timings["sequential_tokens_per_s"]
    timings["prompts"] = len(messages_list)
    timings["new_tokens"] = new_tokens
    return timings


def describe_speed(writer: Any, messages_list: list[list[dict]], new_tokens: int = 48) -> str:
    """One line: the local writer's tokens/s one prompt at a time vs batched (an HTTP writer is not timed)."""
    if not isinstance(writer, LocalWriter):
        return "speed measurement skipped (HTTP writer)"
    speed = measure_throughput(writer, messages_list, new_tokens=new_tokens)
    return (f"{speed['prompts']} prompts x {speed['new_tokens']} new tokens: one at a time "
            f"{speed['sequential_tokens_per_s']:.0f} tokens/s, batched {speed['batched_tokens_per_s']:.0f} tokens/s "
            f"({speed['speedup']:.1f}x)")
