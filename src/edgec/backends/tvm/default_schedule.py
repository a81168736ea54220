"""A default CPU schedule for kernels no tuning record covers: no 100x untuned cliff.

TVM 0.27 applies no schedule to a CPU kernel that MetaSchedule's database does not cover: the
kernel runs single-threaded and scalar, 10-100x slower than tuned (``docs/tvm-0.27.md``). Every
kernel of a new model, a new resolution or a third-party ONNX file starts there. This module
gives such kernels a rule-based schedule, picked without measurement:

1. element-wise producers (padding, casts) are inlined into the kernel's main block;
2. the main block's spatial loops go outside its reduction loops, the innermost spatial loop is
   split by the target's vector lanes (LLVM's vector width / 32 bits: 8 for AVX2, 16 for
   AVX-512, 4 for NEON) and vectorized, and the outer spatial loops are fused and parallel;
3. element-wise blocks after it (bias, activation, residual add, a sliced residual) are inlined
   into the blocks that read them, and the remaining output block is computed at the parallel
   loop, vectorized the same way.

The reduction order of every output element is unchanged, so results are bit-identical to the
unscheduled kernel. Kernels with more than one reduction (softmax, normalisations) get DLight's
CPU reduction rule (``tvm.s_tir.dlight.cpu.Reduction``). A kernel the rules cannot schedule keeps
TVM's default. This is the parallelize-vectorize part of MetaSchedule's CPU design space
(``ParallelizeVectorizeUnroll``, Shao et al., "Tensor Program Optimization with Probabilistic
Programs", NeurIPS 2022) without tiling or search; measured by
``benchmarks/bench_default_schedule.py``.
"""

from __future__ import annotations

import logging
from typing import Any

from edgec.errors import raise_if_interrupted

log = logging.getLogger(__name__)

#: The ``kind`` of a kernel's schedule provenance when this module scheduled it.
DEFAULT = "default"
SOURCE = "edgec default schedule (parallel, vectorized; picked by rule, not measured)"


def is_scheduled(func) -> bool:
    """Whether a PrimFunc already carries a schedule (a tuning record was applied)."""
    attrs = func.attrs
    return attrs is not None and "tirx.is_scheduled" in attrs and bool(attrs["tirx.is_scheduled"])


def vector_lanes(target, bits: int = 32) -> int:
    """fp32 lanes of the target's vector registers (LLVM's vector width; at least 4)."""
    from tvm.target.codegen import llvm_get_vector_width

    width = llvm_get_vector_width(target)
    return max((width if width > 0 else 128) // bits, 4)


def _extent(sch, loop) -> int | None:
    from tvm import tirx

    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _vectorize_inner(sch, block, lanes: int) -> None:
    loops = sch.get_loops(block)
    if len(loops) < 2:
        return
    extent = _extent(sch, loops[-1])
    if extent is not None and extent > lanes:
        _, inner = sch.split(loops[-1], factors=[None, lanes])
        sch.vectorize(inner)
    elif extent is not None and extent >= 2:
        sch.vectorize(loops[-1])


def _inline_epilogue(sch, blocks: list) -> list:
    """Inline the element-wise blocks after the main one into the blocks that read them.

    Every block that is not a kernel output is inlined into its readers (``compute_inline``); this
    also takes blocks that do not read the main block at all (a sliced residual fused into the
    epilogue), which must not be computed at the main block's loops. Returns the blocks that stay:
    the ones writing kernel outputs.
    """
    kept = []
    for block in blocks:
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001  tvm.s_tir.ScheduleError: it writes an output; it stays
            kept.append(block)
    return kept


def inline_around_main(sch, infos: list) -> tuple[Any, list] | None:
    """Inline the element-wise producers into a kernel's main block (its one reduction, else its last
    block) and the blocks after it into their readers (:func:`_inline_epilogue`).

    Args:
        sch: The ``tvm.s_tir.Schedule`` of the kernel.
        infos: DLight's block infos of it (``normalize_prim_func``).

    Returns:
        ``(main block info, the blocks that stay after it)``, or None when the kernel has more than
        one reduction.
    """
    reductions = [b for b in infos if not b.is_injective()]
    if len(reductions) > 1:
        return None
    main = reductions[0] if reductions else infos[-1]
    at = infos.index(main)
    for producer in reversed(infos[:at]):
        try:
            sch.compute_inline(producer.block_rv)
        except Exception:  # noqa: BLE001  it writes a kernel output, or is not element-wise
            pass
    return main, _inline_epilogue(sch, [b.block_rv for b in infos[at + 1:]])


def parallel_vectorize(func, target) -> Any:
    """Schedule one kernel by the rule in the module docstring.

    Args:
        func: An unscheduled ``tvm.tirx.PrimFunc`` (one fused kernel).
        target: The ``tvm.target.Target`` (LLVM), for the vector width.

    Returns:
        A ``tvm.s_tir.Schedule``, or None when the kernel does not fit the rule (more than one
        reduction, opaque blocks). Raises ``tvm.s_tir.ScheduleError`` when a primitive is illegal;
        :func:`default_schedule` catches it.
    """
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    sch = s_tir.Schedule(func)
    infos = normalize_prim_func(sch)
    if not infos:
        return None
    around = inline_around_main(sch, infos)
    if around is None:
        return None
    main, consumers = around
    kinds = main.dom_kind()
    loops = sch.get_loops(main.block_rv)
    if not kinds or len(loops) != len(kinds) or set(kinds) - {"S", "R"} or "S" not in kinds:
        return None
    spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
    reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
    lanes = vector_lanes(target)
    extent = _extent(sch, spatial[-1])
    vector = None
    if extent is not None and extent >= lanes:
        outer, vector = sch.split(spatial[-1], factors=[None, lanes])
        spatial = spatial[:-1] + [outer]
    elif extent is not None and extent >= 2:
        vector, spatial = spatial[-1], spatial[:-1]
    if reduce:
        sch.reorder(*spatial, *reduce, *([vector] if vector is not None else []))
    par = (sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]) if spatial else None
    if par is not None:
        sch.parallel(par)
    for block in consumers:
        if par is not None:
            sch.reverse_compute_at(block, par, preserve_unit_loops=True)
        _vectorize_inner(sch, block, lanes)
    if vector is not None:
        sch.vectorize(vector)
    if reduce:
        sch.decompose_reduction(main.block_rv, reduce[0])
    return sch


