"""One-line, actionable errors.

Every problem a user can fix (a missing model, a bad parameter, a writer server that is down) raises an
`EmolibError`. Its message says what is wrong and what to do. In a notebook it renders as that single
line instead of a traceback (IPython honours `_render_traceback_`), and the CLI prints it and exits 2.
"""

from __future__ import annotations


class EmolibError(Exception):
    """A user-fixable problem; the message is the whole story."""

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class MissingWeightsError(EmolibError):
    """Weights for a model profile are not on this machine (and we never reach a hub to get them)."""


class WriterError(EmolibError):
    """The story writer (local model or HTTP server) could not produce text."""


class StoreError(EmolibError):
    """A run directory holds data that does not match what was asked for."""
