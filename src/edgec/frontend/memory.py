"""Analytic activation memory of an ONNX graph: the live-tensor curve and its peak.

The schedule is the graph's node order (ONNX requires a topological order). While node
``i`` runs, a tensor is live when it has been produced (graph inputs from the start) and
is still needed by node ``i`` or a later node (graph outputs to the end). The figure at
step ``i`` is the sum of the bytes of the live activation tensors; weights (initializers,
``Constant`` outputs and what is computed from constants alone) are not activations and
are not counted, nor are integer tensors (shape arithmetic).

In-place execution is assumed where it is legal, as in TinyEngine and the MCUNet papers
(Lin et al., "MCUNet: Tiny Deep Learning on IoT Devices", NeurIPS 2020, section 3.3;
"MCUNetV2", NeurIPS 2021, section 2):

* a depthwise convolution, an element-wise operator, or a view (``Reshape``, ``Flatten``...)
  whose input dies at that node writes its output over the input: the step counts
  ``max(in, out)``, not ``in + out``;
* a ``Concat`` whose inputs all die at it is assembled in place: its inputs were written
  into slices of its output, so the step counts the output once;
* a ``Conv`` whose output is only added to a residual that dies at that ``Add`` accumulates
  into the residual's buffer (TinyEngine fuses the residual add into the convolution).

Graph inputs are not counted by default (``count_inputs``): the input image sits in its own
buffer, as in the papers' figures and in TVM's planned arena.

With ``element_bytes=1`` every activation counts one byte per element: the "int8
analytic" figure that compares with the papers' peak SRAM (MobileNetV2 at 224x224:
1372 kB, kB = 1024 bytes, MCUNetV2 Figure 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import onnx

from edgec.frontend.analysis import static_shapes

#: Operators whose output may overwrite an input that dies at them (same or fewer elements).
INPLACE_OPS = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu", "Elu", "Selu", "Gelu",
    "Erf", "Exp", "Neg", "Abs", "Sqrt", "Softplus", "Mish", "Add", "Sub", "Mul", "Div", "BatchNormalization",
    "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Cast",
})
_FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                          onnx.TensorProto.BFLOAT16})
KIB = 1024


@dataclass
class MemoryProfile:
    """Live activation bytes over a graph's schedule.

    Attributes:
        element_bytes: Bytes per activation element used (None: each tensor's own dtype size).
        peak_activation_bytes: Maximum over the schedule of the live activation bytes (bytes).
        peak_node: Name (or first output) of the node at the peak.
        peak_index: Its index in the schedule.
        largest_tensor: ``(name, bytes)`` of the largest activation tensor.
        curve: One entry per node: ``{"node", "op", "live_bytes"}``, in schedule order.
    """

    element_bytes: int | None
    peak_activation_bytes: int
    peak_node: str
    peak_index: int
    largest_tensor: tuple[str, int]
    curve: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self, with_curve: bool = True) -> dict[str, Any]:
        d = {"element_bytes": self.element_bytes, "peak_activation_bytes": self.peak_activation_bytes,
             "peak_kib": round(self.peak_activation_bytes / KIB, 1), "peak_node": self.peak_node,
             "peak_index": self.peak_index,
             "largest_tensor": {"name": self.largest_tensor[0], "bytes": self.largest_tensor[1]}}
        if with_curve:
            d["curve"] = self.curve
        return d


def value_dtypes(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type (``onnx.TensorProto`` enum) of every value shape inference types."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.value_info) + list(g.output)}
    return types


def constant_values(model: onnx.ModelProto) -> set[str]:
    """Initializers, Constant outputs and values computed from constants alone."""
    const = {i.name for i in model.graph.initializer} - {i.name for i in model.graph.input}
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all(x in const or not x for x in node.input)):
            const.update(o for o in node.output if o)
    return const


def _is_depthwise(node: onnx.NodeProto, shapes: dict[str, tuple[int, ...]]) -> bool:
    if node.op_type != "Conv":
        return False
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    w = shapes.get(node.input[1])
    return group > 1 and w is not None and w[1] == 1


def activation_memory(model: onnx.ModelProto, *, element_bytes: int | None = None, inplace: bool = True,
                      count_inputs: bool = False,
                      shapes: dict[str, tuple[int, ...]] | None = None,
                      dtypes: dict[str, int] | None = None) -> MemoryProfile:
    """The live activation bytes at each node of ``model`` and their peak.

    Args:
        model: ONNX with static shapes; nodes in schedule (topological) order.
        element_bytes: Bytes per element for every activation (1: the int8-analytic figure);
            None uses each tensor's dtype (4 for fp32).
        inplace: Assume in-place depthwise, element-wise, view and concat execution where legal
            (see the module docstring).
        shapes: Known shapes of every tensor (skips ONNX shape inference, e.g. for a patched graph).
        dtypes: ONNX element types of the tensors, with ``shapes`` (default: fp32 for all).
        count_inputs: Count the graph inputs (the image). False (the default) gives the activation
            arena of a runner whose input lives in its own buffer (a camera frame buffer; TVM's
            planned arena holds no function parameters): the convention of MCUNetV2's figures,
            whose 172 kB patch-based MobileNetV2 peak cannot hold the 147 kB input image.

    Returns:
        A :class:`MemoryProfile` (bytes).

    Raises:
        ValueError: an activation's shape is unknown (run the frontend's shape fixing first).
    """
    if shapes is None:
        shapes = static_shapes(model)
        dtypes = value_dtypes(model)
    dtypes = dtypes or {}
    const = constant_values(model)
    nodes = list(model.graph.node)
    end = len(nodes)

    def size(name: str) -> int:
        if name in const or not name:
            return 0
        dtype = dtypes.get(name, onnx.TensorProto.FLOAT)
        if dtype not in _FLOAT_TYPES:
            return 0
        shape = shapes.get(name)
        if shape is None:
            raise ValueError(f"the shape of tensor {name!r} is not static (it depends on the data, as after NonZero "
                             "or Unique, or an input shape is not fixed)")
        per = element_bytes or onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize
        return math.prod(shape) * per

    born: dict[str, int] = {v.name: -1 for v in model.graph.input}
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for x in node.input:
            if x:
                last[x] = i
        for o in node.output:
            if o:
                born[o] = i
                last.setdefault(o, i)
    for v in model.graph.output:
        last[v.name] = end
    sizes = {t: size(t) for t in born}
    if not count_inputs:
        sizes.update({v.name: 0 for v in model.graph.input})
    largest = max(sizes.items(), key=lambda kv: kv[1], default=("", 0))

    # Tensor t occupies steps max(born, 0) .. last use (difference array over the steps).
    delta = [0] * (end + 2)
    for t, b in born.items():
        if sizes[t]:
            delta[max(b, 0)] += sizes[t]
            delta[last.get(t, max(b, 0)) + 1] -= sizes[t]
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for x in node.input:
            consumers.setdefault(x, []).append(node)
    index = {id(n): i for i, n in enumerate(nodes)}
    curve, live = [], 0
    for i, node in enumerate(nodes):
        live += delta[i]
        saved = 0
        if inplace:
            saved = (_inplace_saving(node, i, sizes, last, shapes)
                     or _residual_target(node, i, sizes, born, last, consumers, index))
        curve.append({"node": node.name or node.output[0], "op": node.op_type, "live_bytes": live - saved})
    if not curve:
        total = sum(sizes.values())
        return MemoryProfile(element_bytes, total, "", 0, largest, [])
    peak_index = max(range(len(curve)), key=lambda k: curve[k]["live_bytes"])
    return MemoryProfile(element_bytes, curve[peak_index]["live_bytes"], curve[peak_index]["node"], peak_index,
                         largest, curve)


def _residual_target(node: onnx.NodeProto, i: int, sizes: dict[str, int], born: dict[str, int],
                     last: dict[str, int], consumers: dict[str, list[onnx.NodeProto]], index: dict[int, int]) -> int:
    """Bytes a Conv saves by accumulating into the residual it is added to (a fused residual Add).

    Legal when the Conv's output feeds only an ``Add`` whose other operand exists already, dies at
    that Add and has the same size: the fused kernel writes ``conv + x`` over ``x`` element by element.
    """
    out = node.output[0]
    users = consumers.get(out, [])
    if node.op_type != "Conv" or len(users) != 1 or users[0].op_type != "Add" or last.get(out) is None:
        return 0
    add = users[0]
    others = [x for x in add.input if x != out]
    if len(others) != 1 or sizes.get(others[0], 0) != sizes.get(out, 0) or born.get(others[0], i) >= i:
        return 0
    return sizes[out] if last.get(others[0]) == index[id(add)] else 0


def _inplace_saving(node: onnx.NodeProto, i: int, sizes: dict[str, int], last: dict[str, int],
                    shapes: dict[str, tuple[int, ...]]) -> int:
    """Bytes node ``i`` does not need because it writes over inputs that die at it."""
    dying = [x for x in node.input if x and sizes.get(x) and last.get(x) == i]
    if not dying or not node.output:
        return 0
    out = sizes.get(node.output[0], 0)
    if node.op_type == "Concat":
        live_inputs = [x for x in node.input if x and sizes.get(x)]
        return sum(sizes[x] for x in live_inputs) if len(dying) == len(live_inputs) else 0
    if node.op_type in INPLACE_OPS or _is_depthwise(node, shapes):
        candidates = dying if node.op_type != "Conv" else [x for x in dying if x == node.input[0]]
        return min(max((sizes[x] for x in candidates), default=0), out)
    return 0
