"""Structural reparameterization: parallel Conv branches summed with Add become one Conv.

Matches an Add tree (Adds whose intermediate results are used only inside the
tree) whose leaves include two or more branches on the same input ``x``:

* ``Conv(x)`` with constant weights, all with the same strides, dilations and groups;
* ``x`` itself (identity branch) or ``BatchNormalization(x)`` (BN-of-input branch),
  allowed when the convs have stride 1 and as many output as input channels.

Convolution is linear in its kernel, so the branches merge into one Conv whose
kernel is the sum of the branch kernels, each zero-padded to the largest kernel
size at its centre (a 1x1 kernel becomes the centre tap of a 3x3), and whose bias
is the sum of the biases. The identity is the group-aware kernel with a 1 at the
centre tap linking output channel ``m`` to its own input channel within its group
(``W[m, m mod C/g, centre] = 1``); BN-of-input is that kernel scaled by ``s`` with
bias ``t``. Branches align only when each branch's padding plus its centring
offset ``(K - k) / 2`` is the same for all branches; otherwise the tree is left alone.

Sources: Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021,
sec. 3.3; Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone",
CVPR 2023, sec. 3; Liu et al., "GhostNetV3", arXiv:2404.11202, sec. 3.1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from edgec.passes._graph import batchnorm_affine, conv_attrs, conv_pads, exclusive_weight, new_constant, \
    only_use, replace_output, static_shape
from edgec.passes.registry import register


@dataclass
class _Branch:
    kind: str  # "conv" | "identity" | "bn"
    value: ir.Value  # the leaf value summed by the tree
    node: ir.Node | None = None
    kernel: np.ndarray | None = None  # float64 (M, Cg, *k)
    bias: np.ndarray | None = None  # float64 (M,)
    pads: list[int] | None = None


def _tree_leaves(root: ir.Node) -> list[ir.Value]:
    """Leaves of the Add tree rooted at ``root`` (descending into single-use Adds)."""
    leaves = []
    for v in root.inputs:
        p = v.producer()
        if p is not None and p.op_type == "Add" and only_use(v) is root:
            leaves.extend(_tree_leaves(p))
        else:
            leaves.append(v)
    return leaves


def _as_branch(v: ir.Value, tree_uses: int) -> _Branch | None:
    p = v.producer()
    if p is None or len(list(v.uses())) != tree_uses or v.is_graph_output():
        return None
    if p.op_type == "Conv":
        w = exclusive_weight(p.inputs[1])
        if w is None or not np.issubdtype(w.dtype, np.floating):
            return None
        b = np.zeros(w.shape[0])
        if len(p.inputs) > 2 and p.inputs[2] is not None:
            bb = exclusive_weight(p.inputs[2])
            if bb is None:
                return None
            b = bb.astype(np.float64)
        pads = conv_pads(p, w.ndim - 2)
        if pads is None:
            return None
        return _Branch("conv", v, p, w.astype(np.float64), b, pads)
    if p.op_type == "BatchNormalization":
        if batchnorm_affine(p) is None:
            return None
        return _Branch("bn", v, p)
    return None


def _embed(kernel: np.ndarray, size: tuple[int, ...]) -> np.ndarray | None:
    """Zero-pad ``kernel`` (M, Cg, *k) to spatial ``size`` at the centre; None if not centrable."""
    offsets = []
    for k, s in zip(kernel.shape[2:], size):
        if (s - k) % 2:
            return None
        offsets.append((s - k) // 2)
    out = np.zeros(kernel.shape[:2] + tuple(size))
    index = (slice(None), slice(None)) + tuple(slice(o, o + k) for o, k in zip(offsets, kernel.shape[2:]))
    out[index] = kernel
    return out


def _identity_kernel(channels: int, group: int, size: tuple[int, ...], scale: np.ndarray) -> np.ndarray:
    cg = channels // group
    k = np.zeros((channels, cg) + tuple(size))
    centre = tuple(s // 2 for s in size)
    for m in range(channels):
        k[(m, m % cg) + centre] = scale[m]
    return k


def _merge(x: ir.Value, branches: list[_Branch]) -> tuple[np.ndarray, np.ndarray, dict, list[int]] | None:
    convs = [b for b in branches if b.kind == "conv"]
    spatial = convs[0].kernel.ndim - 2
    attrs = conv_attrs(convs[0].node, spatial)
    if any(conv_attrs(b.node, spatial) != attrs for b in convs):
        return None
    m = convs[0].kernel.shape[0]
    if any(b.kernel.shape[:2] != convs[0].kernel.shape[:2] for b in convs):
        return None
    size = tuple(max(b.kernel.shape[2 + i] for b in convs) for i in range(spatial))
    extra = [b for b in branches if b.kind != "conv"]
    if extra:
        x_shape = static_shape(x)
        if any(s != 1 for s in attrs["strides"]) or x_shape is None or x_shape[1] != m or \
                convs[0].kernel.shape[1] * attrs["group"] != m or any(s % 2 == 0 for s in size):
            return None
    target_pads = None
    kernel = np.zeros((m, convs[0].kernel.shape[1]) + size)
    bias = np.zeros(m)
    for b in branches:
        if b.kind == "conv":
            k = _embed(b.kernel, size)
            if k is None:
                return None
            pads = [p + (s - kk) // 2 for p, s, kk in zip(b.pads, size * 2, b.kernel.shape[2:] * 2)]
            kb = b.bias
        else:
            pads = [(s - 1) // 2 for s in size * 2]
            if b.kind == "identity":
                scale, kb = np.ones(m), np.zeros(m)
            else:
                scale, kb = batchnorm_affine(b.node)
            k = _identity_kernel(m, attrs["group"], size, scale)
        if target_pads is None:
            target_pads = pads
        elif pads != target_pads:
            return None
        kernel += k
        bias += kb
    return kernel, bias, attrs, target_pads


@register("reparameterize_branches",
          matches="Add tree over parallel Conv(x) branches (+ optional x or BatchNormalization(x) branch)",
          preconditions="same input, strides, dilations and groups; constant, unshared weights; kernels "
                        "centrable with consistent padding; identity/BN branch only at stride 1 with C_out = C_in",
          source="RepVGG (CVPR 2021) sec. 3.3; MobileOne (CVPR 2023) sec. 3; GhostNetV3 (arXiv:2404.11202) sec. 3.1")
class ReparameterizeBranches(ir.passes.InPlacePass):
    """Merge parallel conv/identity/BN branches summed by Add into one Conv (RepVGG-style)."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        for node in list(model.graph):
            if node.op_type != "Add" or node.graph is None:
                continue
            out = node.outputs[0]
            consumer = only_use(out)
            if consumer is not None and consumer.op_type == "Add":
                continue  # not a tree root
            if not out.uses() and not out.is_graph_output():
                continue
            changed |= self._rewrite(node)
        return ir.passes.PassResult(model, changed)

    @staticmethod
    def _rewrite(root: ir.Node) -> bool:
        leaves = _tree_leaves(root)
        if len(leaves) < 2:
            return False
        counts: dict[int, int] = {}
        for v in leaves:
            counts[id(v)] = counts.get(id(v), 0) + 1
        branches = [_as_branch(v, counts[id(v)]) if counts[id(v)] == 1 else None for v in leaves]
        groups: dict[int, list[_Branch]] = {}
        inputs: dict[int, ir.Value] = {}
        for b in branches:
            if b is not None:
                x = b.node.inputs[0]
                groups.setdefault(id(x), []).append(b)
                inputs[id(x)] = x
        # identity branches: a leaf that is the input of a conv group
        for v in leaves:
            if id(v) in groups and counts[id(v)] == 1:
                groups[id(v)].append(_Branch("identity", v))
        graph = root.graph
        for key, members in groups.items():
            if sum(b.kind == "conv" for b in members) < 1 or len(members) < 2:
                continue
            merged = _merge(inputs[key], members)
            if merged is None:
                continue
            kernel, bias, attrs, pads = merged
            first = next(b for b in members if b.kind == "conv")
            dtype = exclusive_weight(first.node.inputs[1]).dtype
            conv = ir.node("Conv", [inputs[key], new_constant(graph, kernel.astype(dtype), "rep_w"),
                                    new_constant(graph, bias.astype(dtype), "rep_b")],
                           attributes={"kernel_shape": list(kernel.shape[2:]), "pads": pads,
                                       "strides": list(attrs["strides"]), "dilations": list(attrs["dilations"]),
                                       "group": attrs["group"]},
                           name=f"{first.node.name}_reparameterized")
            used = {id(b.value) for b in members}
            rest = [v for v in leaves if id(v) not in used]
            new_nodes = [conv]
            total = conv.outputs[0]
            for v in rest:
                add = ir.node("Add", [total, v])
                new_nodes.append(add)
                total = add.outputs[0]
            graph.insert_before(root, new_nodes)
            replace_output(root.outputs[0], total)
            return True  # the tree changed; the pass manager runs again for more
        return False
