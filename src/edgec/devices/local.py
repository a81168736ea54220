"""This machine as a device: run and time compiled libraries in this process.

Also measures what only a local device can: the peak resident memory of a fresh
process running an artifact with the plain TVM runtime (:func:`peak_rss_bytes`),
and the machine's environment (CPU, governor, temperatures) for reports.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgec.devices.session import Progress, Session
from edgec.devices.url import DeviceURL
from edgec.errors import UsageError
from edgec.targets import TargetSpec, host_facts

log = logging.getLogger(__name__)


def set_threads(threads: int) -> None:
    """Resize TVM's CPU thread pool in this process (affinity mode 0: no pinning)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(0, int(threads))


def threads() -> int:
    """Worker threads of TVM's CPU thread pool in this process."""
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


class LocalDevice:
    """This machine (``--device local``).

    Args:
        threads: Worker threads of TVM's thread pool (None: one per core).
    """

    emulated = False
    description = "local run (host)"

    def __init__(self, threads: int | None = None) -> None:
        self.url = DeviceURL("local")
        self.threads = threads

    @classmethod
    def from_url(cls, url: DeviceURL, arch: str | None = None,  # noqa: ARG003
                 threads: int | None = None) -> LocalDevice:  # noqa: ARG003
        """The registry's factory (``local``)."""
        return cls(threads)

    def probe(self, timeout: float = 10.0) -> None:  # noqa: ARG002  always reachable
        """Nothing to check for this machine."""

    @contextlib.contextmanager
    def open(self, timeout_s: float = 60.0, progress: Progress | None = None) -> Iterator[Session]:  # noqa: ARG002
        """A session on this machine's CPU."""
        import tvm

        if self.threads:
            set_threads(self.threads)
        yield Session(self.url, tvm.cpu(), None, {"device": "cpu", "threads": threads()})

    def run(self, library: str | Path, inputs: list[np.ndarray], timeout: float = 600,  # noqa: ARG002
            progress: Progress | None = None) -> list[np.ndarray]:
        """Run a library built for this machine once, in this process; outputs in graph order."""
        with self.open() as session:
            return session.run(library, inputs)

    def run_sets(self, library: str | Path, sets: list[list[np.ndarray]], timeout: float = 600,  # noqa: ARG002
                 progress: Progress | None = None) -> list[list[np.ndarray]]:
        """Run the library on several input sets; outputs per set."""
        with self.open() as session:
            model = session.load_model(library)
            from edgec.devices.session import flatten

            return [flatten(model["main"](*session.tensors(xs))) for xs in sets]

    def check_tuning(self, spec: TargetSpec) -> None:
        """Refuse to measure code built for another ISA than this machine's.

        Raises:
            UsageError: ``spec`` is for another architecture (names the remote forms to use).
        """
        if spec.arch != platform.machine():
            raise UsageError(f"'{spec.name}' code cannot run on this machine",
                             "measure on the device: --device rpc://HOST:PORT or tracker://HOST:PORT/KEY")

    def tuning_runner(self, timeout_s: float = 120, evaluator_config: Any = None):
        """MetaSchedule's ``LocalRunner`` (candidates measured in worker processes on this machine)."""
        from tvm.s_tir import meta_schedule as ms

        return ms.runner.LocalRunner(evaluator_config=evaluator_config, timeout_sec=int(timeout_s))

    def prepare(self, library: str | Path, inputs: list[np.ndarray]):
        """Load the library and copy the inputs once; a zero-argument callable runs one inference
        (for timing loops, e.g. interleaved with onnxruntime)."""
        with self.open() as session:
            return session.prepare(library, inputs)


def peak_rss_bytes(library: str | Path, inputs: list[np.ndarray], runs: int = 10) -> int | None:
    """Peak resident memory (bytes) of a fresh process running ``library`` ``runs`` times.

    The process imports only NumPy and the TVM runtime (:mod:`edgec.devices.runner`),
    as a deployment would. Returns None (and logs why) when the run fails.
    """
    with tempfile.TemporaryDirectory(prefix="edgec-rss-") as tmp, \
            resources.as_file(resources.files("edgec.devices").joinpath("runner.py")) as runner:
        np.savez(Path(tmp) / "in.npz", **{f"s0_arg{i}": x for i, x in enumerate(inputs)})
        cmd = [sys.executable, str(runner), str(library), str(Path(tmp) / "in.npz"), str(Path(tmp) / "out.npz"),
               "--repeat", str(runs)]
        env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode != 0:
            log.warning("peak RSS run failed: %s", proc.stderr[-500:])
            return None
        return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_bytes"])


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def environment() -> dict[str, Any]:
    """CPU model, cores, frequency governor and temperatures of this machine, where readable."""
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        t = _read(f"{zone}/temp")
        kind = _read(f"{zone}/type") or Path(zone).name
        if t and t.lstrip("-").isdigit():
            temps[kind] = int(t) / 1000.0
    return {"cpu_model": host_facts.cpu_model_name(), "machine": platform.machine(),
            "cores": len(os.sched_getaffinity(0)),
            "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
            "temperature_c": temps or None, "kernel": platform.release()}
