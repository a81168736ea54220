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
            raise UnsupportedOpError(f"input '{i.name}' is a {what}; edgec compiles models with numeric tensor "
                                     "inputs only", "export the model with float or integer tensor inputs")
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
            out[name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            out[name] = rng.integers(0, 2, shape).astype(dt)
        else:
            out[name] = rng.integers(0, 4, shape).astype(dt)
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

    Integer and boolean inputs are the same small values in every set.
    """
    base = make_inputs(shapes, dtypes, seed)
    rng = np.random.default_rng(seed + 7)
    floats = {k: v for k, v in base.items() if np.issubdtype(v.dtype, np.floating)}
    out = {"normal": base}
    if not floats:
        return out

    def with_floats(make) -> dict[str, np.ndarray]:
        return {k: (make(v).astype(v.dtype) if k in floats else v) for k, v in base.items()}

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
    tail = _drop_signature(tail)
    tail = re.sub(r"^(.*?) was false\.?", r"check failed: \1", tail)
    head = re.sub(r"(Exception during initialization|failed)\s*:?\s*$", r"\1:", head.strip())
    return " ".join(f"{head} {tail}".split()).strip(" :")[:500]


def _drop_signature(text: str) -> str:
    """Drop a leading C++ function signature (``void ns::f(args) [with T = float]``)."""
    import re

    m = re.match(r"[\w:<>,~*&\s]*?::(~?\w+)(?:<[^()]*>)?\s*\(", text)
    if not m:
        return text
    depth = 0
    for j in range(m.end() - 1, len(text)):
        depth += {"(": 1, ")": -1}.get(text[j], 0)
        if depth == 0:
            rest = re.sub(r"^\s*(?:const\s*)?(?:\[with [^\]]*\])?\s*", "", text[j + 1:])
            name = m.group(1)
            # a kernel's constructor names the operator (onnxruntime::LRN<T>::LRN -> LRN)
            return f"{name}: {rest}" if name[:1].isupper() else rest
    return text
