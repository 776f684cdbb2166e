"""The chapters' kernels talk to papermill over local IPC sockets, not TCP: nothing listens on a network port while a
chapter runs, and ipykernel has no reason to warn, at every chapter, that its TCP traffic is unencrypted."""

from __future__ import annotations

from jupyter_client.manager import KernelManager
from traitlets import CaselessStrEnum


class LocalKernelManager(KernelManager):
    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)
