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

import logging
import math
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


#: Convolution layouts for CPU targets: activations NHWC, weights HWIO. Vectorizing along the
#: output channels (contiguous in both) beats NCHW's vectorizing along W, which strided and 3x3
#: convolutions read with gaps: a 3x3/2 32->32 conv at 112x112 tuned for 64 trials on an AVX-512
#: host runs in 154 us as NHWC/HWIO against 435 us as NCHW. The same layout is what TVM's Arm CPU
#: schedules use. Weight transposes are folded at compile time; activations are transposed once at
#: the model's boundaries.
#: Transpose convolutions stay NCHW: ConvertLayout would otherwise let one follow its NHWC input, and TVM
#: has no NHWC lowering for ``conv2d_transpose`` (PP-OCRv4's text detector then failed in VM codegen).
CPU_CONV_LAYOUT = {"relax.nn.conv2d": ["NHWC", "HWIO"], "relax.nn.conv2d_transpose": ["NCHW", "IOHW"]}

#: NHWC is always kept when it adds at most this many activation transposes (the model's input and
#: output). Beyond that (attention blocks such as EfficientViT's reshape and split in NCHW terms, so
#: ConvertLayout puts a transpose around each), the cost model below decides.
MAX_EXTRA_TRANSPOSES = 2

#: Layout cost model, in multiply-accumulate equivalents of a vectorized convolution: NHWC saves about
#: half of the convolution time (:data:`NHWC_CONV_GAIN`); each extra transpose costs a kernel launch
#: (:data:`TRANSPOSE_KERNEL_MACS`, ~2 us) plus a strided copy of its elements
#: (:data:`TRANSPOSE_ELEMENT_MACS` each, ~1 ns). Measured by ``benchmarks/bench_attention_layout.py``
#: on a 2-core Zen 4: EfficientViT-M0 (115 extra transposes of 321 k elements, 76.7 M conv MACs) runs
#: 4.8 ms NHWC against 10.1 ms NCHW, both untuned (onnxruntime 3.2-3.5 ms); a graph of tiny 1x1 convs
#: around reshapes (``tests/backends/test_layout.py``) stays NCHW.
NHWC_CONV_GAIN = 0.5
TRANSPOSE_KERNEL_MACS = 50_000
TRANSPOSE_ELEMENT_MACS = 25


