"""The Relax compilation pipeline edgec uses, as named phase lists.

Modelled on TVM's ``relax/backend/cpu_generic/pipeline.py``, with two changes:

* a tuning database, when given, is applied right after operator fusion
  (``MetaScheduleApplyDatabase``): tuning tasks are extracted from the same fused
  module (:func:`fused_module`), so their structural hashes match;
* CUDA targets get DLight's default GPU schedules for kernels the database does not cover.

Unlike plain ``tvm.compile`` on CPU, the pipeline always fuses and folds
constants (weight layout transforms then run once at compile time).
"""

from __future__ import annotations

from typing import Any


def legalize_and_fuse() -> list:
    """LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> FuseOps -> FuseTIR."""
    from tvm import relax

    return [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR()]


def schedule_passes(target, database: Any = None) -> list:
    """Apply tuned schedules from ``database``; DLight GPU rules for CUDA."""
    from tvm import relax

    passes = []
    if database is not None:
        passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
    if target.kind.name == "cuda":
        from tvm.s_tir import dlight as dl

        passes.append(dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                              dl.gpu.GeneralReduction(), dl.gpu.Fallback()))
    return passes


def lower_and_finalize(target) -> list:
    """Dataflow lowering and memory planning (StaticPlanBlockMemory) for the VM."""
    from tvm import relax

    passes = [relax.transform.RewriteDataflowReshape(), relax.transform.ToNonDataflow(),
              relax.transform.RemovePurityChecking(), relax.transform.CallTIRRewrite(),
              relax.transform.StaticPlanBlockMemory()]
    if target.kind.name == "cuda":
        passes.append(relax.transform.RewriteCUDAGraph())
    passes += [relax.transform.LowerAllocTensor(), relax.transform.KillAfterLastUse(),
               relax.transform.LowerRuntimeBuiltin(), relax.transform.ComputePrimValue(),
               relax.transform.VMShapeLower(), relax.transform.AttachGlobalSymbol()]
    return passes


def dispatch() -> list:
    """Library dispatch (sampling, sort/scan) before legalization."""
    from tvm import relax

    return [relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()]


def fused_module(mod, target):
    """``mod`` after dispatch, legalization and fusion: what tuning extracts tasks from."""
    import tvm

    with target:
        return tvm.transform.Sequential(dispatch() + legalize_and_fuse())(mod)


def relax_pipeline(target, database: Any = None, prefused: bool = False):
    """The whole pipeline as one ``tvm.transform.Pass``.

    Args:
        target: ``tvm.target.Target``.
        database: A MetaSchedule database to apply, or None.
        prefused: The module already went through :func:`fused_module`; start after fusion.
    """
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="edgec_pipeline")
    def _pipeline(mod, _ctx):
        with target:  # MetaScheduleApplyDatabase reads the target when constructed
            front = [] if prefused else dispatch() + legalize_and_fuse()
            phases = front + schedule_passes(target, database) + lower_and_finalize(target)
            if database is not None:
                with database:
                    return tvm.transform.Sequential(phases)(mod)
            return tvm.transform.Sequential(phases)(mod)

    return _pipeline


HEAVY_KERNEL = ("conv", "matmul", "dense", "mean", "sum", "max", "min", "softmax", "pool", "resize", "gemm")


def fused_kernels(mod, target, fused=None) -> list[str]:
    """Names of the fused TIR kernels ``main`` calls, in call order, after legalization and fusion.

    A name lists the operators fused into it (``fused_conv2d_add_relu``). ``fused``:
    the already fused module, if at hand.
    """
    import re

    fused = fused if fused is not None else fused_module(mod, target)
    return re.findall(r"R\.call_tir\((?:cls\.)?(\w+)", fused["main"].script())


def standalone_kernels(names: list[str]) -> list[str]:
    """Kernels that contain no conv/matmul/reduction/pooling: element-wise or layout work on its own."""
    return [n for n in names if not any(h in n for h in HEAVY_KERNEL)]
