"""emolib: emotion vectors in open language models, from stories to steering.

The subpackages are the method's stages, in order; each imports only from those before it and from the
shared base (`errors`, `io`, `stats`):

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
from .extraction.stages import build_vectors  # noqa: E402
from .extraction.vectors import EmotionVectors, VectorBuild  # noqa: E402
from .io import EMOLIB_VERSION as __version__  # noqa: E402
from .models import load as load_model  # noqa: E402
from .steering.steer import steering  # noqa: E402

__all__ = ["EmolibError", "EmotionVectors", "MissingWeightsError", "VectorBuild", "build_vectors", "load_model",
           "steering", "__version__"]