def default_schedule(func, target) -> Any:
    """The scheduled PrimFunc for an unscheduled kernel, or None to keep TVM's default.

    Tries :func:`parallel_vectorize` (which declines kernels with more than one reduction), then
    DLight's CPU reduction rule for those (softmax, normalisations; it would also take a convolution,
    but only parallel over its outputs, without vectorizing them: 1-2x where this rule gives 5-20x).
    Never raises for a kernel it cannot schedule.
    """
    from tvm.s_tir.dlight import cpu

    for rule in (lambda f, t, _tunable: parallel_vectorize(f, t), cpu.Reduction().apply):
        try:
            sch = rule(func, target, False)
            if sch is not None and lowers(sch.mod["main"], target):
                return sch.mod["main"].with_attr("tirx.is_scheduled", True)
        except Exception as exc:  # noqa: BLE001  an illegal primitive: this rule does not fit
            raise_if_interrupted()
            log.debug("default schedule rule failed: %s", str(exc).strip().splitlines()[-1:])
    return None


def lowers(func, target) -> bool:
    """Whether a scheduled kernel passes TVM's TIR lowering for ``target`` (milliseconds, no code
    generation). Some schedules pass every primitive's check and still fail there (an epilogue that
    reads the biased convolution output twice, as hard-swish does, computed at the parallel loop:
    "buffer used before its definition")."""
    import tvm

    pipeline = tvm.tirx.get_default_tir_pipeline(target)[0]
    bind = tvm.tirx.transform.BindTarget(target.with_host(target))  # as tvm.tirx.build does
    try:
        with target:
            pipeline(bind(tvm.IRModule({"main": func.with_attr("global_symbol", "main")})))
    except Exception as exc:  # noqa: BLE001  tvm.error.InternalError from a lowering pass
        raise_if_interrupted()
        log.debug("default schedule does not lower: %s", str(exc).strip().splitlines()[-1:])
        return False
    return True


def default_schedule_pass(target, applied: set[str] | None = None):
    """A module pass giving every unscheduled kernel :func:`default_schedule`.

    Args:
        target: LLVM ``tvm.target.Target``.
        applied: Receives the names of the kernels it scheduled (for their provenance).
    """
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="edgec_default_schedule")
    def _pass(mod, _ctx):
        updates = {}
        for gv, func in mod.functions_items():
            if isinstance(func, tirx.PrimFunc) and not is_scheduled(func):
                scheduled = default_schedule(func, target)
                if scheduled is not None:
                    updates[gv] = scheduled
        for gv, func in updates.items():
            mod.update_func(gv, func)
            if applied is not None:
                applied.add(gv.name_hint)
        return mod

    return _pass
