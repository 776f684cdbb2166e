"""Extraction: per-text residual-stream means at many layers in one forward pass, streamed to shards.

- **One pass, stopped early.** Forward hooks on the requested decoder blocks reduce each block's output
  to what the method needs — the mean over positions from the 50th token on, and the mean token norm —
  and the pass stops after the deepest requested block (baukit's `stop=True`): later blocks and the LM
  head are never computed (on gemma-3-270m the 262k-token head costs more than the whole decoder).
- **Cheap batches.** Texts are sorted by length and packed under a token budget, so little is padding.
- **Streaming, resumable storage.** A plan (`plan.json`) fixes which texts go to which shard and batch;
  each shard is written atomically as safetensors with a hash of its contents, and a killed run redoes
  only unfinished shards with the same batches, so its results are bit-identical to an uninterrupted
  run's. Memory stays flat: nothing but the current shard is held.
- **Scale-out.** Under `torchrun`/`accelerate launch` each process takes every `world`-th shard; `merge`
  (idempotent) writes the manifest from whatever shards exist.

Token rule: positions are counted in the text's own tokens, `<bos>` at 0; the mean covers positions
>= `token_start` (50). Texts with fewer than `token_start + 1` tokens have no such position and are not
extracted (the corpus's length rule, 64 tokens, keeps them out beforehand); texts longer than
`max_tokens` are truncated to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import EmolibError
from ..io import (
    EMOLIB_VERSION,
    atomic_write_bytes,
    atomic_write_json,
    progress_bar,
    read_json,
    runs_dir,
    show_rate,
    store_lock,
)
from ..models.hooks import decoder_layers, forward_hooks, text_config, text_decoder
from ..models.loading import LoadedModel

TOKEN_START = 50
HOOK_SITE = "decoder block output (residual stream), before any final norm"
LAYER_CONVENTION = "layer i = output of decoder block i (0-based) = transformers hidden_states[i + 1]"


class _Stop(Exception):
    """Raised by the deepest hook: nothing after it is computed."""


def text_sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@torch.inference_mode()
def reduce_batch(model: torch.nn.Module, layers: Sequence[int], input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 token_start: int = TOKEN_START) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked means (B, L, d) and mean token norms (B, L) of the requested blocks' outputs, in fp32.

    Works with left or right padding: a token's position is its index among the row's real tokens.
    """
    blocks = decoder_layers(model)
    deepest = max(layers)
    slot = {layer: i for i, layer in enumerate(layers)}
    position = attention_mask.cumsum(dim=1) - 1
    weights = ((position >= token_start) & attention_mask.bool()).to(torch.float32)
    counts = weights.sum(dim=1, keepdim=True)
    if bool((counts == 0).any()):
        raise EmolibError(f"a text in this batch has no token at position >= {token_start}; filter short texts first")
    weights = weights / counts
    batch = input_ids.shape[0]
    means = torch.empty((batch, len(layers), text_config(model).hidden_size), dtype=torch.float32,
                        device=input_ids.device)
    norms = torch.empty((batch, len(layers)), dtype=torch.float32, device=input_ids.device)

    def hook(layer: int):
        def reduce(module, args, output):
            states = (output[0] if isinstance(output, tuple) else output).to(torch.float32)
            means[:, slot[layer]] = torch.bmm(weights[:, None, :], states)[:, 0]
            norms[:, slot[layer]] = (states.norm(dim=-1) * weights).sum(dim=1)
            if layer == deepest:
                raise _Stop
        return reduce

    with forward_hooks((blocks[layer], hook(layer)) for layer in layers):
        try:
            text_decoder(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _Stop:  # the deepest requested block is done: no later block, no LM head
            pass
    return means, norms


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices grouped into batches of similar length whose padded size stays under `token_budget`."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        width = lengths[current[0]] if current else lengths[index]  # longest first: the first sets the width
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches


@dataclass
class Texts:
    """Texts to extract: ids, the texts themselves, and their token ids in the analysed model."""

    ids: list[str]
    texts: list[str]
    token_ids: list[list[int]]

    @classmethod
    def tokenize(cls, ids: Sequence[str], texts: Sequence[str], tokenizer: Any, max_tokens: int = 1024,
                 token_start: int = TOKEN_START) -> tuple["Texts", list[str]]:
        """Tokenize (with <bos>), truncate to `max_tokens`; returns the texts and the ids too short to use."""
        if len(ids) != len(set(ids)):
            raise EmolibError("text ids must be unique")
        encoded = tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=max_tokens)["input_ids"]
        keep = [i for i, tokens in enumerate(encoded) if len(tokens) > token_start]
        kept = set(keep)
        short = [ids[i] for i in range(len(ids)) if i not in kept]
        return cls([ids[i] for i in keep], [texts[i] for i in keep], [list(encoded[i]) for i in keep]), short


