"""Vectors that other tools run: llama.cpp's control-vector GGUF (the format repeng writes; written and
read here) and the `steering_vectors` library's `SteeringVector` (PyPI steering-vectors).

Both carry each layer's unit vector times the layer's mean residual norm, so a llama.cpp strength s or a
steering-vectors multiplier s adds s · mean‖h‖ · v̂ to the output of decoder block N, as `emolib.steer`
does with α = s (tests/test_steer.py checks steering-vectors; benchmarks/llamacpp.py checks llama.cpp).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .errors import EmolibError

if TYPE_CHECKING:
    from .vectors import EmotionVectors


def write_control_vector(vectors: EmotionVectors, path: str | Path, emotion: str, layers: Sequence[int] | None = None,
                         scale: str = "norm", strength: float = 1.0) -> Path:
    """Export one emotion as llama.cpp's control-vector GGUF (the format repeng writes).

    llama.cpp adds tensor `direction.N` to the output of block N — emolib's layer N — and has no slot
    for block 0, so layer 0 is left out. With `scale="norm"` each direction is the unit vector times
    the layer's mean residual norm, so a llama.cpp strength s adds s * mean|h| * v_hat, like
    `emolib.steer` with alpha = s; `"unit"` writes unit vectors, `"raw"` the vectors as they are.
    """
    import gguf

    layers = [layer for layer in (layers or vectors.layers) if layer != 0]
    if not layers:
        raise EmolibError("llama.cpp control vectors cannot steer layer 0; choose layers >= 1")
    norms = vectors.metadata.get("residual_norm", {})
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "controlvector")
    writer.add_string("controlvector.model_hint", str(vectors.metadata.get("model_type") or vectors.metadata.get("model", "")))
    writer.add_uint32("controlvector.layer_count", len(layers))
    for layer in layers:
        if scale == "raw":
            vector = vectors.vectors[vectors.index(emotion), vectors.layer_index(layer)]
        elif scale in ("unit", "norm"):
            vector = vectors.direction(emotion, layer)
            if scale == "norm":
                if str(layer) not in norms:
                    raise EmolibError(f"no mean residual norm recorded for layer {layer}; use scale='unit'")
                vector = vector * norms[str(layer)]
        else:
            raise EmolibError(f"scale must be 'norm', 'unit' or 'raw', got {scale!r}")
        writer.add_tensor(f"direction.{layer}", (vector * strength).numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def to_steering_vector(vectors: EmotionVectors, emotion: str, layers: Sequence[int] | None = None,
                       scale: str = "norm"):
    """One emotion as a `steering_vectors.SteeringVector` (PyPI steering-vectors): each layer's unit vector
    times the layer's mean residual norm, so its `multiplier` is emolib's α (`emolib.steer` adds
    α · mean‖h‖ · v̂ to the same decoder-block output)."""
    try:
        from steering_vectors import SteeringVector
    except ImportError:
        raise EmolibError("steering-vectors is not installed: pip install --no-deps steering-vectors==0.12.2 "
                          "(its declared transformers<5 pin is wrong for this stack; it works beside it)") from None
    if scale not in ("norm", "unit", "raw"):
        raise EmolibError(f"scale must be 'norm', 'unit' or 'raw', got {scale!r}")
    norms = vectors.metadata.get("residual_norm", {})
    activations = {}
    for layer in layers or vectors.layers:
        if scale == "raw":  # the vector as it is (a bit-identical round trip through from_steering_vector)
            activations[int(layer)] = vectors.vectors[vectors.index(emotion), vectors.layer_index(layer)].clone()
            continue
        if scale == "norm" and str(layer) not in norms:
            raise EmolibError(f"no mean residual norm recorded for layer {layer}; use scale='unit'")
        factor = norms[str(layer)] if scale == "norm" else 1.0
        activations[int(layer)] = vectors.direction(emotion, layer) * factor
    return SteeringVector(activations, "decoder_block")


def steering_vector_directions(steering_vector) -> dict[int, torch.Tensor]:
    """The per-layer activations of a `steering_vectors.SteeringVector` hooked on decoder-block outputs
    (the site emolib steers), as float32 tensors keyed by layer."""
    layer_type = getattr(steering_vector, "layer_type", None)
    activations = getattr(steering_vector, "layer_activations", None)
    if not isinstance(activations, dict) or not activations:
        raise EmolibError(f"not a SteeringVector with layer activations ({type(steering_vector).__name__})")
    if layer_type != "decoder_block":
        raise EmolibError(f"this SteeringVector acts on {layer_type!r} outputs; emolib's vectors live at decoder-block "
                          "outputs (layer_type='decoder_block')")
    directions = {int(layer): torch.as_tensor(vector).detach().to("cpu", torch.float32).reshape(-1)
                  for layer, vector in activations.items()}
    if len({v.numel() for v in directions.values()}) != 1:
        raise EmolibError("the SteeringVector's layers differ in width")
    return directions


def control_vector_hint(path: str | Path) -> str:
    """The `controlvector.model_hint` a control-vector GGUF carries ('' if none)."""
    import gguf

    field = gguf.GGUFReader(str(path)).fields.get("controlvector.model_hint")
    return bytes(field.parts[field.data[0]]).decode(errors="replace") if field is not None else ""


def read_control_vector(path: str | Path) -> dict[int, torch.Tensor]:
    """The directions of a control-vector GGUF, keyed by layer (to check an export, or use repeng's)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise EmolibError(f"no control vector at {path}")
    try:
        reader = gguf.GGUFReader(str(path))
        arch = reader.fields.get("general.architecture")
        architecture = bytes(arch.parts[arch.data[0]]).decode() if arch is not None else None
        directions = {}
        for tensor in reader.tensors:
            if tensor.name.startswith("direction."):
                directions[int(tensor.name.split(".")[1])] = torch.tensor(np.asarray(tensor.data, dtype=np.float32).reshape(-1))
    except Exception as broken:  # gguf raises ValueError, struct/index errors, ... on bytes that are not a GGUF
        raise EmolibError(f"{path} is not a readable GGUF file ({type(broken).__name__}); export it again "
                          "(EmotionVectors.to_control_vector)") from None
    if architecture != "controlvector" or not directions:
        raise EmolibError(f"{path} is a GGUF but not a control vector (architecture {architecture!r}, "
                          f"{len(directions)} direction tensors)")
    widths = {v.numel() for v in directions.values()}
    if len(widths) != 1 or not all(torch.isfinite(v).all() for v in directions.values()):
        raise EmolibError(f"{path}: its direction tensors differ in width ({sorted(widths)}) or hold non-finite values")
    return directions
