"""Run a compiled artifact library in this process with the TVM runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _flatten(value) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(_flatten(item))
    return out


class LocalModel:
    """A host library loaded into the Relax VM.

    Args:
        library: Path of the ``.so`` built for the ``host`` target.
        threads: Worker threads of TVM's thread pool (None: TVM's default, one per core).

    Call with input arrays (graph order) to get output arrays (graph order).
    """

    def __init__(self, library: str | Path, threads: int | None = None) -> None:
        import tvm
        from tvm.runtime.vm import VirtualMachine

        if threads:
            set_threads(threads)
        self.device = tvm.cpu()
        self.vm = VirtualMachine(tvm.runtime.load_module(str(library)), self.device)

    def prepare(self, *inputs: np.ndarray):
        """Copy inputs to the device once; returns a zero-argument callable running one inference."""
        import tvm

        args = [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]
        main = self.vm["main"]
        return lambda: main(*args)

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        import tvm

        args = [tvm.runtime.tensor(np.ascontiguousarray(x), self.device) for x in inputs]
        return _flatten(self.vm["main"](*args))


def set_threads(threads: int) -> None:
    """Resize TVM's CPU thread pool (affinity mode 0: no pinning)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(0, int(threads))


def run_local(library: str | Path, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Load ``library`` and run it once on ``inputs``."""
    return LocalModel(library)(*inputs)