def default_token_budget(device: torch.device) -> int:
    """Padded tokens per forward pass: on CPU, small batches stay in cache (1024 measured fastest on a
    2-core AVX2 machine: 660 tok/s vs 540 at 4096); GPUs want large ones."""
    return 16384 if device.type == "cuda" else 1024


def activations_dir(model: str, corpus: str, layers: Sequence[int]) -> Path:
    tag = hashlib.sha1(",".join(map(str, layers)).encode()).hexdigest()[:8]
    return runs_dir() / "activations" / model / f"{corpus}-L{len(layers)}-{tag}"


def _rank_and_world() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


class ActivationStore:
    """A folder of shards for one (model, corpus, layer set): plan, shards, manifest."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    # -- plan ---------------------------------------------------------------------------------------
    def plan(self, loaded: LoadedModel, layers: Sequence[int], texts: Texts, *, token_start: int = TOKEN_START,
             token_budget: int = 0, shard_texts: int = 256, reuse: Sequence[str | Path] = ()) -> dict:
        """Extend (or create) the plan so every text has a shard; existing shards keep their batches. A valid shard of
        a `reuse` store made with the same settings whose texts are all wanted here and not yet planned is copied in
        as it is (a deep story set reads its base's stories again: their activations are the base's, bit for bit)."""
        token_budget = token_budget or default_token_budget(loaded.device)
        path = self.folder / "plan.json"
        header = {"model": loaded.profile.name, "model_id": loaded.profile.model_id, "layers": list(layers),
                  "token_start": token_start, "dtype": str(loaded.dtype).removeprefix("torch."),
                  "revision": loaded.provenance.get("gguf_sha256") or loaded.provenance.get("revision")}
        plan = read_json(path) if path.exists() else {**header, "shards": []}
        differing = [key for key in header if plan.get(key) != header[key]]
        if differing:
            raise EmolibError(f"{self.folder} holds activations made with other settings ({', '.join(differing)}); "
                              "remove the folder or choose another corpus name")
        planned = {(text_id, sha) for shard in plan["shards"] for text_id, sha in shard["texts"]}
        keys = [(text_id, text_sha(text)) for text_id, text in zip(texts.ids, texts.texts)]
        new = [i for i, key in enumerate(keys) if key not in planned]
        adopted = self._adopt(plan, header, {keys[i] for i in new}, reuse) if new and reuse else set()
        new = [i for i in new if keys[i] not in adopted]
        if adopted and not new:
            atomic_write_json(path, plan)
        if new:
            lengths = [len(texts.token_ids[i]) for i in new]
            order = [new[i] for batch in plan_batches(lengths, token_budget) for i in batch]
            for start in range(0, len(order), shard_texts):
                members = order[start: start + shard_texts]
                member_lengths = [len(texts.token_ids[i]) for i in members]
                batches = plan_batches(member_lengths, token_budget)
                plan["shards"].append({"name": f"shard-{len(plan['shards']):05d}",
                                       "texts": [list(keys[i]) for i in members], "batches": batches})
            atomic_write_json(path, plan)
        return plan

    def _adopt(self, plan: dict, header: dict, wanted: set[tuple[str, str]], reuse: Sequence[str | Path]
               ) -> set[tuple[str, str]]:
        """Copy whole valid shards of the `reuse` stores (same header) whose texts are all in `wanted` into this store
        and its plan (`plan` is updated in place, written by the caller); the text keys they hold."""
        adopted: set[tuple[str, str]] = set()
        for folder in reuse:
            other = ActivationStore(folder)
            if not (other.folder / "plan.json").exists() or other.folder.resolve() == self.folder.resolve():
                continue
            theirs = read_json(other.folder / "plan.json")
            if any(theirs.get(key) != value for key, value in header.items()):
                continue
            for shard in theirs["shards"]:
                members = {tuple(key) for key in shard["texts"]}
                if not members <= wanted - adopted or other.read_shard(shard["name"]) is None:
                    continue
                name = f"shard-{len(plan['shards']):05d}"
                atomic_write_bytes(self.shard_path(name), other.shard_path(shard["name"]).read_bytes())
                plan["shards"].append({"name": name, "texts": shard["texts"], "batches": shard["batches"],
                                       "copied_from": f"{other.folder.name}/{shard['name']}"})
                adopted |= members
        return adopted

    # -- shards -------------------------------------------------------------------------------------
    def shard_path(self, name: str) -> Path:
        return self.folder / f"{name}.safetensors"

    def read_shard(self, name: str) -> dict[str, Any] | None:
        """A shard's tensors and metadata, or None if it is missing, truncated or fails its hash."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        path = self.shard_path(name)
        if not path.exists():
            return None
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata()
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError):
            return None
        if metadata.get("content_sha256") != _content_hash(tensors):
            return None
        return {"means": tensors["means"], "norms": tensors["norms"], "n_tokens": tensors["n_tokens"],
                "ids": json.loads(metadata["text_ids"]), "metadata": metadata}

    def write_shard(self, name: str, ids: list[str], means: torch.Tensor, norms: torch.Tensor,
                    n_tokens: torch.Tensor, extra: dict[str, str]) -> None:
        from safetensors.torch import save

        tensors = {"means": means.contiguous(), "norms": norms.contiguous(), "n_tokens": n_tokens.contiguous()}
        metadata = {**extra, "text_ids": json.dumps(ids), "content_sha256": _content_hash(tensors)}
        atomic_write_bytes(self.shard_path(name), save(tensors, metadata=metadata))

    # -- extraction ---------------------------------------------------------------------------------
    def extract(self, loaded: LoadedModel, layers: Sequence[int], texts: Texts, *, token_start: int = TOKEN_START,
                token_budget: int = 0, shard_texts: int = 256, progress: bool = True,
                seeds: dict | None = None, reuse: Sequence[str | Path] = ()) -> dict[str, float]:
        """Compute every planned shard this process owns that is not already on disk and valid. Holds this
        rank's lock on the folder meanwhile: a second run extracting into it stops with one line."""
        rank, world = _rank_and_world()
        with store_lock(self.folder, ".lock" if world == 1 else f".lock.rank{rank}"):
            return self._extract(loaded, layers, texts, token_start, token_budget, shard_texts, progress, seeds, reuse)

    def _extract(self, loaded: LoadedModel, layers: Sequence[int], texts: Texts, token_start: int, token_budget: int,
                 shard_texts: int, progress: bool, seeds: dict | None, reuse: Sequence[str | Path]) -> dict[str, float]:
        plan = self.plan(loaded, layers, texts, token_start=token_start, token_budget=token_budget,
                         shard_texts=shard_texts, reuse=reuse)
        rank, world = _rank_and_world()
        by_key = {(text_id, text_sha(text)): i for i, (text_id, text) in enumerate(zip(texts.ids, texts.texts))}
        wanted = [shard for index, shard in enumerate(plan["shards"]) if index % world == rank
                  and all(tuple(key) in by_key for key in shard["texts"])]
        todo = [shard for shard in wanted if self.read_shard(shard["name"]) is None]
        stats = {"shards": len(wanted), "already_done": len(wanted) - len(todo), "tokens": 0, "seconds": 0.0}
        pad_id = _pad_id(loaded.tokenizer)
        device = loaded.device
        started = time.perf_counter()
        quiet = {} if progress else {"disable": True}
        total = sum(len(shard["texts"]) for shard in todo)
        with progress_bar(total=total, desc=f"extracting ({loaded.profile.name}, {len(layers)} layers)", unit="text", **quiet) as bar:
            for shard in todo:
                members = [by_key[tuple(key)] for key in shard["texts"]]
                means = torch.empty((len(members), len(layers), loaded.hidden_size), dtype=torch.float32)
                norms = torch.empty((len(members), len(layers)), dtype=torch.float32)
                for batch in shard["batches"]:
                    rows = [texts.token_ids[members[i]] for i in batch]
                    input_ids, mask = _pad(rows, pad_id, loaded.tokenizer.padding_side)
                    batch_means, batch_norms = reduce_batch(loaded.model, layers, input_ids.to(device),
                                                            mask.to(device), token_start)
                    means[batch] = batch_means.cpu()
                    norms[batch] = batch_norms.cpu()
                    stats["tokens"] += int(mask.sum())
                    show_rate(bar, stats["tokens"], started)
                    bar.update(len(batch))
                n_tokens = torch.tensor([len(texts.token_ids[i]) for i in members], dtype=torch.int32)
                self.write_shard(shard["name"], [texts.ids[i] for i in members], means, norms, n_tokens,
                                 {"model_id": loaded.profile.model_id, "layers": json.dumps(list(layers))})
        stats["seconds"] = time.perf_counter() - started
        if stats["seconds"] > 0 and stats["tokens"]:
            stats["tokens_per_second"] = stats["tokens"] / stats["seconds"]
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        if rank == 0:
            self.merge(loaded, seeds=seeds)
        return stats

    def merge(self, loaded: LoadedModel | None = None, seeds: dict | None = None) -> dict:
        """Write manifest.json from the plan and the valid shards on disk (safe to run any number of times)."""
        import transformers

        plan = read_json(self.folder / "plan.json")
        shards, missing = [], []
        for shard in plan["shards"]:
            path = self.shard_path(shard["name"])
            content = self.read_shard(shard["name"])
            if content is None:
                missing.append(shard["name"])
                continue
            shards.append({"name": shard["name"], "texts": len(shard["texts"]),
                           "content_sha256": content["metadata"]["content_sha256"],
                           "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
        manifest = {
            "model": plan["model"], "model_id": plan["model_id"], "revision": plan["revision"],
            "layers": plan["layers"], "layer_convention": LAYER_CONVENTION, "hook_site": HOOK_SITE,
            "token_reduction": f"mean over positions >= {plan['token_start']} (0-based, <bos> at 0), padding excluded; "
                               "also the mean L2 norm of those positions",
            "dtype": plan["dtype"], "shards": shards, "missing_shards": missing,
            "texts": sum(shard["texts"] for shard in shards), "seeds": seeds or {},
            "versions": {"emolib": EMOLIB_VERSION, "torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()},
        }
        if loaded is not None:
            manifest["provenance"] = loaded.provenance
        atomic_write_json(self.folder / "manifest.json", manifest)
        return manifest

    # -- reading --------------------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        """The layers every shard holds, in order (from the plan)."""
        return list(read_json(self.folder / "plan.json")["layers"])

    @property
    def hidden_size(self) -> int:
        """The width of the stored activations (from the first shard's header, without reading its data)."""
        from safetensors import safe_open

        plan = read_json(self.folder / "plan.json")
        if not plan["shards"]:
            raise EmolibError(f"{self.folder} holds no shards; run the extraction first")
        with safe_open(str(self.shard_path(plan["shards"][0]["name"])), framework="pt") as handle:
            return int(handle.get_slice("means").get_shape()[-1])

    def iter_shards(self, ids: set[str] | None = None) -> Iterator[tuple[list[str], torch.Tensor, torch.Tensor]]:
        """(ids, means, norms) per valid shard, restricted to `ids`; a bad shard is an error, never skipped."""
        plan = read_json(self.folder / "plan.json")
        for shard in plan["shards"]:
            if ids is not None and not any(text_id in ids for text_id, _ in shard["texts"]):
                continue
            content = self.read_shard(shard["name"])
            if content is None:
                raise EmolibError(f"{self.shard_path(shard['name'])} is missing or corrupted (hash mismatch); "
                                  "rerun the extraction to recompute it")
            keep = [i for i, text_id in enumerate(content["ids"]) if ids is None or text_id in ids]
            yield [content["ids"][i] for i in keep], content["means"][keep], content["norms"][keep]

    def load(self, ids: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Means (N, L, d) and norms (N, L) for `ids`, in that order."""
        wanted = set(ids)
        found: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        for shard_ids, means, norms in self.iter_shards(wanted):
            for i, text_id in enumerate(shard_ids):
                found[text_id] = (means[i], norms[i])
        absent = [text_id for text_id in ids if text_id not in found]
        if absent:
            raise EmolibError(f"{len(absent)} texts have no activations in {self.folder} (e.g. {absent[0]}); "
                              "run the extraction for them first")
        return torch.stack([found[i][0] for i in ids]), torch.stack([found[i][1] for i in ids])


def _content_hash(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _pad(rows: list[list[int]], pad_id: int, side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(row)
        mask[i, span] = 1
    return ids, mask


def extract_texts(loaded: LoadedModel, folder: Path, layers: Sequence[int], ids: Sequence[str], texts: Sequence[str], *,
                  token_budget: int = 0, shard_texts: int = 256, progress: bool = True, reuse: Sequence[str | Path] = ()):
    """Texts -> per-text activation means at `layers`, in an ActivationStore at `folder` (resumable; whole shards of
    the `reuse` stores that hold only wanted texts are copied, not recomputed).

    Returns (store, stats, too_short): the shards, what was computed, and the ids this model's tokenizer
    leaves shorter than the token rule needs (skipped; the caller counts them)."""
    tokenized, too_short = Texts.tokenize(list(ids), list(texts), loaded.tokenizer)
    store = ActivationStore(folder)
    stats = store.extract(loaded, layers, tokenized, token_budget=token_budget, shard_texts=shard_texts, progress=progress,
                          reuse=reuse)
    return store, stats, too_short
