"""``edgec device emulate`` and ``edgec device tracker``: an emulated Raspberry Pi serving TVM RPC, and a
TVM RPC tracker that boards register with (``tracker://HOST:PORT/KEY`` for ``edgec profile``/``tune``).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from typing import Any

from edgec.errors import UsageError
from edgec.flows.steps import Progress
from edgec.targets import get_target


@contextlib.contextmanager
def emulated_board(target: str = "rpi4", *, port: int = 9090, host: str = "127.0.0.1", tracker: str | None = None,
                   key: str | None = None, progress: Progress | None = None) -> Iterator[subprocess.Popen]:
    """TVM's RPC server running inside the qemu-aarch64 rootfs for the block (timings are emulated).

    Args:
        target: An aarch64 CPU target (``rpi4``, ``rpi5``).
        port, host: Where the server listens (keep loopback).
        tracker: ``HOST:PORT`` of a tracker to register with, under ``key`` (default: the target name).
        progress: Called with each set-up step (the first run builds the rootfs).

    Yields:
        The server process; it is stopped when the block ends, however it ends.

    Raises:
        UsageError: the target cannot be emulated.
        ToolchainError, DeviceError: qemu or the rootfs is missing, or the server did not come up.
    """
    from edgec.devices import start_emulator, stop_emulator

    spec = get_target(target)
    if spec.arch != "aarch64" or spec.kind != "cpu":
        raise UsageError(f"only aarch64 CPU targets can be emulated, not '{target}'", "use rpi4 or rpi5")
    proc = None
    try:  # from the moment the server runs: a Ctrl-C anywhere in the block must stop it too
        proc = start_emulator(port=port, host=host, tracker=tracker, key=key or target, progress=progress)
        yield proc
    finally:
        if proc is not None:
            stop_emulator(proc)


@contextlib.contextmanager
def tracker(host: str = "127.0.0.1", port: int = 9190) -> Iterator[Any]:
    """A TVM RPC tracker in this process for the block (``.port``)."""
    from edgec.devices import start_tracker

    tr = start_tracker(host, port)
    try:
        yield tr
    finally:
        tr.terminate()
