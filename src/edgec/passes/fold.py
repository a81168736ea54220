"""Folding passes: BatchNormalization, constant scales/shifts and constant Gathers into weights.

The maths (all computed in float64, stored in the weights' dtype). For an
inference BatchNormalization ``y = s * x + t`` per channel, with
``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``:

* Conv -> BN:  ``W'[m] = s[m] W[m]``, ``b'[m] = s[m] b[m] + t[m]``;
* BN -> Conv (no padding): ``W'[m, j] = W[m, j] s[c(m, j)]`` and
  ``b'[m] = b[m] + sum_{j,k} W[m, j, k] t[c(m, j)]`` where ``c(m, j)`` is the input
  channel that filter ``m`` reads at position ``j`` of its group. With zero
  padding the border outputs would see ``0`` where the original saw ``t``, so
  the fold is inexact and refused;
* BN -> Gemm/MatMul (rank-2 input, the EfficientViT-M classifier head, BN1d before
  Linear): ``B' = diag(s) B``, ``C' = beta C + alpha t B``;
* a constant per-output-channel Mul/Div (LayerScale, CaiT/ConvNeXt-style) or Add/Sub
  after Conv/Gemm scales or shifts the filters and bias; a scalar Mul/Div (the
  attention query scale ``1/sqrt(d)``) may also be reached through layout-only
  ops (Reshape, Transpose, Flatten, (Un)Squeeze) and is folded into the
  Conv/Gemm/MatMul weights that produce the tensor.

Sources: Jacob et al., "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference", CVPR 2018, section 3.2 (BN folding);
onnxscript ``rewriter/rules/common/_fuse_batchnorm.py`` (Conv->BN, for comparison).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from edgec.passes._graph import (attr, batchnorm_affine, const_array, conv_attrs, conv_pads, exclusive_weight,
                                 new_constant, only_use, replace_output, static_shape)
from edgec.passes.registry import register

LAYOUT_OPS = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity")


def _set_weights(node: ir.Node, w: np.ndarray, b: np.ndarray | None, like: np.ndarray) -> None:
    """Replace input 1 (weights) and input 2 (bias) of a Conv/Gemm with new initializers."""
    graph = node.graph
    node.replace_input_with(1, new_constant(graph, w.astype(like.dtype), f"{node.name or node.op_type}_w"))
    if b is not None:
        if len(node.inputs) < 3:
            node.resize_inputs(3)
        node.replace_input_with(2, new_constant(graph, b.astype(like.dtype), f"{node.name or node.op_type}_b"))


def _conv_weights(conv: ir.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """Exclusive (weights, bias) of a Conv in float64; bias zeros when absent."""
    w = exclusive_weight(conv.inputs[1])
    if w is None or not np.issubdtype(w.dtype, np.floating):
        return None
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        b = exclusive_weight(conv.inputs[2])
        if b is None:
            return None
    else:
        b = np.zeros(w.shape[0], w.dtype)
    return w, b


@register("fold_batchnorm",
          matches="Conv->BatchNormalization, BatchNormalization->Conv, BatchNormalization->Gemm/MatMul",
          preconditions="inference-mode BN with constant parameters; the Conv/Gemm weights constant and used "
                        "only there; BN->Conv only when no consumer Conv pads (zero padding makes it inexact); "
                        "BN->Gemm/MatMul only on a rank-2 input",
          source="Jacob et al., CVPR 2018, sec. 3.2; onnxscript rewriter _fuse_batchnorm.py")
class FoldBatchNorm(ir.passes.InPlacePass):
    """Fold inference BatchNormalization into the adjacent Conv, Gemm or MatMul."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            if node.op_type != "BatchNormalization" or not node.outputs[0].uses() and \
                    not node.outputs[0].is_graph_output():
                continue
            affine = batchnorm_affine(node)
            if affine is None:
                continue
            changed |= self._into_producer(node, affine) or self._into_consumers(node, affine)
        return ir.passes.PassResult(model, changed)

    @staticmethod
    def _into_producer(bn: ir.Node, affine) -> bool:
        x = bn.inputs[0]
        conv = x.producer()
        if conv is None or conv.op_type != "Conv" or only_use(x) is not bn:
            return False
        weights = _conv_weights(conv)
        if weights is None:
            return False
        w, b = weights
        s, t = affine
        if s.shape[0] != w.shape[0]:
            return False
        w64 = w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))
        b64 = b.astype(np.float64) * s + t
        _set_weights(conv, w64, b64, w)
        replace_output(bn.outputs[0], x)
        return True

    @classmethod
    def _into_consumers(cls, bn: ir.Node, affine) -> bool:
        y = bn.outputs[0]
        uses = list(y.uses())
        if not uses or y.is_graph_output() or any(u.idx != 0 for u in uses):
            return False
        ops = {u.node.op_type for u in uses}
        if ops == {"Conv"}:
            return cls._into_convs(bn, [u.node for u in uses], affine)
        if len(uses) == 1 and ops <= {"Gemm", "MatMul"}:
            return cls._into_gemm(bn, uses[0].node, affine)
        return False

    @staticmethod
    def _into_convs(bn: ir.Node, convs: list[ir.Node], affine) -> bool:
        s, t = affine
        plans = []
        for conv in convs:
            weights = _conv_weights(conv)
            if weights is None:
                return False
            w, b = weights
            pads = conv_pads(conv, w.ndim - 2)
            if pads is None or any(pads):
                return False  # zero padding: border outputs would differ
            group = conv_attrs(conv, w.ndim - 2)["group"]
            cg, m = w.shape[1], w.shape[0]
            if cg * group != s.shape[0] or m % group:
                return False
            channel = (np.arange(m) // (m // group))[:, None] * cg + np.arange(cg)[None, :]  # (M, Cg)
            w64 = w.astype(np.float64)
            extra = (1,) * (w.ndim - 2)
            new_w = w64 * s[channel].reshape(channel.shape + extra)
            new_b = b.astype(np.float64) + (w64 * t[channel].reshape(channel.shape + extra)).reshape(m, -1).sum(1)
            plans.append((conv, new_w, new_b, w))
        for conv, new_w, new_b, w in plans:
            _set_weights(conv, new_w, new_b, w)
            conv.replace_input_with(0, bn.inputs[0])
        return True

    @staticmethod
    def _into_gemm(bn: ir.Node, gemm: ir.Node, affine) -> bool:
        s, t = affine
        x = bn.inputs[0]
        shape = static_shape(x)
        if shape is None or len(shape) != 2 or shape[1] != s.shape[0]:
            return False
        bmat = exclusive_weight(gemm.inputs[1])
        if bmat is None or bmat.ndim != 2:
            return False
        if gemm.op_type == "Gemm":
            if attr(gemm, "transA", 0):
                return False
            trans_b = attr(gemm, "transB", 0)
            alpha, beta = float(attr(gemm, "alpha", 1.0)), float(attr(gemm, "beta", 1.0))
            c = None
            if len(gemm.inputs) > 2 and gemm.inputs[2] is not None:
                c = exclusive_weight(gemm.inputs[2])
                if c is None or c.size not in (1, bmat.shape[0 if trans_b else 1]):
                    return False
        else:
            trans_b, alpha, beta, c = 0, 1.0, 1.0, None
        b64 = bmat.astype(np.float64)
        kn = b64.T if trans_b else b64  # (K, N)
        new_kn = s[:, None] * kn
        shift = alpha * (t @ kn)
        if c is not None:
            shift = shift + beta * c.astype(np.float64).reshape(-1)
        new_b = new_kn.T if trans_b else new_kn
        graph = gemm.graph
        if gemm.op_type == "Gemm":
            _set_weights(gemm, new_b, shift, bmat)
            gemm.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
            gemm.replace_input_with(0, x)
            return True
        new = ir.node("Gemm", [x, new_constant(graph, new_b.astype(bmat.dtype), "gemm_w"),
                               new_constant(graph, shift.astype(bmat.dtype), "gemm_b")],
                      name=f"{gemm.name}_folded")
        graph.insert_before(gemm, [new])
        replace_output(gemm.outputs[0], new.outputs[0])
        return True


def _channel_vector(c: np.ndarray, channels: int, axis: int, rank: int) -> np.ndarray | None:
    """``c`` as a per-channel vector (length ``channels``) when it broadcasts only along ``axis``."""
    if c.ndim > rank:
        return None
    full = (1,) * (rank - c.ndim) + c.shape
    if any(d != 1 for i, d in enumerate(full) if i != axis):
        return None
    if full[axis] not in (1, channels):
        return None
    return np.broadcast_to(c.astype(np.float64).reshape(-1) if c.size > 1 else c.astype(np.float64).reshape(1),
                           (channels,)).copy()


def _weighted_producer(value: ir.Value, through_layout: bool) -> tuple[ir.Node, list[ir.Node]] | None:
    """The Conv/Gemm/MatMul producing ``value`` (optionally through single-use layout ops)."""
    chain = []
    v = value
    while True:
        p = v.producer()
        if p is None:
            return None
        uses = list(v.uses())
        if len(uses) != 1 or v.is_graph_output():
            return None
        if p.op_type in ("Conv", "Gemm", "MatMul"):
            return p, chain
        if not through_layout or p.op_type not in LAYOUT_OPS:
            return None
        chain.append(p)
        v = p.inputs[0]


def _scale_producer(p: ir.Node, scale: np.ndarray | float, shift: np.ndarray | None) -> bool:
    """Multiply the output of Conv/Gemm/MatMul ``p`` per output channel by ``scale``, then add ``shift``."""
    if p.op_type == "Conv":
        weights = _conv_weights(p)
        if weights is None:
            return False
        w, b = weights
        m = w.shape[0]
        sc = np.broadcast_to(np.asarray(scale, np.float64), (m,))
        new_w = w.astype(np.float64) * sc.reshape((-1,) + (1,) * (w.ndim - 1))
        new_b = b.astype(np.float64) * sc + (0 if shift is None else shift)
        _set_weights(p, new_w, new_b, w)
        return True
    if p.op_type == "Gemm":
        bmat = exclusive_weight(p.inputs[1])
        if bmat is None or attr(p, "transA", 0) and shift is not None:
            return False
        trans_b = attr(p, "transB", 0)
        n = bmat.shape[0] if trans_b else bmat.shape[1]
        sc = np.broadcast_to(np.asarray(scale, np.float64), (n,))
        c = None
        if len(p.inputs) > 2 and p.inputs[2] is not None:
            c = exclusive_weight(p.inputs[2])
            if c is None or c.size not in (1, n):
                return False
        new_b = bmat.astype(np.float64) * (sc[:, None] if trans_b else sc[None, :])
        beta = float(attr(p, "beta", 1.0))
        cc = np.zeros(n) if c is None else np.broadcast_to(c.astype(np.float64).reshape(-1), (n,)) * beta
        new_c = cc * sc + (0 if shift is None else shift)
        _set_weights(p, new_b, new_c, bmat)
        p.attributes["beta"] = ir.AttrFloat32("beta", 1.0)
        return True
    if p.op_type == "MatMul" and shift is None and np.ndim(scale) == 0:
        bmat = exclusive_weight(p.inputs[1])
        if bmat is None:
            return False
        p.replace_input_with(1, new_constant(p.graph, (bmat.astype(np.float64) * float(scale)).astype(bmat.dtype),
                                             "matmul_w"))
        return True
    return False


@register("fold_constant_scale",
          matches="Conv/Gemm -> Mul|Div|Add|Sub by a per-output-channel constant (LayerScale); "
                  "Conv/Gemm/MatMul -> layout ops -> Mul|Div by a scalar (attention query scale)",
          preconditions="the constant broadcasts only along the output-channel axis (or is a scalar); "
                        "weights constant and used only there; every intermediate tensor used once",
          source="Touvron et al., CaiT (LayerScale), ICCV 2021; Vaswani et al. 2017 (1/sqrt(d) scale)")
class FoldConstantScale(ir.passes.InPlacePass):
    """Fold constant per-channel scales/shifts and scalar attention scales into producer weights."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            if node.op_type in ("Mul", "Div", "Add", "Sub") and (node.outputs[0].uses()
                                                                   or node.outputs[0].is_graph_output()):
                changed |= self._fold(node)
        return ir.passes.PassResult(model, changed)

    @staticmethod
    def _fold(node: ir.Node) -> bool:
        a, b = node.inputs[0], node.inputs[1]
        ca, cb = const_array(a), const_array(b)
        if cb is not None and ca is None:
            x, c = a, cb
        elif ca is not None and cb is None and node.op_type in ("Mul", "Add"):
            x, c = b, ca
        else:
            return False
        if not np.issubdtype(c.dtype, np.floating):
            return False
        c64 = c.astype(np.float64)
        if node.op_type == "Div":
            if np.any(c64 == 0):
                return False
            c64 = 1.0 / c64
        if node.op_type == "Sub":
            c64 = -c64
        scalar = c64.size == 1
        found = _weighted_producer(x, through_layout=scalar and node.op_type in ("Mul", "Div"))
        if found is None:
            return False
        producer, chain = found
        if chain:
            ok = _scale_producer(producer, float(c64.reshape(-1)[0]), None)
        else:
            shape = static_shape(producer.outputs[0])
            if shape is None:
                return False
            axis = 1 if producer.op_type == "Conv" else len(shape) - 1
            if producer.op_type == "MatMul" and not scalar:
                return False
            vec = _channel_vector(c64, shape[axis], axis, len(shape))
            if vec is None:
                return False
            if node.op_type in ("Mul", "Div"):
                ok = _scale_producer(producer, vec, None)
            else:
                ok = producer.op_type != "MatMul" and _scale_producer(producer, 1.0, vec)
        if ok:
            replace_output(node.outputs[0], x)
        return ok


@register("fold_constant_gather",
          matches="Gather whose data and indices are both constant (e.g. EfficientViT attention-bias tables)",
          preconditions="data and indices are initializers or Constant outputs, not graph inputs",
          source="constant folding; EfficientViT (Liu et al., CVPR 2023) attention_biases[:, attention_bias_idxs]")
class FoldConstantGather(ir.passes.InPlacePass):
    """Replace Gather(constant table, constant indices) with its result."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            if node.op_type != "Gather" or not (node.outputs[0].uses() or node.outputs[0].is_graph_output()):
                continue
            data, idx = const_array(node.inputs[0]), const_array(node.inputs[1])
            if data is None or idx is None:
                continue
            axis = int(attr(node, "axis", 0))
            axis = axis + data.ndim if axis < 0 else axis
            idx = np.where(idx < 0, idx + data.shape[axis], idx)
            folded = np.take(data, idx, axis=axis)
            replace_output(node.outputs[0], new_constant(node.graph, folded, "gathered"))
            changed = True
        return ir.passes.PassResult(model, changed)


@register("batchnorm_to_affine",
          matches="BatchNormalization left after fold_batchnorm (e.g. before a padded Conv)",
          preconditions="inference mode, constant parameters, channel axis 1",
          source="BN inference semantics; TVM's FuseOps fuses the element-wise Mul/Add into the producer kernel")
class BatchNormToAffine(ir.passes.InPlacePass):
    """Rewrite a remaining BatchNormalization as ``x * s + t`` so TVM fuses it into its producer."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            if node.op_type != "BatchNormalization" or not (node.outputs[0].uses()
                                                             or node.outputs[0].is_graph_output()):
                continue
            affine = batchnorm_affine(node)
            shape = static_shape(node.inputs[0])
            if affine is None or shape is None or len(shape) < 2:
                continue
            s, t = affine
            dtype = const_array(node.inputs[1]).dtype
            bshape = (s.shape[0],) + (1,) * (len(shape) - 2)
            graph = node.graph
            mul = ir.node("Mul", [node.inputs[0], new_constant(graph, s.reshape(bshape).astype(dtype), "bn_scale")])
            add = ir.node("Add", [mul.outputs[0], new_constant(graph, t.reshape(bshape).astype(dtype), "bn_shift")])
            graph.insert_before(node, [mul, add])
            replace_output(node.outputs[0], add.outputs[0])
            changed = True
        return ir.passes.PassResult(model, changed)


__all__ = ["BatchNormToAffine", "FoldBatchNorm", "FoldConstantScale", "FoldConstantGather", "conv_attrs"]
