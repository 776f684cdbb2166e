"""emolib: emotion vectors in open language models, from stories to steering.

One module per stage: `models` (profiles and loading), `corpus` (stories and dialogues), `generate`
(writers), `plots` (offline plotly), `book` (papermill + jupyter-book runner).
"""

__version__ = "0.1.0"

from .errors import EmolibError, MissingWeightsError  # noqa: E402,F401
