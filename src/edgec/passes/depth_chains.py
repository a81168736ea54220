"""Conv chains for depth compression: find them, remove chosen activations, merge chosen groups.

Kim et al., "Efficient Latency-Aware CNN Depth Compression via Two-Stage Dynamic Programming",
ICML 2023, sections 3-4. A *chain* is a run of 2-D convolutions ``L1 .. Ln`` in which each layer feeds
only the next, directly or through one element-wise activation (Relu, Clip, LeakyRelu, HardSwish, PRelu).
Position ``p`` (``1 <= p < n``) is the boundary after layer ``p``; it may hold an activation. A
residual ``Add`` of the chain's own input to ``Ln``'s output is recorded: it spans the whole chain.

A compression plan, in chain coordinates (0-based boundaries ``0..n`` as in :mod:`edgec.passes.depth_dp`):

* **removed activations** -- positions whose activation is replaced by the identity (changes the function);
* **groups** ``(k, l)`` -- layers ``k+1..l`` that are linear once their inner activations are removed,
  composed into one convolution (:func:`edgec.passes.merge.compose`). Their padding is first moved
  onto the group's first layer (layer ``t`` pads ``p_t`` become ``S_t * p_t`` more on the first, where
  ``S_t`` is the product of the earlier strides): the shapes stay the same, the values differ near the
  borders only, and after that the composition is exact. :func:`linearise` makes the removal and the
  padding move (the function the compressed model will have; fine-tune this one); :func:`merge_groups`
  then composes each group, exactly.

Every array is float32 NCHW; weights are composed in float64.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import onnx
import onnx_ir as ir
from onnx_ir.passes import common as common_passes

from edgec.passes._graph import only_use, replace_output
from edgec.passes.merge import ConvSpec, compose, conv_spec, replace_with_conv

#: Element-wise activations a compression may remove (the identity replaces them).
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSwish", "PRelu")


@dataclass(frozen=True)
class Layer:
    """One convolution of a chain.

    Attributes:
        conv: The Conv node's name (its first output's name when unnamed).
        act: The activation node after it, or None (linear boundary / no trailing activation).
    """

    conv: str
    act: str | None


@dataclass(frozen=True)
class Chain:
    """A chain of convolutions; see the module docstring.

    Attributes:
        layers: The layers in order.
        residual: The ``Add`` node adding the chain's input to the last layer's output, or None.
    """

    layers: tuple[Layer, ...]
    residual: str | None = None

    def __len__(self) -> int:
        return len(self.layers)

    def removable(self, position: int) -> bool:
        """Whether boundary ``position`` (``1 <= position < n``) holds an activation."""
        return 0 < position < len(self.layers) and self.layers[position - 1].act is not None

    def to_dict(self) -> dict:
        return {"layers": [{"conv": x.conv, "act": x.act} for x in self.layers], "residual": self.residual}


def label(node: ir.Node) -> str:
    """A node's name, or its first output's name when it has none."""
    return node.name or node.outputs[0].name


def _follower(conv: ir.Node) -> tuple[ir.Node | None, ir.Node | None]:
    """``(activation, next conv)`` after ``conv`` in a chain (either may be None)."""
    user = only_use(conv.outputs[0])
    act = None
    if user is not None and user.op_type in ACTIVATIONS and user.domain in ("", "ai.onnx") \
            and user.inputs[0] is conv.outputs[0]:
        act, user = user, only_use(user.outputs[0])
    source = (act or conv).outputs[0]
    if user is None or user.op_type != "Conv" or user.inputs[0] is not source \
            or not isinstance(conv_spec(user), ConvSpec):
        return act, None
    return act, user


def find_chains(model: ir.Model, min_layers: int = 2) -> list[Chain]:
    """Every maximal chain of at least ``min_layers`` mergeable 2-D convolutions, in graph order."""
    convs = [n for n in model.graph if n.op_type == "Conv" and isinstance(conv_spec(n), ConvSpec)]
    follow = {id(n): _follower(n) for n in convs}
    has_prev = {id(nxt) for _a, nxt in follow.values() if nxt is not None}
    chains = []
    for start in convs:
        if id(start) in has_prev:
            continue
        layers, node = [], start
        while node is not None:
            act, nxt = follow[id(node)]
            layers.append((node, act))
            node = nxt
        if len(layers) < min_layers:
            continue
        last, last_act = layers[-1]
        residual = None
        add = only_use(last.outputs[0]) if last_act is None else None
        if add is not None and add.op_type == "Add" and len(add.inputs) == 2:
            other = [v for v in add.inputs if v is not last.outputs[0]]
            if len(other) == 1 and other[0] is start.inputs[0]:
                residual = label(add)
        chains.append(Chain(tuple(Layer(label(c), label(a) if a else None) for c, a in layers), residual))
    return chains


def moved_pads(specs: list[ConvSpec]) -> list[list[int]]:
    """The pads of a group's layers once all padding is moved onto its first layer."""
    first = list(specs[0].pads)
    half = len(first) // 2
    stride = list(specs[0].strides)
    for s in specs[1:]:
        for ax in range(half):
            first[ax] += stride[ax] * s.pads[ax]
            first[half + ax] += stride[ax] * s.pads[half + ax]
        stride = [a * b for a, b in zip(stride, s.strides)]
    return [first] + [[0] * len(first) for _ in specs[1:]]


