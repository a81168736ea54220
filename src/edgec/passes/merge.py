"""Depth merging: compose a linear chain of two convolutions into one convolution, exactly.

Kim et al., "Efficient Latency-Aware CNN Depth Compression via Two-Stage Dynamic Programming",
ICML 2023, section 3: with no activation between them, ``conv2(conv1(x))`` is one convolution.
For kernels ``k1``, ``k2`` and strides ``s1``, ``s2`` (per spatial axis) the merged convolution has
kernel ``K = k1 + s1*(k2 - 1)`` and stride ``S = s1*s2``; its weights are the second kernel's taps
spread ``s1`` apart, each applied to the first kernel::

    W[o, i, s1*a + u, s1*b + v] += sum_m W2[o, m, a, b] * W1[m, i, u, v]
    bias[o] = b2[o] + sum_m (sum_ab W2[o, m, a, b]) * b1[m]

and the padding of the first convolution. A depthwise convolution followed by a depthwise one stays
depthwise; any other group combination is expanded to dense (block-diagonal) weights first, so a
pointwise conv merged into a depthwise one becomes a dense ``K x K`` conv: MACs usually go *up*, and
only a measured latency can say whether a merge pays (``mode=latency``). A residual ``Add`` of the
merged convolution's own input (stride 1, odd symmetric kernel, same channels) becomes a centre tap.

Refused, with the reason recorded (:func:`merge_candidates`): the second conv pads its input (its
zero padding of the first conv's output cannot move onto the first conv exactly), dilation other
than 1, a merged kernel over ``max_kernel``, non-constant weights, or a first conv whose output
has another user.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import onnx_ir as ir

from edgec.passes._graph import conv_attrs, conv_pads, exclusive_weight, new_constant, replace_output
from edgec.passes.registry import register

MERGED_SUFFIX = "_depth_merged"


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D Conv's weights (float64) and attributes."""

    weight: np.ndarray
    bias: np.ndarray
    strides: tuple[int, int]
    pads: list[int]
    group: int

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    @property
    def depthwise(self) -> bool:
        return self.group > 1 and self.weight.shape[1] == 1 and self.group == self.weight.shape[0]

    def dense(self) -> np.ndarray:
        """The weights as a dense (group 1) kernel, block-diagonal over the groups."""
        if self.group == 1:
            return self.weight
        out_ch, per, kh, kw = self.weight.shape
        dense = np.zeros((out_ch, per * self.group, kh, kw))
        step = out_ch // self.group
        for g in range(self.group):
            dense[g * step:(g + 1) * step, g * per:(g + 1) * per] = self.weight[g * step:(g + 1) * step]
        return dense


def conv_spec(node: ir.Node) -> ConvSpec | str:
    """The :class:`ConvSpec` of a Conv node, or the reason it cannot take part in a merge."""
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx"):
        return "not a Conv"
    w = exclusive_weight(node.inputs[1]) if len(node.inputs) > 1 else None
    if w is None or w.ndim != 4 or not np.issubdtype(w.dtype, np.floating):
        return "weights are not a constant 2-D kernel used only here"
    b = np.zeros(w.shape[0])
    if len(node.inputs) > 2 and node.inputs[2] is not None:
        bias = exclusive_weight(node.inputs[2])
        if bias is None:
            return "bias is not a constant used only here"
        b = bias.astype(np.float64)
    a = conv_attrs(node, 2)
    pads = conv_pads(node, 2)
    if pads is None:
        return "auto_pad SAME is not explicit padding"
    if any(d != 1 for d in a["dilations"]):
        return "dilation other than 1"
    return ConvSpec(w.astype(np.float64), b, tuple(a["strides"]), pads, a["group"])


def compose(first: ConvSpec, second: ConvSpec) -> ConvSpec:
    """The single convolution equal to ``second(first(x))`` (``second`` has no padding)."""
    (k1h, k1w), (k2h, k2w) = first.kernel, second.kernel
    s1h, s1w = first.strides
    kh, kw = k1h + s1h * (k2h - 1), k1w + s1w * (k2w - 1)
    strides = (s1h * second.strides[0], s1w * second.strides[1])
    if first.depthwise and second.depthwise and first.weight.shape[0] == second.weight.shape[0]:
        w1, w2 = first.weight[:, 0], second.weight[:, 0]
        w = np.zeros((w1.shape[0], 1, kh, kw))
        for a in range(k2h):
            for b in range(k2w):
                w[:, 0, s1h * a:s1h * a + k1h, s1w * b:s1w * b + k1w] += w2[:, a, b, None, None] * w1
        bias = second.bias + w2.sum(axis=(1, 2)) * first.bias
        return ConvSpec(w, bias, strides, list(first.pads), first.group)
    w1, w2 = first.dense(), second.dense()
    w = np.zeros((w2.shape[0], w1.shape[1], kh, kw))
    for a in range(k2h):
        for b in range(k2w):
            w[:, :, s1h * a:s1h * a + k1h, s1w * b:s1w * b + k1w] += np.einsum("om,miuv->oiuv", w2[:, :, a, b], w1)
    bias = second.bias + w2.sum(axis=(2, 3)) @ first.bias
    return ConvSpec(w, bias, strides, list(first.pads), 1)


