"""Where a profile runs: this machine, a TVM RPC server, or a board from a TVM tracker.

``--device local`` | ``rpc://HOST:PORT`` | ``tracker://HOST:PORT/KEY``. Remote
sessions use TVM's own RPC (``tvm.rpc.connect`` / ``connect_tracker().request``)
with a bounded timeout; an unreachable device fails fast with a
:class:`~edgec.errors.DeviceError`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.backends.tvm.tuning import DeviceURL, check_device
from edgec.errors import DeviceError

__all__ = ["DeviceURL", "Session", "check_device", "open_session", "host_environment"]


@dataclass
class Session:
    """An open device: the TVM device, the RPC session (None when local) and what is known about it."""

    url: DeviceURL
    device: Any
    rpc: Any | None
    info: dict[str, Any]

    def load(self, path: Path):
        """Load a library on the device (uploading it first over RPC)."""
        import tvm

        if self.rpc is None:
            return tvm.runtime.load_module(str(path))
        self.rpc.upload(str(path))
        return self.rpc.load_module(Path(path).name)


@contextlib.contextmanager
def open_session(url: DeviceURL, timeout_s: float = 60.0) -> Iterator[Session]:
    """Open ``url`` for the duration of the block.

    Args:
        url: Parsed ``--device``.
        timeout_s: Connection and per-call session timeout (s).

    Raises:
        DeviceError: unreachable server/tracker, unknown key, no free board in time.
    """
    import tvm

    if url.kind == "local":
        yield Session(url, tvm.cpu(), None, {"device": "cpu", "threads": _local_threads()})
        return
    check_device(url, timeout=min(timeout_s, 10.0))
    from tvm import rpc

    try:
        if url.kind == "rpc":
            sess = rpc.connect(url.host, url.port, session_timeout=int(timeout_s))
        else:
            tracker = rpc.connect_tracker(url.host, url.port)
            sess = tracker.request(url.key, priority=1, session_timeout=int(timeout_s))
    except Exception as exc:
        raise DeviceError(f"cannot open a session on {url}: {str(exc).splitlines()[0][:200]}",
                          "check that the RPC server is running and reachable") from exc
    info: dict[str, Any] = {"device": "cpu (remote)", "address": str(url)}
    try:
        info["threads"] = int(sess.get_function("runtime.NumThreads")())
    except Exception:  # older runtimes
        info["threads"] = None
    try:
        yield Session(url, sess.cpu(0), sess, info)
    finally:
        with contextlib.suppress(Exception):
            sess._sess = None  # drop the connection


def _local_threads() -> int:
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def host_environment() -> dict[str, Any]:
    """CPU model, cores, frequency governor and temperatures of this machine, where readable."""
    from edgec.targets import _cpu_model_name

    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        t = _read(f"{zone}/temp")
        kind = _read(f"{zone}/type") or Path(zone).name
        if t and t.lstrip("-").isdigit():
            temps[kind] = int(t) / 1000.0
    return {"cpu_model": _cpu_model_name(), "machine": platform.machine(),
            "cores": len(os.sched_getaffinity(0)),
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "temperature_c": temps or None, "kernel": platform.release()}
