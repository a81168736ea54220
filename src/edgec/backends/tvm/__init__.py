"""Lowering to TVM Relax (apache-tvm 0.27). The only package of edgec that imports ``tvm``.

Importing this package prepares CUDA code generation (see :mod:`.cuda`) so that
it happens before TVM itself is loaded, turns off TVM's thread pinning and lets its thread pool use every core.
"""

import os as _os

from edgec.backends.tvm.cuda import prepare_codegen as _prepare_codegen

# TVM's thread pool otherwise pins the calling (main) thread to core 0; every thread that
# process starts later -- onnxruntime's pool in a side-by-side benchmark, say -- inherits it.
_os.environ.setdefault("TVM_BIND_THREADS", "0")
# Without TVM_NUM_THREADS, TVM assumes 2-way hyper-threading and uses half the cores (one, on a
# 2-core machine) -- also in MetaSchedule's measurement workers, which inherit this variable.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0))))
# Workers spin this long for the next parallel kernel before sleeping. TVM's default is short:
# a MobileNetV4 (49 kernels) then pays a wake-up per kernel, ~4.1 ms instead of ~3.1 ms on 2
# cores (onnxruntime's pool spins by default too).
_os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "1000000")
_prepare_codegen()
