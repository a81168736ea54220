"""Integer inputs and outputs for a QDQ int8 model, as a full-integer TFLite model has them.

onnxruntime's quantizer keeps a float32 graph input and output: a ``QuantizeLinear`` right after the input and a
``DequantizeLinear`` right before the output. On a microcontroller the float32 input alone is four times the
int8 image (588 KiB against 147 KiB at 224x224x3), and the application holds the image as bytes anyway.
:func:`integer_io` removes those two nodes: the input becomes the int8 codes the ``QuantizeLinear`` made, the
output the int8 codes the ``DequantizeLinear`` read, and the model's metadata records each one's ``scale`` and
``zero_point`` (the TFLite converter's ``inference_input_type=tf.int8`` does the same). The function on the codes
is unchanged: :func:`quantize_sets` makes the codes of float inputs with onnxruntime's own ``QuantizeLinear``, so
the integer model's outputs on them are, code for code, the float model's before its final ``DequantizeLinear``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Operators that only move values: the input's codes may pass through them before its ``QuantizeLinear``.
MOVEMENT_OPS = frozenset({"Slice", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})

#: The model metadata key holding ``{"inputs": {name: {"scale", "zero_point"}}, "outputs": {...}}``.
METADATA_KEY = "edgec.int8_io"


def _per_tensor(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> tuple[float, int] | None:
    """``(scale, zero_point)`` of a Q/DQ node with constant per-tensor int8 parameters, else None."""
    scale = consts.get(node.input[1])
    zero = consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scale is None or scale.size != 1 or zero is None or zero.size != 1 or zero.dtype != np.int8:
        return None
    return float(scale.reshape(())), int(zero.reshape(()))


def _quantizers(name: str, consumers: dict[str, list[onnx.NodeProto]], graph_outputs: set[str]
                ) -> list[tuple[str, onnx.NodeProto]] | None:
    """``(tensor, QuantizeLinear)`` pairs ending every path from ``name`` through data-movement operators
    (``patch_inference`` slices the input before the quantizer sees it), or None where a path does not."""
    users = consumers.get(name, [])
    if not users or name in graph_outputs:
        return None
    found = []
    for n in users:
        if n.op_type == "QuantizeLinear" and n.input[0] == name:
            found.append((name, n))
        elif n.op_type in MOVEMENT_OPS and n.input[0] == name and name not in n.input[1:]:
            below = _quantizers(n.output[0], consumers, graph_outputs)
            if below is None:
                return None
            found += below
        else:
            return None
    return found


def _graph_maps(graph: onnx.GraphProto) -> tuple[dict[str, np.ndarray], dict[str, list[onnx.NodeProto]]]:
    """``(constants by name, consumers by tensor name)`` of ``graph``."""
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value"})
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return consts, consumers


def shared_input_quantization(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` (QDQ, as ``quantize_static`` wrote it) with one ``scale`` and ``zero_point`` for each float
    input whose paths reach several ``QuantizeLinear`` nodes through data-movement operators: with
    ``patch_inference`` each patch slices the input before the quantizer sees it, so each slice gets the range of
    its own region. The input's range is the hull of the slices' ranges; its parameters follow onnxruntime's
    rule for an asymmetric int8 tensor (``compute_scale_zp``: the range widened to hold 0, then
    ``scale = (rmax - rmin) / 255``). The quantizers and their dequantizers share the parameter tensors, so the
    model stays consistent; what changes is the coarser step of the slices, a quantization choice like any
    other (the quantization's fidelity figures measure the model with it). Then :func:`integer_io` can make that
    input int8.
    """
    from onnxruntime.quantization.quant_utils import compute_scale_zp

    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph = out.graph
    consts, consumers = _graph_maps(graph)
    inits = {i.name: i for i in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    for value in graph.input:
        found = _quantizers(value.name, consumers, graph_outputs) if value.name not in consts else None
        params = [_per_tensor(q, consts) for _, q in found or []]
        if not params or None in params or len(set(params)) == 1:
            continue
        if any(q.input[1] not in inits or q.input[2] not in inits for _, q in found):
            continue
        lo = min((-128 - z) * s for s, z in params)
        hi = max((127 - z) * s for s, z in params)
        zero, scale = compute_scale_zp(np.float32(lo), np.float32(hi), np.int8(-128), np.int8(127))
        for _, q in found:
            inits[q.input[1]].CopyFrom(numpy_helper.from_array(np.asarray(scale, np.float32).reshape(
                consts[q.input[1]].shape), q.input[1]))
            inits[q.input[2]].CopyFrom(numpy_helper.from_array(np.asarray(zero, np.int8).reshape(
                consts[q.input[2]].shape), q.input[2]))
    return out


def integer_io(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with int8 graph inputs and outputs where its quantization allows (module docstring).

    An input becomes int8 when every path from it reaches a ``QuantizeLinear`` with the same constant per-tensor
    int8 ``scale`` and ``zero_point`` through data-movement operators only (:data:`MOVEMENT_OPS`, e.g. the
    patches' slices), which then move int8 codes; an output when a ``DequantizeLinear`` with such parameters makes it from a
    tensor no other node needs in float. Names are kept (the output's name moves to the int8 tensor). Other
    inputs and outputs stay float32. The parameters are in the metadata under :data:`METADATA_KEY`
    (:func:`io_quantization`).
    """
    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph = out.graph
    consts, consumers = _graph_maps(graph)
    producers = {o: n for n in graph.node for o in n.output}
    graph_outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    drop: set[int] = set()
    record: dict[str, dict[str, Any]] = {"inputs": {}, "outputs": {}}

    for value in graph.input:
        if value.name in consts or value.type.tensor_type.elem_type != TensorProto.FLOAT:
            continue
        found = _quantizers(value.name, consumers, graph_outputs)
        params = {_per_tensor(q, consts) for _, q in found or []}
        if not found or None in params or len(params) != 1:
            continue
        (scale, zero), = params
        for tensor, q in found:
            rename[q.output[0]] = tensor
            drop.add(id(q))
        value.type.tensor_type.elem_type = TensorProto.INT8
        record["inputs"][value.name] = {"scale": scale, "zero_point": zero}

    for value in graph.output:
        node = producers.get(value.name)
        if node is None or node.op_type != "DequantizeLinear" or consumers.get(value.name):
            continue
        params, source = _per_tensor(node, consts), node.input[0]
        if params is None or source not in producers or source in graph_outputs or len(consumers[source]) != 1:
            continue
        rename[source] = value.name
        drop.add(id(node))
        value.type.tensor_type.elem_type = TensorProto.INT8
        record["outputs"][value.name] = {"scale": params[0], "zero_point": params[1]}

    if not rename:
        return out
    kept = [n for n in graph.node if id(n) not in drop]
    for node in kept:
        node.input[:] = [rename.get(name, name) for name in node.input]
        node.output[:] = [rename.get(name, name) for name in node.output]
    del graph.node[:]
    graph.node.extend(kept)
    stale = set(rename) | set(rename.values())
    infos = [v for v in graph.value_info if v.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(infos)
    helper.set_model_props(out, {**{p.key: p.value for p in out.metadata_props}, METADATA_KEY: json.dumps(record)})
    return out


def io_quantization(model: onnx.ModelProto) -> dict[str, dict[str, dict[str, Any]]]:
    """``{"inputs": {name: {"scale", "zero_point"}}, "outputs": {...}}`` of a model :func:`integer_io` made
    (empty dicts for any other model)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            data = json.loads(prop.value)
            return {"inputs": data.get("inputs", {}), "outputs": data.get("outputs", {})}
    return {"inputs": {}, "outputs": {}}


def quantize_sets(sets: dict[str, dict[str, np.ndarray]], inputs: dict[str, dict[str, Any]]
                  ) -> dict[str, dict[str, np.ndarray]]:
    """``sets`` with each input named in ``inputs`` (``{name: {"scale", "zero_point"}}``) replaced by its int8
    codes, computed by onnxruntime's ``QuantizeLinear`` (the node :func:`integer_io` removed: round half to
    even, saturating) so that the codes are exactly those the float model quantized."""
    if not inputs:
        return sets
    import onnxruntime as ort

    sessions = {}
    for name, q in inputs.items():
        node = helper.make_node("QuantizeLinear", ["x", "scale", "zero_point"], ["y"])
        graph = helper.make_graph([node], "quantize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("y", TensorProto.INT8, None)],
                                  [numpy_helper.from_array(np.float32(q["scale"]), "scale"),
                                   numpy_helper.from_array(np.int8(q["zero_point"]), "zero_point")])
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        proto.ir_version = 8
        sessions[name] = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return {set_name: {k: (sessions[k].run(None, {"x": np.asarray(v, np.float32)})[0] if k in sessions else v)
                       for k, v in xs.items()}
            for set_name, xs in sets.items()}
