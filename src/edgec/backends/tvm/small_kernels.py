"""Run small CPU kernels on one thread: a parallel launch can cost more than their work.

A kernel with a parallel loop hands work to TVM's thread pool and joins it at the end. MetaSchedule
times a kernel alone, back to back, so its records do not weigh that round trip against a kernel of
a few microseconds. EfficientViT-M0 has 173 small reshape/split/transpose kernels (0.25-12 kB each);
its per-kernel profile on a 2-core AMD EPYC (Zen 5) gave them 0.29 ms on 2 threads against 0.04 ms on
1 (``edgec profile efficientvit --device local --threads 1``/``2``; that profile times each kernel
alone, which overstates the cost inside the whole model).

:func:`serial_small_kernels_pass` turns the parallel loops of every kernel whose work is below
:data:`SMALL_KERNEL_WORK` into serial loops, after the schedules (tuned, transferred or default) are
applied. Each iteration computes the same elements in the same order: results are bit-identical.
Measured end to end by ``benchmarks/bench_small_kernels.py`` (2 threads, interleaved with onnxruntime,
p50): at 16384 against 0 (off), efficientvit 1.602 -> 1.525 ms, ghostnet 2.721 -> 2.672, mcunetv2
2.157 -> 2.138; a sweep on efficientvit gave 1.583 (0), 1.567 (4096), 1.561 (16384), 1.584 (65536).
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

#: Kernels doing less than this much work run serially: the larger of the kernel's floating-point
#: operations (``estimate_tir_flops``) and the elements of the buffers it writes (the traffic of a
#: copy, which has no flops). A kernel at the threshold runs in about 1-2 us on one Zen 5 core.
SMALL_KERNEL_WORK = 16384


def kernel_work(func) -> float:
    """Work of a PrimFunc: ``max(flops, elements of the buffers it writes)`` (loop extents
    multiplied out; ``inf`` where a buffer's shape is symbolic)."""
    import tvm
    import tvm_ffi
    from tvm import tirx
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        flops = float(estimate_tir_flops(tvm.IRModule({"main": func})))
    except Exception:  # noqa: BLE001  a construct the estimator does not know: count the buffers only
        flops = 0.0
    buffers = {}

    def seen(node):
        buffers.setdefault(node.buffer.data, node.buffer)

    tvm_ffi.structural_walk(func.body, [(tirx.BufferStore, seen)])
    elements = 0
    for buf in buffers.values():
        n = 1
        for dim in buf.shape:
            if not hasattr(dim, "value"):
                return float("inf")  # symbolic shape: the size is not known here
            n *= int(dim.value)
        elements += n
    return max(flops, float(elements))


def serialize(func):
    """``func`` with every parallel loop made serial (same iterations, same order within each)."""
    import tvm_ffi
    from tvm import tirx

    def serial(node):
        if node.kind != tirx.ForKind.PARALLEL:
            return node
        return tirx.For(node.loop_var, node.min, node.extent, tirx.ForKind.SERIAL, node.body,
                        node.thread_binding, node.annotations)

    return tvm_ffi.structural_map(func, [(tirx.For, serial)])


def serial_small_kernels_pass(threshold: float = SMALL_KERNEL_WORK, serialized: set[str] | None = None):
    """A module pass running every kernel with work below ``threshold`` (:func:`kernel_work`) on one thread.

    Args:
        threshold: Work (flops or buffer elements) below which a kernel's parallel loops become serial.
        serialized: Receives the names of the kernels it changed.
    """
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="edgec_serial_small_kernels")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and kernel_work(func) < threshold:
                new = serialize(func)
                if not new.same_as(func):
                    updates[gv] = new
        for gv, func in updates.items():
            mod.update_func(gv, func)
            if serialized is not None:
                serialized.add(gv.name_hint)
        log.debug("%d small kernels made serial", len(updates))
        return mod

    return _pass
