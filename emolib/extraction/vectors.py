"""Emotion vectors: the object, how it is built, and how it leaves (safetensors, llama.cpp GGUF).

Built as the method says: each emotion's mean activation over its stories, minus the mean over all
emotions; then denoised by projecting out the top principal components of the neutral dialogues'
activations that together explain half of their variance (k is chosen per layer and recorded).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EmolibError
from ..io import atomic_write_bytes, atomic_write_json, runs_dir, store_lock
from ..models.loading import LoadedModel
from ..models.profiles import check_layers
from .extract import LAYER_CONVENTION, TOKEN_START, ActivationStore, extract_texts
from .interop import (  # noqa: F401 (read as V.X)
    control_vector_hint,
    make_steering_vector,
    read_control_vector,
    steering_vector_directions,
    write_control_vector,
)


def vectors_dir(model: str, corpus: str) -> Path:
    """Where chapter 3 saves a model's vectors for a corpus: runs/vectors/<model>/<corpus>/."""
    return runs_dir() / "vectors" / model / corpus


def _same_model(metadata: dict[str, Any], model: Any) -> bool:
    """Whether vectors' metadata names `model` (a profile name or a LoadedModel): by profile name, or, for a model in
    memory, by its model id or the folder it was loaded from (vectors trained in memory on the embedded model name
    its converted folder, the profile names it `270m`)."""
    made = {str(metadata.get(k)) for k in ("model", "model_id", "name_or_path") if metadata.get(k)}
    if isinstance(model, str):
        return model in made
    config = getattr(getattr(model, "model", None), "config", None)
    names = {model.profile.name, model.profile.model_id, str(getattr(config, "name_or_path", "") or "")} - {""}
    return bool(made & names)


