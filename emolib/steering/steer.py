"""Steering: add `α · mean‖h‖ · v̂` to a decoder block's output while the model runs.

- **Hooks as context managers** (steering-vectors' pattern): `with steering(model, terms): ...` registers
  one forward hook per steered block and removes every hook on exit, exceptions included. Layers are
  never replaced, so quantized (bitsandbytes) and multimodal models steer the same way.
- **Scale**: α is in units of the layer's mean residual norm (Anthropic's convention), read from the
  vector build (`VectorBuild.residual_norm`, the mean token norm over the corpus at that layer), so
  one α means comparable strength across layers and models.
- **Positions**: "all" steers every position (prompt and generated); "generated" steers only the
  positions fed one token at a time after the prompt (the decode steps of cached generation, the
  method's "every generated position"); an int steers positions whose position id is at least that.
  All are batching- and KV-cache-safe: a steered position's keys and values are cached as steered.
- **Several vectors at once**: terms on the same block are summed into one added vector.
- **Operators** (steering-vectors' set): "add" (the default), "ablate" (project the direction out of the
  block's output: h - (h·û)û, the control experiment for a causal claim) and "ablate_then_add" (project it
  out, then set its component to α · mean‖h‖). Several ablated directions on one block are projected out
  together (their span), before anything is added.

The experiments of chapter 7 that use it (dose-response, blackmail) are in emolib.steering.experiments, the
reward-hacking harness in emolib.steering.rewardhack.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import EmolibError
from ..extraction.vectors import Direction, VectorBuild
from ..models.hooks import decoder_layers, forward_hooks, text_config
from ..models.loading import LoadedModel


@dataclass(frozen=True)
class SteerTerm:
    """One steering vector at `layer`: `alpha · scale · direction / ‖direction‖` added ("add"), the direction
    projected out ("ablate"), or projected out and then that vector added ("ablate_then_add")."""

    direction: torch.Tensor
    layer: int
    alpha: float
    scale: float = 1.0
    label: str = ""
    rows: tuple[int, ...] | None = None  # which inputs of a batched call it steers (None: all)
    operator: str = "add"

    def __post_init__(self) -> None:
        if self.operator not in OPERATORS:
            raise EmolibError(f"operator must be one of {', '.join(OPERATORS)}, got {self.operator!r}")
        if self.operator != "add" and self.rows is not None:
            raise EmolibError("ablation acts on every row of a call; steer other rows in a separate call")

    @property
    def unit(self) -> torch.Tensor:
        direction = self.direction.detach().to(torch.float32)
        norm = float(direction.norm())
        if norm == 0 or not math.isfinite(norm):
            raise EmolibError(f"steering vector {self.label or ''} has norm {norm}; it has no direction")
        return direction / norm

    @property
    def added(self) -> torch.Tensor:
        """What this term adds after any ablation (nothing for a pure ablation)."""
        return torch.zeros_like(self.unit) if self.operator == "ablate" else self.unit * (self.alpha * self.scale)


OPERATORS = ("add", "ablate", "ablate_then_add")


def terms(build: VectorBuild, spec: dict[str, float], layer: int, rows: Sequence[int] | None = None,
          operator: str = "add") -> list[SteerTerm]:
    """Terms from a `VectorBuild` (denoised vectors): {"desperate": 0.05, "calm": -0.05} at `layer`,
    for the given input rows of a batched call (all rows when None), with one operator for all."""
    vectors = build.denoised
    if layer not in vectors.layers:
        raise EmolibError(f"layer {layer} has no vectors (extracted layers: {list(vectors.layers)}); "
                          "extract it in chapter 3 or pick one of those")
    scale = build.residual_norm[layer]
    rows = tuple(rows) if rows is not None else None
    return [SteerTerm(vectors.direction(emotion, layer), layer, float(alpha), scale, f"{operator} {alpha:+g} {emotion}",
                      rows, operator) for emotion, alpha in spec.items()]


def term(direction: Direction, layer: int, alpha: float = 0.0, operator: str = "add", *, raw: bool = False,
         scale: float | None = None) -> SteerTerm:
    """A term from a `Direction` (one emotion, or arithmetic on several: `ev["desperate"] - ev["calm"]`) at
    `layer`. α is in the book's units by default: a fraction of the layer's mean residual norm (recorded with the
    vectors), so α = 0.2 adds a fifth of a typical residual's length along the direction's unit vector, on any
    model; `raw=True` takes α in the residual stream's own units; `scale` names the unit explicitly."""
    unit = float(scale) if scale is not None else (1.0 if raw else direction.scale(layer))
    return SteerTerm(direction.at(layer), layer, float(alpha), unit, f"{operator} {alpha:+g} {direction.label}",
                     None, operator)


