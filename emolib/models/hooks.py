"""Where a model's pieces are, for every wrapper kind (causal LM, multimodal, Gemma 4), and the one
hooks helper extraction, steering and continuation statistics share: forward hooks as a context manager
that always removes them. Layers are never replaced, so quantized and multimodal models hook the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from ..errors import EmolibError


def text_decoder(model: nn.Module) -> nn.Module:
    """The text decoder stack, for causal LMs and multimodal wrappers alike."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is not None and hasattr(decoder, "layers"):
        return decoder
    for path in ("model.language_model", "language_model", "model", ""):
        module = model
        for part in filter(None, path.split(".")):
            module = getattr(module, part, None)
        if module is not None and isinstance(getattr(module, "layers", None), nn.ModuleList):
            return module
    raise EmolibError(f"cannot find decoder layers in {type(model).__name__}")


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return text_decoder(model).layers


def final_norm(model: nn.Module) -> nn.Module:
    """The norm after the last block (`norm`; GPT-NeoX `final_layer_norm`; GPT-2 style `ln_f`)."""
    decoder = text_decoder(model)
    for name in ("norm", "final_layer_norm", "ln_f"):
        if isinstance(getattr(decoder, name, None), nn.Module):
            return getattr(decoder, name)
    raise EmolibError(f"cannot find the final norm of {type(model).__name__}")


def text_config(model: nn.Module):
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Callable]], with_kwargs: bool = False) -> Iterator[list[Any]]:
    """Forward hooks on modules for the duration of a `with` block, always removed (exceptions included).
    Extraction, steering and continuation statistics all hook decoder blocks through this; layers are
    never replaced, so quantized and multimodal models hook the same way."""
    handles = []
    try:
        for module, hook in hooks:
            handles.append(module.register_forward_hook(hook, with_kwargs=with_kwargs))
        yield handles
    finally:
        for handle in handles:
            handle.remove()
