"""The TVM (Relax) backend: ONNX in, a compiled library for a target out.

Its public interface is :mod:`edgec.backends.tvm.api` (``compile``, ``tune``,
``count_kernels``, ``check``); the other modules are its parts. Only this package
and :mod:`edgec.devices` import ``tvm``. Importing it prepares the process first
(:func:`edgec.tvm_setup.prepare`: thread pool, CUDA code generation).
"""

from edgec.tvm_setup import prepare as _prepare

_prepare()
