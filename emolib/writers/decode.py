"""The local writer's decode loop: a preallocated KV slab, the prompt prefix shared by all rows computed
once, per-row seeded sampling, and continuous batching.

Continuous batching: a fixed number of slots decode together; when a row ends, the next waiting prompt
takes its slot — its suffix is prefilled (the shared prefix's keys and values are reused, not
recomputed) and its keys and values are written into that slot's columns of the slab, right-aligned to
the current length, so every row keeps attending only to its own prompt and tokens (other columns are
masked). When the slab fills up, or an admitted prompt needs more room, the live rows are re-laid out
(each row's columns moved, positions unchanged: keys are stored after rotary embedding). The schedule
depends only on the prompts and seeds, so the same call gives the same texts — a resumed writing run
redoes a cut-short call with the same rows.

Models with sliding-window layers count cache slots, so a masked gap would change what a row sees: they
decode in consecutive batches without refills (the rows of a batch start together, as in `generate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from transformers.cache_utils import Cache, DynamicLayer

from ..models.hooks import decoder_layers, text_config

FAR = 1 << 40  # a `live_rows` entry for a slot holding no input this step (larger than any input index)


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
        self.set_length(end)
        return self.keys, self.values

    def set_length(self, length: int) -> None:
        self.length = length
        if self.is_initialized:
            self.keys, self.values = self.slab_keys[:, :, :length], self.slab_values[:, :, :length]

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.is_initialized:
            self.slab_keys, self.slab_values = self.slab_keys[indices], self.slab_values[indices]
            self.set_length(self.length)

    def start_from(self, keys: torch.Tensor, values: torch.Tensor, batch: int) -> None:
        """Hold `keys`/`values` (one row: the shared prefix) in each of `batch` rows, followed by free columns."""
        self.dtype, self.device = keys.dtype, keys.device
        shape = (batch, keys.shape[1], self.capacity, keys.shape[-1])
        self.slab_keys, self.slab_values = keys.new_zeros(shape), values.new_zeros(shape)
        self.slab_keys[:, :, :keys.shape[2]] = keys
        self.slab_values[:, :, :values.shape[2]] = values
        self.is_initialized = True
        self.set_length(keys.shape[2])


def common_prefix(prompts: list[list[int]]) -> int:
    """Tokens every prompt starts with (at least one token of each prompt is left as its own suffix)."""
    shortest = min(len(p) for p in prompts)
    n = 0
    while n < shortest - 1 and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n


def has_sliding_window(model: torch.nn.Module) -> bool:
    config = text_config(model)
    if any("sliding" in str(kind) for kind in getattr(config, "layer_types", None) or []):
        return True
    return bool(getattr(config, "sliding_window", None)) and getattr(config, "use_sliding_window", True)


def penalize(logits: torch.Tensor, history: torch.Tensor, counts: torch.Tensor, penalty: float) -> torch.Tensor:
    """The repetition penalty (HF semantics) over each row's first `counts[row]` tokens of `history`:
    gathered and scattered over those positions only. A row's unused positions repeat its first token,
    which scatters the same value again, so the result equals a row-by-row penalty."""
    n = int(counts.max()) if len(counts) else 0
    if penalty == 1.0 or n == 0:
        return logits
    index = history[:, :n]
    index = torch.where(torch.arange(n, device=index.device)[None] >= counts[:, None], index[:, :1], index)
    scores = logits.gather(1, index)
    scores = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where((counts > 0)[:, None], logits.scatter(1, index, scores), logits)


_MASK32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, constant: int) -> torch.Tensor:
    """(x * constant) mod 2**32 for 32-bit values held in int64, without ever overflowing int64."""
    low, high = constant & 0xFFFF, constant >> 16
    return (x * low + (((x * high) & 0xFFFF) << 16)) & _MASK32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer mixer (lowbias32): every input bit flips about half the output bits."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def token_noise(token_ids: torch.Tensor, key: int) -> torch.Tensor:
    """Exp(1) noise for each token id under one 64-bit key, as float64.

    The noise a token gets depends on its id and the key alone, never on where the token lands in a
    sort. Two near-tied tokens that swap places under another CPU's float kernels (AVX-512 vs AVX2 vs
    scalar reductions differ in the last bits) keep their own noise, so the sampled text is the same
    on every machine unless a probability moves across the winning margin itself.
    """
    ids = token_ids.to(torch.int64) & _MASK32
    mixed = _hash32(_hash32(ids ^ (key & _MASK32)) ^ ((key >> 32) & _MASK32))
    uniform = (mixed.to(torch.float64) + 0.5) / float(1 << 32)
    return -torch.log(uniform)


def _draw_key(generator: torch.Generator | None, device: torch.device) -> int:
    """One 62-bit key per row and step from the row's own generator (the generator's state advances the
    same way whatever the logits were, so a resumed row continues the same stream)."""
    return int(torch.randint(0, 1 << 62, (1,), generator=generator, device=device).item())


def sample_next(logits: torch.Tensor, temperature: float, top_p: float, generators: list[torch.Generator] | None,
                candidates: int = 1024) -> torch.Tensor:
    """One token per row: temperature, nucleus, per-row RNG (the repetition penalty is `penalize`'s, before).

    The nucleus is searched among the top `candidates` tokens (a `topk`, not a 49k-wide sort); a row
    whose nucleus is wider than that is sorted in full, so the result is exact either way. The draw is an
    exponential race, argmax(p / E) with E ~ Exp(1) per token id (`token_noise`), which samples from p.
    """
    logits = logits.float()
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
        key = _draw_key(generators[row] if generators else None, logits.device)
        race = row_probs.double() / token_noise(row_indices, key)
        choice[row] = row_indices[race.argmax()]
    return choice


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0


@dataclass
class DecodeStats:
    """How full the slots were: row-steps decoded over slot-steps available (1.0 = always full)."""

    steps: int = 0
    row_steps: int = 0
    slot_steps: int = 0
    admissions: int = 0
    relayouts: int = 0

    @property
    def occupancy(self) -> float:
        return self.row_steps / self.slot_steps if self.slot_steps else 0.0

    def add(self, other: "DecodeStats") -> None:
        for name in ("steps", "row_steps", "slot_steps", "admissions", "relayouts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Slots:
    """Per slot: which input it decodes, where its own columns start, its position, tokens and RNG."""

    inputs: list[int] = field(default_factory=list)  # -1: free
    start: list[int] = field(default_factory=list)
    position: list[int] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    generators: list[Any] = field(default_factory=list)


class Decoder:
    """Decode many prompts through `slots` rows of one KV slab (see the module docstring).

    `owner.live_rows` is set, during every forward pass, to which inputs the batch rows are (None while
    the shared prefix is computed once for all), so hooks can steer rows differently.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, pad_id: int, eos_id: int, owner: Any):
        self.model, self.device, self.pad_id, self.eos_id, self.owner = model, device, pad_id, eos_id, owner
        self.n_layers = len(decoder_layers(model))
        self.stats = DecodeStats()

    @torch.inference_mode()
    def run(self, prompts: list[list[int]], seeds: list[int], sampling: Sampling, slots: int, *, share_prefix: bool,
            forcing: list[Any] | None = None, inputs: list[int] | None = None,
            on_done: Callable[[int, list[int]], None] | None = None,
            on_tokens: Callable[[int], None] | None = None) -> list[list[int]]:
        """New tokens per prompt, decoded through `slots` rows: with as many slots as prompts every row starts
        together (one batch); with fewer, waiting prompts take the slots of rows that end. `inputs` names each
        prompt's index for `live_rows` and `on_done(index, tokens)`; `on_tokens(n)` hears how many rows
        decoded a token at each step (progress within a call)."""
        inputs = inputs if inputs is not None else list(range(len(prompts)))
        self.prompts, self.seeds, self.sampling, self.forcing, self.inputs = prompts, seeds, sampling, forcing, inputs
        unpadded = len({len(p) for p in prompts}) == 1
        self.shared = common_prefix(prompts) if share_prefix and len(prompts) > 1 and (
            unpadded or not has_sliding_window(self.model)) else 0
        self.capacity = max(len(p) for p in prompts) + sampling.max_new_tokens
        self.prefix = self._prefix()
        self.queue = list(range(len(prompts)))
        self.generated: list[list[int]] = [[] for _ in prompts]
        self.queued: list[list[int]] = [[] for _ in prompts]
        self.cache = Cache(layers=[_SlabLayer(self.capacity) for _ in range(self.n_layers)])
        self.length = self.shared
        first = self.n_slots = min(slots, len(prompts))
        self._grow(first)  # the slots, their mask and token history
        logits = self._admit(list(range(first)), torch.empty((first, 0), device=self.device))
        while True:
            tokens, finished = self._sample(logits)
            if on_tokens is not None:
                on_tokens(int(tokens.shape[0]))
            for slot in finished:
                index = self.slots.inputs[slot]
                if on_done is not None:
                    on_done(self.inputs[index], self.generated[index])
                self.slots.inputs[slot] = -1
            if len(finished) > len(self.queue):  # more rows ended than prompts wait: the rest leave the batch
                leaving = set(finished[len(self.queue):])
                keep = [s for s in range(len(tokens)) if s not in leaving]
                self._keep(keep)
                tokens = tokens[keep]
                if not keep:
                    return self.generated
            free = [s for s, index in enumerate(self.slots.inputs) if index < 0]
            if len(free) < len(self.slots.inputs):
                logits = self._step(tokens, free)
            else:  # every row ended at once: nothing to feed before the next prompts come in
                logits = torch.empty((len(free), 0), device=self.device)
            if free:
                logits = self._admit(free, logits)

    # -- the shared prefix ---------------------------------------------------------------------------
    def _prefix(self) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """The shared prefix's keys and values per layer (one row), computed once; None where a layer owns
        no cache (Gemma 4's KV-shared layers read an earlier layer's)."""
        if not self.shared:
            return [None] * self.n_layers
        cache = Cache(layers=[_SlabLayer(self.shared) for _ in range(self.n_layers)])
        self.owner.live_rows = None  # one row stands for every row
        self.owner.prefilling = True
        self.model(input_ids=torch.tensor([self.prompts[0][:self.shared]], device=self.device), past_key_values=cache,
                   attention_mask=torch.ones((1, self.shared), dtype=torch.long, device=self.device), use_cache=True,
                   logits_to_keep=1)
        return [(layer.keys, layer.values) if layer.is_initialized else None for layer in cache.layers]

    # -- slots ---------------------------------------------------------------------------------------
    def _grow(self, n: int) -> None:
        """Start with `n` empty slots holding the shared prefix."""
        for layer, prefix in zip(self.cache.layers, self.prefix):
            if prefix is not None:
                layer.start_from(*prefix, n)
            layer.set_length(self.length)
        self.mask = torch.zeros((n, self.capacity), dtype=torch.long, device=self.device)
        self.mask[:, :self.shared] = 1
        self.history = torch.zeros((n, self.sampling.max_new_tokens), dtype=torch.long, device=self.device)
        self.slots = _Slots([-1] * n, [self.length] * n, [0] * n, [0] * n, [None] * n)

    def _keep(self, keep: list[int]) -> None:
        """Drop every slot not in `keep` (no prompt waits for them)."""
        if len(keep) == len(self.slots.inputs):
            return
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.cache.batch_select_indices(index)
        self.mask, self.history = self.mask[index], self.history[index]
        s = self.slots
        self.slots = _Slots(*([getattr(s, f)[i] for i in keep] for f in ("inputs", "start", "position", "count", "generators")))

    def _live_spans(self) -> list[int]:
        """How many columns each live row's own prompt suffix and tokens take."""
        return [self.length - start for start, index in zip(self.slots.start, self.slots.inputs) if index >= 0]

    def _live_rows(self, slots: list[int] | None = None) -> torch.Tensor:
        chosen = range(len(self.slots.inputs)) if slots is None else slots
        return torch.tensor([self.inputs[self.slots.inputs[s]] if self.slots.inputs[s] >= 0 else FAR for s in chosen])

    def _relayout(self, width: int) -> None:
        """Move each live row's own columns so that all end at `shared + width` (positions unchanged)."""
        rows = len(self.slots.inputs)
        self.stats.relayouts += any(index >= 0 for index in self.slots.inputs)  # live rows moved
        new_length = self.shared + width
        source = torch.zeros((rows, width), dtype=torch.long)
        for s in range(rows):
            span = self.length - self.slots.start[s] if self.slots.inputs[s] >= 0 else 0
            if span:
                source[s, width - span:] = torch.arange(self.slots.start[s], self.length)
            self.slots.start[s] = new_length - span
        source = source.to(self.device)
        row_index = torch.arange(rows, device=self.device)[:, None]
        for layer in self.cache.layers:
            if layer.is_initialized:
                for name in ("slab_keys", "slab_values"):
                    slab = getattr(layer, name)
                    moved = slab[row_index, :, source]  # (rows, width, heads, dim)
                    slab[:, :, self.shared:new_length] = moved.permute(0, 2, 1, 3)
            layer.set_length(new_length)
        self.mask[:, self.shared:] = 0
        for s in range(rows):
            self.mask[s, self.slots.start[s]:new_length] = 1
        self.length = new_length

    def _admit(self, free: list[int], logits: torch.Tensor) -> torch.Tensor:
        """Prefill the next waiting prompts into the `free` slots; their next-token logits join `logits`."""
        chosen = [self.queue.pop(0) for _ in free]
        suffixes = [self.prompts[i][self.shared:] for i in chosen]
        width = max(len(s) for s in suffixes)
        if self.length - self.shared < width:
            self._relayout(max([width, *self._live_spans()]))
        self.stats.admissions += len(chosen)
        temp = Cache(layers=[_SlabLayer(self.shared + width) for _ in range(self.n_layers)])
        for layer, prefix in zip(temp.layers, self.prefix):
            if prefix is not None:
                layer.start_from(*prefix, len(chosen))
            layer.set_length(self.shared)
        ids = torch.full((len(chosen), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chosen), self.shared + width), dtype=torch.long)
        mask[:, :self.shared] = 1
        positions = torch.zeros((len(chosen), width), dtype=torch.long)
        for row, suffix in enumerate(suffixes):
            ids[row, width - len(suffix):] = torch.tensor(suffix)
            mask[row, self.shared + width - len(suffix):] = 1
            positions[row, width - len(suffix):] = torch.arange(self.shared, self.shared + len(suffix))
        for slot, index in zip(free, chosen):
            self.slots.inputs[slot] = index
        self.owner.live_rows = self._live_rows(free)
        # a prompt's suffix, even a one-token one on top of a shared prefix, is prompt: hooks that steer only
        # generated positions read this flag rather than guessing from the shape of the call
        self.owner.prefilling = True
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=temp, use_cache=True, logits_to_keep=1)
        for row, (slot, index, suffix) in enumerate(zip(free, chosen, suffixes)):
            n, start = len(suffix), self.length - len(suffix)
            for layer, own in zip(self.cache.layers, temp.layers):
                if own.is_initialized:
                    if not layer.is_initialized:  # no shared prefix: the slab takes its shape from the first prefill
                        layer.start_from(own.slab_keys[:1, :, :0], own.slab_values[:1, :, :0], len(self.slots.inputs))
                        layer.set_length(self.length)
                    layer.slab_keys[slot, :, start:self.length] = own.slab_keys[row, :, self.shared + width - n:]
                    layer.slab_values[slot, :, start:self.length] = own.slab_values[row, :, self.shared + width - n:]
            self.mask[slot, self.shared:] = 0
            self.mask[slot, start:self.length] = 1
            self.history[slot] = 0
            self.slots.start[slot], self.slots.position[slot], self.slots.count[slot] = start, len(self.prompts[index]), 0
            self.slots.generators[slot] = (torch.Generator(device=self.device).manual_seed(self.seeds[index])
                                           if self.sampling.temperature > 0 else None)
        merged = torch.empty((len(self.slots.inputs), out.logits.shape[-1]), dtype=out.logits.dtype, device=self.device)
        if logits.shape[-1]:
            merged[:] = logits
        merged[free] = out.logits[:, -1]
        return merged

    # -- one decode step -------------------------------------------------------------------------------
    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Each live slot's next token; the slots whose row ended (end of text, or the token limit)."""
        sampling, slots = self.sampling, self.slots
        counts = torch.tensor(slots.count, device=self.device)
        logits = logits.float()
        if sampling.min_new_tokens:
            logits[counts < sampling.min_new_tokens, self.eos_id] = float("-inf")
        logits = penalize(logits, self.history, counts, sampling.repetition_penalty)
        generators = slots.generators if sampling.temperature > 0 else None
        tokens = sample_next(logits, sampling.temperature, sampling.top_p, generators)
        token_list = tokens.tolist()
        finished = []
        for slot, index in enumerate(slots.inputs):
            if self.forcing is not None:  # queued tokens replace the sample; a sampled token may queue more
                if self.queued[index]:
                    token_list[slot] = self.queued[index].pop(0)
                else:
                    self.queued[index].extend(self.forcing[index].after(token_list[slot]))
            token = token_list[slot]
            self.generated[index].append(token)
            if slots.count[slot] < sampling.max_new_tokens:
                self.history[slot, slots.count[slot]] = token
            slots.count[slot] += 1
            # with forcing, an end-of-turn token ends the row only when its script is finished
            ended = token == self.eos_id and (self.forcing is None or (self.forcing[index].finished and not self.queued[index]))
            if ended or slots.count[slot] >= sampling.max_new_tokens:
                finished.append(slot)
        return torch.tensor(token_list, device=self.device), finished

    def _step(self, tokens: torch.Tensor, free: list[int]) -> torch.Tensor:
        """Feed each live row its token (free slots a masked pad, overwritten when a prompt is admitted)."""
        if self.length + 1 > self.capacity:
            self._relayout(max(self._live_spans(), default=0))
        live = [s for s, index in enumerate(self.slots.inputs) if index >= 0]  # every slot not in `free`
        self.stats.steps += 1
        self.stats.row_steps += len(live)
        self.stats.slot_steps += self.n_slots  # a slot left empty at the end still counts as unused
        tokens = tokens.clone()
        tokens[free] = self.pad_id
        self.mask[live, self.length] = 1
        self.length += 1
        positions = torch.tensor([self.slots.position[s] for s in range(len(self.slots.inputs))], device=self.device)
        for s in live:
            self.slots.position[s] += 1
        self.owner.live_rows = self._live_rows()
        self.owner.prefilling = False
        out = self.model(input_ids=tokens[:, None], attention_mask=self.mask[:, :self.length],
                         position_ids=positions[:, None], past_key_values=self.cache, use_cache=True)
        return out.logits[:, -1]
