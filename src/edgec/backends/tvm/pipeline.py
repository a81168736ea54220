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


def fused_module(mod, target):
    """``mod`` after legalization and fusion: what tuning extracts tasks from."""
    import tvm

    with target:
        return tvm.transform.Sequential(legalize_and_fuse())(mod)


def relax_pipeline(target, database: Any = None):
    """The whole pipeline as one ``tvm.transform.Pass``.

    Args:
        target: ``tvm.target.Target``.
        database: A MetaSchedule database to apply, or None.
    """
    import tvm
    from tvm import relax

    phases = ([relax.backend.DispatchSampling(), relax.backend.DispatchSortScan()] + legalize_and_fuse()
              + schedule_passes(target, database) + lower_and_finalize(target))

    @tvm.transform.module_pass(opt_level=0, name="edgec_pipeline")
    def _pipeline(mod, _ctx):
        with target:
            if database is not None:
                with database:
                    return tvm.transform.Sequential(phases)(mod)
            return tvm.transform.Sequential(phases)(mod)

    return _pipeline
