"""The stage calls the chapters, the CLI and the tests share: the layer rule, corpus -> saved vectors (like
repeng's `ControlVector.train`), and the set-up every analysis chapter starts with.

    run = stages.build_vectors(loaded, "smollm2", layers)      # extract + build + metadata + save
    ready = stages.setup("270m", "smollm2")                     # check, load, vectors, the analysis layer
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .. import models
from ..errors import EmolibError
from ..io import file_sha256
from ..models.loading import LoadedModel
from ..models.profiles import ModelProfile
from ..stories.corpus import Corpus, corpus_dir
from ..stories.design import Design, cell_weights, select
from ..stories.prompts import MAX_EMOTION_WORDS, MIN_TOKENS
from . import extract
from .extract import TOKEN_START, ActivationStore
from .vectors import VectorBuild, build, vectors_dir

if TYPE_CHECKING:
    import pandas as pd


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
    store: ActivationStore
    stats: dict[str, Any]
    stories: pd.DataFrame  # the stories used
    neutral: pd.DataFrame  # the neutral dialogues used
    too_short: list[str]
    folder: Path  # where the vectors were saved
    design: Design | None  # the corpus's balanced design

    def describe_texts(self) -> str:
        """What was read: kept stories and dialogues, shards on disk vs computed now."""
        stats = self.stats
        return (f"{len(self.stories)} kept stories ({self.stories['emotion'].nunique()} emotions) and {len(self.neutral)} kept "
                f"neutral dialogues in {stats['shards']} shards: {stats['already_done']} already on disk, "
                f"{stats['shards'] - stats['already_done']} computed now; {len(self.too_short)} kept texts skipped, shorter than "
                f"{MIN_TOKENS} tokens for this model's tokenizer")

    def describe_rate(self) -> str:
        """Extraction speed of this execution (nothing when every shard was on disk)."""
        if not self.stats.get("tokens"):
            return "every shard was already on disk: nothing extracted in this execution"
        return (f"{self.stats['tokens']:,} tokens in {self.stats['seconds']:.0f} s: {self.stats['tokens_per_second']:.0f} "
                f"tokens/s ({len(self.build.denoised.layers)} layers captured per pass)")

    def describe_vectors(self) -> str:
        """The vectors' shape, where they are, and how many stories each emotion's mean holds."""
        import pandas as pd

        counts, vectors = pd.Series(self.build.counts), self.build.denoised
        return (f"{len(vectors)} emotion vectors x {len(vectors.layers)} layers x {vectors.hidden_size} dimensions -> "
                f"runs/vectors/{self.folder.parent.name}/{self.folder.name}/; stories per emotion: median {counts.median():.0f}, min {counts.min()} "
                f"({counts.idxmin()}), max {counts.max()}; {vectors.metadata['construction']}")

    def results(self, loaded: LoadedModel) -> dict[str, Any]:
        """Chapter 3's key numbers (`emolib.book.results.ExtractResults`)."""
        import pandas as pd


        counts, layers = pd.Series(self.build.counts), list(self.build.denoised.layers)
        return {
            "model_id": loaded.profile.model_id, "provenance": loaded.provenance, "layers": layers,
            "stories": int(len(self.stories)), "neutral": int(len(self.neutral)), "emotions": len(self.build.denoised),
            "stories_per_emotion": {"median": float(counts.median()), "min": int(counts.min())},
            "neutral_k": dict(zip(map(str, layers), map(int, self.build.pcs.k))), "tokens": self.stats.get("tokens"),
            "tokens_per_second": self.stats.get("tokens_per_second"), "seconds": self.stats.get("seconds"),
            "vectors_sha256": file_sha256(self.folder / "vectors.safetensors"), "activations": str(self.store.folder.name),
        }


def build_vectors(loaded: LoadedModel, corpus: str, layers: Sequence[int], *, emotions: str = "all",
                  variance: float = 0.5, token_budget: int = 0, shard_texts: int = 256,
                  max_emotion_words: int | None = None, progress: bool = True, save: bool = True) -> VectorRun:
    """Corpus -> activations -> denoised emotion vectors with their metadata, saved under
    runs/vectors/<model>/<corpus>/. The walk visits each stage once: the corpus's selection (its kept,
    balanced stories, `design.json` read once), the model's activations of those texts, the vectors."""
    chosen = select(Corpus(corpus_dir(corpus)), emotions,
                    MAX_EMOTION_WORDS if max_emotion_words is None else max_emotion_words)
    stories, neutral, design = chosen.stories, chosen.neutral, chosen.design
    base = design.base_corpus if design is not None else None  # a deep set reuses its base's activations
    store, stats, too_short = extract.extract_texts(
        loaded, extract.activations_dir(loaded.profile.name, corpus, layers), layers,
        stories["id"].tolist() + neutral["id"].tolist(), stories["text"].tolist() + neutral["text"].tolist(),
        token_budget=token_budget, shard_texts=shard_texts, progress=progress,
        reuse=[extract.activations_dir(loaded.profile.name, base, layers)] if base else [])
    skipped = set(too_short)  # kept texts this model's tokenizer leaves too short: skipped here, counted in describe_texts
    stories, neutral = stories[~stories["id"].isin(skipped)], neutral[~neutral["id"].isin(skipped)]
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


def deepens(deep: str, corpus: str) -> bool:
    """Whether corpus `deep` is a deep story set extending `corpus` (its design names `corpus` as its base)."""
    if not deep:
        return False
    base = Corpus(corpus_dir(deep)).base
    return base is not None and base.folder.resolve() == corpus_dir(corpus).resolve()


def vectors_corpus(model: str, corpus: str, deep: str = "") -> str:
    """The corpus whose vectors a chapter reads: `deep` where it is the deep story set extending `corpus` (issue 37: 96
    stories for the headline and steered emotions) and chapter 3 built vectors from it, else `corpus`."""
    name = models.get_profile(model).name
    ready = deepens(deep, corpus) and (vectors_dir(name, deep) / "texts.json").exists()
    return deep if ready else corpus


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

    profile = models.check_available(model, dtype=dtype) if load else models.get_profile(model)
    loaded = models.load(model, dtype=dtype) if load else None

    built = VectorBuild.load(vectors_dir(profile.name, corpus), model=loaded or profile.name)
    return Ready(profile, built, analysis_layer(profile, built.denoised.layers, layer), loaded)


def extraction_settings(loaded: LoadedModel, layers: Sequence[int], corpus: str, variance: float) -> dict[str, Any]:
    """Chapter 3's settings table."""
    return {
        "analysed model": f"{loaded.profile.model_id} ({loaded.profile.name}), "
                          f"{str(loaded.dtype).removeprefix('torch.')} on {loaded.device}",
        "layers": f"{len(layers)}: {layers[0]}..{layers[-1]}" if len(layers) > 3 else str(list(layers)),
        "corpus": f"runs/corpus/{corpus}", "token rule": f"mean over positions >= {TOKEN_START}",
        "denoising": f"project out the neutral PCs explaining {variance:.0%} of neutral variance",
    }