@dataclass
class Candidate:
    """A Conv followed directly by a Conv, and whether they merge.

    Attributes:
        first: Name of the first Conv node.
        second: Name of the second Conv node.
        reason: Why they are not merged, or None when they are mergeable.
        kernel: The merged kernel (h, w), when computed.
    """

    first: str
    second: str
    reason: str | None = None
    kernel: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "second": self.second, "reason": self.reason, "kernel": self.kernel}


def _label(node: ir.Node) -> str:
    """A node's name, or its first output's name when it has none (names key the latency table)."""
    return node.name or node.outputs[0].name


def _pair(node: ir.Node, max_kernel: int) -> tuple[Candidate, ir.Node | None, ConvSpec | None]:
    """``node`` as the second Conv of a pair: the candidate, the first node and the merged spec."""
    producer = node.inputs[0].producer() if node.inputs and node.inputs[0] is not None else None
    cand = Candidate(_label(producer) if producer else "", _label(node))
    if producer is None or producer.op_type != "Conv":
        cand.reason = "input not produced by a Conv"
        return cand, None, None
    out = node.inputs[0]
    if len(list(out.uses())) != 1 or out.is_graph_output():
        cand.reason = "the first Conv's output has other users"
        return cand, producer, None
    specs = [conv_spec(producer), conv_spec(node)]
    for which, s in zip(("first", "second"), specs):
        if isinstance(s, str):
            cand.reason = f"{which} Conv: {s}"
            return cand, producer, None
    first, second = specs
    if any(second.pads):
        cand.reason = "the second Conv pads its input (zero padding cannot move onto the first Conv exactly)"
        return cand, producer, None
    kh, kw = (first.kernel[i] + first.strides[i] * (second.kernel[i] - 1) for i in range(2))
    cand.kernel = (kh, kw)
    if max(kh, kw) > max_kernel:
        cand.reason = f"merged kernel {kh}x{kw} over max_kernel {max_kernel}"
        return cand, producer, None
    return cand, producer, compose(first, second)


def merge_candidates(model: ir.Model, max_kernel: int = 7) -> list[Candidate]:
    """Every Conv -> Conv pair of ``model`` with the reason it does not merge (None: it merges)."""
    return [_pair(n, max_kernel)[0] for n in model.graph if n.op_type == "Conv"
            and n.inputs[0] is not None and n.inputs[0].producer() is not None
            and n.inputs[0].producer().op_type == "Conv"]


def mergeable_chains(model: ir.Model, max_kernel: int = 1 << 30) -> list[list[str]]:
    """Maximal chains of Conv nodes linked by mergeable pairs (names, in order)."""
    nxt = {c.first: c.second for c in merge_candidates(model, max_kernel) if c.reason is None}
    starts = set(nxt) - set(nxt.values())
    chains = []
    for s in sorted(starts):
        chain = [s]
        while chain[-1] in nxt:
            chain.append(nxt[chain[-1]])
        chains.append(chain)
    return chains


def centre_tap(conv: ir.Node, spec: ConvSpec) -> ConvSpec | None:
    """``spec`` plus the identity when ``conv``'s only user adds ``conv``'s own input to it."""
    users = list(conv.outputs[0].uses())
    if len(users) != 1 or users[0].node.op_type != "Add" or conv.outputs[0].is_graph_output():
        return None
    add = users[0].node
    other = [v for v in add.inputs if v is not conv.outputs[0]]
    kh, kw = spec.kernel
    ph, pw = (kh - 1) // 2, (kw - 1) // 2
    if (len(other) != 1 or other[0] is not conv.inputs[0] or spec.strides != (1, 1) or kh % 2 == 0 or kw % 2 == 0
            or spec.pads != [ph, pw, ph, pw] or spec.weight.shape[0] != spec.weight.shape[1] * spec.group):
        return None
    w = spec.weight.copy()
    for c in range(w.shape[0]):
        w[c, 0 if spec.group > 1 else c, ph, pw] += 1.0
    return ConvSpec(w, spec.bias, spec.strides, spec.pads, spec.group)


