"""Small helpers over onnx-ir shared by the passes: constants, attributes, uses, new initializers."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import onnx_ir as ir

_counter = itertools.count()


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The constant content of ``value`` (initializer or Constant output), else None.

    An initializer that is also a graph input can be overridden at run time, so
    it is not a constant.
    """
    if value is None or value.is_graph_input():
        return None
    tensor = ir.convenience.get_const_tensor(value)
    return None if tensor is None else tensor.numpy()


def attr(node: ir.Node, name: str, default: Any = None) -> Any:
    """A node attribute's Python value, or ``default``."""
    a = node.attributes.get(name)
    return default if a is None else a.value


def only_use(value: ir.Value) -> ir.Node | None:
    """The single consumer of ``value`` when it has exactly one use and is not a graph output."""
    uses = list(value.uses())
    if len(uses) != 1 or value.is_graph_output():
        return None
    return uses[0].node


def exclusive_weight(value: ir.Value | None) -> np.ndarray | None:
    """A constant used by exactly one node input (safe to replace), else None.

    Folding into a weight shared by several nodes would change the other users,
    so passes refuse it.
    """
    if value is None or len(list(value.uses())) != 1:
        return None
    return const_array(value)


def new_constant(graph: ir.Graph, array: np.ndarray, hint: str) -> ir.Value:
    """Register ``array`` as a new initializer of ``graph`` and return its value."""
    name = f"{hint}__edgec{next(_counter)}"
    while name in graph.initializers:
        name = f"{hint}__edgec{next(_counter)}"
    tensor = ir.tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype),
                     const_value=tensor)
    graph.register_initializer(value)
    return value


def static_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The fully known shape of ``value``, else None."""
    if value is None or value.shape is None:
        return None
    dims = []
    for d in value.shape:
        if not isinstance(d, int):
            return None
        dims.append(d)
    return tuple(dims)


def conv_pads(node: ir.Node, spatial: int) -> list[int] | None:
    """Explicit pads of a Conv (begin..., end...), None when auto_pad makes them implicit."""
    auto = attr(node, "auto_pad", "NOTSET")
    if auto not in ("NOTSET", "VALID"):
        return None
    if auto == "VALID":
        return [0] * (2 * spatial)
    return list(attr(node, "pads", [0] * (2 * spatial)))


def conv_attrs(node: ir.Node, spatial: int) -> dict[str, Any]:
    """Stride, dilation and group of a Conv, with defaults filled in."""
    return {"strides": tuple(attr(node, "strides", [1] * spatial)),
            "dilations": tuple(attr(node, "dilations", [1] * spatial)),
            "group": int(attr(node, "group", 1))}


def replace_output(old: ir.Value, new: ir.Value) -> None:
    """Make every user of ``old`` use ``new``; a graph output keeps its name."""
    name, was_output = old.name, old.is_graph_output()
    old.replace_all_uses_with(new, replace_graph_outputs=True)
    if was_output:
        old.name = f"{name}__replaced{next(_counter)}"
        new.name = name
    if new.shape is None and old.shape is not None:
        new.shape = old.shape
    if new.type is None and old.type is not None:
        new.type = old.type


def batchnorm_affine(node: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scale, shift)`` in float64 of an inference BatchNormalization: y = scale*x + shift per channel.

    scale = gamma / sqrt(var + eps), shift = beta - mean * scale. None when a
    parameter is not constant or the node is in training mode.
    """
    if node.op_type != "BatchNormalization" or len(node.outputs) != 1 and any(
            o.uses() for o in node.outputs[1:]):
        return None
    if attr(node, "training_mode", 0):
        return None
    params = [const_array(v) for v in node.inputs[1:5]]
    if any(p is None for p in params):
        return None
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    eps = float(attr(node, "epsilon", 1e-5))
    scale = gamma / np.sqrt(var + eps)
    return scale, beta - mean * scale
