"""Run an edgec artifact with the plain TVM runtime (no edgec, no compiler needed).

Used on devices and inside the emulated aarch64 rootfs::

    python runner.py model.so inputs.npz outputs.npz [--repeat N]

``inputs.npz`` holds arrays ``arg0, arg1, ...`` in graph input order;
``outputs.npz`` receives ``out0, out1, ...`` in graph output order. Several input sets
in one process: ``s0_arg0, s0_arg1, ..., s1_arg0, ...`` give ``s0_out0, ...``. With
``--repeat N`` the model runs N times and the last line printed is JSON with the
process's peak resident memory (``peak_rss_bytes``). Only NumPy and the ``tvm``
runtime are imported (``TVM_USE_RUNTIME_LIB=1`` skips the compiler library).
"""

import os
import sys

os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
# As on a device: no PyTorch. tvm_ffi imports torch when it is installed (DLPack
# interop), which would add ~500 MB to the memory this process reports.
sys.modules.setdefault("torch", None)

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
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 1
    vm = VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())
    data = np.load(inputs)
    prefixes = sorted({k.split("_")[0] + "_" for k in data.files if "_" in k}) or [""]
    results = {}
    for prefix in prefixes:
        n = sum(1 for k in data.files if k.startswith(prefix + "arg"))
        args = [tvm.runtime.tensor(data[f"{prefix}arg{i}"]) for i in range(n)]
        for _ in range(repeat):
            result = _flatten(vm["main"](*args))
        results.update({f"{prefix}out{i}": r for i, r in enumerate(result)})
    np.savez(outputs, **results)
    if "--repeat" in argv:
        import json

        print(json.dumps({"peak_rss_bytes": _peak_rss_bytes()}))
    return 0


def _peak_rss_bytes():
    """This process's peak resident memory in bytes.

    Linux's ``VmHWM`` belongs to the address space made at ``exec``; ``ru_maxrss`` would also
    count the parent's peak when the runner was forked from a large process.
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    sys.exit(main(sys.argv))
