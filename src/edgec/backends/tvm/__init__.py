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
_prepare_codegen()