def replace_with_conv(graph: ir.Graph, first: ir.Node, second: ir.Node, spec: ConvSpec) -> None:
    """Replace ``first .. second`` (a linear run ending at ``second``) by one Conv of ``spec`` reading
    ``first``'s input; a residual Add of that input to the result becomes a centre tap."""
    dtype = exclusive_weight(first.inputs[1]).dtype
    a, b = _label(first), _label(second)
    name = f"{a}+{b}{MERGED_SUFFIX}" if not a.endswith(MERGED_SUFFIX) else f"{a[:-len(MERGED_SUFFIX)]}+{b}{MERGED_SUFFIX}"

    def make(s: ConvSpec) -> ir.Node:
        return ir.node("Conv", [first.inputs[0], new_constant(graph, s.weight.astype(dtype), "merged_w"),
                                new_constant(graph, s.bias.astype(dtype), "merged_b")],
                       attributes={"kernel_shape": list(s.kernel), "pads": s.pads, "strides": list(s.strides),
                                   "dilations": [1, 1], "group": s.group}, name=name)

    conv = make(spec)
    graph.insert_before(second, [conv])
    replace_output(second.outputs[0], conv.outputs[0])
    tapped = centre_tap(conv, spec)
    if tapped is not None:
        add = next(iter(conv.outputs[0].uses())).node
        with_tap = make(tapped)
        graph.insert_before(add, [with_tap])
        replace_output(add.outputs[0], with_tap.outputs[0])


@dataclass(frozen=True)
class DepthMergeOptions:
    """Options of ``depth_merge``: ``depth_merge(mode=exact,max_kernel=7)``."""

    mode: Literal["exact", "latency"] = field(default="exact", metadata={
        "help": "exact: every mergeable pair; latency: only the merges the latency table says are faster"})
    max_kernel: int = field(default=7, metadata={"help": "largest merged kernel side"})
    table: str | None = field(default=None, metadata={
        "help": "latency table (JSON from `edgec merge-table`), needed by mode=latency"})

    def __post_init__(self) -> None:
        if self.max_kernel < 1:
            raise ValueError("max_kernel must be at least 1")
        if self.mode == "latency" and not self.table:
            raise ValueError("mode=latency needs table=PATH (a latency table measured on the target)")


def _faster_pairs(table: str) -> set[tuple[str, str]]:
    """Pairs ``(first, second)`` the latency table marks as faster merged."""
    from pathlib import Path

    from edgec.errors import UsageError

    try:
        data = json.loads(Path(table).read_text())
        return {(p["first"], p["second"]) for p in data["pairs"] if p.get("faster", p["merged_ms"] < p["separate_ms"])}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"depth_merge: cannot read the latency table {table}: {e}",
                         "measure one with `edgec merge-table MODEL --target TARGET`") from None


@register("depth_merge",
          matches="Conv -> Conv with nothing between (the first Conv's output used only there); a residual Add "
                  "of the merged Conv's own input",
          preconditions="constant weights; the second Conv without padding; dilation 1; merged kernel <= "
                        "max_kernel; mode=latency: only the pairs the latency table measured faster merged",
          source="Kim et al., ICML 2023, sec. 3 (conv composition); centre-tap identity as RepVGG (Ding et al., "
                 "CVPR 2021)",
          options=DepthMergeOptions)
class DepthMerge(ir.passes.InPlacePass):
    """Compose directly connected convolutions into one (exact)."""

    def __init__(self, options: DepthMergeOptions) -> None:
        super().__init__()
        self.options = options
        self.allowed = _faster_pairs(options.table) if options.mode == "latency" else None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        changed = False
        replaced: set[int] = set()
        for node in list(model.graph):
            if node.op_type != "Conv" or id(node) in replaced:
                continue
            cand, first, merged = _pair(node, self.options.max_kernel)
            if merged is None or id(first) in replaced or (
                    self.allowed is not None and (cand.first, cand.second) not in self.allowed):
                continue
            replace_with_conv(model.graph, first, node, merged)
            replaced.update((id(first), id(node)))
            changed = True
        return ir.passes.PassResult(model, changed)
