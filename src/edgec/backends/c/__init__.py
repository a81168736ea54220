"""The microcontroller C backend: ONNX in, a static C program and a Cortex-M ELF out.

Its public interface is :mod:`edgec.backends.c.api`; the parts are :mod:`~edgec.backends.c.lower`
(Relax planning and TVM's C code generator, reusing the TVM backend's import and fusion),
:mod:`~edgec.backends.c.runner` (the generated static runner), :mod:`~edgec.backends.c.toolchain`
(startup code, linker script, Makefile, ``arm-none-eabi-gcc``) and :mod:`~edgec.backends.c.budget`
(the chip's flash and SRAM). Importing it prepares TVM's process settings (:func:`edgec.tvm_setup.prepare`).
The approach is the one recorded in ``docs/tvm-0.27.md``, "Microcontrollers" (TVM 0.27 has no AOT
executor and no microTVM).
"""

from edgec.tvm_setup import prepare as _prepare

_prepare()
