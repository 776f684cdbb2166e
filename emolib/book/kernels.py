"""The chapters' kernels talk to papermill over local IPC sockets, not TCP: nothing listens on a network port while a
chapter runs, and ipykernel has no reason to warn, at every chapter, that its TCP traffic is unencrypted. The sockets
live in a private folder under the temporary directory, not in the working directory (jupyter_client's default): a
killed run left its `kernel-ipc-N` files in the reader's checkout."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from jupyter_client.manager import KernelManager
from traitlets import CaselessStrEnum


def ipc_folder() -> Path:
    """Where the kernels' IPC sockets go: one folder per user, readable by that user alone."""
    folder = Path(tempfile.gettempdir()) / f"emolib-kernel-ipc-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


class LocalKernelManager(KernelManager):
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    def _ip_default(self) -> str:
        if self.transport == "ipc" and not self.connection_file:
            return str(ipc_folder() / "kernel")
        return super()._ip_default()
