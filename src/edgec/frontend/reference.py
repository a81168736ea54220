"""Reference numerics: onnxruntime runs, fixed random inputs, tolerance checks.

The reference is onnxruntime's CPU provider with graph optimisations disabled
(``ORT_DISABLE_ALL``), so that ORT does not apply the same rewrite to the
reference that is being verified (``docs/design.md``, Conventions).

Tolerances (``docs/design.md``):

* an exact pass: max abs error <= 1e-5 * max(1, max|ref|);
* a whole build: max abs error <= 1e-4 * max(1, max|ref|), and the same top-1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import onnx

from edgec.errors import UnsupportedOpError

PASS_RTOL = 1e-5
BUILD_RTOL = 1e-4

_ONNX_TO_NUMPY = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
                  onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.INT64: np.int64,
                  onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8,
                  onnx.TensorProto.INT8: np.int8, onnx.TensorProto.BOOL: np.bool_}


def input_dtypes(model: onnx.ModelProto) -> dict[str, np.dtype]:
    """NumPy dtype of each real graph input."""
    inits = {i.name for i in model.graph.initializer}
    return {i.name: np.dtype(_ONNX_TO_NUMPY.get(i.type.tensor_type.elem_type, np.float32))
            for i in model.graph.input if i.name not in inits}


def make_inputs(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype] | None = None,
                seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed random inputs: standard normal for floats, small non-negative ints otherwise.

    Args:
        shapes: ``{input name: shape}``.
        dtypes: ``{input name: dtype}`` (default float32).
        seed: RNG seed; the same seed gives the same arrays.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        dt = np.dtype((dtypes or {}).get(name, np.float32))
        if np.issubdtype(dt, np.floating):
            out[name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            out[name] = rng.integers(0, 2, shape).astype(dt)
        else:
            out[name] = rng.integers(0, 4, shape).astype(dt)
    return out


def ort_session(model: onnx.ModelProto | str, *, optimized: bool = False, threads: int | None = None):
    """An onnxruntime CPU session (graph optimisations off unless ``optimized``).

    Raises:
        UnsupportedOpError: onnxruntime cannot load the model.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    src = model if isinstance(model, str) else model.SerializeToString()
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UnsupportedOpError(f"onnxruntime cannot load the model: {str(exc).splitlines()[0][:200]}",
                                 "check the model with `python -m onnx.checker` or onnxruntime") from exc


def run_ort(model: onnx.ModelProto | str, inputs: dict[str, np.ndarray], *, optimized: bool = False) -> list[np.ndarray]:
    """Run ``model`` in onnxruntime and return its outputs in graph order."""
    return ort_session(model, optimized=optimized).run(None, inputs)


@dataclass
class Comparison:
    """Result of comparing outputs to a reference.

    Attributes:
        max_abs_error: max |out - ref| over all outputs.
        max_abs_ref: max |ref| over all outputs.
        rtol: Relative factor of the tolerance.
        tolerance: ``rtol * max(1, max_abs_ref)``.
        top1_match: Whether argmax of the first output agrees per batch row (None if not a vector).
        passed: ``max_abs_error <= tolerance`` and top-1 agrees (when checked).
    """

    max_abs_error: float
    max_abs_ref: float
    rtol: float
    tolerance: float
    top1_match: bool | None
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def compare(outputs: list[np.ndarray], reference: list[np.ndarray], rtol: float = BUILD_RTOL,
            check_top1: bool = True) -> Comparison:
    """Compare outputs against a reference with tolerance ``rtol * max(1, max|ref|)``.

    Args:
        outputs: Outputs under test, in graph order.
        reference: Reference outputs, same order and shapes.
        rtol: 1e-5 for an exact pass, 1e-4 for a whole build.
        check_top1: Also require the same argmax on the first output's last axis.
    """
    if len(outputs) != len(reference):
        return Comparison(float("inf"), 0.0, rtol, 0.0, None, False)
    err, ref_max = 0.0, 0.0
    for o, r in zip(outputs, reference):
        o = np.asarray(o, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if o.shape != r.shape:
            return Comparison(float("inf"), float(np.abs(r).max(initial=0)), rtol, 0.0, None, False)
        if r.size:
            err = max(err, float(np.abs(o - r).max()))
            ref_max = max(ref_max, float(np.abs(r).max()))
    if np.isnan(err):
        err = float("inf")
    tol = rtol * max(1.0, ref_max)
    top1 = None
    if check_top1 and reference and np.asarray(reference[0]).ndim >= 1 and np.asarray(reference[0]).shape[-1] > 1:
        top1 = bool(np.array_equal(np.argmax(outputs[0], axis=-1), np.argmax(reference[0], axis=-1)))
    return Comparison(err, ref_max, rtol, tol, top1, bool(err <= tol and top1 is not False))
