"""An open device: load a compiled library, run it, time it, with the TVM runtime.

The same calls work on this machine and over TVM RPC (``rpc://``, ``tracker://``,
the emulated board): a :class:`Session` holds the TVM device and, for remote
devices, the RPC session that uploads libraries and runs them there.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.devices.url import DeviceURL
from edgec.errors import DeviceError

Progress = Callable[[str], None]


def flatten(value) -> list[np.ndarray]:
    """A VM result (tensor or nested tuple of tensors) as a flat list of NumPy arrays."""
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(flatten(item))
    return out


@dataclass
class Session:
    """A device opened for the duration of a ``with`` block (see ``Device.open``).

    Attributes:
        url: The device's address.
        device: The TVM device (``tvm.cpu()`` or the remote CPU).
        rpc: The TVM RPC session (None when local).
        info: What is known about the device (``device``, ``threads``, ``address``).
        emulated: Timings are from an emulator, not the device's speed.
    """

    url: DeviceURL
    device: Any
    rpc: Any | None
    info: dict[str, Any] = field(default_factory=dict)
    emulated: bool = False

    @property
    def remote(self) -> bool:
        return self.rpc is not None

    def load(self, library: str | Path):
        """Load a library on the device, uploading it first over RPC."""
        import tvm

        if self.rpc is None:
            return tvm.runtime.load_module(str(library))
        self.rpc.upload(str(library))
        return self.rpc.load_module(Path(library).name)

    def tensors(self, arrays: list[np.ndarray]) -> list:
        """Copy NumPy arrays to the device."""
        import tvm

        return [tvm.runtime.tensor(np.require(np.asarray(a), requirements="C"), self.device) for a in arrays]

    def load_model(self, library: str | Path):
        """The library's Relax VM on the device."""
        from tvm.runtime.vm import VirtualMachine

        return VirtualMachine(self.load(library), self.device)

    def run(self, library: str | Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run the model once; outputs in graph order."""
        return flatten(self.load_model(library)["main"](*self.tensors(inputs)))

    def prepare(self, library: str | Path, inputs: list[np.ndarray]) -> Callable[[], Any]:
        """Load the model and copy the inputs once; return a zero-argument callable running one inference."""
        main = self.load_model(library)["main"]
        args = self.tensors(inputs)
        return lambda: main(*args)

    def time_model(self, library: str | Path, inputs: list[np.ndarray], repeats: int, chunk: int = 5,
                   progress: Progress | None = None) -> tuple[list[float], str | None]:
        """End-to-end latency samples (ms) with the VM's ``time_evaluator``, collected in chunks.

        A device that drops mid-run still leaves the samples taken so far.

        Returns:
            ``(samples in ms, error text or None)``.
        """
        samples: list[float] = []
        error = None
        try:
            vm = self.load_model(library)
            args = self.tensors(inputs)
            vm["main"](*args)  # warm-up, and a first check that it runs
            f = vm.time_evaluator("main", self.device, number=1, repeat=min(chunk, repeats))
            while len(samples) < repeats:
                samples.extend(float(r) * 1e3 for r in f(*args).results)
                if progress:
                    progress(f"timing end to end {min(len(samples), repeats)}/{repeats}")
        except Exception as exc:  # noqa: BLE001  the device dropped: keep what was measured
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        return samples[:repeats], error

    def time_functions(self, library: str | Path, calls: list[dict[str, Any]], repeats: int,
                       progress: Progress | None = None) -> list[float]:
        """Time each named function of a library on random arguments of the given shapes.

        Args:
            library: A library whose functions are top-level symbols (e.g. an artifact's ``kernels.so``).
            calls: ``[{"kernel": symbol, "args": [{"shape", "dtype"}], "outputs": [...]}]``; identical
                (symbol, shapes) pairs are timed once.
            repeats: Timed repeats per function (the median is kept).

        Returns:
            Milliseconds per call, in the order of ``calls``.

        Raises:
            DeviceError: the device failed or dropped.
        """
        lib = self.load(library)
        rng = np.random.default_rng(0)
        cache: dict[tuple, float] = {}
        out = []
        for i, c in enumerate(calls):
            sig = (c["kernel"], json.dumps([a["shape"] for a in c["args"] + c["outputs"]]))
            if sig not in cache:
                if progress and i % 10 == 0:
                    progress(f"timing kernels {i}/{len(calls)}")
                args = self.tensors([_random(a, rng) for a in c["args"] + c["outputs"]])
                f = lib.time_evaluator(c["kernel"], self.device, number=1, repeat=repeats,
                                       min_repeat_ms=0 if self.remote else 20)
                try:
                    cache[sig] = float(np.median(f(*args).results)) * 1e3
                except Exception as exc:  # noqa: BLE001
                    raise DeviceError(f"timing kernel {c['kernel']} failed on {self.url}: "
                                      f"{str(exc).splitlines()[0][:160]}", "check the device") from exc
            out.append(cache[sig])
        return out


def _random(arg: dict[str, Any], rng) -> np.ndarray:
    dt = np.dtype(arg["dtype"])
    if np.issubdtype(dt, np.floating):
        return rng.standard_normal(arg["shape"]).astype(dt) if arg["shape"] else np.array(rng.standard_normal(), dt)
    return np.zeros(arg["shape"], dt)


@contextlib.contextmanager
def rpc_session(url: DeviceURL, rpc_sess, emulated: bool = False) -> Iterator[Session]:
    """Wrap an open TVM RPC session; the connection is dropped at the end of the block."""
    info: dict[str, Any] = {"device": "cpu (remote)", "address": str(url)}
    try:
        info["threads"] = int(rpc_sess.get_function("runtime.NumThreads")())
    except Exception:  # noqa: BLE001  older runtimes
        info["threads"] = None
    try:
        yield Session(url, rpc_sess.cpu(0), rpc_sess, info, emulated)
    finally:
        with contextlib.suppress(Exception):
            rpc_sess._sess = None  # drop the connection
