"""The float64 truth of a model's function, for telling float32 noise from a wrong artifact.

Every float32 implementation of a network rounds, and two correct ones (onnxruntime's and a compiled
artifact, or AVX2 and AVX-512 code of the same artifact) disagree by more than the build tolerance
(``1e-4 * max(1, max|ref|)``) where the network carries intermediate values far larger than its
outputs: on inputs near 1000 a GhostNet's activations reach 1e4-1e5 while its logits stay near 70, and
onnxruntime's own float32 result is 0.015 away from the true one. Comparing one float32 result with
another cannot say which is wrong; the float64 computation of the same function can.

:func:`judge` compares a float32 result with the float64 truth and with onnxruntime's own float32 error
against that truth (graph optimisations off and on: two correct implementations, the noise floor). It
accepts when the result is within the tolerance of the truth, or no worse than :data:`NOISE_MULTIPLE`
times onnxruntime's error; otherwise the result is wrong. A real bug is far outside the noise: an
E[x^2] - E[x]^2 variance at offset 1000 (the shared MVN case) is 1.04 off the float64 truth where
onnxruntime is 4.5e-5 off it (limit 1.8e-4), and sets
with little noise (N(0, 1), image ranges) keep holding every artifact to the plain tolerance.

The float64 engine is ``onnx.reference`` (the ONNX reference implementation, NumPy) on the model
converted to double (:func:`to_float64`), with edgec's kernels where it is slow or not float64
(:func:`_exact_ops`): it covers every standard operator. On a quiet 2-core Zen 4 it takes 2.2 s for the
first set of the zoo's largest model (MobileNetV4-hybrid-large, 7.7 GMACs, one PyTorch thread) and 0.8 s
for each further set, against 2.5 s for that build's verification (onnxruntime's references and the
artifact on three sets); onnxruntime has no float64 Conv, and the PyTorch interpreter of
:mod:`edgec.frontend.trainable` covers only the zoo's classifiers. It runs only where a set's error fails
the tolerance or comes near it (:func:`decides`).
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.frontend.reference import Comparison, compare

#: How the float64 truth is computed, as reports name it.
ENGINE = "onnx.reference, model in float64"

#: A float32 result is within float32 noise when its error against the float64 truth is at most this
#: many times onnxruntime's own float32 error (the larger of its runs with graph optimisations off and on).
#: Two correct float32 implementations differ by accumulation order alone; their errors against the
#: truth were within a factor of 2 of each other on the zoo's offset sets (0.0198 vs 0.0127-0.0233).
NOISE_MULTIPLE = 4.0


#: An int8 result is within rounding noise when it is at most this many times as many quantization steps from
#: the QDQ model's float64 function as onnxruntime's integer kernels are (and at least one step is allowed).
#: A one-step rounding flip (a float32 product or sum a hair from a tie) grows layer after layer in a deep
#: random-weight network: onnxruntime itself ends two steps from the truth on ``mcunetv2_large``, and so does a
#: correct artifact whose flips fell elsewhere; a wrong kernel (a zero point ignored, a scale off by half) is
#: tens of steps away.
STEP_NOISE_MULTIPLE = 2.0

#: Operators ``onnx.reference`` computes in float32 whatever the input (its sampling grids): a model with
#: one has no float64 path.
NOT_FLOAT64 = frozenset({"GridSample", "AffineGrid"})


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` computing in float64: float32 initializers, constants, graph inputs and
    outputs and ``Cast(to=float)`` become double (values are exact: every float32 is a double).

    Integer tensors (shapes, indices) are unchanged; value_info is dropped (the engine does not need it).
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    _graph_to_float64(out.graph)
    return out


def _double(t: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name)


def _graph_to_float64(g: onnx.GraphProto) -> None:
    FLOAT, DOUBLE = onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE
    for t in g.initializer:
        if t.data_type == FLOAT:
            t.CopyFrom(_double(t))
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type == FLOAT:
            v.type.tensor_type.elem_type = DOUBLE
    del g.value_info[:]
    for n in g.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == FLOAT:
                a.i = DOUBLE
            elif a.type == onnx.AttributeProto.TENSOR and a.t.data_type == FLOAT:
                a.t.CopyFrom(_double(a.t))
            elif a.type == onnx.AttributeProto.GRAPH:
                _graph_to_float64(a.g)
        if n.op_type == "ConstantOfShape" and not any(a.name == "value" for a in n.attribute):
            n.attribute.append(onnx.helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float64))))
        if n.op_type == "Constant":
            for a in list(n.attribute):
                if a.name in ("value_float", "value_floats"):
                    value = np.array(a.f if a.name == "value_float" else list(a.floats), np.float32)
                    n.attribute.remove(a)
                    n.attribute.append(onnx.helper.make_attribute(
                        "value", numpy_helper.from_array(value.astype(np.float64))))


def _exact_ops() -> list[type]:
    """Replacements for ``onnx.reference`` kernels that are slow or not float64 (exact in float64, via
    PyTorch's float64 kernels):

    * ``Erf``: the reference rounds its result to float32 (``np.vectorize(math.erf, otypes=["f"])``);
    * ``Conv`` (2-D, explicit pads): the reference runs one im2col per group, 3 s of a 7.7-GMAC
      MobileNetV4; other convolutions keep the reference's own kernel;
    * ``MeanVarianceNormalization``: the reference expands the operator's ONNX function, whose constants
      are float32 (the operator's definition, computed in float64: ``(X - E[X]) / (sqrt(Var[X]) + 1e-9)``);
    * ``QuantizeLinear``/``DequantizeLinear``: the reference has them from opset 19 only; here in float64 at
      any opset (``(x - zero_point) * scale``; ``round(x / scale) + zero_point``, half to even, saturated).
    """
    import torch
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops.op_conv import Conv as _Conv
    from onnx.reference.ops.op_erf import Erf as _Erf

    class Erf(_Erf):
        def _run(self, x):
            return (torch.erf(torch.from_numpy(np.asarray(x))).numpy().astype(x.dtype),)

    class Conv(_Conv):
        def _run(self, X, W, B=None, auto_pad=None, dilations=None, group=None, kernel_shape=None, pads=None,
                 strides=None):
            if X.ndim != 4 or (auto_pad not in (None, "NOTSET", b"NOTSET")) or X.dtype != np.float64:
                return super()._run(X, W, B, auto_pad, dilations, group, kernel_shape, pads, strides)
            pads = list(pads or [0, 0, 0, 0])
            x = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(X)),
                                        (pads[1], pads[3], pads[0], pads[2]))
            b = None if B is None else torch.from_numpy(np.array(B, np.float64))
            y = torch.nn.functional.conv2d(x, torch.from_numpy(np.array(W, np.float64)), b,
                                           stride=tuple(strides or (1, 1)), dilation=tuple(dilations or (1, 1)),
                                           groups=int(group or 1))
            return (y.numpy(),)

    class MeanVarianceNormalization(OpRun):  # the reference expands the schema's function: float32 constants
        op_domain = ""

        def _run(self, X, axes=None):
            axes = tuple(axes if axes is not None else (0, 2, 3))
            centred = X - X.mean(axis=axes, keepdims=True)
            return (centred / (np.sqrt((centred ** 2).mean(axis=axes, keepdims=True)) + 1e-9),)

    def per_axis(v, x, axis):
        v = np.asarray(v)
        if v.size == 1:
            return v.reshape(())
        shape = [1] * x.ndim
        shape[(axis if axis is not None else 1) % x.ndim] = -1
        return v.reshape(shape)

    class DequantizeLinear(OpRun):  # the reference implements opset 19 and later only; float64, any opset
        op_domain = ""

        def _run(self, x, x_scale, x_zero_point=None, axis=None, block_size=None, output_dtype=None):
            zero = 0 if x_zero_point is None else per_axis(x_zero_point, x, axis).astype(np.float64)
            return (((x.astype(np.float64) - zero) * per_axis(x_scale, x, axis).astype(np.float64)),)

    class QuantizeLinear(OpRun):  # round(x / scale) + zero_point, half to even, saturated (float64)
        op_domain = ""

        def _run(self, x, y_scale, y_zero_point=None, axis=None, saturate=None, block_size=None,
                 output_dtype=None, precision=None):
            dtype = np.uint8 if y_zero_point is None else np.asarray(y_zero_point).dtype
            zero = 0 if y_zero_point is None else per_axis(y_zero_point, x, axis).astype(np.float64)
            q = np.rint(np.asarray(x, np.float64) / per_axis(y_scale, x, axis).astype(np.float64)) + zero
            info = np.iinfo(dtype)
            return (np.clip(q, info.min, info.max).astype(dtype),)

    return [Erf, Conv, MeanVarianceNormalization, DequantizeLinear, QuantizeLinear]


def _evaluator(model: onnx.ModelProto):
    """The float64 ``onnx.reference`` evaluator of ``model``: the graph without its initializers converted
    (:func:`to_float64`'s rules), the initializers handed to the evaluator as float64 arrays. This skips
    serialising and parsing the weights twice (0.5 s of a 37M-parameter model); where the evaluator keeps
    them otherwise, the whole model is converted."""
    from onnx.reference import ReferenceEvaluator

    if not model.graph.sparse_initializer:
        light = onnx.ModelProto()
        light.ir_version = model.ir_version
        light.opset_import.extend(model.opset_import)
        light.functions.extend(model.functions)
        g = light.graph
        g.name = model.graph.name
        g.node.extend(model.graph.node)
        g.input.extend(model.graph.input)
        g.output.extend(model.graph.output)
        _graph_to_float64(g)
        engine = ReferenceEvaluator(light, new_ops=_exact_ops())
        inits = getattr(engine, "rt_inits_", None)
        if isinstance(inits, dict):
            for t in model.graph.initializer:
                a = numpy_helper.to_array(t)
                inits[t.name] = a.astype(np.float64) if a.dtype == np.float32 else a
            return engine
    return ReferenceEvaluator(to_float64(model), new_ops=_exact_ops())


@contextlib.contextmanager
def _one_torch_thread():
    """PyTorch's float64 kernels on one thread: on a loaded 2-core machine two threads ran GhostNetV3's
    float64 pass in 6.7 s against 2.6 s on one (they spin against the other jobs), and the check must hold
    up there."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Float64Model:
    """A model's function in float64 (:data:`ENGINE`).

    Args:
        model: The float32 ONNX model.

    Attributes:
        unavailable: Why the model has no float64 path (an operator the engine lacks, a custom domain),
            or None.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        self._model = model
        self._engine: Any = None
        self.unavailable: str | None = None

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray] | None:
        """The float64 outputs in graph order, or None (with :attr:`unavailable` set) when the engine
        cannot run the model. Float inputs are converted to float64 exactly."""
        rounding = sorted({n.op_type for n in self._model.graph.node} & NOT_FLOAT64)
        if rounding and self.unavailable is None:
            self.unavailable = f"{', '.join(rounding)} computes in float32 in {ENGINE.split(',')[0]}"
        if self.unavailable is not None:
            return None
        feeds = {k: (v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v) for k, v in inputs.items()}
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings(), _one_torch_thread():
                warnings.simplefilter("ignore")
                if self._engine is None:
                    self._engine = _evaluator(self._model)
                return [np.asarray(o) for o in self._engine.run(None, feeds)]
        except Exception as exc:  # the engine's own refusal: no float64 path, today's check stands
            self.unavailable = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            return None


#: Where onnxruntime's own error against the float64 truth exceeds this fraction of an output's magnitude
#: (100x the build tolerance), float32 cannot compute the model on that input set: no float32 result says
#: anything there (which of two garbage results is nearer the truth flips with the seed), so the set is not
#: judged, and the report says why. A model computing E[x^2] - E[x]^2 itself on inputs near 1000 is 10% off.
UNSTABLE = 1e-2


@dataclass
class Noise:
    """onnxruntime's own float32 error against the float64 truth on one input set.

    Attributes:
        errors: Max abs error of onnxruntime's outputs with graph optimisations off, then (when measured)
            on: two correct float32 implementations.
        per_output: The larger of those errors, per output.
        scale: ``max(1, max|truth|)`` per output.
    """

    errors: tuple[float, ...]
    per_output: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    @property
    def floor(self) -> float:
        return max(self.errors)

    @property
    def limit(self) -> float:
        """The largest error a correct float32 implementation is allowed: :data:`NOISE_MULTIPLE` x the floor."""
        return NOISE_MULTIPLE * self.floor

    def limits(self) -> list[float]:
        """:attr:`limit` per output (each output's own noise floor)."""
        return [NOISE_MULTIPLE * e for e in self.per_output] or [self.limit]

    def unstable(self) -> list[int]:
        """Outputs onnxruntime itself computes more than :data:`UNSTABLE` of their magnitude off the truth."""
        return [i for i, (e, s) in enumerate(zip(self.per_output, self.scale)) if e > UNSTABLE * s]


def measure_noise(truth: list[np.ndarray], onnxruntime_outputs: list[list[np.ndarray]]) -> Noise:
    """onnxruntime's errors against ``truth`` (one list of outputs per onnxruntime run), overall and per output."""
    each = [[compare([o], [t], check_top1=False).max_abs_error for o, t in zip(outs, truth)]
            for outs in onnxruntime_outputs]
    scale = tuple(max(1.0, float(np.abs(t[np.isfinite(t)]).max(initial=0))) for t in map(np.asarray, truth))
    return Noise(tuple(max(e, default=0.0) for e in each), tuple(max(col) for col in zip(*each)), scale)


def judge(outputs: list[np.ndarray], truth: list[np.ndarray], noise: Noise, rtol: float,
          check_top1: bool = True, seconds: float = 0.0) -> dict[str, Any]:
    """Whether a float32 result is the model's function up to float32 noise.

    Each output is held to its own tolerance and its own noise floor. A set where onnxruntime itself is
    more than :data:`UNSTABLE` off the truth is not judged (``passed`` None, ``unstable`` True).

    Args:
        outputs: The result under test (an artifact's, or a rewritten model's in onnxruntime).
        truth: The float64 outputs of the reference model on the same inputs.
        noise: onnxruntime's own float32 error against ``truth``.
        rtol: The check's relative tolerance (1e-4 build, 1e-5 exact pass).
        check_top1: Also require the same top-1 as the truth (near-ties within the accepted error).
        seconds: Time the float64 run took (reported).

    Returns:
        ``{"engine", "seconds", "max_abs_error" (against the truth), "max_abs_ref", "tolerance",
        "onnxruntime_errors" ([optimisations off(, on)]), "noise_limit", "top1_match", "passed", "reason"}``
        (``"unstable": True`` where the set is not judged).
    """
    limits = noise.limits()
    cmp: Comparison = compare(outputs, truth, rtol=rtol, check_top1=check_top1,
                              floor=limits if len(limits) == len(outputs) else noise.limit)
    i = cmp.output if cmp.output < len(noise.per_output) else None
    own = noise.per_output[i] if i is not None else noise.floor
    limit = limits[i] if i is not None and len(limits) == len(outputs) else noise.limit
    lo, hi = min(noise.errors), max(noise.errors)
    ort = f"onnxruntime's {own:.3g}" if len(outputs) > 1 else (
        f"onnxruntime's {lo:.3g}" + (f"–{hi:.3g}" if f"{hi:.3g}" != f"{lo:.3g}" else ""))
    plain = cmp.max_abs_error <= rtol * max(1.0, cmp.max_abs_ref)
    record = {"engine": ENGINE, "seconds": round(seconds, 3), "max_abs_error": cmp.max_abs_error,
              "max_abs_ref": cmp.max_abs_ref, "tolerance": cmp.tolerance, "onnxruntime_errors": list(noise.errors),
              "noise_limit": limit, "top1_match": cmp.top1_match, "passed": bool(cmp.passed)}
    unstable = noise.unstable()
    if unstable:
        j = unstable[0]
        which = f"output {j}: " if len(outputs) > 1 else ""
        return {**record, "passed": None, "unstable": True,
                "reason": f"float32 cannot compute this model on these inputs ({which}onnxruntime's own error is "
                          f"{100 * noise.per_output[j] / noise.scale[j]:.2g}% of the output against the float64 "
                          "truth); not judged on this set"}
    if cmp.passed is None:
        reason = f"the float64 truth is not finite: {cmp.reason}"
    elif cmp.reason and not cmp.passed:
        reason = cmp.reason
    elif cmp.top1_match is False:
        reason = f"top-1 differs from the float64 truth beyond float32 noise ({ort} error against it)"
    elif plain:
        reason = f"within the tolerance of the float64 truth: {cmp.max_abs_error:.3g} ≤ {cmp.tolerance:.3g}"
    elif cmp.passed:
        reason = (f"within float32 noise: {cmp.max_abs_error:.3g} vs {ort} against the float64 truth "
                  f"(limit {NOISE_MULTIPLE:g}× = {limit:.3g})")
    else:
        reason = (f"beyond float32 noise: {cmp.max_abs_error:.3g} from the float64 truth vs {ort} "
                  f"(limit {NOISE_MULTIPLE:g}× = {limit:.3g})")
    if len(outputs) > 1:
        reason = f"output {cmp.output}: {reason}"
    return {**record, "reason": reason}


def unavailable_record(reason: str) -> dict[str, Any]:
    """The record of a float64 check that could not run (today's check stands)."""
    return {"engine": ENGINE, "passed": None, "unavailable": reason,
            "reason": f"no float64 path ({reason}); the check against onnxruntime stands"}


class Oracle:
    """The float64 truth and onnxruntime's noise of one model, per named input set, each computed once.

    Args:
        model: The model whose function is the truth (float32 ONNX).
        onnxruntime_outputs: ``(set name, inputs) -> onnxruntime's outputs (optimisations off)``, shared
            with the caller's cache; onnxruntime with optimisations on runs here.
    """

    def __init__(self, model: onnx.ModelProto, onnxruntime_outputs) -> None:
        self.model = model
        self._f64 = Float64Model(model)
        self._ort = onnxruntime_outputs
        self._optimized: Any = None
        self._done: dict[str, tuple[list[np.ndarray], Noise, float] | None] = {}

    def evidence(self, set_name: str, inputs: dict[str, np.ndarray],
                 optimized: bool = False) -> tuple[list[np.ndarray], Noise, float] | None:
        """``(float64 outputs, onnxruntime's noise, seconds taken)`` on one set, or None without a float64
        path. The noise is onnxruntime's error with optimisations off; ``optimized`` adds the run with them
        on (the noise floor is the larger, so it only matters where the first does not already accept)."""
        if set_name not in self._done:
            start = time.perf_counter()
            truth = self._f64.run(inputs)
            self._done[set_name] = None if truth is None else (
                truth, measure_noise(truth, [self._ort(set_name, inputs)]), time.perf_counter() - start)
        got = self._done[set_name]
        if got is not None and optimized and len(got[1].errors) == 1:
            from edgec.frontend.reference import ort_session, run_session

            start = time.perf_counter()
            if self._optimized is None:
                self._optimized = ort_session(self.model, optimized=True)
            on = measure_noise(got[0], [run_session(self._optimized, inputs)])
            both = Noise(got[1].errors + on.errors, tuple(map(max, got[1].per_output, on.per_output)), got[1].scale)
            got = self._done[set_name] = (got[0], both, got[2] + time.perf_counter() - start)
        return got

    def check(self, set_name: str, inputs: dict[str, np.ndarray], outputs: list[np.ndarray], rtol: float,
              check_top1: bool = True) -> dict[str, Any]:
        """:func:`judge` on one set (onnxruntime's optimised run joins the noise floor only where the verdict
        would otherwise fail), or :func:`unavailable_record` without a float64 path."""
        got = self.evidence(set_name, inputs)
        if got is None:
            return unavailable_record(self._f64.unavailable or "the engine failed")
        verdict = judge(outputs, got[0], got[1], rtol, check_top1, got[2])
        if verdict["passed"] is False and len(got[1].errors) == 1:
            got = self.evidence(set_name, inputs, optimized=True)
            verdict = judge(outputs, got[0], got[1], rtol, check_top1, got[2])
        return verdict


    def check_steps(self, set_name: str, inputs: dict[str, np.ndarray], outputs: list[np.ndarray],
                    steps: list[float | None], floor: list[float]) -> dict[str, Any]:
        """For an int8 model (QDQ, :attr:`model`): whether ``outputs`` are within ``floor`` (one quantization
        step per output), or :data:`STEP_NOISE_MULTIPLE` times onnxruntime's own distance if larger, of the model's
        own function computed in float64, with its top-1 (near-ties within that). onnxruntime runs quantized operators with float32 arithmetic (its requantization, and the
        float ``Conv`` it keeps between ``DequantizeLinear`` and ``QuantizeLinear``), whose one-step flips
        compound through the layers; an artifact can be one step from onnxruntime's result or from the
        truth, and the truth is what the model means. The record gives both distances in steps
        (``max_steps``, ``onnxruntime_max_steps``), or :func:`unavailable_record` without a float64 path."""
        got = self.evidence(set_name, inputs)
        if got is None:
            return unavailable_record(self._f64.unavailable or "the engine failed")
        truth, _, seconds = got

        def in_steps(result: list[np.ndarray]) -> float:
            worst = 0.0
            for out, ref, step in zip(result, truth, steps):
                if step and np.shape(out) == np.shape(ref):
                    diff = np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64)) / step
                    worst = max(worst, float(np.nan_to_num(diff, nan=np.inf).max(initial=0)))
            return round(worst, 3)

        ours, theirs = in_steps(outputs), in_steps(self._ort(set_name, inputs))
        allowed = max(1.0, STEP_NOISE_MULTIPLE * theirs)  # one step, or onnxruntime's own drift from the truth
        cmp = compare(outputs, truth, rtol=0.0, floor=[f * allowed for f in floor])
        record = {"engine": ENGINE.replace("model", "QDQ model"), "seconds": round(seconds, 3), "max_steps": ours,
                  "onnxruntime_max_steps": theirs, "allowed_steps": allowed, "max_abs_error": cmp.max_abs_error,
                  "max_abs_ref": cmp.max_abs_ref, "tolerance": cmp.tolerance, "top1_match": cmp.top1_match, "passed": cmp.passed}
        if cmp.passed is None:
            reason = f"the float64 truth is not finite: {cmp.reason}"
        elif cmp.passed:
            reason = (f"{ours:g} steps from the QDQ model computed in float64, within {allowed:g} (one step, or "
                      f"{STEP_NOISE_MULTIPLE:g}x onnxruntime's integer kernels' {theirs:g})")
        else:
            reason = (f"{ours:g} steps from the QDQ model computed in float64, beyond {allowed:g}"
                      + ("" if cmp.top1_match is not False else ", top-1 differs")
                      + f" (one step, or {STEP_NOISE_MULTIPLE:g}x onnxruntime's integer kernels' {theirs:g})")
        return {**record, "reason": reason}


#: A set whose error against onnxruntime exceeds this fraction of the tolerance is judged on the float64
#: truth too, passing or not: near the tolerance, which of two float32 results is nearer the truth is
#: the question (on GhostNetV3's offset set onnxruntime itself is 2x the tolerance off the truth).
NEAR_TOLERANCE = 0.5


def decides(cmp: Comparison) -> bool:
    """Whether the float64 truth decides a comparison: everything is finite with the right shapes (else
    the comparison's own verdict stands), and the error failed the tolerance or came within
    :data:`NEAR_TOLERANCE` of it (a low-noise set, far inside, keeps the plain verdict)."""
    return cmp.numeric and cmp.passed is not None and (
        cmp.passed is False or cmp.max_abs_error > NEAR_TOLERANCE * cmp.tolerance)


__all__ = ["ENGINE", "NEAR_TOLERANCE", "NOISE_MULTIPLE", "UNSTABLE", "Float64Model", "Noise", "Oracle", "decides", "judge",
           "measure_noise", "to_float64", "unavailable_record"]
