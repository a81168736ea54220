"""Block-fusion clean-ups at the ONNX level (epilogue fusion is left to TVM's FuseOps).

* ``remove_noop``: Identity, inference Dropout, a Slice that keeps every element
  (e.g. a Ghost module's ``[:, :out_chs]`` when ``out_chs`` is all channels), a
  Concat of one input, a Reshape or Expand to the input's own shape, a
  Transpose with the identity permutation, a Cast to the same type.
* ``fold_pad_conv``: a zero constant Pad on the spatial axes feeding only Convs
  with explicit padding becomes those Convs' padding (one kernel instead of a
  padding copy plus a conv).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.passes._graph import attr, const_array, conv_pads, only_use, replace_output, static_shape
from edgec.passes.registry import register

_INT_MAX = np.iinfo(np.int64).max


def _slice_is_noop(node: ir.Node) -> bool:
    shape = static_shape(node.inputs[0])
    if shape is None:
        return False
    vals = [const_array(v) if v is not None else None for v in node.inputs[1:5]]
    starts, ends = vals[0], vals[1]
    if starts is None or ends is None:
        return False
    axes = vals[2] if len(vals) > 2 and vals[2] is not None else np.arange(len(starts))
    steps = vals[3] if len(vals) > 3 and vals[3] is not None else np.ones(len(starts), np.int64)
    if len(node.inputs) > 3 and node.inputs[3] is not None and vals[2] is None:
        return False
    if len(node.inputs) > 4 and node.inputs[4] is not None and vals[3] is None:
        return False
    for s, e, a, st in zip(starts.tolist(), ends.tolist(), axes.tolist(), steps.tolist()):
        dim = shape[a]
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st != 1 or s != 0 or e < dim:
            return False
    return True


def _noop_input(node: ir.Node) -> ir.Value | None:
    """The input a no-op node passes through unchanged, else None."""
    op = node.op_type
    if op == "Identity":
        return node.inputs[0]
    if op == "Dropout":
        mask_used = len(node.outputs) > 1 and (node.outputs[1].uses() or node.outputs[1].is_graph_output())
        training = len(node.inputs) > 2 and node.inputs[2] is not None and const_array(node.inputs[2]) is not None \
            and bool(const_array(node.inputs[2]))
        return None if mask_used or training else node.inputs[0]
    if op == "Concat" and len(node.inputs) == 1:
        return node.inputs[0]
    if op == "Slice" and _slice_is_noop(node):
        return node.inputs[0]
    if op in ("Reshape", "Expand"):
        a, b = static_shape(node.inputs[0]), static_shape(node.outputs[0])
        return node.inputs[0] if a is not None and a == b else None
    if op == "Transpose":
        perm = attr(node, "perm")
        return node.inputs[0] if perm is not None and list(perm) == sorted(perm) else None
    if op == "Cast":
        src = node.inputs[0].dtype
        return node.inputs[0] if src is not None and int(src) == int(attr(node, "to", -1)) else None
    return None


@register("remove_noop",
          matches="Identity, inference Dropout, full Slice, single-input Concat, same-shape Reshape/Expand, "
                  "identity Transpose, same-type Cast",
          preconditions="static shapes and constant slice/shape arguments; not a graph input passed straight "
                        "to a graph output",
          source="standard dead-op elimination (cf. onnxslim's Elimination* patterns)")
class RemoveNoop(ir.passes.InPlacePass):
    """Bypass operators that return their input unchanged."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            out = node.outputs[0] if node.outputs else None
            if out is None or not (out.uses() or out.is_graph_output()):
                continue
            src = _noop_input(node)
            if src is None or (out.is_graph_output() and (src.is_graph_input() or src.is_graph_output()
                                                          or src.producer() is None)):
                continue
            replace_output(out, src)
            changed = True
        return ir.passes.PassResult(model, changed)


@register("fold_pad_conv",
          matches="Pad(mode=constant, value 0) on spatial axes -> Conv(s)",
          preconditions="pads constant and non-negative, none on batch/channel axes; every consumer a Conv "
                        "taking it as data input with explicit padding (auto_pad NOTSET/VALID)",
          source="standard Conv padding semantics (ONNX Conv 'pads')")
class FoldPadConv(ir.passes.InPlacePass):
    """Move explicit zero padding into the consuming Convs' ``pads``."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            if node.op_type == "Pad" and node.outputs[0].uses():
                changed |= self._fold(node)
        return ir.passes.PassResult(model, changed)

    @staticmethod
    def _fold(pad: ir.Node) -> bool:
        if attr(pad, "mode", "constant") not in ("constant", b"constant"):
            return False
        pads = const_array(pad.inputs[1]) if len(pad.inputs) > 1 else None
        if pads is None:
            return False
        if len(pad.inputs) > 2 and pad.inputs[2] is not None:
            value = const_array(pad.inputs[2])
            if value is None or np.any(value != 0):
                return False
        rank = len(pads) // 2
        if len(pad.inputs) > 3 and pad.inputs[3] is not None:
            axes = const_array(pad.inputs[3])
            if axes is None:
                return False
            shape = static_shape(pad.inputs[0])
            if shape is None:
                return False
            full = np.zeros(2 * len(shape), np.int64)
            for i, a in enumerate(axes.tolist()):
                a = a + len(shape) if a < 0 else a
                full[a], full[a + len(shape)] = pads[i], pads[i + len(axes)]
            pads, rank = full, len(shape)
        pads = pads.tolist()
        if any(p < 0 for p in pads) or pads[0] or pads[1] or pads[rank] or pads[rank + 1]:
            return False
        spatial = rank - 2
        extra = pads[2:rank] + pads[rank + 2:]
        uses = list(pad.outputs[0].uses())
        if pad.outputs[0].is_graph_output() or any(u.node.op_type != "Conv" or u.idx != 0 for u in uses):
            return False
        plans = []
        for u in uses:
            cp = conv_pads(u.node, spatial)
            if cp is None:
                return False
            plans.append((u.node, [a + b for a, b in zip(cp, extra)]))
        for conv, new in plans:
            conv.attributes["pads"] = ir.AttrInt64s("pads", new)
            if "auto_pad" in conv.attributes:
                del conv.attributes["auto_pad"]
            conv.replace_input_with(0, pad.inputs[0])
        return True


__all__ = ["RemoveNoop", "FoldPadConv", "only_use"]