def _is_decode_step(hidden: torch.Tensor, kwargs: dict) -> bool:
    # transformers >= 5.24 passes the cache to decoder layers as `cache` (earlier: `past_key_values`)
    cache = next((kwargs[k] for k in ("cache", "past_key_values", "past_key_value") if kwargs.get(k) is not None), None)
    if hidden.shape[1] != 1 or cache is None:
        return False
    try:
        return int(cache.get_seq_length()) > 1
    except Exception:  # caches without a length: a one-token call with a cache is a decode step
        return True


def _combined(steer_terms: Sequence[SteerTerm], n_blocks: int, hidden_size: int
              ) -> dict[int, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]]:
    """Per block: the vector added to every row, the per-row vectors of row-restricted terms (or None), and an
    orthonormal basis of the directions ablated there (or None)."""
    n_rows = max((max(t.rows, default=-1) + 1 for t in steer_terms if t.rows is not None), default=0)
    by_layer: dict[int, tuple[torch.Tensor, torch.Tensor | None, list[torch.Tensor]]] = {}
    for one in steer_terms:
        if not -n_blocks <= one.layer < n_blocks:
            raise EmolibError(f"cannot steer layer {one.layer}: the model has {n_blocks} decoder blocks")
        if one.direction.shape[-1] != hidden_size:
            raise EmolibError(f"steering vector {one.label} has size {one.direction.shape[-1]}, the model's residual "
                              f"stream {hidden_size}: vectors from another model?")
        layer = one.layer % n_blocks
        shared, per_row, ablated = by_layer.get(layer, (torch.zeros(hidden_size), None, []))
        if one.operator != "add":
            ablated = ablated + [one.unit]
        if one.rows is None:
            shared = shared + one.added
        else:
            per_row = torch.zeros(n_rows, hidden_size) if per_row is None else per_row
            per_row[list(one.rows)] += one.added
        by_layer[layer] = (shared, per_row, ablated)
    combined = {}
    for layer, (shared, per_row, ablated) in by_layer.items():
        basis = None
        if ablated:  # an orthonormal basis of the ablated directions' span (SVD: repeated directions in any order)
            u, singular, _ = torch.linalg.svd(torch.stack(ablated).double().T, full_matrices=False)
            basis = u[:, singular > 1e-9 * singular[0]].T.float()
        combined[layer] = (shared, per_row, basis)
    return combined


def _row_vectors(vector: torch.Tensor, rows_vectors: torch.Tensor, rows_of: Any, batch: int) -> torch.Tensor:
    """Add each batch row's own vector: rows are inputs `rows_of.live_rows` (a prefix computed once has one row)."""
    live = getattr(rows_of, "live_rows", None)
    if live is None:
        if batch != 1 or not bool((rows_vectors == rows_vectors[:1]).all()):
            raise EmolibError("rows steered differently share a prompt prefix computed once; "
                              "steer generated positions only, or use LocalWriter(share_prefix=False)")
        return vector + rows_vectors[:1]
    live = live.to(vector.device)
    inside = live < len(rows_vectors)
    extra = torch.zeros_like(vector)
    extra[inside] = rows_vectors[live[inside]]
    return vector + extra


