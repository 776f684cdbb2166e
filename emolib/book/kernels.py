"""The chapters' kernels talk to papermill over local IPC sockets, not TCP: nothing listens on a network port while a
chapter runs, and ipykernel has no reason to warn, at every chapter, that its TCP traffic is unencrypted. The sockets
live in a private folder under the temporary directory, not in the working directory (jupyter_client's default): a
killed run left its `kernel-ipc-N` files in the reader's checkout. Each kernel gets its own socket prefix: jupyter_client
numbers sockets `<prefix>-1`, `<prefix>-2`, ... by the first free name, so two runs that shared a prefix (two `make book`,
or the test workers) raced for the same names and read each other's messages ("Invalid Signature")."""

from __future__ import annotations

import os
import tempfile
import uuid
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
            return str(ipc_folder() / f"kernel-{os.getpid()}-{uuid.uuid4().hex[:12]}")
        return super()._ip_default()
