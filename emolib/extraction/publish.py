"""The published vectors: one analysed model's chapter-3 vectors as a reader downloads them with the book
(`book/data/vectors/<model>/`): the denoised vectors of every emotion and layer in safetensors (with their
metadata beside them, SAELens-style), llama.cpp control vectors for the emotions the book steers and the
published replications report, and a data card with how they were made and each file's SHA-256
(`emolib.stories.corpus.verify_data_card` checks them).

    from emolib import EmotionVectors
    vectors = EmotionVectors.load("book/data/vectors/270m/vectors", model="270m")
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path

from ..io import EMOLIB_VERSION, atomic_write_bytes, file_sha256
from ..stories.corpus import DATA_CARD
from .vectors import VectorBuild

# what gets a ready-made control vector: the book's steered emotions and those the replications report
CONTROL_EMOTIONS = ("desperate", "calm", "happy", "afraid", "angry", "sad", "loving", "guilty")


def published_vectors_dir(root: Path, model: str) -> Path:
    return root / "book" / "data" / "vectors" / model


def publish_vectors(build: VectorBuild, folder: str | Path, *, model: str, made_by: str,
                    emotions: Sequence[str] = CONTROL_EMOTIONS) -> Path:
    """Write `folder` (replacing what the card lists): vectors.safetensors/.json, control_vectors/<emotion>.gguf
    and the data card. Returns the card's path."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vectors = build.denoised
    vectors.save(folder / "vectors")
    shipped = [e for e in emotions if e in vectors.emotions]
    (folder / "control_vectors").mkdir(exist_ok=True)
    for emotion in shipped:
        vectors.to_control_vector(folder / "control_vectors" / f"{emotion}.gguf", emotion)
    meta = vectors.metadata
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != DATA_CARD and not p.name.startswith("."))
    rows = "\n".join(f"| `{p.relative_to(folder).as_posix()}` | {p.stat().st_size:,} | `{file_sha256(p)}` |" for p in files)
    corpus = str(meta.get("corpus", "published"))
    source = ("Read from the published corpus, `book/data/corpus` (24 stories per emotion)." if corpus == "published" else
              f"Read from the deep story set `{corpus}` (`book/data/corpus-deep`: the 45 Russell-Mehrabian emotions and the "
              "steered ones at 96 stories each, the other emotions at their 24 from `book/data/corpus`).")
    location = f"{model}" if corpus == "published" else f"{model}/{corpus}"
    facts = {k: meta.get(k) for k in ("model", "model_id", "revision", "model_type", "layers_convention", "hook",
                                       "token_reduction", "construction", "corpus", "corpus_sha256", "variance") if k in meta}
    text = f"""---
license: mit
pretty_name: emolib emotion vectors for {meta.get("model_id", model)}
tags: [interpretability, steering, emotion]
---

# Emotion vectors of `{meta.get("model_id", model)}` ({len(vectors.emotions)} emotions x {len(vectors.layers)} layers)

The vectors the published book's chapters analyse for `{model}`: per emotion and layer, the mean residual
stream over tokens from the 50th on of the emotion's stories, minus the mean over emotions, with the top
neutral principal components projected out (chapter 3). {source}

## How they were made

- command: `{made_by}`
- emolib {EMOLIB_VERSION}, torch {torch.__version__}, Python {platform.python_version()}, {platform.machine()}
- metadata (also in `vectors.json`): `{json.dumps(facts, default=str)}`

## Use

```python
from emolib import EmotionVectors
vectors = EmotionVectors.load("book/data/vectors/{location}/vectors", model="{model}")
vectors["desperate"].at({vectors.layers[len(vectors.layers) * 2 // 3]})   # one direction; arithmetic works on them
vectors.to_control_vector("any_emotion.gguf", "proud")   # any other emotion as a llama.cpp control vector
```

`control_vectors/<emotion>.gguf` ({", ".join(shipped)}) are llama.cpp control vectors (layers 1..{max(vectors.layers)},
each layer's unit vector times its mean residual norm, so `--control-vector-scaled desperate.gguf 0.05` adds
0.05 · mean‖h‖ · v̂ — the book's α).

## Files (SHA-256)

| file | bytes | sha256 |
|---|---:|---|
{rows}
"""
    return atomic_write_bytes(folder / DATA_CARD, text.encode())
