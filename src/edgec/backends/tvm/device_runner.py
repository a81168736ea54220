"""Run an edgec artifact with the plain TVM runtime (no edgec, no compiler needed).

Used on devices and inside the emulated aarch64 rootfs::

    python device_runner.py model.so inputs.npz outputs.npz

``inputs.npz`` holds arrays ``arg0, arg1, ...`` in graph input order;
``outputs.npz`` receives ``out0, out1, ...`` in graph output order. Only NumPy
and the ``tvm`` runtime are imported (``TVM_USE_RUNTIME_LIB=1`` skips the
compiler library).
"""

import os
import sys

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")

import numpy as np  # noqa: E402
import tvm  # noqa: E402
from tvm.runtime.vm import VirtualMachine  # noqa: E402


def _flatten(value):
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out = []
    for item in value:
        out.extend(_flatten(item))
    return out


def main(argv):
    library, inputs, outputs = argv[1:4]
    vm = VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
    data = np.load(inputs)
    args = [tvm.runtime.tensor(data[f"arg{i}"]) for i in range(len(data.files))]
    result = _flatten(vm["main"](*args))
    np.savez(outputs, **{f"out{i}": r for i, r in enumerate(result)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
