"""Reference numerics: onnxruntime runs, fixed random inputs, tolerance checks.

The reference is onnxruntime's CPU provider with graph optimisations disabled
(``ORT_DISABLE_ALL``), so that ORT does not apply the same rewrite to the
reference that is being verified (``docs/design.md``, Conventions).

Tolerances (``docs/design.md``):

* an exact pass: max abs error <= 1e-5 * max(1, max|ref|);
* a whole build: max abs error <= 1e-4 * max(1, max|ref|), and the same top-1 where the
  output is a classifier's (rank 2, ``[N, classes]``), near-ties within the tolerance counting
  as agreement.

A build is verified on several input sets (:func:`verification_sets`): standard normal, the
model's real input range (its preprocessing of real pixel values, or the ``[0, 255]`` and
``[0, 1]`` ranges of image-like inputs), a large common offset (raw sensor or depth values:
``1000 + N(0, 1)``), and the user's own samples. A bug that only shows on some range (a
variance computed as E[x^2] - E[x]^2 cancels at offset 1000) fails the build.
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
    """NumPy dtype of each real graph input.

    Raises:
        UnsupportedOpError: an input that is not a numeric tensor (a string, a sequence, a map).
    """
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        kind = i.type.WhichOneof("value")
        elem = i.type.tensor_type.elem_type if kind == "tensor_type" else None
        if elem not in _ONNX_TO_NUMPY:
            what = (onnx.TensorProto.DataType.Name(elem).lower() + " tensor") if elem else (kind or "untyped value")
            article = "an" if what[0] in "aeiou" else "a"
            kinds = ", ".join(onnx.TensorProto.DataType.Name(t).lower() for t in _ONNX_TO_NUMPY)
            raise UnsupportedOpError(f"input '{i.name}' is {article} {what}; edgec compiles models whose inputs are "
                                     f"{kinds} tensors", "export the model with inputs of one of those types")
        out[i.name] = np.dtype(_ONNX_TO_NUMPY[elem])
    return out


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
            value = rng.standard_normal(shape)
        elif dt == np.bool_:
            value = rng.integers(0, 2, shape)
        else:
            value = rng.integers(0, 4, shape)
        out[name] = np.asarray(value, dtype=dt)  # a rank-0 input stays an array, not a NumPy scalar
    return out


#: Common offset of the large-offset verification set (raw depth or sensor values).
OFFSET = 1000.0


def _image_like(shape: tuple[int, ...]) -> bool:
    return len(shape) == 4 and (shape[1] in (1, 3) or shape[3] in (1, 3))


def verification_sets(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype] | None = None,
                      seed: int = 0, preprocessing: dict | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Named input sets for verifying a build, each ``{input name: array}``.

    * ``normal``: N(0, 1) (the same arrays as :func:`make_inputs`);
    * ``image``: with the zoo's preprocessing, real pixel values in [0, 255] scaled and
      normalised as the model expects; else, for image-like float inputs (rank 4, 1 or 3
      channels), ``pixels_0_255`` (U[0, 255]) and ``unit_0_1`` (U[0, 1]);
    * ``offset``: ``1000 + N(0, 1)`` (a large common offset, as raw depth or sensor values).

    Integer and boolean inputs are the same small values in every set; an 8-bit image-like input (rank 4,
    int8 or uint8: a quantized model's input codes) also gets ``codes``, uniform over its dtype's whole range.
    """
    base = make_inputs(shapes, dtypes, seed)
    rng = np.random.default_rng(seed + 7)
    floats = {k: v for k, v in base.items() if np.issubdtype(v.dtype, np.floating)}
    out = {"normal": base}
    codes = {k for k, v in base.items() if v.dtype in (np.int8, np.uint8) and v.ndim == 4}
    if codes:
        out["codes"] = {k: (rng.integers(np.iinfo(v.dtype).min, np.iinfo(v.dtype).max + 1, v.shape).astype(v.dtype)
                            if k in codes else v) for k, v in base.items()}
    if not floats:
        return out

    def with_floats(make) -> dict[str, np.ndarray]:
        return {k: (np.asarray(make(v), dtype=v.dtype) if k in floats else v) for k, v in base.items()}

    if preprocessing:
        scale = float(preprocessing.get("scale", 1 / 255))
        mean = np.asarray(preprocessing.get("mean", [0, 0, 0]), np.float64).reshape(1, -1, 1, 1)
        std = np.asarray(preprocessing.get("std", [1, 1, 1]), np.float64).reshape(1, -1, 1, 1)
        out["image"] = with_floats(lambda v: (rng.integers(0, 256, v.shape) * scale - mean) / std)
    elif any(_image_like(v.shape) for v in floats.values()):
        out["pixels_0_255"] = with_floats(lambda v: rng.uniform(0, 255, v.shape))
        out["unit_0_1"] = with_floats(lambda v: rng.uniform(0, 1, v.shape))
    out["offset"] = with_floats(lambda v: OFFSET + rng.standard_normal(v.shape))
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
        raise UnsupportedOpError(f"onnxruntime cannot load the model: {ort_reason(exc)}",
                                 "fix the model as the reason says (onnxruntime is the reference edgec checks "
                                 "against)") from exc


