"""Lowering to TVM Relax (apache-tvm 0.27). The only package of edgec that imports ``tvm``.

Importing this package prepares CUDA code generation (see :mod:`.cuda`) so that
it happens before TVM itself is loaded.
"""

from edgec.backends.tvm.cuda import prepare_codegen as _prepare_codegen

_prepare_codegen()
