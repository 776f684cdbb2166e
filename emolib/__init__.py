"""emolib: emotion vectors in open language models, from stories to steering.

One module per stage: `models` (profiles and loading), `corpus` (stories and dialogues), `generate`
(writers), `extract`, `vectors`, `geometry`, `lens`, `validate`, `steer`,
`plots` (offline plotly), `book` (papermill + jupyter-book runner).
"""

import warnings

# tqdm.auto warns on import when ipywidgets is absent; emolib's bars are plain text on purpose
# (executed notebooks stay diffable), so the warning is noise in every chapter's first cell.
warnings.filterwarnings("ignore", message="IProgress not found")
# transformers >= 5.24 renames the cache argument; emolib's decode loop still passes `past_key_values`
# (valid until 5.40), and the warning's absolute path would differ on every machine's executed chapters.
warnings.filterwarnings("ignore", message=".*`past_key_values` is deprecated", category=FutureWarning)

__version__ = "0.1.0"

from .errors import EmolibError, MissingWeightsError  # noqa: E402,F401