def ort_reason(exc: Exception) -> str:
    """onnxruntime's reason for refusing a model, in one line: the error prefix, C++ source locations
    and function signatures dropped, the reason itself kept whole (``size_ % 2 == 1 was false`` becomes
    ``check failed: size_ % 2 == 1``)."""
    import re

    text = " ".join(str(exc).split())
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", text)
    parts = re.split(r"/\S+\.(?:h|hpp|cc|cpp|c):\d+\s*", text, maxsplit=1)
    head, tail = (parts[0], parts[1]) if len(parts) == 2 else ("", text)
    name, tail = _drop_signature(tail)
    tail = re.sub(r"^(.*?) was false\.?", r"check failed: \1", tail)
    if name:
        tail = f"{name}: {tail}"
    head = re.sub(r"(Exception during initialization|failed)\s*:?\s*$", r"\1:", head.strip())
    return " ".join(f"{head} {tail}".split()).strip(" :")[:500]


def _drop_signature(text: str) -> tuple[str | None, str]:
    """Drop a leading C++ function signature (``void ns::f(args) [with T = float]``).

    Returns:
        ``(operator name when the function is a kernel's constructor, else None; the rest)``.
    """
    import re

    m = re.match(r"[\w:<>,~*&\s]*?::(~?\w+)(?:<[^()]*>)?\s*\(", text)
    if not m:
        return None, text
    depth = 0
    for j in range(m.end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            rest = re.sub(r"^\s*(?:const\s*)?(?:\[with [^\]]*\])?\s*", "", text[j + 1:])
            name = m.group(1)
            # a kernel's constructor names the operator (onnxruntime::LRN<T>::LRN -> LRN)
            return (name if name[:1].isupper() else None), rest
    return None, text


def run_ort(model: onnx.ModelProto | str, inputs: dict[str, np.ndarray], *, optimized: bool = False) -> list[np.ndarray]:
    """Run ``model`` in onnxruntime and return its outputs in graph order.

    Raises:
        UnsupportedOpError: onnxruntime cannot load or run the model (see :func:`run_session`).
    """
    return run_session(ort_session(model, optimized=optimized), inputs)


def run_session(session, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``session.run`` with onnxruntime's refusal of the model's own content (a negative Resize scale, an
    index out of range, shapes that do not broadcast) as one line, not an internal error.

    Raises:
        UnsupportedOpError: onnxruntime failed to run the model on these inputs.
    """
    try:
        return session.run(None, inputs)
    except Exception as exc:
        if type(exc).__module__.startswith("onnxruntime"):
            raise UnsupportedOpError(f"onnxruntime cannot run the model: {ort_reason(exc)}",
                                     "check the values given with --input-value, or fix the model as the reason "
                                     "says (onnxruntime is the reference edgec checks against)") from exc
        raise


@dataclass
class Comparison:
    """Result of comparing outputs to a reference.

    Attributes:
        max_abs_error: max |out - ref| over all outputs, where the reference is finite (inf when an output
            is NaN or inf there, or the shapes differ).
        max_abs_ref: max |ref| over the reference's finite values.
        rtol: Relative factor of the tolerance.
        tolerance: ``max(rtol * max(1, max_abs_ref), floor)``.
        top1_match: Whether the first output's top-1 class agrees in every row, near-ties within the
            tolerance counting as agreement (None unless the output is a classifier's).
        passed: ``max_abs_error <= tolerance`` and top-1 agrees (when checked); None when the reference
            is not finite (nothing to compare with: ``reason`` says so).
        top1_near_ties: Rows whose top-1 differed only within the tolerance.
        reason: Why it failed or was skipped, when not by the size of the error alone (NaN or inf in the
            output, a shape or output count that differs, a reference with nothing finite); else None.
        note: How much of the reference was not finite, where the rest was compared; else None.
        output: Index of the output the figures are of (the worst relative to its tolerance).
    """

    max_abs_error: float
    max_abs_ref: float
    rtol: float
    tolerance: float
    top1_match: bool | None
    passed: bool | None
    top1_near_ties: int = 0
    reason: str | None = None
    note: str | None = None
    output: int = 0

    @property
    def numeric(self) -> bool:
        """Whether only the size of the error (or the top-1) decided: shapes agree, everything is finite."""
        return self.reason is None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("reason", "note"):
            if d[key] is None:
                del d[key]
        return d


def finite_kinds(a: np.ndarray) -> str:
    """``"3 NaN, 2 inf of 100 values"`` for the non-finite values of ``a`` (empty when all are finite)."""
    nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
    kinds = [f"{n} {k}" for n, k in ((nan, "NaN"), (inf, "inf")) if n]
    return f"{', '.join(kinds)} of {a.size} values" if kinds else ""


def is_classifier_output(ref: np.ndarray) -> bool:
    """A classifier's output: rank 2, ``[N, classes]`` with more than one class."""
    return ref.ndim == 2 and ref.shape[1] > 1


def top1_agreement(out: np.ndarray, ref: np.ndarray, tolerance: float) -> tuple[bool, int]:
    """Whether every row's top-1 class agrees, counting near-ties as agreement.

    A row agrees when both pick the same class, or when the class ``out`` picks scores within
    ``tolerance`` of the best reference score (a tie the rounding may break either way).

    Returns:
        ``(all rows agree, rows that agreed only as near-ties)``.
    """
    mine, best = np.argmax(out, axis=-1), np.argmax(ref, axis=-1)
    ties = 0
    for row, (a, b) in enumerate(zip(mine, best)):
        if a != b:
            if ref[row, b] - ref[row, a] > tolerance:
                return False, ties
            ties += 1
    return True, ties


def compare(outputs: list[np.ndarray], reference: list[np.ndarray], rtol: float = BUILD_RTOL,
            check_top1: bool = True, floor: float | list[float] = 0.0) -> Comparison:
    """Compare outputs against a reference, each output within ``max(rtol * max(1, max|ref|), floor)`` of its
    own reference (a large output does not widen a small one's tolerance).

    Every comparison in edgec goes through here. Non-finite values never pass and never widen a tolerance:

    * an output NaN or inf where the reference is finite fails (``max_abs_error`` inf, with the count);
    * where the reference itself is NaN or inf, the output must be too (NaN or inf), and the finite rest is
      compared as usual (``note`` says how much of the reference was not finite);
    * an output whose reference holds no finite value is not compared; when no output has one, ``passed``
      is None with the reason (there is nothing to compare with).

    The figures reported (``max_abs_error``, ``max_abs_ref``, ``tolerance``) are the worst output's (the
    largest error relative to its tolerance).

    Args:
        outputs: Outputs under test, in graph order.
        reference: Reference outputs, same order and shapes.
        rtol: 1e-5 for an exact pass, 1e-4 for a whole build.
        check_top1: Also require the same top-1 class, where the first output is a classifier's.
        floor: The least tolerance, one for all outputs or one per output (the float32 noise limits of
            :mod:`edgec.frontend.float64`).
    """
    if len(outputs) != len(reference):
        return Comparison(float("inf"), 0.0, rtol, 0.0, None, False,
                          reason=f"{len(outputs)} outputs where the reference has {len(reference)}")
    floors = list(floor) if isinstance(floor, (list, tuple)) else [floor] * len(outputs)
    rows, bad_out, bad_ref, unmatched = [], [], [], []
    for i, (o, r) in enumerate(zip(outputs, reference)):
        o = np.asarray(o, dtype=np.float64)
        r = np.asarray(r, dtype=np.float64)
        if o.shape != r.shape:
            return Comparison(float("inf"), float(np.abs(r[np.isfinite(r)]).max(initial=0)), rtol, 0.0, None, False,
                              reason=f"output {i} has shape {tuple(o.shape)} where the reference has {tuple(r.shape)}")
        finite = np.isfinite(r)
        if not finite.all():
            bad_ref.append(f"output {i}: {finite_kinds(r)}")
            if np.isfinite(o[~finite]).any():
                unmatched.append(f"output {i}: {int(np.isfinite(o[~finite]).sum())} finite values")
            if not finite.any():
                continue  # nothing finite to compare this output with
        diff = np.abs(o[finite] - r[finite])
        if not np.isfinite(diff).all():
            bad_out.append(f"output {i}: {finite_kinds(o[finite])}")
        err = float("inf") if not np.isfinite(diff).all() else float(diff.max(initial=0))
        ref_max = float(np.abs(r[finite]).max(initial=0))
        rows.append((err, ref_max, max(rtol * max(1.0, ref_max), floors[i]), i))
    note = f"the reference is not finite ({'; '.join(bad_ref)})" if bad_ref else None
    if not rows:
        return Comparison(0.0, 0.0, rtol, 0.0, None, None, reason=note)
    err, ref_max, tol, worst = max(rows, key=lambda t: t[0] / max(t[2], 1e-300))
    if bad_out:
        return Comparison(float("inf"), ref_max, rtol, tol, None, False, note=note, output=worst,
                          reason=f"NaN or inf where the reference is finite ({'; '.join(bad_out)})")
    if unmatched:
        return Comparison(err, ref_max, rtol, tol, None, False, note=note, output=worst,
                          reason=f"finite where the reference is NaN or inf ({'; '.join(unmatched)})")
    top1, ties = None, 0
    first = np.asarray(reference[0])
    if check_top1 and reference and is_classifier_output(first) and np.isfinite(first).all():
        top1, ties = top1_agreement(np.asarray(outputs[0], np.float64), first.astype(np.float64), rows[0][2])
    passed = all(e <= t for e, _, t, _ in rows) and top1 is not False
    return Comparison(err, ref_max, rtol, tol, top1, bool(passed), ties, note=note, output=worst)