def _adder(shared: torch.Tensor, per_row: torch.Tensor | None, positions: str | int, rows_of: Any,
           basis: torch.Tensor | None = None):
    """The forward hook of one block: its output with the ablated directions projected out and the steering
    vector added, at the chosen positions."""
    cache: dict[tuple, tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]] = {}

    def add(module, args, kwargs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if positions == "generated":
            prefilling = getattr(rows_of, "prefilling", None)  # the decode loop says; else judge by the call's shape
            if prefilling if prefilling is not None else not _is_decode_step(hidden, kwargs):
                return None
        key = (hidden.device, hidden.dtype)
        if key not in cache:
            cache[key] = (shared.to(device=hidden.device, dtype=hidden.dtype),
                          None if per_row is None else per_row.to(device=hidden.device, dtype=hidden.dtype),
                          None if basis is None else basis.to(device=hidden.device, dtype=hidden.dtype))
        vector, rows_vectors, ablate = cache[key]
        vector = vector.expand(hidden.shape[0], -1)
        if rows_vectors is not None:
            vector = _row_vectors(vector, rows_vectors, rows_of, hidden.shape[0])
        vector = vector[:, None, :]
        mask = None
        if isinstance(positions, int):
            position_ids = kwargs.get("position_ids")
            if position_ids is None:
                raise EmolibError("steering from a position needs position ids, which this model does not pass")
            mask = (position_ids >= positions).to(hidden.dtype).expand(hidden.shape[0], -1)[..., None]
            vector = mask * vector
        steered = hidden
        if ablate is not None:
            removed = (hidden @ ablate.T) @ ablate
            steered = hidden - (removed if mask is None else mask * removed)
        steered = steered + vector
        return (steered, *output[1:]) if isinstance(output, tuple) else steered
    return add


@contextmanager
def steering(model: torch.nn.Module | LoadedModel, steer_terms: Sequence[SteerTerm], positions: str | int = "all",
             rows_of: Any = None) -> Iterator[list[Any]]:
    """Add the terms to their blocks' outputs inside the `with` block; always removed on exit.

    Terms restricted to some rows (`SteerTerm.rows`) need `rows_of`: an object whose `live_rows` says
    which inputs the current batch rows are (`generate.LocalWriter` does), so one batched call can run
    many conditions at once."""
    if isinstance(model, LoadedModel):
        model = model.model
    if not (positions in ("all", "generated") or (isinstance(positions, int) and not isinstance(positions, bool))):
        raise EmolibError(f"positions must be 'all', 'generated' or a position index, got {positions!r}")
    if any(term.rows is not None for term in steer_terms) and rows_of is None:
        raise EmolibError("steering terms for some rows only need rows_of=<the LocalWriter that generates>")
    blocks = decoder_layers(model)
    by_layer = _combined(steer_terms, len(blocks), text_config(model).hidden_size)
    with forward_hooks(((blocks[layer], _adder(shared, per_row, positions, rows_of, basis))
                        for layer, (shared, per_row, basis) in by_layer.items()), with_kwargs=True) as handles:
        yield handles


@contextmanager
def span_steering(model: torch.nn.Module | LoadedModel, layer: int, vectors: torch.Tensor, mask: torch.Tensor
                  ) -> Iterator[list[Any]]:
    """Add each row's vector (B, d) to block `layer`'s output at the positions `mask` (B, T) marks, and nowhere else,
    inside the `with` block (the hook always removed): steering on some tokens only, such as one activity's words in
    a prompt scored in one forward pass (Anthropic's preference steering). Positions before a marked one see no
    change at all (the model is causal); marked positions and everything after them do."""
    if isinstance(model, LoadedModel):
        model = model.model
    blocks = decoder_layers(model)
    if not -len(blocks) <= layer < len(blocks):
        raise EmolibError(f"cannot steer layer {layer}: the model has {len(blocks)} decoder blocks")
    if vectors.ndim != 2 or mask.ndim != 2 or vectors.shape[0] != mask.shape[0]:
        raise EmolibError(f"span steering takes one vector per row (B, d) and a mask (B, T); got {tuple(vectors.shape)} "
                          f"and {tuple(mask.shape)}")

    def add(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.shape[:2] != mask.shape:
            raise EmolibError(f"the span mask {tuple(mask.shape)} does not fit the batch {tuple(hidden.shape[:2])}")
        steered = hidden + mask.to(hidden)[..., None] * vectors.to(hidden)[:, None, :]
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    with forward_hooks([(blocks[layer], add)]) as handles:
        yield handles
