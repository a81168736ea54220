"""Static figures of an ONNX graph: parameter count, MACs, node counts.

MACs (multiply-accumulates) are counted for the compute-bound operators only,
as is conventional in the model-efficiency literature (e.g. the MobileNet and
MCUNet papers): ``Conv``, ``ConvTranspose``, ``Gemm`` and ``MatMul``. Element-wise
operators, pooling and normalisation are not counted.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

MAC_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class GraphStats:
    """Size of an ONNX graph.

    Attributes:
        nodes: Number of nodes in the main graph.
        params: Number of scalar weights (initializers and Constant nodes of floating dtype).
        param_bytes: Bytes held by all initializers and Constant nodes.
        macs: Multiply-accumulates of one inference (Conv/ConvTranspose/Gemm/MatMul).
        op_counts: Node count per op type.
    """

    nodes: int
    params: int
    param_bytes: int
    macs: int
    op_counts: dict[str, int]

    def to_dict(self) -> dict:
        return {"nodes": self.nodes, "params": self.params, "param_bytes": self.param_bytes,
                "macs": self.macs, "op_counts": dict(self.op_counts)}


def _constants(model: onnx.ModelProto) -> list[np.ndarray]:
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    arrays.append(numpy_helper.to_array(attr.t))
    return arrays


def static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of every value whose shape is fully known."""
    inferred = shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    shapes: dict[str, tuple[int, ...]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if all(d >= 0 for d in dims):
            shapes[vi.name] = tuple(dims)
    for init in g.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def node_macs(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of one node, or 0 when it is not a MAC op or a shape is unknown."""
    if node.op_type not in MAC_OPS:
        return 0
    out = shapes.get(node.output[0])
    if out is None:
        return 0
    if node.op_type in ("Conv", "ConvTranspose"):
        w = shapes.get(node.input[1])
        if w is None:
            return 0
        if node.op_type == "Conv":
            # out (N, M, *spatial); weight (M, C/group, *k): each output takes C/group * prod(k) MACs
            return math.prod(out) * math.prod(w[1:])
        x = shapes.get(node.input[0])
        return 0 if x is None else math.prod(x) * math.prod(w[1:])
    a = shapes.get(node.input[0])
    if a is None or not a:
        return 0
    if node.op_type == "Gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[-1]
    else:
        k = a[-1]
    return math.prod(out) * k


def graph_stats(model: onnx.ModelProto) -> GraphStats:
    """Count nodes, parameters and MACs of ``model``.

    Args:
        model: An ONNX model; shapes are inferred here (static input shapes
            give complete MAC counts; unknown shapes count as 0 MACs).

    Returns:
        A :class:`GraphStats`.
    """
    arrays = _constants(model)
    params = sum(a.size for a in arrays if np.issubdtype(a.dtype, np.floating))
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if qdq:  # a quantized model: its parameters are the integer weights and biases, not the scales
        named = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        weights = {n.input[0] for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in named}
        qparams = {i for n in qdq for i in n.input[1:]}
        params = sum(a.size for k, a in named.items() if k in weights or (
            np.issubdtype(a.dtype, np.floating) and k not in qparams))
    param_bytes = sum(a.nbytes for a in arrays)
    shapes = static_shapes(model)
    macs = sum(node_macs(n, shapes) for n in model.graph.node)
    ops = Counter(n.op_type for n in model.graph.node)
    return GraphStats(len(model.graph.node), int(params), int(param_bytes), int(macs), dict(ops))
