"""emolib: emotion vectors in open language models, from stories to steering.

The subpackages are the method's stages, in order; each imports only from those before it and from the
shared base (`errors`, `io`, `stats`, `threads`):

    stories/     emotions, topics, prompts, the keep rule, the balanced design, the corpus store
    models/      profiles, offline loading, forward-hook helpers, tiny random models
    writers/     the batched decode loop and the story writers (local or an OpenAI-compatible server)
    extraction/  residual means per text, EmotionVectors, llama.cpp / steering-vectors interop, stage calls
    analysis/    geometry vs human norms, reliability, logit lens, external validation, story fidelity
    steering/    steering hooks, dose-response, blackmail, reward hacking in an OS sandbox
    book/        the papermill runner, typed results, comparison, figures, cost plans
"""

import warnings

# tqdm.auto warns on import when ipywidgets is absent; emolib's bars are plain text on purpose
# (executed notebooks stay diffable), so the warning is noise in every chapter's first cell.
warnings.filterwarnings("ignore", message="IProgress not found")
# transformers >= 5.24 renames the cache argument; emolib's decode loop still passes `past_key_values`
# (valid until 5.40), and the warning's absolute path would differ on every machine's executed chapters.
warnings.filterwarnings("ignore", message=".*`past_key_values` is deprecated", category=FutureWarning)

from .errors import EmolibError, MissingWeightsError  # noqa: E402
from .io import EMOLIB_VERSION as __version__  # noqa: E402

# The rest loads on first use (PEP 562): `import emolib` and `python -m emolib --help` do not import torch.
_LAZY = {"EmotionVectors": ("extraction.vectors", "EmotionVectors"), "VectorBuild": ("extraction.vectors", "VectorBuild"),
         "build_vectors": ("extraction.stages", "build_vectors"), "load_model": ("models", "load"),
         "steer": ("steering.steer", None), "steering": ("steering.steer", "steering")}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'emolib' has no attribute {name!r}")
    import importlib

    module_name, attribute = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    return module if attribute is None else getattr(module, attribute)


__all__ = ["EmolibError", "EmotionVectors", "MissingWeightsError", "VectorBuild", "build_vectors", "load_model",
           "steer", "steering", "__version__"]
