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
from typing import Any

import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor
from transformers.cache_utils import Cache, DynamicLayer

from .errors import EmolibError, WriterError
from .models import LoadedModel, decoder_layers, text_config


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


class _SlabLayer(DynamicLayer):
    """A KV-cache layer written into a preallocated slab instead of grown by `torch.cat`.

    It answers like `DynamicLayer` (keys of all cached positions), so every attention implementation
    and mask builder in transformers works unchanged; dropping finished rows is a row selection.
    """

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        batch, heads, _, _ = key_states.shape
        self.dtype, self.device = key_states.dtype, key_states.device
        self.slab_keys = key_states.new_zeros((batch, heads, self.capacity, key_states.shape[-1]))
        self.slab_values = value_states.new_zeros((batch, heads, self.capacity, value_states.shape[-1]))
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise RuntimeError(f"KV slab overflow: {end} > {self.capacity}")
        self.slab_keys[:, :, self.length:end] = key_states
        self.slab_values[:, :, self.length:end] = value_states
        self.length = end
        self.keys, self.values = self.slab_keys[:, :, :end], self.slab_values[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.slab_keys, self.slab_values = self.slab_keys[indices], self.slab_values[indices]
            self.keys, self.values = self.slab_keys[:, :, :self.length], self.slab_values[:, :, :self.length]

    def broadcast_rows(self, batch: int) -> None:
        """Copy a one-row cache (the shared prompt prefix) into `batch` rows. A layer that never wrote its
        cache (Gemma 4's KV-shared layers read the keys of an earlier layer instead) has nothing to copy."""
        if not self.is_initialized:
            return
        self.slab_keys = self.slab_keys.expand(batch, -1, -1, -1).contiguous()
        self.slab_values = self.slab_values.expand(batch, -1, -1, -1).contiguous()
        self.keys, self.values = self.slab_keys[:, :, :self.length], self.slab_values[:, :, :self.length]


def _common_prefix(prompts: list[list[int]]) -> int:
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


def sample_next(logits: torch.Tensor, history: torch.Tensor | None, temperature: float, top_p: float,
                repetition_penalty: float, generators: list[torch.Generator] | None,
                candidates: int = 1024) -> torch.Tensor:
    """One token per row: repetition penalty (HF semantics), temperature, nucleus, per-row RNG.

    `history` holds the tokens each row has generated so far (None or empty: no penalty): the penalty is
    gathered and scattered over those positions only, as transformers does with `prompt_ignore_length`.

    The nucleus is searched among the top `candidates` tokens (a `topk`, not a 49k-wide sort); a row
    whose nucleus is wider than that is sorted in full, so the result is exact either way.
    """
    logits = logits.float()
    if repetition_penalty != 1.0 and history is not None and history.shape[1] > 0:
        scores = logits.gather(1, history)
        scores = torch.where(scores < 0, scores * repetition_penalty, scores / repetition_penalty)
        logits = logits.scatter(1, history, scores)
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    log_total = logits.logsumexp(dim=-1, keepdim=True)
    vocab = logits.shape[-1]
    k = min(candidates, vocab) if top_p < 1.0 else vocab
    values, indices = logits.topk(k, dim=-1) if k < vocab else logits.sort(dim=-1, descending=True)
    probs = (values - log_total).exp()
    choice = torch.empty(logits.shape[0], dtype=torch.long, device=logits.device)
    for row in range(logits.shape[0]):
        row_probs, row_indices = probs[row], indices[row]
        if top_p < 1.0:
            before = row_probs.cumsum(dim=0) - row_probs  # mass of the more likely tokens
            if k < vocab and before[-1] + row_probs[-1] < top_p:  # nucleus wider than the candidates
                row_values, row_indices = logits[row].sort(descending=True)
                row_probs = (row_values - log_total[row]).exp()
                before = row_probs.cumsum(dim=0) - row_probs
            row_probs = row_probs.masked_fill(before >= top_p, 0.0)
        # exponential race: argmax(p / E), E ~ Exp(1), is a draw from p, with this row's own generator
        race = torch.empty_like(row_probs).exponential_(generator=generators[row] if generators else None)
        choice[row] = row_indices[(row_probs / race).argmax()]
    return choice


class LocalWriter:
    """Fast batched sampling from a local chat model.

    Rather than `model.generate`, a short decode loop around the model's own forward pass:
    - the KV cache is a preallocated slab (`torch.cat` per step cost ~30 % of a CPU decode step);
    - the prompt prefix shared by the whole batch (system prompt and instructions) is computed once;
    - rows that finished are dropped from the batch, so they stop costing compute;
    - on CPU the linear layers run in dynamic int8 (decode is memory-bound: ~3x at batch 16);
    - every row samples from its own seeded generator, so its text depends on its seed.
    `live_rows` names, during each forward pass, which of `generate`'s inputs the batch rows are (None
    while a shared prefix is computed once for all), so hooks can treat rows differently (per-row
    steering batches many conditions into one call).
    `fast=False` falls back to plain batched `model.generate` (the reference the tests compare with).
    """

    def __init__(self, loaded: LoadedModel, batch_size: int = 64, quantize: str | None = None,
                 share_prefix: bool = True, drop_finished: bool = True, fast: bool = True,
                 token_budget: int = 16384, require_chat: bool = True):
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
        self.sliding_window = _has_sliding_window(loaded.model)
        self.drop_finished, self.fast = drop_finished, fast
        self.live_rows: torch.Tensor | None = None
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        if quantize == "auto":
            quantize = "int8" if loaded.device.type == "cpu" and loaded.dtype == torch.float32 else None
        self.quantize = quantize
        if quantize == "int8":
            _quantize_int8(loaded.model)
        elif quantize is not None:
            raise EmolibError(f"quantize must be 'auto', 'int8' or None, got {quantize!r}")

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
                 progress: str | None = None) -> list[Generation]:
        """Sample a continuation per chat. `forcing` (one per row, fast path only) is an object whose
        `after(token) -> list[int]` names tokens to insert next (e.g. the next speaker's label).
        `progress` names a tqdm bar over the rows (None: no bar)."""
        from .io import progress_bar

        prompts = [self.encode(messages) for messages in messages_list]
        results: list[Generation | None] = [None] * len(prompts)
        if forcing is not None and not self.fast:
            raise EmolibError("forced tokens need the fast decode loop (fast=True)")
        quiet = {} if progress else {"disable": True}  # unset when wanted, so $TQDM_DISABLE can still silence it
        bar = progress_bar(total=len(prompts), desc=progress, unit="text", **quiet)
        try:
            for chunk in self._batches([len(p) for p in prompts]):
                args = ([prompts[i] for i in chunk], [seeds[i] for i in chunk], max_new_tokens, temperature, top_p,
                        repetition_penalty, min_new_tokens)
                if self.fast:
                    new_ids = self._decode(*args, forcing=[forcing[i] for i in chunk] if forcing else None,
                                           inputs=torch.tensor(chunk))
                else:
                    self.live_rows = torch.tensor(chunk)
                    new_ids = self._hf_generate(*args)
                for i, new in zip(chunk, new_ids):
                    finished = self.eos_id in new
                    if finished:
                        new = new[: new.index(self.eos_id)]
                    text = self.loaded.tokenizer.decode(new, skip_special_tokens=True)
                    last = messages_list[i][-1] if not isinstance(messages_list[i], str) else {"role": "text"}
                    if last["role"] == "assistant":  # return the whole assistant message, pre-fill included
                        text = last["content"] + text
                    results[i] = Generation(text, len(new), finished)
                bar.update(len(chunk))
        finally:
            bar.close()
            self.live_rows = None
        return [result for result in results if result is not None]

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

    @torch.inference_mode()
    def _decode(self, prompts: list[list[int]], seeds: list[int], max_new_tokens: int, temperature: float,
                top_p: float, repetition_penalty: float, min_new_tokens: int,
                forcing: list[Any] | None = None, inputs: torch.Tensor | None = None) -> list[list[int]]:
        """One batch; `inputs` says which of `generate`'s inputs its rows are (published as `live_rows`)."""
        model, device = self.loaded.model, self.loaded.device
        batch = len(prompts)
        unpadded = len({len(p) for p in prompts}) == 1
        shared = _common_prefix(prompts) if self.share_prefix and batch > 1 and (unpadded or not self.sliding_window) else 0
        suffixes = [p[shared:] for p in prompts]
        width = max(len(s) for s in suffixes)
        capacity = shared + width + max_new_tokens
        n_layers = len(decoder_layers(model))
        cache = Cache(layers=[_SlabLayer(capacity) for _ in range(n_layers)])
        # Layout per row: [shared prefix][left padding][own suffix][generated]; pads are masked and
        # skipped by position ids, so every row sees exactly its own prompt.
        mask = torch.zeros((batch, capacity), dtype=torch.long, device=device)
        mask[:, :shared] = 1
        suffix_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            suffix_ids[row, width - len(suffix):] = torch.tensor(suffix)
            mask[row, shared + width - len(suffix): shared + width] = 1
            positions[row, width - len(suffix):] = torch.arange(shared, shared + len(suffix))
        chunk = inputs if inputs is not None else torch.arange(batch)
        if shared:
            self.live_rows = None  # one row stands for the whole batch
            model(input_ids=torch.tensor([prompts[0][:shared]], device=device), past_key_values=cache,
                  attention_mask=mask[:1, :shared], use_cache=True, logits_to_keep=1)
            for layer in cache.layers:
                layer.broadcast_rows(batch)
        self.live_rows = chunk.clone()
        out = model(input_ids=suffix_ids.to(device), attention_mask=mask[:, :shared + width],
                    position_ids=positions.to(device), past_key_values=cache, use_cache=True, logits_to_keep=1)
        logits = out.logits[:, -1]
        # The repetition penalty sees generated tokens only (the prompt's words are the topic and the
        # instructions, which a story should be free to use). Live rows decode in lockstep, so after
        # `step` steps every row has exactly `step` tokens here: no padding is needed.
        history = torch.empty((batch, max_new_tokens), dtype=torch.long, device=device) if repetition_penalty != 1.0 else None
        generators = None
        if temperature > 0:
            generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
        next_position = torch.tensor([len(p) for p in prompts], device=device)
        generated: list[list[int]] = [[] for _ in range(batch)]
        queued: list[list[int]] = [[] for _ in range(batch)]
        rows = torch.arange(batch)  # original row of each live row
        length = shared + width
        for step in range(max_new_tokens):
            if step < min_new_tokens:
                logits[:, self.eos_id] = float("-inf")
            seen = history[:, :step] if history is not None and step > 0 else None
            tokens = sample_next(logits, seen, temperature, top_p, repetition_penalty, generators)
            token_list = tokens.tolist()
            if forcing is not None:  # queued tokens replace the sample; a sampled token may queue more
                for live, row in enumerate(rows.tolist()):
                    if queued[row]:
                        token_list[live] = queued[row].pop(0)
                    else:
                        queued[row].extend(forcing[row].after(token_list[live]))
                tokens = torch.tensor(token_list, device=device)
            done = set()
            for live, (row, token) in enumerate(zip(rows.tolist(), token_list)):
                generated[row].append(token)
                # with forcing, an end-of-turn token ends the row only when its script is finished
                if token == self.eos_id and (forcing is None or (forcing[row].finished and not queued[row])):
                    done.add(live)
            if step == max_new_tokens - 1 or len(done) == len(token_list):
                break
            if history is not None:
                history[:, step] = tokens
            mask[:, length] = 1
            length += 1
            if done and self.drop_finished:
                keep = torch.tensor([i for i in range(len(token_list)) if i not in done])
                cache.batch_select_indices(keep.to(device))
                rows, tokens, mask, next_position = rows[keep], tokens[keep.to(device)], mask[keep], next_position[keep]
                if history is not None:
                    history = history[keep.to(device)]
                if generators is not None:
                    generators = [generators[i] for i in keep.tolist()]
            self.live_rows = chunk[rows]
            out = model(input_ids=tokens[:, None], attention_mask=mask[:, :length],
                        position_ids=next_position[:, None], past_key_values=cache, use_cache=True)
            next_position = next_position + 1
            logits = out.logits[:, -1]
        return generated

    @torch.inference_mode()
    def _hf_generate(self, prompts: list[list[int]], seeds: list[int], max_new_tokens: int, temperature: float,
                     top_p: float, repetition_penalty: float, min_new_tokens: int) -> list[list[int]]:
        """Plain batched `model.generate` with left padding: the reference path."""
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


def _has_sliding_window(model: torch.nn.Module) -> bool:
    config = text_config(model)
    if any("sliding" in str(kind) for kind in getattr(config, "layer_types", None) or []):
        return True
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True)


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
                 min_new_tokens: int = 0) -> list[Generation]:
        def one(args: tuple[list[dict], int]) -> Generation:
            messages, seed = args
            if messages[-1]["role"] == "assistant":  # pre-fills are not part of the OpenAI API
                messages = messages[:-1]
            payload: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": max_new_tokens,
                                       "temperature": temperature, "top_p": top_p, "seed": seed}
            if repetition_penalty != 1.0:  # vLLM and llama.cpp's server accept it; others ignore it
                payload["repetition_penalty"] = repetition_penalty
            return self._request(payload)

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
    from .models import load

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