@dataclass
class EmotionVectors:
    """`vectors[e, l]` is emotion `emotions[e]`'s vector at layer `layers[l]` (fp32, E x L x d)."""
    emotions: list[str]
    layers: tuple[int, ...]
    vectors: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.emotions = list(self.emotions)
        self.layers = tuple(int(layer) for layer in self.layers)
        self.vectors = self.vectors.to(torch.float32)
        if self.vectors.ndim != 3 or self.vectors.shape[:2] != (len(self.emotions), len(self.layers)):
            raise EmolibError(f"vectors must be (emotions={len(self.emotions)}, layers={len(self.layers)}, d); "
                              f"got {tuple(self.vectors.shape)}")
        if len(set(self.emotions)) != len(self.emotions):
            raise EmolibError("emotion names must be unique")

    def __repr__(self) -> str:
        model = self.metadata.get("model")
        return (f"EmotionVectors({len(self.emotions)} emotions x {len(self.layers)} layers x {self.hidden_size} dims"
                + (f", model {model!r}" if model else "") + f"; {', '.join(self.emotions[:4])}"
                + (", ..." if len(self.emotions) > 4 else "") + ")")

    # -- access ---------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.vectors.shape[-1]

    def __len__(self) -> int:
        return len(self.emotions)

    def index(self, emotion: str) -> int:
        try:
            return self.emotions.index(emotion)
        except ValueError:
            raise EmolibError(f"no vector for emotion {emotion!r}; these vectors hold {len(self.emotions)} "
                              f"emotions ({', '.join(self.emotions[:5])}, ...)") from None

    def layer_index(self, layer: int) -> int:
        try:
            return self.layers.index(layer)
        except ValueError:
            raise EmolibError(f"no vectors at layer {layer}; these were extracted at layers {list(self.layers)}") from None

    def at(self, layer: int) -> torch.Tensor:
        """All emotions at one layer: (E, d)."""
        return self.vectors[:, self.layer_index(layer)]

    def __getitem__(self, emotion: str) -> "Direction":
        """One emotion's vectors at every layer, as a `Direction` that supports arithmetic
        (`ev["desperate"] - ev["calm"]`) and steering (`emolib.steering.steer.term`)."""
        norms = {int(k): float(v) for k, v in self.metadata.get("residual_norm", {}).items()}
        return Direction(self.layers, self.vectors[self.index(emotion)].clone(), emotion, norms)

    def direction(self, emotion: str, layer: int) -> torch.Tensor:
        """The unit vector of `emotion` at `layer`."""
        vector = self.vectors[self.index(emotion), self.layer_index(layer)]
        return vector / vector.norm().clamp_min(1e-12)

    def select(self, emotions: Sequence[str] | None = None, layers: Sequence[int] | None = None) -> "EmotionVectors":
        emotions = list(emotions) if emotions is not None else self.emotions
        layers = tuple(layers) if layers is not None else self.layers
        rows = [self.index(e) for e in emotions]
        cols = [self.layer_index(layer) for layer in layers]
        return EmotionVectors(emotions, layers, self.vectors[rows][:, cols].clone(), dict(self.metadata))

    def unit(self) -> "EmotionVectors":
        return self._new(self.vectors / self.vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12))

    def cosine(self, layer: int) -> torch.Tensor:
        """Cosine similarity between every pair of emotions at one layer: (E, E)."""
        unit = self.at(layer) / self.at(layer).norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return unit @ unit.T

    # -- arithmetic (repeng-style: vectors combine like the directions they are) -------------------------
    def _new(self, vectors: torch.Tensor) -> "EmotionVectors":
        return EmotionVectors(self.emotions, self.layers, vectors, dict(self.metadata))

    def _check(self, other: "EmotionVectors") -> None:
        if other.emotions != self.emotions or other.layers != self.layers or other.hidden_size != self.hidden_size:
            raise EmolibError("these vectors have different emotions, layers or width; select() a common subset first")

    def __add__(self, other: "EmotionVectors") -> "EmotionVectors":
        self._check(other)
        return self._new(self.vectors + other.vectors)

    def __sub__(self, other: "EmotionVectors") -> "EmotionVectors":
        self._check(other)
        return self._new(self.vectors - other.vectors)

    def __neg__(self) -> "EmotionVectors":
        return self._new(-self.vectors)

    def __mul__(self, scale: float) -> "EmotionVectors":
        return self._new(self.vectors * float(scale))

    __rmul__ = __mul__

    def __truediv__(self, scale: float) -> "EmotionVectors":
        return self._new(self.vectors / float(scale))

    # -- files ----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """`<path>.safetensors` (the tensor) and `<path>.json` (everything else), both written atomically."""
        from safetensors.torch import save

        path = Path(path).with_suffix("")
        header = {"emotions": json.dumps(self.emotions), "layers": json.dumps(list(self.layers)), "format": "emolib.vectors/1"}
        atomic_write_bytes(path.with_suffix(".safetensors"), save({"vectors": self.vectors.contiguous()}, metadata=header))
        atomic_write_json(path.with_suffix(".json"), {"emotions": self.emotions, "layers": list(self.layers),
                                                     "hidden_size": self.hidden_size, "metadata": self.metadata})
        return path.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path, *, model: Any = None, emotions: Sequence[str] | None = None,
             layers: Sequence[int] | None = None) -> "EmotionVectors":
        """Load vectors; with `model` (a profile name or LoadedModel), refuse vectors made for another model;
        with `emotions` / `layers`, just those (one line naming the file when it lacks one)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path).with_suffix("")
        for part in (path.with_suffix(".safetensors"), path.with_suffix(".json")):
            if not part.exists():
                raise EmolibError(f"no vectors at {path}: {part.name} is missing")
        try:
            tensors = load_file(str(path.with_suffix(".safetensors")))
            side = json.loads(path.with_suffix(".json").read_text())
            vectors = cls(side["emotions"], tuple(side["layers"]), tensors["vectors"], side.get("metadata") or {})
        except EmolibError as wrong:
            raise EmolibError(f"{path}: {wrong}") from None
        except (SafetensorError, ValueError, KeyError, TypeError, OSError, RuntimeError) as broken:
            # truncated or foreign bytes, a side-car without its fields, a tensor of another shape
            raise EmolibError(f"{path}: the vector files are corrupted or not emolib's ({type(broken).__name__}); "
                              "rebuild them with chapter 3") from None
        if emotions is not None or layers is not None:
            try:
                vectors = vectors.select(emotions, layers)
            except EmolibError as missing:
                raise EmolibError(f"{path}: {missing}") from None
        if model is not None:
            name = model if isinstance(model, str) else model.profile.name
            made_for = vectors.metadata.get("model")
            if made_for is not None and not _same_model(vectors.metadata, model):
                raise EmolibError(f"{path} holds vectors for model {made_for!r} (d={vectors.hidden_size}), not {name!r}; "
                                  f"use vectors extracted from {name}")
            if not isinstance(model, str) and model.hidden_size != vectors.hidden_size:
                raise EmolibError(f"{path}: vectors have width {vectors.hidden_size}, model {name} has {model.hidden_size}")
        return vectors

    def scaled(self, emotion: str, layers: Sequence[int] | None = None, scale: str = "norm") -> dict[int, torch.Tensor]:
        """{layer: vector} of one emotion as other tools take it: `"norm"` each layer's unit vector times the
        layer's mean residual norm (a strength s then adds s · mean‖h‖ · v̂, emolib's α = s), `"unit"` unit
        vectors, `"raw"` the vectors as they are (a bit-identical round trip)."""
        if scale not in ("norm", "unit", "raw"):
            raise EmolibError(f"scale must be 'norm', 'unit' or 'raw', got {scale!r}")
        norms = self.metadata.get("residual_norm", {})
        out = {}
        for layer in layers or self.layers:
            if scale == "raw":
                out[int(layer)] = self.vectors[self.index(emotion), self.layer_index(layer)].clone()
                continue
            if scale == "norm" and str(layer) not in norms:
                raise EmolibError(f"no mean residual norm recorded for layer {layer}; use scale='unit'")
            out[int(layer)] = self.direction(emotion, layer) * (norms[str(layer)] if scale == "norm" else 1.0)
        return out

    def to_control_vector(self, path: str | Path, emotion: str, layers: Sequence[int] | None = None,
                          scale: str = "norm", strength: float = 1.0) -> Path:
        """Export one emotion as llama.cpp's control-vector GGUF (the format repeng writes). llama.cpp has no
        slot for block 0, so layer 0 is left out; see `scaled` for `scale`."""
        layers = [layer for layer in (layers or self.layers) if layer != 0]
        if not layers:
            raise EmolibError("llama.cpp control vectors cannot steer layer 0; choose layers >= 1")
        hint = str(self.metadata.get("model_type") or self.metadata.get("model", ""))
        return write_control_vector(self.scaled(emotion, layers, scale), path, hint, strength)

    def to_steering_vector(self, emotion: str, layers: Sequence[int] | None = None, scale: str = "norm"):
        """One emotion as a `steering_vectors.SteeringVector` (PyPI steering-vectors); see `scaled`."""
        return make_steering_vector(self.scaled(emotion, layers, scale))

    @classmethod
    def train(cls, model: Any, tokenizer: Any, stories: dict[str, Sequence[str]], neutral: Sequence[str],
              layers: Sequence[int] | str = "default", *, variance: float = 0.5, token_budget: int = 0,
              progress: bool = False, return_build: bool = False) -> "EmotionVectors | VectorBuild":
        """Emotion vectors in one call, like repeng's `ControlVector.train`: `stories` maps each emotion to
        its texts, `neutral` are the neutral texts whose top PCs are projected out. The same computation
        as the staged path (chapter 3: `emolib.build_vectors`) on the same texts, without a corpus folder:
        the activations pass through a temporary folder removed at the end. Every text of an emotion weighs
        the same (the staged path weighs a short cell's stories up; on a balanced corpus the two agree).
        Texts shorter than the token rule needs are skipped (`metadata["skipped_texts"]`). Returns the denoised vectors (or the whole
        VectorBuild with `return_build=True`)."""
        if len(stories) < 2 or any(not isinstance(group, (list, tuple)) or not group for group in stories.values()):
            raise EmolibError("train needs stories for at least 2 emotions, each a non-empty list of texts "
                              "({'happy': [...], 'sad': [...]})")
        if not neutral:
            raise EmolibError("train needs neutral texts (their top principal components are projected out): pass "
                              "neutral=[...] with at least 2 texts")
        loaded = model if isinstance(model, LoadedModel) else LoadedModel.wrap(model, tokenizer)
        chosen = check_layers(loaded.profile, layers)
        ids, texts, by_emotion = [], [], {}
        for emotion, group in stories.items():
            by_emotion[emotion] = [f"story/{emotion}/{i}" for i in range(len(group))]
            ids += by_emotion[emotion]
            texts += list(group)
        neutral_ids = [f"neutral/{i}" for i in range(len(neutral))]
        with tempfile.TemporaryDirectory(prefix="emolib-train-") as folder:
            store, _, too_short = extract_texts(loaded, Path(folder), chosen, ids + neutral_ids, texts + list(neutral),
                                                token_budget=token_budget, progress=progress)
            skipped = set(too_short)
            usable = [e for e, group in by_emotion.items() if any(i not in skipped for i in group)]
            if len(usable) < 2:
                raise EmolibError(f"every story of {len(by_emotion) - len(usable)} of the {len(by_emotion)} emotions is shorter than "
                                  f"the {TOKEN_START + 1} tokens the token rule needs (the mean starts at token {TOKEN_START}); "
                                  "give longer stories")
            if len([i for i in neutral_ids if i not in skipped]) < 2:
                raise EmolibError(f"fewer than 2 neutral texts have the {TOKEN_START + 1} tokens the token rule needs; give longer ones")
            built = build(store, {e: [i for i in group if i not in skipped] for e, group in by_emotion.items()},
                          [i for i in neutral_ids if i not in skipped], variance=variance,
                          metadata={"model": loaded.profile.name, "model_id": loaded.profile.model_id,
                                    "name_or_path": str(getattr(loaded.model.config, "name_or_path", "") or ""),
                                    "model_type": loaded.profile.family, "token_start": TOKEN_START,
                                    "layer_convention": LAYER_CONVENTION, "skipped_texts": len(skipped)})
        built.activations = None  # they lived in the temporary folder
        return built if return_build else built.denoised

    # -- back in from other tools ---------------------------------------------------------------------
    @classmethod
    def from_directions(cls, directions: dict[str, dict[int, torch.Tensor]], metadata: dict[str, Any] | None = None
                        ) -> "EmotionVectors":
        """{emotion: {layer: vector}} (every emotion at the same layers) as EmotionVectors. Each layer's
        vector norm, the mean residual norm when it was exported with scale="norm", is kept as
        metadata['direction_norm']."""
        if not directions:
            raise EmolibError("no directions given")
        emotions = list(directions)
        layers = sorted(next(iter(directions.values())))
        for emotion, by_layer in directions.items():
            if sorted(by_layer) != layers:
                raise EmolibError(f"{emotion!r} has layers {sorted(by_layer)}, {emotions[0]!r} has {layers}: "
                                  "every emotion needs the same layers")
        widths = {v.numel() for by_layer in directions.values() for v in by_layer.values()}
        if len(widths) != 1:
            raise EmolibError(f"the directions differ in width ({sorted(widths)})")
        vectors = torch.stack([torch.stack([directions[e][layer].reshape(-1) for layer in layers]) for e in emotions])
        norms = {e: {str(layer): float(directions[e][layer].norm()) for layer in layers} for e in emotions}
        return cls(emotions, tuple(layers), vectors, {**(metadata or {}), "direction_norm": norms})

    @classmethod
    def from_control_vector(cls, paths: str | Path | dict[str, str | Path], emotion: str | None = None
                            ) -> "EmotionVectors":
        """llama.cpp control-vector GGUFs back in, one file per emotion: `{emotion: path}`, or one `path` with
        its `emotion`. Written with scale="raw" they come back bit for bit; with "norm" (the default export)
        as the unit vector times the layer's mean residual norm."""
        if not isinstance(paths, dict):
            if emotion is None:
                raise EmolibError("a control vector holds one emotion: name it (emotion='happy') or pass {emotion: path}")
            paths = {emotion: paths}
        directions = {name: read_control_vector(path) for name, path in paths.items()}
        hints = sorted({control_vector_hint(path) for path in paths.values()})
        return cls.from_directions(directions, {"source": "llama.cpp control vector", "model_hint": ", ".join(hints)})

    @classmethod
    def from_steering_vector(cls, steering_vectors, emotion: str | None = None) -> "EmotionVectors":
        """`steering_vectors.SteeringVector`s back in: `{emotion: vector}`, or one vector with its `emotion`."""
        if not isinstance(steering_vectors, dict):
            if emotion is None:
                raise EmolibError("a SteeringVector holds one direction: name its emotion (emotion='happy')")
            steering_vectors = {emotion: steering_vectors}
        directions = {name: steering_vector_directions(vector) for name, vector in steering_vectors.items()}
        return cls.from_directions(directions, {"source": "steering-vectors SteeringVector"})


# ---------------------------------------------------------------------------------------------------
# Building


@dataclass
class NeutralPCs:
    """Per layer: the neutral activations' principal axes and how much variance each explains."""
    layers: tuple[int, ...]
    components: list[torch.Tensor]  # per layer (n_components, d), unit rows
    explained: list[torch.Tensor]  # per layer, variance ratio of every component
    k: list[int]  # per layer, components projected out

    def cumulative(self, layer_slot: int) -> torch.Tensor:
        return self.explained[layer_slot].cumsum(0)


def neutral_pcs(neutral: torch.Tensor, layers: Sequence[int], variance: float = 0.5,
                k: int | None = None) -> NeutralPCs:
    """PCA per layer of neutral activations (N, L, d); k = fewest components reaching `variance`."""
    if neutral.shape[0] < 2:
        raise EmolibError("at least 2 neutral texts are needed for the denoising PCA; write more dialogues")
    components, explained, ks = [], [], []
    for slot in range(neutral.shape[1]):
        data = neutral[:, slot].double()
        data = data - data.mean(dim=0)
        _, singular, v_t = torch.linalg.svd(data, full_matrices=False)
        ratio = singular ** 2 / (singular ** 2).sum().clamp_min(1e-30)
        chosen = k if k is not None else int((ratio.cumsum(0) < variance).sum()) + 1
        components.append(v_t.float())
        explained.append(ratio.float())
        ks.append(min(chosen, v_t.shape[0]))
    return NeutralPCs(tuple(layers), components, explained, ks)


def project_out(vectors: torch.Tensor, pcs: NeutralPCs, k: Sequence[int] | None = None) -> torch.Tensor:
    """Remove each layer's top-k neutral directions from (E, L, d) vectors."""
    out = vectors.clone()
    for slot in range(vectors.shape[1]):
        basis = pcs.components[slot][: (k or pcs.k)[slot]]
        out[:, slot] -= (out[:, slot] @ basis.T) @ basis
    return out


@dataclass(frozen=True)
class Direction:
    """A direction in the residual stream at each of `layers` (rows of `vectors`, as they are, not unit): one
    emotion's, or a combination. `+`, `-`, a number times it and `-d` combine them layer by layer."""

    layers: tuple[int, ...]
    vectors: torch.Tensor  # (layers, hidden)
    label: str = ""
    residual_norm: dict[int, float] = field(default_factory=dict)  # the book's unit of α per layer, where known

    def __repr__(self) -> str:
        return f"Direction({self.label or 'unnamed'!r}, layers={list(self.layers)}, width={self.vectors.shape[-1]})"

    def scale(self, layer: int) -> float:
        """The book's unit of steering strength at `layer`: the mean residual norm there (where these vectors
        recorded it: vectors from chapter 3 or `EmotionVectors.train` do)."""
        if layer not in self.residual_norm:
            raise EmolibError(f"{self.label or 'this direction'} records no mean residual norm at layer {layer}, the unit "
                              "of α; give the strength in raw units: steer.term(direction, layer, alpha, raw=True)")
        return float(self.residual_norm[layer])

    def __getitem__(self, index: Any) -> torch.Tensor:
        """Rows of `vectors` (slot `i` is layer `layers[i]`), as a (layers, hidden) tensor indexes."""
        return self.vectors[index]

    @property
    def shape(self) -> torch.Size:
        return self.vectors.shape

    def at(self, layer: int) -> torch.Tensor:
        if layer not in self.layers:
            raise EmolibError(f"{self.label or 'this direction'} has no vector at layer {layer} (layers: {list(self.layers)})")
        return self.vectors[self.layers.index(layer)]

    def norm(self, layer: int) -> float:
        return float(self.at(layer).norm())

    def unit(self, layer: int) -> torch.Tensor:
        vector = self.at(layer)
        return vector / vector.norm().clamp_min(1e-12)

    def _check(self, other: "Direction") -> None:
        if not isinstance(other, Direction):
            raise EmolibError(f"a direction combines with another direction, not {type(other).__name__}")
        if other.layers != self.layers or other.vectors.shape != self.vectors.shape:
            raise EmolibError(f"{self.label} and {other.label} differ in layers or width; select the same layers first")

    def __add__(self, other: "Direction") -> "Direction":
        self._check(other)
        return Direction(self.layers, self.vectors + other.vectors, f"({self.label} + {other.label})", self.residual_norm)

    def __sub__(self, other: "Direction") -> "Direction":
        self._check(other)
        return Direction(self.layers, self.vectors - other.vectors, f"({self.label} - {other.label})", self.residual_norm)

    def __mul__(self, factor: float) -> "Direction":
        if not isinstance(factor, (int, float)) or isinstance(factor, bool):
            raise EmolibError(f"a direction scales by a number, not {type(factor).__name__}")
        return Direction(self.layers, self.vectors * float(factor), f"{factor:g}·{self.label}", self.residual_norm)

    __rmul__ = __mul__

    def __neg__(self) -> "Direction":
        return Direction(self.layers, -self.vectors, f"-{self.label}", self.residual_norm)


@dataclass
class VectorBuild:
    """Everything chapter 3 makes and later chapters analyse: raw and denoised vectors, the neutral
    PCA, which texts went in, and where their activations are."""

    raw: EmotionVectors
    denoised: EmotionVectors
    pcs: NeutralPCs
    counts: dict[str, int]
    residual_norm: dict[int, float]
    stories: dict[str, list[str]]  # emotion -> story ids
    neutral_ids: list[str]
    activations: str  # the ActivationStore folder
    topics: dict[str, int] | None = None  # story id -> topic index (what the corpus recorded)

    def save(self, folder: str | Path) -> Path:
        """vectors(.safetensors/.json), vectors_raw, neutral_pcs.safetensors and texts.json in `folder`, one
        writer at a time (the folder's lock)."""

        with store_lock(folder):
            return self._save(Path(folder))

    def _save(self, folder: Path) -> Path:
        from safetensors.torch import save

        self.denoised.save(folder / "vectors")
        self.raw.save(folder / "vectors_raw")
        tensors = {}
        for slot, layer in enumerate(self.pcs.layers):
            tensors[f"components.{layer}"] = self.pcs.components[slot][:64].contiguous()
            tensors[f"explained.{layer}"] = self.pcs.explained[slot].contiguous()
        atomic_write_bytes(folder / "neutral_pcs.safetensors",
                           save(tensors, metadata={"k": json.dumps(dict(zip(map(str, self.pcs.layers), self.pcs.k)))}))
        atomic_write_json(folder / "texts.json", {"stories": self.stories, "neutral": self.neutral_ids,
                                                 "activations": self.activations, "topics": self.topics})
        return folder

    @classmethod
    def load(cls, folder: str | Path, *, model: Any = None) -> "VectorBuild":
        from safetensors.torch import load_file, safe_open

        folder = Path(folder)
        if not (folder / "texts.json").exists():
            raise EmolibError(f"no vectors in {folder}; run chapter 3 (03_extract) for this model and corpus first")
        denoised = EmotionVectors.load(folder / "vectors", model=model)
        raw = EmotionVectors.load(folder / "vectors_raw", model=model)
        tensors = load_file(str(folder / "neutral_pcs.safetensors"))
        with safe_open(str(folder / "neutral_pcs.safetensors"), framework="pt") as handle:
            ks = json.loads(handle.metadata()["k"])
        layers = denoised.layers
        pcs = NeutralPCs(layers, [tensors[f"components.{layer}"] for layer in layers],
                         [tensors[f"explained.{layer}"] for layer in layers], [ks[str(layer)] for layer in layers])
        texts = json.loads((folder / "texts.json").read_text())
        norms = {int(k): v for k, v in denoised.metadata.get("residual_norm", {}).items()}
        return cls(raw, denoised, pcs, denoised.metadata.get("counts", {}), norms, texts["stories"], texts["neutral"],
                   texts["activations"], texts.get("topics"))

    def store(self):
        return ActivationStore(runs_dir() / self.activations)  # an absolute path stays absolute

    def story_activations(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """Per-story activations at one layer: (acts (N, d), emotion index (N,), topic (N,), ids)."""
        ids = [text_id for emotion in self.denoised.emotions for text_id in self.stories[emotion]]
        labels = np.array([i for i, emotion in enumerate(self.denoised.emotions) for _ in self.stories[emotion]])
        if not self.topics:
            raise EmolibError("these vectors record no story topics (built before topics were kept); rerun chapter 3 "
                              "(03_extract) to rebuild them from the stored activations")
        topics = np.array([self.topics[text_id] for text_id in ids])
        means, _ = self.store().load(ids)
        return means[:, self.denoised.layer_index(layer)].numpy(), labels, topics, ids

    def neutral_basis(self, layer: int) -> np.ndarray:
        slot = self.denoised.layer_index(layer)
        return self.pcs.components[slot][: self.pcs.k[slot]].numpy()


@dataclass
class _Sums:
    """Running sums over the store's shards: per emotion (weighted), per topic, and the token norms."""
    sums: torch.Tensor  # (emotions, layers, d), weighted
    weight: torch.Tensor  # (emotions,)
    seen: dict[str, int]
    norm_sum: torch.Tensor  # (layers,)
    norm_count: int
    topic_sums: torch.Tensor | None  # (topics, layers, d), unweighted, only when centring topics
    topic_counts: torch.Tensor
    mix: torch.Tensor  # (emotions, topics): each emotion's weight on each topic


def _accumulate(store: ActivationStore, label: dict[str, str], emotions: list[str], weights: dict[str, float],
                topics: dict[str, int] | None, topic_order: list[int]) -> _Sums:
    shape = (len(store.layers), store.hidden_size)
    acc = _Sums(torch.zeros((len(emotions), *shape), dtype=torch.float64), torch.zeros(len(emotions), dtype=torch.float64),
                {e: 0 for e in emotions}, torch.zeros(shape[0], dtype=torch.float64), 0,
                torch.zeros((len(topic_order), *shape), dtype=torch.float64) if topic_order else None,
                torch.zeros(len(topic_order), dtype=torch.float64),
                torch.zeros((len(emotions), len(topic_order)), dtype=torch.float64))
    slots = {e: i for i, e in enumerate(emotions)}
    for ids, means, norms in store.iter_shards(set(label)):
        for i, text_id in enumerate(ids):
            slot, weight = slots[label[text_id]], weights.get(text_id, 1.0)
            acc.sums[slot] += means[i].double() * weight if weight != 1.0 else means[i].double()
            acc.weight[slot] += weight
            acc.seen[label[text_id]] += 1
            if acc.topic_sums is not None:
                t = topic_order.index(topics[text_id])
                acc.topic_sums[t] += means[i].double()
                acc.topic_counts[t] += 1
                acc.mix[slot, t] += weight
        acc.norm_sum += norms.double().sum(dim=0)
        acc.norm_count += len(ids)
    return acc


def build(store: ActivationStore, stories: dict[str, list[str]], neutral_ids: Sequence[str], *, variance: float = 0.5,
          k: int | None = None, metadata: dict | None = None, weights: dict[str, float] | None = None,
          topics: dict[str, int] | None = None, centre_topics: bool = False) -> VectorBuild:
    """Emotion vectors from an ActivationStore: `stories` maps emotion -> text ids; streams shard by shard.

    `weights` (text id -> weight, default 1) makes an emotion's mean a weighted one: the balanced design
    gives a story of a cell short of its quota the weight quota / kept, so every topic counts equally
    (emolib.stories.design.cell_weights); full cells weigh exactly 1, so a balanced corpus gets plain means.
    `topics` (text id -> topic, as the corpus recorded it) is kept with the build; `centre_topics=True`
    subtracts each topic's mean activation (over all its stories) before the emotion means — in a balanced
    design this cancels in "minus the mean over emotions", so it is a robustness option, recorded in the metadata."""
    if centre_topics and not topics:
        raise EmolibError("centre_topics needs each story's topic (topics={id: topic})")
    emotions = [e for e, ids in stories.items() if ids]
    if len(emotions) < 2:
        raise EmolibError("vectors need stories for at least 2 emotions (each is its mean minus the mean of all)")
    label = {text_id: e for e, ids in stories.items() for text_id in ids}
    layers = tuple(store.layers)
    topic_order = sorted(set(topics.values())) if centre_topics and topics else []
    acc = _accumulate(store, label, emotions, weights or {}, topics, topic_order)
    missing = [e for e in emotions if acc.seen[e] == 0]
    if acc.norm_count == 0 or missing:
        raise EmolibError(f"no activations for {len(missing) or len(emotions)} emotions (e.g. {(missing or emotions)[0]}); "
                          "run the extraction first")
    means = acc.sums / acc.weight[:, None, None]
    if topic_order:  # minus each emotion's (weighted) average of its topics' means
        topic_means = acc.topic_sums / acc.topic_counts[:, None, None]
        means = means - torch.einsum("et,tld->eld", acc.mix / acc.mix.sum(1, keepdim=True), topic_means)
    means = means.float()
    raw_vectors = means - means.mean(dim=0, keepdim=True)
    neutral, _ = store.load(list(neutral_ids))
    pcs = neutral_pcs(neutral, layers, variance, k)
    residual_norm = {layer: float(acc.norm_sum[slot] / acc.norm_count) for slot, layer in enumerate(layers)}
    meta = {**(metadata or {}), "counts": acc.seen, "residual_norm": {str(k_): v for k_, v in residual_norm.items()},
            "construction": "emotion mean minus the mean over emotions (unweighted)" if not weights else
                            "emotion mean (each topic weighted equally) minus the mean over emotions",
            "topic_centred": bool(centre_topics), "neutral_texts": len(neutral_ids)}
    raw = EmotionVectors(emotions, layers, raw_vectors, {**meta, "denoised": False})
    denoised = EmotionVectors(emotions, layers, project_out(raw_vectors, pcs), {
        **meta, "denoised": True, "denoise_variance": variance, "denoise_k": dict(zip(map(str, layers), pcs.k))})
    folder, runs = Path(store.folder).resolve(), runs_dir().resolve()
    # relative to the runs folder where possible, so a moved runs folder still resolves
    activations = str(folder.relative_to(runs)) if folder.is_relative_to(runs) else str(folder)
    return VectorBuild(raw, denoised, pcs, acc.seen, residual_norm, {e: list(stories[e]) for e in emotions},
                       list(neutral_ids), activations, dict(topics) if topics else None)


# ---------------------------------------------------------------------------------------------------
# Tables the chapters show


def per_layer_table(build: VectorBuild, variance: float = 0.5):
    """Per layer: neutral components removed (k), the variance they held, the first one's share, and the
    mean residual norm (the unit of steering strength)."""
    import pandas as pd

    layers = list(build.denoised.layers)
    return pd.DataFrame({
        "layer": layers, "k": build.pcs.k,
        "variance removed": [float(build.pcs.cumulative(i)[k - 1]) for i, k in enumerate(build.pcs.k)],
        "first component": [float(e[0]) for e in build.pcs.explained],
        "mean residual norm": [build.residual_norm[layer] for layer in layers],
    }).set_index("layer")


def norm_table(build: VectorBuild):
    """Mean emotion-vector norm per layer, raw and denoised (long format for a line plot)."""
    import pandas as pd

    layers = list(build.denoised.layers)
    return pd.DataFrame({
        "layer": layers * 2,
        "mean vector norm": build.raw.vectors.norm(dim=-1).mean(0).tolist() + build.denoised.vectors.norm(dim=-1).mean(0).tolist(),
        "vectors": ["raw"] * len(layers) + ["denoised"] * len(layers),
    })


def neighbours(vectors: EmotionVectors, layer: int, emotions: Sequence[str], nearest: int = 4, farthest: int = 3):
    """For each emotion, its most and least similar emotions by cosine at `layer`."""
    import pandas as pd

    similarity = vectors.cosine(layer)
    rows = []
    for emotion in emotions:
        i = vectors.index(emotion)
        order = similarity[i].argsort(descending=True).tolist()
        rows.append({"emotion": emotion,
                     "most similar": ", ".join([vectors.emotions[j] for j in order if j != i][:nearest]),
                     "least similar": ", ".join(vectors.emotions[j] for j in order[::-1][:farthest])})
    return pd.DataFrame(rows).set_index("emotion")
