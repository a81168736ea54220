"""Import normalisation: bring a third-party ONNX graph to the forms the compiler handles exactly.

Run before simplification, on every model (:func:`normalize`); each rewrite keeps the
function (the frontend's parity check compares the result with the source in onnxruntime):

* **initializers listed as inputs** (IR < 4 files) become constants -- they are weights, not
  inputs the user feeds;
* **old opsets** (below 13) are converted to opset 17 with onnx's version converter.
  ``Upsample`` (opset 7/9) and ``Resize``-10 become ``Resize`` with the ``asymmetric``
  coordinate transform and ``floor`` rounding they are defined with (the converter leaves
  Resize's defaults, ``half_pixel``/``round_prefer_floor``, which differ at non-integer scales);
* the variadic **Sum** becomes a chain of ``Add`` (TVM's layout conversion has no rule for it);
* a spatial **Resize** whose given scale is not ``output size / input size`` (a non-integer
  scale, 2.5 on 5 pixels gives 12), or with a coordinate transform or antialiasing TVM lacks
  (``half_pixel_symmetric``), or a ``tf_crop_and_resize`` crop, becomes per-axis gathers and weighted sums: TVM's ``resize2d``
  derives its coordinate transform from the sizes, the ONNX spec from the given scale. The weights are onnxruntime's own: its Resize applied, one axis at a time, to an
  identity matrix gives the interpolation matrix ``A`` (out x in) for any mode, rounding and
  coordinate transform; ``y = sum_k w_k * x[idx_k]`` along the axis, with at most four taps (cubic).
* the **normalisation family** -- MeanVarianceNormalization, InstanceNormalization,
  LayerNormalization, GroupNormalization -- is written out in a numerically stable form: the
  data is shifted by its first element along the reduced axes before a two-pass mean and
  variance, ``d = x - x[first]``, ``m = mean(d)``, ``v = mean((d - m)^2)``. TVM's operators
  compute the variance as E[x^2] - E[x]^2, which cancels catastrophically under a large
  common offset (raw depth or sensor values: 1000 +- 1 gives errors of order 1).
  Shifting by a sample is the classic remedy (Chan, Golub and LeVeque, "Algorithms for
  computing the sample variance", The American Statistician 37(3), 1983, section 3).
  A LayerNormalization whose training-mode statistics (``Mean``, ``InvStdDev``) are used gets them
  written out too (``x[first] + m`` and ``1 / sqrt(v + eps)``): TVM's operator does not compute them.
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import onnx
from onnx import helper, numpy_helper

log = logging.getLogger(__name__)

#: Models below this opset (default domain) are converted to :data:`TARGET_OPSET`.
MIN_OPSET = 13
TARGET_OPSET = 17

_NORMS = ("MeanVarianceNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization")


def default_opset(model: onnx.ModelProto) -> int:
    """The model's opset of the default ONNX domain."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def normalize(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Apply every import normalisation that fires.

    Args:
        model: A checked ONNX model.

    Returns:
        ``(model, applied)``; ``applied`` says in words what changed (for the report). The
        input is not modified.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    applied = []
    n = _initializers_as_constants(out)
    if n:
        applied.append(f"{n} initializers listed as graph inputs treated as constants")
    opset = default_opset(out)
    if opset < MIN_OPSET:
        converted = _upgrade(out)
        if converted is not None:
            out = converted
            applied.append(f"opset {opset} converted to {TARGET_OPSET} (onnx version converter)")
    n = _sum_to_add(out)
    if n:
        applied.append(f"{n} variadic Sum rewritten as Add chains")
    n = _resize_to_gathers(out)
    if n:
        applied.append(f"{n} Resize rewritten as gathers and weighted sums with onnxruntime's interpolation "
                       "weights (a scale other than output/input size, or a transform TVM lacks)")
    n = _space_to_depth_crd(out)
    if n:
        applied.append(f"{n} SpaceToDepth in CRD mode written as reshape, transpose, reshape (TVM reads only DCR)")
    n = _stable_normalizations(out)
    if n:
        applied.append(f"{n} normalisation ops written out in a shifted two-pass form (stable under large offsets)")
    return out, applied