def clip_to_min_max():
    """Rewrite ``R.clip(x, lo, hi)`` as ``R.minimum(R.maximum(x, lo), hi)``.

    Same values; but Relax's ConvertLayout has no layout rule for ``clip`` (ONNX Clip, Relu6,
    HardSigmoid, HardSwish), so it would transpose around every one, while the binary
    element-wise ops follow any layout and still fuse into the producing convolution.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from edgec.backends.tvm.integer import rewrite_functions

    clip = tvm.ir.Op.get("relax.clip")

    @mutator
    class _Rewrite(PyExprMutator):
        def visit_call_(self, call):
            dtype = str(call.ty.dtype) if call.op == clip else None
            call = super().visit_call_(call)
            if call.op != clip:
                return call
            x, lo, hi = call.args

            def bound(v):
                return relax.const(v.value.value if hasattr(v.value, "value") else v.value, dtype)

            return relax.op.minimum(relax.op.maximum(x, bound(lo)), bound(hi))

    @tvm.transform.module_pass(opt_level=0, name="edgec_clip_to_min_max")
    def _pass(mod, _ctx):
        return rewrite_functions(_Rewrite(mod), mod)

    return _pass


def convert_layout(mod, target):
    """``mod`` with CPU convolutions in :data:`CPU_CONV_LAYOUT`, or unchanged (CUDA; the activation
    transposes NHWC adds would cost more than it saves, :func:`nhwc_pays`; or TVM's ConvertLayout
    fails on an op it has no layout rule for).

    Returns:
        ``(module, layout)`` with layout ``"NHWC"`` or ``"NCHW"``.
    """
    from tvm import relax

    if target.kind.name == "cuda":
        return mod, "NCHW"
    mod = clip_to_min_max()(mod)
    try:
        converted = relax.transform.ConvertLayout(CPU_CONV_LAYOUT)(mod)
    except Exception as exc:  # noqa: BLE001  an op without a layout rule (e.g. variadic Sum): keep NCHW
        log.warning("NHWC layout conversion failed (%s); compiling in NCHW", str(exc).strip().splitlines()[-1][:200])
        return mod, "NCHW"
    before, after = _layout_work(mod), _layout_work(converted)
    if not nhwc_pays(after["transposes"] - before["transposes"],
                     after["transposed_elements"] - before["transposed_elements"], after["conv_macs"]):
        return mod, "NCHW"
    return converted, "NHWC"


def nhwc_pays(extra_transposes: int, extra_elements: int, conv_macs: int) -> bool:
    """Whether NHWC convolutions outweigh the activation transposes they add (the cost model above).

    Args:
        extra_transposes: activation transposes NHWC adds (count).
        extra_elements: elements those transposes copy, per inference.
        conv_macs: multiply-accumulates of all the model's convolutions, per inference.
    """
    if extra_transposes <= MAX_EXTRA_TRANSPOSES:
        return True
    cost = TRANSPOSE_KERNEL_MACS * extra_transposes + TRANSPOSE_ELEMENT_MACS * extra_elements
    return cost <= NHWC_CONV_GAIN * conv_macs


def _layout_work(mod) -> dict[str, int]:
    """``main``'s activation transposes (permute_dims on values computed from the inputs; those on
    weights get folded): ``transposes`` (count), ``transposed_elements``; and ``conv_macs`` of its conv2d
    calls (static shapes; dynamic ones count 0)."""
    import tvm
    from tvm import relax

    permute, conv = tvm.ir.Op.get("relax.permute_dims"), tvm.ir.Op.get("relax.nn.conv2d")
    constant: set = set()
    work = {"transposes": 0, "transposed_elements": 0, "conv_macs": 0}

    def is_constant(arg) -> bool:
        return isinstance(arg, (tvm.ir.Constant, relax.ShapeExpr)) or arg in constant  # PrimValues are Constants

    def static_shape(ty) -> list[int] | None:
        shape = getattr(ty, "shape", None)
        try:
            return [int(d) for d in shape] if shape is not None else None
        except TypeError:  # a symbolic dimension
            return None

    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, tvm.ir.Constant) or (
                    isinstance(value, relax.Call) and all(is_constant(a) for a in value.args)):
                constant.add(binding.var)
            elif isinstance(value, relax.Call) and value.op == permute:
                work["transposes"] += 1
                work["transposed_elements"] += math.prod(static_shape(binding.var.ty) or [0])
            elif isinstance(value, relax.Call) and value.op == conv:
                out, weight = static_shape(binding.var.ty), static_shape(value.args[1].ty)
                if out and weight:
                    out_channels = weight[str(value.attrs.kernel_layout).index("O")]
                    work["conv_macs"] += math.prod(out) * math.prod(weight) // out_channels
    return work


def legalize_and_fuse() -> list:
    """LegalizeOps -> AnnotateTIROpPattern -> FoldConstant -> :func:`narrow_int64_constants` ->
    AnnotateTIROpPattern -> FuseOps -> FuseTIR."""
    from tvm import relax

    return [relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), narrow_int64_constants(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FuseOps(), relax.transform.FuseTIR()]


def narrow_int64_constants():
    """A module pass: each integer constant of int64 or int32 (more than one element) whose values fit a
    narrower integer type (int8, int16, int32) is stored in that type, with a widening kernel that FuseOps
    fuses into the kernel that reads it.

    The int8 requantization multiplies in int64 by per-channel multipliers (31-bit) and shifts (6-bit)
    (:mod:`edgec.backends.tvm.integer`); FoldConstant widens them to int64 arrays at compile time, which
    took 524 kB of ``mcunetv2_large``'s 2.3 MB in a microcontroller's flash. Stored narrow and widened where
    they are read, a multiplier takes 4 bytes and a shift 1.
    """
    import tvm
    from tvm import relax, topi
    from tvm.relax.expr_functor import PyExprMutator, mutator

    from edgec.backends.tvm.integer import rewrite_functions

    call_tir = tvm.ir.Op.get("relax.call_tir")

    def narrower(expr) -> str | None:
        if not isinstance(expr, tvm.ir.Constant) or not hasattr(expr.value, "numpy"):
            return None
        value = expr.value.numpy()
        if value.dtype not in (np.int64, np.int32) or value.size <= 1:
            return None
        for dtype in (np.int8, np.int16, np.int32):
            info = np.iinfo(dtype)
            if info.bits < value.dtype.itemsize * 8 and info.min <= int(value.min()) and int(value.max()) <= info.max:
                return np.dtype(dtype).name
        return None

    @mutator
    class _Narrow(PyExprMutator):
        def visit_call_(self, call):
            new = super().visit_call_(call)
            if new.op != call_tir or not isinstance(new.args[1], relax.Tuple) or not any(
                    narrower(f) for f in new.args[1].fields):
                return new
            fields = [self.builder_.emit(self.builder_.call_te(
                topi.cast, relax.const(f.value.numpy().astype(narrower(f)), narrower(f)), str(f.value.numpy().dtype),
                primfunc_name_hint="widen")) if narrower(f) else f for f in new.args[1].fields]
            return relax.Call(new.op, [new.args[0], relax.Tuple(fields), *new.args[2:]], new.attrs, new.ty_args)

    @tvm.transform.module_pass(opt_level=0, name="NarrowInt64Constants")
    def transform(mod, _ctx):
        return rewrite_functions(_Narrow(mod), mod)

    return transform


def schedule_passes(target, database: Any = None, default_schedule: bool = True,
                    applied: set[str] | None = None) -> list:
    """Apply tuned schedules from ``database``; then, for the kernels it does not cover, DLight GPU
    rules for CUDA, or on CPUs edgec's default schedule (:mod:`edgec.backends.tvm.default_schedule`;
    off with ``default_schedule=False``, whose kernels' names ``applied`` receives)."""
    from tvm import relax

    passes = []
    if database is not None:
        passes.append(relax.transform.MetaScheduleApplyDatabase(enable_warning=False))
    if target.kind.name == "llvm" and default_schedule:
        from edgec.backends.tvm.default_schedule import default_schedule_pass

        passes.append(default_schedule_pass(target, applied))
    if target.kind.name == "llvm":
        from edgec.backends.tvm import small_kernels

        passes.append(small_kernels.serial_small_kernels_pass(small_kernels.SMALL_KERNEL_WORK))
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
    """``mod`` after dispatch, layout conversion (:func:`convert_layout`), legalization and fusion:
    what tuning extracts tasks from and what the build compiles."""
    import tvm

    with target:
        mod = tvm.transform.Sequential(dispatch())(mod)
        mod, layout = convert_layout(mod, target)
        return tvm.transform.Sequential(legalize_and_fuse())(mod).with_attr(LAYOUT_ATTR, layout)


LAYOUT_ATTR = "edgec_conv_layout"


def conv_layout(fused) -> str:
    """``"NHWC"`` or ``"NCHW"``: the convolution layout :func:`fused_module` chose."""
    attrs = fused.attrs
    return str(attrs[LAYOUT_ATTR]) if attrs is not None and LAYOUT_ATTR in attrs else "NCHW"


def relax_pipeline(target, database: Any = None, prefused: bool = False, default_schedule: bool = True,
                   applied: set[str] | None = None):
    """The whole pipeline as one ``tvm.transform.Pass``.

    Args:
        target: ``tvm.target.Target``.
        database: A MetaSchedule database to apply, or None.
        prefused: The module already went through :func:`fused_module`; start after fusion.
        default_schedule: Give CPU kernels without a record edgec's default schedule.
        applied: Receives the names of the kernels the default schedule covered.
    """
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="edgec_pipeline")
    def _pipeline(mod, _ctx):
        if not prefused:
            mod = fused_module(mod, target)
        with target:  # MetaScheduleApplyDatabase reads the target when constructed
            phases = schedule_passes(target, database, default_schedule, applied) + lower_and_finalize(target)
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
