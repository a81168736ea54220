"""TVM's process set-up, done before the first ``import tvm`` (by a backend or a device).

* :func:`prepare`: TVM's thread pool (no pinning, every core, workers that spin between kernels)
  and CUDA code generation on a machine without a GPU (:mod:`edgec.tvm_setup.cuda`);
* :mod:`edgec.tvm_setup.capture`: TVM's C++ output (warnings, IR dumps) captured into the log;
* :mod:`edgec.tvm_setup.versions`: the compiler stack's versions, as manifests record them.

This package imports no TVM; :mod:`edgec.backends` and :mod:`edgec.devices` call :func:`prepare`.
"""

from __future__ import annotations

import os

from edgec.tvm_setup.cuda import cuda_codegen_status


def prepare() -> None:
    """Set TVM's thread-pool defaults and prepare CUDA code generation; idempotent."""
    # TVM's thread pool otherwise pins the calling (main) thread to core 0; every thread that
    # process starts later -- onnxruntime's pool in a side-by-side benchmark, say -- inherits it.
    os.environ.setdefault("TVM_BIND_THREADS", "0")
    # Without TVM_NUM_THREADS, TVM assumes 2-way hyper-threading and uses half the cores (one, on a
    # 2-core machine) -- also in MetaSchedule's measurement workers, which inherit this variable.
    os.environ.setdefault("TVM_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    # Workers spin this long for the next parallel kernel before sleeping. TVM's default is short:
    # a MobileNetV4 (49 kernels) then pays a wake-up per kernel, ~4.1 ms instead of ~3.1 ms on 2
    # cores (onnxruntime's pool spins by default too).
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "1000000")
    cuda_codegen_status()
