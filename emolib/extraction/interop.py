"""Vectors that other tools run: llama.cpp's control-vector GGUF (the format repeng writes; written and
read here) and the `steering_vectors` library's `SteeringVector` (PyPI steering-vectors).

Both carry each layer's unit vector times the layer's mean residual norm, so a llama.cpp strength s or a
steering-vectors multiplier s adds s · mean‖h‖ · v̂ to the output of decoder block N, as `emolib.steering.steer`
does with α = s (tests/test_steer.py checks steering-vectors; benchmarks/llamacpp.py checks llama.cpp).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..errors import EmolibError


def write_control_vector(directions: dict[int, torch.Tensor], path: str | Path, model_hint: str = "",
                         strength: float = 1.0) -> Path:
    """Write {layer: vector} as llama.cpp's control-vector GGUF (the format repeng writes): llama.cpp adds
    tensor `direction.N` to the output of block N, emolib's layer N, and has no slot for block 0.
    `EmotionVectors.to_control_vector` chooses the vectors (scaled by the mean residual norm, unit or raw)."""
    import gguf

    if not directions or 0 in directions:
        raise EmolibError("llama.cpp control vectors cannot steer layer 0; choose layers >= 1")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, vector in directions.items():
        writer.add_tensor(f"direction.{layer}", (vector * strength).numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, path)
    return path


def make_steering_vector(directions: dict[int, torch.Tensor]):
    """{layer: vector} as a `steering_vectors.SteeringVector` on decoder-block outputs (PyPI steering-vectors),
    the site emolib steers: with norm-scaled vectors its `multiplier` is emolib's α."""
    try:
        from steering_vectors import SteeringVector
    except ImportError:  # optional dependency: steering-vectors
        raise EmolibError("steering-vectors is not installed: pip install --no-deps steering-vectors==0.12.2 "
                          "(its declared transformers<5 pin is wrong for this stack; it works beside it)") from None
    return SteeringVector({int(layer): vector for layer, vector in directions.items()}, "decoder_block")


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
