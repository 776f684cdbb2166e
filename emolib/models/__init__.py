"""Stage 2, the models: profiles (where the weights are, dtype, the analysis layer), offline loading, the
forward-hook helpers every later stage uses, and tiny random models for tests and CI.

    from emolib import models
    loaded = models.load("270m")            # a LoadedModel: module, tokenizer, device, dtype, provenance
"""

from .hooks import decoder_layers, final_norm, forward_hooks, text_config, text_decoder
from .loading import LoadedModel, load, load_tokenizer, pick_device
from .profiles import (
           DTYPES,
           PROFILES,
           ModelProfile,
           check_available,
           check_layers,
           get_profile,
           quantized,
           resolve_hf_weights,
)

__all__ = ["DTYPES", "PROFILES", "LoadedModel", "ModelProfile", "check_available", "check_layers", "decoder_layers",
           "final_norm", "forward_hooks", "get_profile", "load", "load_tokenizer", "pick_device", "quantized",
           "resolve_hf_weights", "text_config", "text_decoder"]
