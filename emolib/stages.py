"""The stage calls the chapters, the CLI and the tests share: the layer rule, corpus -> saved vectors (like
repeng's `ControlVector.train`), and the set-up every analysis chapter starts with.

    run = stages.build_vectors(loaded, "smollm2", layers)      # extract + build + metadata + save
    ready = stages.setup("270m", "smollm2")                     # check, load, vectors, the analysis layer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .errors import EmolibError
from .models import LoadedModel, ModelProfile
from .vectors import VectorBuild


def analysis_layer(profile: ModelProfile, extracted: Sequence[int], requested: int = -1) -> int:
    """The layer a chapter analyses: `requested` when >= 0, else the profile's pre-registered layer (about
    two thirds of the way through the model), else two thirds of the way through what was extracted."""
    layers = list(extracted)
    if not layers:
        raise EmolibError("no extracted layers; run chapter 3 (03_extract) first")
    if requested >= 0:
        if requested not in layers:
            raise EmolibError(f"layer {requested} was not extracted (extracted: {layers}); rerun chapter 3 with it")
        return requested
    return profile.analysis_layer if profile.analysis_layer in layers else layers[len(layers) * 2 // 3]


@dataclass
class VectorRun:
    """What turning a corpus into vectors made and used."""

    build: VectorBuild
    store: Any  # extract.ActivationStore
    stats: dict[str, Any]
    stories: Any  # DataFrame of the stories used
    neutral: Any  # DataFrame of the neutral dialogues used
    too_short: list[str]
    folder: Path  # where the vectors were saved
    design: Any  # design.Design of the corpus, or None


def build_vectors(loaded: LoadedModel, corpus: str, layers: Sequence[int], *, emotions: str = "all",
                  variance: float = 0.5, token_budget: int = 0, shard_texts: int = 256,
                  max_emotion_words: int | None = None, progress: bool = True, save: bool = True) -> VectorRun:
    """Corpus -> activations -> denoised emotion vectors with their metadata, saved under
    runs/vectors/<model>/<corpus>/. Each stage reads only what the previous one wrote: the corpus's kept,
    balanced stories (its design file), the activation store, the stories' topics as the corpus recorded them."""
    from . import extract
    from .corpus import corpus_dir
    from .design import Design, cell_weights
    from .vectors import build, vectors_dir

    store, stats, stories, neutral, too_short = extract.extract_corpus(
        loaded, corpus, layers, emotions=emotions, token_budget=token_budget, shard_texts=shard_texts,
        progress=progress, max_emotion_words=max_emotion_words)
    design = Design.load(corpus_dir(corpus))
    built = build(store, stories.groupby("emotion")["id"].apply(list).to_dict(), neutral["id"].tolist(), variance=variance,
                  weights=cell_weights(stories, design) if design else None,
                  topics={i: int(t) for i, t in zip(stories["id"], stories["topic_index"])},
                  metadata={"model": loaded.profile.name, "model_id": loaded.profile.model_id,
                            "model_type": loaded.model.config.model_type, "corpus": corpus,
                            "revision": loaded.provenance.get("gguf_sha256") or loaded.provenance.get("revision"),
                            "token_start": extract.TOKEN_START, "layer_convention": extract.LAYER_CONVENTION,
                            "design": None if design is None else {"scale": design.scale, "topics": design.topics,
                                                                   "per_cell": design.per_cell}})
    folder = vectors_dir(loaded.profile.name, corpus)
    if save:
        built.save(folder)
    return VectorRun(built, store, stats, stories, neutral, too_short, folder, design)


@dataclass
class Ready:
    """What an analysis chapter starts from."""

    profile: ModelProfile
    built: VectorBuild
    layer: int
    loaded: LoadedModel | None  # None when the chapter needs no model (geometry)

    @property
    def vectors(self):
        return self.built.denoised


def setup(model: str, corpus: str, *, dtype: str = "auto", layer: int = -1, load: bool = True) -> Ready:
    """Check the model is here (one line if not), load it (optional), load its vectors (refusing another
    model's), and resolve the analysis layer."""
    from . import models

    profile = models.check_available(model, dtype=dtype) if load else models.get_profile(model)
    loaded = models.load(model, dtype=dtype) if load else None
    from .vectors import vectors_dir

    built = VectorBuild.load(vectors_dir(model, corpus), model=loaded or model)
    return Ready(profile, built, analysis_layer(profile, built.denoised.layers, layer), loaded)