def _initializers_as_constants(model: onnx.ModelProto) -> int:
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    dropped = len(model.graph.input) - len(keep)
    if dropped:
        del model.graph.input[:]
        model.graph.input.extend(keep)
        model.ir_version = max(model.ir_version, 4)
    return dropped


def _upgrade(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """The model at :data:`TARGET_OPSET`, with Upsample/Resize-10 semantics kept; None if onnx cannot convert it."""
    from onnx import version_converter

    opset = default_opset(model)
    old_resamples = {n.output[0] for n in model.graph.node
                     if n.op_type == "Upsample" or (n.op_type == "Resize" and opset < 11)}
    try:
        converted = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as exc:  # noqa: BLE001  the converter raises many kinds; the importer says what fails
        log.warning("onnx's version converter cannot bring opset %d to %d: %s", opset, TARGET_OPSET,
                    str(exc).splitlines()[0][:200])
        return None
    for node in converted.graph.node:
        if node.op_type == "Resize" and node.output[0] in old_resamples:
            attrs = {a.name: a for a in node.attribute}
            for name in ("coordinate_transformation_mode", "nearest_mode"):
                if name in attrs:
                    node.attribute.remove(attrs[name])
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
            node.attribute.append(helper.make_attribute("nearest_mode", "floor"))
    converted.ir_version = max(converted.ir_version, 8)
    return converted


def _replace(model: onnx.ModelProto, index: int, nodes: list[onnx.NodeProto]) -> None:
    graph_nodes = list(model.graph.node)
    graph_nodes[index:index + 1] = nodes
    del model.graph.node[:]
    model.graph.node.extend(graph_nodes)


def _sum_to_add(model: onnx.ModelProto) -> int:
    count = 0
    ids = itertools.count()
    i = 0
    while i < len(model.graph.node):
        node = model.graph.node[i]
        if node.op_type != "Sum" or node.domain not in ("", "ai.onnx"):
            i += 1
            continue
        ins = [x for x in node.input if x]
        if len(ins) == 1:
            new = [helper.make_node("Identity", ins, [node.output[0]], name=node.name)]
        else:
            new, acc = [], ins[0]
            for j, x in enumerate(ins[1:]):
                last = j == len(ins) - 2
                out = node.output[0] if last else f"{node.output[0]}__sum{next(ids)}"
                new.append(helper.make_node("Add", [acc, x], [out], name=f"{node.name or 'sum'}_add{j}"))
                acc = out
        _replace(model, i, new)
        i += len(new)
        count += 1
    return count


class _Builder:
    """Emits nodes and constants for one rewritten node, with unique names."""

    _ids = itertools.count()

    def __init__(self, model: onnx.ModelProto, prefix: str) -> None:
        self.model = model
        self.prefix = f"{prefix}__stable{next(self._ids)}"
        self.nodes: list[onnx.NodeProto] = []
        self.opset = default_opset(model)
        self._n = itertools.count()

    def name(self, what: str) -> str:
        return f"{self.prefix}_{what}{next(self._n)}"

    def const(self, array: np.ndarray, what: str) -> str:
        name = self.name(what)
        self.model.graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def mean(self, x: str, axes: list[int]) -> str:
        if self.opset >= 18:
            return self.op("ReduceMean", [x, self.const(np.array(axes, np.int64), "axes")], keepdims=1)
        return self.op("ReduceMean", [x], axes=axes, keepdims=1)

    def normalized(self, x: str, axes: list[int], eps: float, eps_inside_sqrt: bool, dtype) -> str:
        """``(x - mean) / sqrt(var + eps)`` (or ``/ (sqrt(var) + eps)``) over ``axes``, shifted two-pass."""
        return self.normalized_parts(x, axes, eps, eps_inside_sqrt, dtype)[0]

    def normalized_parts(self, x: str, axes: list[int], eps: float, eps_inside_sqrt: bool,
                         dtype) -> tuple[str, str, str]:
        """:meth:`normalized`, with the mean of ``x`` and the divisor: ``(normalized, mean, std)``."""
        first = self.op("Slice", [x, self.const(np.zeros(len(axes), np.int64), "starts"),
                                  self.const(np.ones(len(axes), np.int64), "ends"),
                                  self.const(np.array(axes, np.int64), "axes")])
        shifted = self.op("Sub", [x, first])
        shifted_mean = self.mean(shifted, axes)
        centred = self.op("Sub", [shifted, shifted_mean])
        var = self.mean(self.op("Mul", [centred, centred]), axes)
        eps_c = self.const(np.array(eps, dtype), "eps")
        std = self.op("Sqrt", [self.op("Add", [var, eps_c])]) if eps_inside_sqrt else \
            self.op("Add", [self.op("Sqrt", [var]), eps_c])
        return self.op("Div", [centred, std]), self.op("Add", [first, shifted_mean]), std


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _space_to_depth_crd(model: onnx.ModelProto) -> int:
    """SpaceToDepth with ``mode="CRD"`` as reshape ``(N, C, H/b, b, W/b, b)``, transpose ``(0, 1, 3, 5, 2, 4)``,
    reshape ``(N, C*b*b, H/b, W/b)`` (the ONNX definition): TVM's importer ignores the mode and computes DCR
    (the ONNX backend suite's ``spacetodepth_crd_mode`` case was refused, 1.96 off). Needs a static H and W."""
    todo = [n for n in model.graph.node if n.op_type == "SpaceToDepth" and _attr(n, "mode", "DCR") == "CRD"]
    if not todo:
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    info = {v.name: v.type.tensor_type for v in list(inferred.graph.input) + list(inferred.graph.value_info)}
    count = 0
    for node in todo:
        tt = info.get(node.input[0])
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tt.shape.dim] if tt is not None else []
        if len(dims) != 4 or not dims[2] or not dims[3]:
            continue
        bs = int(_attr(node, "blocksize"))
        b = _Builder(model, node.name or node.output[0])
        split = b.op("Reshape", [node.input[0], b.const(np.array([0, 0, dims[2] // bs, bs, dims[3] // bs, bs],
                                                                  np.int64), "shape")])
        moved = b.op("Transpose", [split], perm=[0, 1, 3, 5, 2, 4])
        b.op("Reshape", [moved, b.const(np.array([0, -1, dims[2] // bs, dims[3] // bs], np.int64), "shape")],
             node.output[0])
        _replace(model, list(model.graph.node).index(node), b.nodes)
        count += 1
    return count


def _stable_normalizations(model: onnx.ModelProto) -> int:
    if not any(n.op_type in _NORMS for n in model.graph.node):
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    info = {v.name: v.type.tensor_type for v in list(inferred.graph.input) + list(inferred.graph.value_info)}
    count, i = 0, 0
    while i < len(model.graph.node):
        node = model.graph.node[i]
        tt = info.get(node.input[0]) if node.input else None
        if node.op_type not in _NORMS or node.domain not in ("", "ai.onnx") or tt is None \
                or not tt.HasField("shape") or tt.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE):
            i += 1
            continue
        rank = len(tt.shape.dim)
        dtype = np.float64 if tt.elem_type == onnx.TensorProto.DOUBLE else np.float32
        new = _rewrite(model, node, rank, dtype)
        if new is None:
            i += 1
            continue
        _replace(model, i, new)
        i += len(new)
        count += 1
    return count


def _rewrite(model: onnx.ModelProto, node: onnx.NodeProto, rank: int, dtype) -> list[onnx.NodeProto] | None:
    b = _Builder(model, node.name or node.output[0])
    x, y = node.input[0], node.output[0]
    op = node.op_type
    if op == "MeanVarianceNormalization":
        axes = [a % rank for a in _attr(node, "axes", [0, 2, 3])]
        b.op("Identity", [b.normalized(x, axes, 1e-9, False, dtype)], y)
    elif op == "InstanceNormalization":
        if rank < 3:
            return None
        norm = b.normalized(x, list(range(2, rank)), float(_attr(node, "epsilon", 1e-5)), True, dtype)
        shape = b.const(np.array([1, -1] + [1] * (rank - 2), np.int64), "shape")
        scaled = b.op("Mul", [norm, b.op("Reshape", [node.input[1], shape])])
        b.op("Add", [scaled, b.op("Reshape", [node.input[2], shape])], y)
    elif op == "LayerNormalization":
        axis = int(_attr(node, "axis", -1)) % rank
        norm, mean, std = b.normalized_parts(x, list(range(axis, rank)), float(_attr(node, "epsilon", 1e-5)), True,
                                             dtype)
        if len(node.output) > 1 and node.output[1]:  # the training-mode statistics, when the model uses them
            b.op("Identity", [mean], node.output[1])
        if len(node.output) > 2 and node.output[2]:
            b.op("Reciprocal", [std], node.output[2])
        scaled = b.op("Mul", [norm, node.input[1]])
        if len(node.input) > 2 and node.input[2]:
            b.op("Add", [scaled, node.input[2]], y)
        else:
            b.op("Identity", [scaled], y)
    elif op == "GroupNormalization":
        groups = int(_attr(node, "num_groups"))
        grouped = b.op("Reshape", [x, b.const(np.array([0, groups, -1], np.int64), "groups")])
        norm = b.normalized(grouped, [2], float(_attr(node, "epsilon", 1e-5)), True, dtype)
        per_group = default_opset(model) < 21  # opset 18: scale and bias per group; 21: per channel
        if per_group:
            shape = b.const(np.array([1, groups, 1], np.int64), "shape")
            scaled = b.op("Add", [b.op("Mul", [norm, b.op("Reshape", [node.input[1], shape])]),
                                  b.op("Reshape", [node.input[2], shape])])
            b.op("Reshape", [scaled, b.op("Shape", [x])], y)
        else:
            back = b.op("Reshape", [norm, b.op("Shape", [x])])
            shape = b.const(np.array([1, -1] + [1] * (rank - 2), np.int64), "shape")
            scaled = b.op("Mul", [back, b.op("Reshape", [node.input[1], shape])])
            b.op("Add", [scaled, b.op("Reshape", [node.input[2], shape])], y)
    else:
        return None
    return b.nodes


# --------------------------------------------------------------------------- Resize


#: Coordinate transforms TVM's resize2d implements (topi ``get_inx``); others are always rewritten.
TVM_RESIZE_TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize")


def _const_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(helper.get_attribute_value(node.attribute[0]))
    return None


def _resize_plan(model: onnx.ModelProto, node: onnx.NodeProto, shape: list[int]) -> dict | None:
    """Output sizes and scales of a 4-D spatial Resize whose scale is not out/in, else None."""
    if len(shape) != 4 or any(not isinstance(d, int) or d <= 0 for d in shape):
        return None
    if _attr(node, "axes") is not None or _attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return None
    ins = list(node.input) + [""] * 4
    scales = _const_value(model, ins[2]) if ins[2] else None
    if scales is None or scales.size != 4 or ins[3]:
        return None  # sizes given (scale = out/in, TVM's reading) or not constant
    scales = scales.astype(np.float64)
    if scales[0] != 1 or scales[1] != 1:
        return None
    out = [int(np.floor(d * float(np.float32(sc)))) for d, sc in zip(shape, scales)]
    transform = _attr(node, "coordinate_transformation_mode", "half_pixel")
    roi = None
    if transform == "tf_crop_and_resize":
        roi = _const_value(model, ins[1]) if ins[1] else None
        if roi is None or roi.size != 8:
            return None
        roi = roi.astype(np.float64)
    exact = all(o == d * sc for o, d, sc in zip(out, shape, scales))
    if exact and transform in TVM_RESIZE_TRANSFORMS and transform != "tf_crop_and_resize" \
            and not _attr(node, "antialias", 0):
        return None  # TVM's reading (scale = out/in) is the spec's, and TVM has the transform
    return {"scales": scales, "out": out, "roi": roi}


def _axis_matrix(node: onnx.NodeProto, size: int, scale: float, opset: int,
                 roi: tuple[float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's interpolation along one axis of ``node``'s resampling.

    Returns:
        ``(A, inside)``: the matrix (out x in) and, per output row, whether it samples inside the
        input (``tf_crop_and_resize`` fills the others with ``extrapolation_value``).
    """
    from edgec.frontend.reference import run_ort

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs["extrapolation_value"] = 0.0
    inits = [numpy_helper.from_array(np.array([1, 1, scale, 1], np.float32), "s")]
    if roi is not None:
        inits.append(numpy_helper.from_array(np.array([0, 0, roi[0], 0, 1, 1, roi[1], 1], np.float32), "roi"))
    n = helper.make_node("Resize", ["x", "roi" if roi is not None else "", "s"], ["y"], **attrs)
    g = helper.make_graph([n], "axis", [helper.make_tensor_value_info("x", 1, [1, 1, size, size])],
                          [helper.make_tensor_value_info("y", 1, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", max(opset, 13))])
    eye = np.eye(size, dtype=np.float32).reshape(1, 1, size, size)
    a = run_ort(m, {"x": eye})[0][0, 0].astype(np.float64)  # (out, in)
    ones = run_ort(m, {"x": np.ones_like(eye)})[0][0, 0, :, 0]
    return a, ones != 0


def _taps(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gather indices and weights (out x K) reproducing ``y = A x`` with the fewest taps per row."""
    k = max(1, int((np.abs(a) > 0).sum(axis=1).max()))
    idx = np.zeros((a.shape[0], k), np.int64)
    w = np.zeros((a.shape[0], k), np.float64)
    for row in range(a.shape[0]):
        nz = np.nonzero(a[row])[0]
        idx[row, :len(nz)] = nz
        w[row, :len(nz)] = a[row, nz]
    return idx, w


def _resize_to_gathers(model: onnx.ModelProto) -> int:
    if not any(n.op_type == "Resize" for n in model.graph.node):
        return 0
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.input) + list(inferred.graph.value_info)
              if v.type.tensor_type.HasField("shape")}
    count, i = 0, 0
    while i < len(model.graph.node):
        node = model.graph.node[i]
        plan = _resize_plan(model, node, shapes.get(node.input[0], [])) if node.op_type == "Resize" else None
        if plan is None:
            i += 1
            continue
        b = _Builder(model, node.name or node.output[0])
        x = node.input[0]
        shape = shapes[node.input[0]]
        inside = {2: np.ones(shape[2], bool), 3: np.ones(shape[3], bool)}
        for axis in (2, 3):
            if plan["out"][axis] == shape[axis] and plan["scales"][axis] == 1 and plan["roi"] is None:
                continue
            roi = None if plan["roi"] is None else (plan["roi"][axis], plan["roi"][4 + axis])
            a, inside[axis] = _axis_matrix(node, shape[axis], plan["scales"][axis], b.opset, roi)
            idx, w = _taps(a)
            terms = []
            for k in range(idx.shape[1]):
                gathered = b.op("Gather", [x, b.const(idx[:, k], "idx")], axis=axis)
                if np.all(w[:, k] == 1.0):
                    terms.append(gathered)
                    continue
                wk = w[:, k].astype(np.float32).reshape((-1, 1) if axis == 2 else (-1,))
                terms.append(b.op("Mul", [gathered, b.const(wk, "w")]))
            x = terms[0]
            for t in terms[1:]:
                x = b.op("Add", [x, t])
        fill = float(_attr(node, "extrapolation_value", 0.0))
        outside = ~np.outer(inside[2], inside[3])
        if plan["roi"] is not None and fill != 0.0 and outside.any():
            x = b.op("Add", [x, b.const((fill * outside).astype(np.float32), "extrapolated")])
        b.op("Identity", [x], node.output[0])
        _replace(model, i, b.nodes)
        i += len(b.nodes)
        count += 1
    return count
