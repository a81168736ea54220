"""Boards reached over TVM RPC: ``rpc://HOST:PORT`` (a server) or ``tracker://HOST:PORT/KEY`` (a fleet).

Sessions use TVM's own RPC (``tvm.rpc.connect`` / ``connect_tracker().request``)
with a bounded timeout. :func:`connect` is also what tuning measures through, so
that no other package opens an RPC session.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgec.devices.probe import probe
from edgec.devices.session import Progress, Session, rpc_session
from edgec.devices.url import DeviceURL
from edgec.errors import DeviceError
from edgec.targets import TargetSpec


def connect(url: DeviceURL, timeout_s: float = 60.0, priority: int = 1):
    """Open a TVM RPC session on ``url`` (a server, or a board handed out by a tracker).

    Raises:
        DeviceError: the server or tracker refused, or no board was free in time.
    """
    from tvm import rpc

    try:
        if url.kind == "rpc":
            return rpc.connect(url.host, url.port, session_timeout=int(timeout_s))
        tracker = rpc.connect_tracker(url.host, url.port)
        return tracker.request(url.key, priority=priority, session_timeout=int(timeout_s))
    except Exception as exc:  # noqa: BLE001  TVM raises plain errors
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DeviceError(f"cannot open a session on {url}: {first}",
                          "check that the RPC server is running and reachable") from exc


def is_emulated(url: DeviceURL, arch: str) -> bool:
    """A loopback RPC device for a foreign ISA can only be an emulated one: its timings are not device speed."""
    import platform

    return url.remote and url.loopback and arch != platform.machine()


class RemoteDevice:
    """A board behind a TVM RPC server or tracker.

    Args:
        url: ``rpc://`` or ``tracker://`` address.
        arch: The CPU architecture of the code it will run (decides whether a loopback
            address can only be the emulator).
    """

    def __init__(self, url: DeviceURL, arch: str | None = None) -> None:
        self.url = url
        self.emulated = bool(arch) and is_emulated(url, arch)
        self.description = f"{url} over TVM RPC" + (" (emulated)" if self.emulated else "")

    @classmethod
    def from_url(cls, url: DeviceURL, arch: str | None = None,  # noqa: ARG003
                 threads: int | None = None) -> RemoteDevice:  # noqa: ARG003
        """The registry's factory (``rpc``, ``tracker``); the board sizes its own thread pool."""
        return cls(url, arch)

    def probe(self, timeout: float = 10.0) -> None:
        """Raises DeviceError when the server/tracker does not answer or lacks the key."""
        probe(self.url, timeout)

    def connect(self, timeout_s: float = 60.0):
        """A raw TVM RPC session (what MetaSchedule's runner measures through)."""
        return connect(self.url, timeout_s)

    def check_tuning(self, spec: TargetSpec) -> None:  # noqa: ARG002
        """Nothing to refuse before connecting: the board measures the code it is sent."""

    def tuning_runner(self, timeout_s: float = 120, evaluator_config: Any = None):
        """MetaSchedule's ``RPCRunner``; its sessions are opened by :meth:`connect` (a tracker spreads the
        measurements over every board registered under the key)."""
        from tvm.s_tir import meta_schedule as ms

        url = self.url
        config = ms.runner.RPCConfig(tracker_host=url.host, tracker_port=url.port, tracker_key=url.key or "direct",
                                     session_timeout_sec=int(timeout_s))
        return ms.runner.RPCRunner(rpc_config=config, evaluator_config=evaluator_config,
                                   f_create_session=lambda cfg: self.connect(cfg.session_timeout_sec))

    @contextlib.contextmanager
    def open(self, timeout_s: float = 60.0, progress: Progress | None = None) -> Iterator[Session]:  # noqa: ARG002
        """Open a session for the duration of the block.

        Raises:
            DeviceError: unreachable server/tracker, unknown key, no free board in time.
        """
        self.probe(timeout=min(timeout_s, 10.0))
        with rpc_session(self.url, connect(self.url, timeout_s), self.emulated) as session:
            yield session

    def run(self, library: str | Path, inputs: list[np.ndarray], timeout: float = 600,
            progress: Progress | None = None) -> list[np.ndarray]:
        """Upload and run a library once on the board; outputs in graph order."""
        with self.open(timeout, progress) as session:
            return session.run(library, inputs)

    def run_sets(self, library: str | Path, sets: list[list[np.ndarray]], timeout: float = 600,
                 progress: Progress | None = None) -> list[list[np.ndarray]]:
        """Run the library on several input sets in one session; outputs per set."""
        with self.open(timeout, progress) as session:
            return [session.run(library, xs) for xs in sets]


def start_tracker(host: str = "127.0.0.1", port: int = 9190):
    """Start a TVM RPC tracker in this process; returns it (``.port``, ``.terminate()``)."""
    from tvm.rpc.tracker import Tracker

    return Tracker(host=host, port=port, port_end=port + 1, silent=True)