def group_spec(specs: list[ConvSpec]) -> ConvSpec:
    """The single convolution of a group (padding moved onto its first layer, then composed)."""
    pads = moved_pads(specs)
    moved = [ConvSpec(s.weight, s.bias, s.strides, p, s.group) for s, p in zip(specs, pads)]
    spec = moved[0]
    for s in moved[1:]:
        spec = compose(spec, s)
    return spec


def merged_kernel(specs: list[ConvSpec]) -> tuple[int, int]:
    """The kernel (h, w) of the group's merged convolution: ``K += S*(k-1)``, ``S *= s`` layer by layer."""
    kh, kw = specs[0].kernel
    sh, sw = specs[0].strides
    for s in specs[1:]:
        kh, kw = kh + sh * (s.kernel[0] - 1), kw + sw * (s.kernel[1] - 1)
        sh, sw = sh * s.strides[0], sw * s.strides[1]
    return kh, kw


def _nodes(model: ir.Model) -> dict[str, ir.Node]:
    return {label(n): n for n in model.graph}


def chain_specs(model: ir.Model, chain: Chain) -> list[ConvSpec]:
    """The :class:`ConvSpec` of each layer of ``chain`` in ``model``."""
    nodes = _nodes(model)
    return [conv_spec(nodes[x.conv]) for x in chain.layers]


def linearise(model: onnx.ModelProto, chains: list[Chain], removed: dict[int, list[int]],
              groups: dict[int, list[tuple[int, int]]], *, keep_activations: bool = False) -> onnx.ModelProto:
    """Remove the chosen activations and move each group's padding onto its first layer.

    ``keep_activations=True`` moves the padding only (the activations stay, for a training that removes
    them gradually); then call again with ``groups={}`` to remove them.

    Args:
        chains: From :func:`find_chains` on this model.
        removed: Chain index -> positions whose activation is removed.
        groups: Chain index -> groups ``(k, l)`` to be merged later (only groups of two or more layers
            change padding).

    Raises:
        ValueError: a removed position holds no activation, or a group crosses a kept activation.
    """
    ir_model = ir.serde.deserialize_model(model)
    nodes = _nodes(ir_model)
    for c, positions in removed.items():
        chain = chains[c]
        for p in positions:
            if not chain.removable(p):
                raise ValueError(f"chain {c}: no activation at position {p}")
            if keep_activations:
                continue
            act = nodes[chain.layers[p - 1].act]
            replace_output(act.outputs[0], act.inputs[0])
            ir_model.graph.remove(act, safe=True)
    for c, gs in groups.items():
        chain, cut = chains[c], set(removed.get(c, []))
        for k, l in gs:
            if any(chain.removable(p) and p not in cut for p in range(k + 1, l)):
                raise ValueError(f"chain {c}: group ({k}, {l}) crosses a kept activation")
            if l - k < 2:
                continue
            convs = [nodes[x.conv] for x in chain.layers[k:l]]
            pads = moved_pads([conv_spec(n) for n in convs])
            for n, p in zip(convs, pads):
                n.attributes["pads"] = ir.AttrInt64s("pads", p)
    return ir.serde.serialize_model(ir_model)


def merge_groups(model: onnx.ModelProto, chains: list[Chain],
                 groups: dict[int, list[tuple[int, int]]]) -> onnx.ModelProto:
    """Compose each group (of a :func:`linearise`-d model) into one convolution: an exact rewrite.

    A group covering a whole chain with a residual takes the residual as a centre tap.

    Raises:
        ValueError: a group's layers are not directly connected or a later layer still pads.
    """
    ir_model = ir.serde.deserialize_model(model)
    nodes = _nodes(ir_model)
    for c, gs in groups.items():
        chain = chains[c]
        for k, l in gs:
            if l - k < 2:
                continue
            convs = [nodes[x.conv] for x in chain.layers[k:l]]
            for a, b in itertools.pairwise(convs):
                if b.inputs[0] is not a.outputs[0]:
                    raise ValueError(f"chain {c}: {label(a)} does not feed {label(b)} directly")
            specs = [conv_spec(n) for n in convs]
            if any(any(s.pads) for s in specs[1:]):
                raise ValueError(f"chain {c}: group ({k}, {l}) still pads after its first layer")
            spec = specs[0]
            for s in specs[1:]:
                spec = compose(spec, s)
            replace_with_conv(ir_model.graph, convs[0], convs[-1], spec)  # takes a spanning residual
    common_passes.RemoveUnusedNodesPass()(ir_model)
    return ir.serde.serialize_model(ir_model)


def conv_macs(spec: ConvSpec, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of ``spec`` on an ``(N, C, H, W)`` input."""
    n, _c, h, w = in_shape
    kh, kw = spec.kernel
    oh = (h + spec.pads[0] + spec.pads[2] - kh) // spec.strides[0] + 1
    ow = (w + spec.pads[1] + spec.pads[3] - kw) // spec.strides[1] + 1
    return int(n * oh * ow * spec.weight.shape[0] * spec.weight.shape[1] * kh * kw)


