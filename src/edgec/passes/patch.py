"""Patch-based inference: run the memory-heavy first stage of a CNN on n x n spatial patches.

Lin et al., "MCUNetV2: Memory-Efficient Patch-based Inference for Tiny Deep Learning",
NeurIPS 2021, section 3.1. The stage that ends at the *stop* tensor (a point where a single
tensor crosses, e.g. a block output) is computed once per patch of the stop tensor; each
patch's working tensors are small and die with the patch, so the large early activations
never exist whole. The patches of the stop tensor are concatenated there, and the rest of
the graph is unchanged.

Exactness. Each patch's input region comes from the receptive field, computed backwards
from the stop tensor: a window operator (``Conv``, ``MaxPool``, ``AveragePool``) whose
outputs ``[o0, o1)`` are needed reads input rows ``[o0*s - p, (o1-1)*s - p + d*(k-1] + 1)``
(stride ``s``, leading pad ``p``, dilation ``d``, kernel ``k``). The part of that window
outside the image becomes the patch's own padding, so padding appears only at true image
borders and inside the image neighbours' real values are read: every output equals the
unpatched one (up to float summation order). Overlapping regions are recomputed; that is
the MAC overhead (the paper's "receptive field redistribution" is an architecture change
and is not done here).

Supported in the stage: 2-D ``Conv`` (any group), ``MaxPool``/``AveragePool`` without
``ceil_mode``, element-wise operators whose other operands are per-channel or scalar
constants or tensors of the same shape, ``BatchNormalization``, channel ``Concat``/``Split``.
Anything else (global pooling, reshapes, attention) ends the region where a stop may lie.

:func:`search_patch` picks the stop tensor and ``n`` that minimise the analytic peak
activation bytes (:mod:`edgec.frontend.memory`) under a MAC-overhead budget.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import onnx
from onnx import helper

from edgec.frontend.analysis import static_shapes, node_macs
from edgec.frontend.memory import activation_memory

WINDOW_OPS = frozenset({"Conv", "MaxPool", "AveragePool"})
POINTWISE_OPS = frozenset({
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu", "Elu", "Selu", "Gelu",
    "Erf", "Exp", "Neg", "Abs", "Sqrt", "Softplus", "Mish", "Add", "Sub", "Mul", "Div", "BatchNormalization",
    "Identity", "Concat", "Split",
})
NODE_PREFIX = "patch_inference/"
METADATA_KEY = "edgec.patch_inference"


class PatchError(ValueError):
    """The stage before the stop tensor cannot be run in patches (the message says why)."""


@dataclass(frozen=True)
class Span:
    """A half-open interval ``[lo, hi)`` of rows or columns."""

    lo: int
    hi: int

    def hull(self, other: Span | None) -> Span:
        return self if other is None else Span(min(self.lo, other.lo), max(self.hi, other.hi))


Region = tuple[Span, Span]  # (rows, columns)


@dataclass
class PatchPlan:
    """Regions of every stage tensor per patch, and what the rewrite needs.

    Attributes:
        stop: The stop tensor (NCHW).
        grid: ``(rows, columns)`` of patches.
        stage: Indices of the stage's nodes in graph order.
        need: Per patch, tensor -> region computed for it (absolute coordinates).
        reads: Per patch, ``(node index, input position)`` -> region that input reads.
        windows: Per patch, node index -> its pads ``[top, left, bottom, right]`` on the patch.
    """

    stop: str
    grid: tuple[int, int]
    stage: list[int]
    need: list[dict[str, Region]] = field(default_factory=list)
    reads: list[dict[tuple[int, int], Region]] = field(default_factory=list)
    windows: list[dict[int, list[int]]] = field(default_factory=list)


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _window_params(node: onnx.NodeProto, shapes: dict, in_hw: tuple[int, int],
                   out_hw: tuple[int, int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """Kernel, strides, dilations and explicit pads ``[top, left, bottom, right]`` of a window op."""
    a = _attrs(node)
    if node.op_type == "Conv":
        kernel = list(a.get("kernel_shape") or shapes[node.input[1]][2:])
    else:
        kernel = list(a["kernel_shape"])
        if a.get("ceil_mode", 0):
            raise PatchError(f"{node.op_type} {node.name} uses ceil_mode")
    if len(kernel) != 2:
        raise PatchError(f"{node.op_type} {node.name} is not 2-D")
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0, 0, 0, 0]))
    elif auto == "VALID":
        pads = [0, 0, 0, 0]
    else:  # SAME_UPPER / SAME_LOWER: total padding so that out = ceil(in / s)
        pads = [0, 0, 0, 0]
        for ax in range(2):
            total = max(0, (out_hw[ax] - 1) * strides[ax] + dil[ax] * (kernel[ax] - 1) + 1 - in_hw[ax])
            first = total // 2 if auto == "SAME_UPPER" else total - total // 2
            pads[ax], pads[ax + 2] = first, total - first
    return kernel, strides, dil, pads


def _is_const(name: str, consts: set[str]) -> bool:
    return not name or name in consts


def stage_of(model: onnx.ModelProto, stop: str, shapes: dict | None = None) -> list[int]:
    """Indices of the nodes ``stop`` depends on, checked for patching.

    Raises:
        PatchError: ``stop`` is not a 4-D activation, another stage tensor is used after the stage,
            or the stage holds an operator patches cannot run.
    """
    from edgec.frontend.memory import constant_values

    shapes = shapes if shapes is not None else static_shapes(model)
    consts = constant_values(model)
    nodes = model.graph.node
    producer = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    if stop not in producer:
        raise PatchError(f"no node produces tensor {stop!r}")
    if len(shapes.get(stop, ())) != 4:
        raise PatchError(f"tensor {stop!r} is not a 4-D NCHW activation")
    stage, stack = set(), [stop]
    while stack:
        i = producer.get(stack.pop())
        if i is None or i in stage or all(o in consts for o in nodes[i].output if o):
            continue
        stage.add(i)
        stack.extend(x for x in nodes[i].input if x and not _is_const(x, consts))
    outputs = {v.name for v in model.graph.output}
    for i in stage:
        n = nodes[i]
        if n.op_type not in WINDOW_OPS and n.op_type not in POINTWISE_OPS:
            raise PatchError(f"{n.op_type} {n.name or n.output[0]} is not spatially local")
        for x in list(n.input) + list(n.output):
            if x and not _is_const(x, consts) and len(shapes.get(x, ())) != 4:
                raise PatchError(f"tensor {x!r} of {n.op_type} {n.name} is not 4-D")
        for x in n.input[1:] if n.op_type not in WINDOW_OPS else ():
            if x and x in consts and len(shapes.get(x, ())) >= 2 and math.prod(shapes[x][-2:]) != 1:
                raise PatchError(f"{n.op_type} {n.name} broadcasts a spatial constant {x!r}")
        if n.op_type in ("Concat", "Split") and _attrs(n).get("axis", 0) not in (1, -3):
            raise PatchError(f"{n.op_type} {n.name} is not along channels")
        if n.op_type in POINTWISE_OPS and n.op_type not in ("Concat", "Split"):
            acts = [x for x in n.input if x and not _is_const(x, consts)]
            if any(shapes[x][2:] != shapes[n.output[0]][2:] for x in acts):
                raise PatchError(f"{n.op_type} {n.name} broadcasts over space")
        for o in n.output:
            if o and o != stop and o in outputs:
                raise PatchError(f"stage tensor {o!r} is a graph output")
    for j, n in enumerate(nodes):
        if j in stage:
            continue
        for x in n.input:
            if x and x != stop and x in producer and producer[x] in stage:
                raise PatchError(f"stage tensor {x!r} is used after the stop (by {n.op_type} {n.name}); "
                                 "stop where a single tensor crosses, e.g. a block output")
    return sorted(stage)


def _splits(length: int, parts: int) -> list[Span]:
    edges = [round(k * length / parts) for k in range(parts + 1)]
    return [Span(edges[k], edges[k + 1]) for k in range(parts)]


def plan_patches(model: onnx.ModelProto, stop: str, grid: int | tuple[int, int],
                 shapes: dict | None = None) -> PatchPlan:
    """Regions of every stage tensor for each of the ``grid`` patches of ``stop``.

    Raises:
        PatchError: see :func:`stage_of`; or the grid is larger than the stop tensor.
    """
    from edgec.frontend.memory import constant_values

    shapes = shapes if shapes is not None else static_shapes(model)
    stage = stage_of(model, stop, shapes)
    consts = constant_values(model)
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    _, _, height, width = shapes[stop]
    if rows < 1 or cols < 1 or rows > height or cols > width:
        raise PatchError(f"a {rows}x{cols} grid does not fit the {height}x{width} stop tensor {stop!r}")
    plan = PatchPlan(stop, (rows, cols), stage)
    nodes = model.graph.node
    for rspan in _splits(height, rows):
        for cspan in _splits(width, cols):
            need: dict[str, Region] = {stop: (rspan, cspan)}
            reads: dict[tuple[int, int], Region] = {}
            windows: dict[int, list[int]] = {}
            for i in reversed(stage):
                n = nodes[i]
                outs = [need[o] for o in n.output if o in need]
                if not outs:
                    continue
                out = (outs[0][0], outs[0][1])
                for r, c in outs[1:]:
                    out = (r.hull(out[0]), c.hull(out[1]))
                for o in n.output:
                    if o:
                        need[o] = out
                for pos, x in enumerate(n.input):
                    if _is_const(x, consts) or (n.op_type in WINDOW_OPS and pos > 0):
                        continue
                    if n.op_type in WINDOW_OPS:
                        in_hw = shapes[x][2:]
                        kernel, strides, dil, pads = _window_params(n, shapes, in_hw, shapes[n.output[0]][2:])
                        region, own = [], [0, 0, 0, 0]
                        for ax, span in enumerate(out):
                            lo = span.lo * strides[ax] - pads[ax]
                            hi = (span.hi - 1) * strides[ax] - pads[ax] + dil[ax] * (kernel[ax] - 1) + 1
                            own[ax], own[ax + 2] = max(0, -lo), max(0, hi - in_hw[ax])
                            region.append(Span(max(0, lo), min(in_hw[ax], hi)))
                        windows[i] = own
                        req = (region[0], region[1])
                    else:
                        req = out
                    reads[(i, pos)] = req
                    prev = need.get(x)
                    need[x] = req if prev is None else (req[0].hull(prev[0]), req[1].hull(prev[1]))
            plan.need.append(need)
            plan.reads.append(reads)
            plan.windows.append(windows)
    return plan


def _size(region: Region) -> tuple[int, int]:
    return region[0].hi - region[0].lo, region[1].hi - region[1].lo


def patch_graph(model: onnx.ModelProto, plan: PatchPlan,
                shapes: dict | None = None) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """The model with ``plan``'s stage run patch by patch, and the shapes of all its tensors.

    The stage's nodes are replaced by one copy per patch (named ``patch_inference/<node>/p<k>``),
    in patch-major order, each reading a ``Slice`` of its input region; row ``Concat``s along W
    and one along H assemble the stop tensor under its original name.
    """
    from edgec.frontend.memory import constant_values

    shapes = dict(shapes if shapes is not None else static_shapes(model))
    consts = constant_values(model)
    nodes = model.graph.node
    in_stage = set(plan.stage)
    first = plan.stage[0]
    new_nodes: list[onnx.NodeProto] = [n for i, n in enumerate(nodes) if i < first and i not in in_stage]
    pre_stage = [n for i, n in enumerate(nodes) if i > first and i not in in_stage and i < plan.stage[-1]]
    new_nodes.extend(pre_stage)  # constant subgraphs interleaved with the stage (hoisted before it)
    inits: list[onnx.TensorProto] = []
    rows, cols = plan.grid
    row_parts: list[str] = []
    patch_outs: list[str] = []
    for k, (need, reads, windows) in enumerate(zip(plan.need, plan.reads, plan.windows)):
        local: dict[str, str] = {}  # original tensor -> this patch's tensor holding need[tensor]

        def tensor(x: str, req: Region, i: int, pos: int) -> str:
            have = need[x]
            name = local.get(x)
            if name is None:  # a tensor from outside the stage (the graph input): slice its region
                name = x
                have = (Span(0, shapes[x][2]), Span(0, shapes[x][3]))
            if req == have:
                return name
            sliced = f"{x}__p{k}_in{i}_{pos}"
            starts = f"{sliced}_starts"
            inits.extend([
                onnx.numpy_helper.from_array(_i64([req[0].lo - have[0].lo, req[1].lo - have[1].lo]), starts),
                onnx.numpy_helper.from_array(_i64([req[0].hi - have[0].lo, req[1].hi - have[1].lo]),
                                             f"{sliced}_ends"),
                onnx.numpy_helper.from_array(_i64([2, 3]), f"{sliced}_axes")])
            new_nodes.append(helper.make_node("Slice", [name, starts, f"{sliced}_ends", f"{sliced}_axes"],
                                              [sliced], name=f"{NODE_PREFIX}slice/{sliced}"))
            shapes[sliced] = (*shapes[x][:2], *_size(req))
            return sliced

        for i in plan.stage:
            n = nodes[i]
            if not any(o in need for o in n.output):
                continue
            ins = [x if _is_const(x, consts) or (n.op_type in WINDOW_OPS and pos > 0)
                   else tensor(x, reads[(i, pos)], i, pos) for pos, x in enumerate(n.input)]
            outs = []
            for o in n.output:
                if not o:
                    outs.append(o)
                    continue
                local[o] = f"{o}__p{k}"
                shapes[local[o]] = (*shapes[o][:2], *_size(need[o]))
                outs.append(local[o])
            copy = helper.make_node(n.op_type, ins, outs, name=f"{NODE_PREFIX}{n.name or n.output[0]}/p{k}",
                                    domain=n.domain or None)
            keep = [a for a in n.attribute if not (i in windows and a.name in ("pads", "auto_pad"))]
            copy.attribute.extend(keep)
            if i in windows:
                copy.attribute.append(helper.make_attribute("pads", windows[i]))
            new_nodes.append(copy)
        patch_outs.append(local[plan.stop])
        if len(patch_outs) == cols:
            row = patch_outs[0] if cols == 1 else f"{plan.stop}__row{len(row_parts)}"
            if cols > 1:
                new_nodes.append(helper.make_node("Concat", patch_outs, [row], axis=3,
                                                  name=f"{NODE_PREFIX}concat/{row}"))
                shapes[row] = (shapes[plan.stop][0], shapes[plan.stop][1], shapes[patch_outs[0]][2],
                               shapes[plan.stop][3])
            row_parts.append(row)
            patch_outs = []
    if rows > 1:
        new_nodes.append(helper.make_node("Concat", row_parts, [plan.stop], axis=2,
                                          name=f"{NODE_PREFIX}concat/{plan.stop}"))
    else:
        new_nodes.append(helper.make_node("Identity", row_parts, [plan.stop], name=f"{NODE_PREFIX}{plan.stop}"))
    new_nodes.extend(n for i, n in enumerate(nodes) if i > plan.stage[-1])
    graph = helper.make_graph(new_nodes, model.graph.name, list(model.graph.input), list(model.graph.output),
                              list(model.graph.initializer) + inits)
    out = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                            producer_name=model.producer_name)
    out.metadata_props.extend(model.metadata_props)
    return out, shapes


def _i64(values: list[int]):
    import numpy as np

    return np.asarray(values, dtype=np.int64)


def graph_macs(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of ``model`` (Conv/Gemm/MatMul) with the given shapes."""
    return sum(node_macs(n, shapes) for n in model.graph.node)


@dataclass(frozen=True)
class PatchChoice:
    """One (stop, grid) candidate with its figures.

    Attributes:
        stop: Stop tensor.
        grid: Patches per side (n for n x n).
        peak_activation_bytes: Analytic fp32 peak of the patched graph (bytes).
        macs: MACs of the patched graph.
        mac_overhead: ``macs / original MACs - 1``.
    """

    stop: str
    grid: int
    peak_activation_bytes: int
    macs: int
    mac_overhead: float

    def to_dict(self) -> dict[str, Any]:
        return {"stop": self.stop, "grid": self.grid, "peak_activation_bytes": self.peak_activation_bytes,
                "macs": self.macs, "mac_overhead": round(self.mac_overhead, 4)}


def stop_candidates(model: onnx.ModelProto, shapes: dict | None = None) -> list[str]:
    """Tensors (graph order) where a patch stage can stop: single crossing, spatially local before."""
    shapes = shapes if shapes is not None else static_shapes(model)
    out = []
    for n in model.graph.node:
        for o in n.output:
            if not o or len(shapes.get(o, ())) != 4:
                continue
            try:
                stage_of(model, o, shapes)
            except PatchError:
                continue
            out.append(o)
    return out


def evaluate(model: onnx.ModelProto, stop: str, grid: int, shapes: dict, dtypes: dict,
             base_macs: int) -> PatchChoice:
    """Build the patched graph for ``(stop, grid)`` and measure its analytic fp32 peak and MACs."""
    patched, pshapes = patch_graph(model, plan_patches(model, stop, grid, shapes), shapes)
    peak = activation_memory(patched, shapes=pshapes, dtypes=dtypes).peak_activation_bytes
    macs = graph_macs(patched, pshapes)
    return PatchChoice(stop, grid, peak, macs, macs / base_macs - 1 if base_macs else 0.0)


def search_patch(model: onnx.ModelProto, *, max_mac_overhead: float = 0.15, stop: str | None = None,
                 grid: int | None = None, max_grid: int = 8) -> tuple[PatchChoice | None, list[PatchChoice]]:
    """Choose the stop tensor and grid that minimise the analytic peak under a MAC budget.

    Exhaustive over the stop candidates (or ``stop``) and grids 2..``max_grid`` (or ``grid``).
    Ties go to fewer MACs, then to fewer patches.

    Args:
        model: ONNX with static shapes, NCHW.
        max_mac_overhead: Largest accepted ``patched MACs / MACs - 1`` (0.15 = +15%).

    Returns:
        ``(best or None when no candidate lowers the peak within the budget, all candidates)``.

    Raises:
        PatchError: a given ``stop`` cannot end a patch stage.
    """
    from edgec.frontend.memory import value_dtypes

    shapes, dtypes = static_shapes(model), value_dtypes(model)
    base_peak = activation_memory(model, shapes=shapes, dtypes=dtypes).peak_activation_bytes
    base_macs = graph_macs(model, shapes)
    stops = [stop] if stop else stop_candidates(model, shapes)
    if stop:
        stage_of(model, stop, shapes)
    tried: list[PatchChoice] = []
    for s in stops:
        height, width = shapes[s][2:]
        for n in ([grid] if grid else range(2, max_grid + 1)):
            if n > min(height, width):
                continue
            choice = evaluate(model, s, n, shapes, dtypes, base_macs)
            tried.append(choice)
            if not grid and choice.mac_overhead > max_mac_overhead:
                break  # larger grids only add overlap
    ok = [c for c in tried if c.mac_overhead <= max_mac_overhead and c.peak_activation_bytes < base_peak]
    best = min(ok, key=lambda c: (c.peak_activation_bytes, c.macs, c.grid), default=None)
    return best, tried


def record(model: onnx.ModelProto, choice: PatchChoice, before: int) -> None:
    """Store the choice in the model's metadata (``edgec.patch_inference``, JSON)."""
    data = {**choice.to_dict(), "peak_activation_bytes_before": before}
    for p in list(model.metadata_props):
        if p.key == METADATA_KEY:
            model.metadata_props.remove(p)
    model.metadata_props.append(onnx.StringStringEntryProto(key=METADATA_KEY, value=json.dumps(data)))


@dataclass(frozen=True)
class PatchInferenceOptions:
    """Options of ``patch_inference``: ``patch_inference(grid=4,stop=add_1,max_mac_overhead=0.15)``."""

    grid: int | None = field(default=None, metadata={"help": "patches per side (n for n x n); default: searched"})
    stop: str | None = field(default=None, metadata={
        "help": "tensor (or node) name where the patch stage ends; default: searched"})
    max_mac_overhead: float = field(default=0.15, metadata={
        "help": "largest accepted MAC increase of the searched choice (0.15 = +15%)"})
    max_grid: int = field(default=8, metadata={"help": "largest n tried by the search"})

    def __post_init__(self) -> None:
        if self.grid is not None and self.grid < 2:
            raise ValueError("grid must be at least 2 (1 is no patching)")
        if self.max_mac_overhead < 0:
            raise ValueError("max_mac_overhead must be >= 0")
        if self.max_grid < 2:
            raise ValueError("max_grid must be at least 2")


def _resolve_stop(model: onnx.ModelProto, stop: str) -> str:
    produced = {o for n in model.graph.node for o in n.output}
    if stop in produced:
        return stop
    by_node = {n.name: n.output[0] for n in model.graph.node if n.name and n.output}
    if stop in by_node:
        return by_node[stop]
    raise PatchError(f"no tensor or node is named {stop!r}")


def patch_inference(model: onnx.ModelProto, options: PatchInferenceOptions) -> onnx.ModelProto | None:
    """The patched model, or None when patching does not lower the peak within the budget.

    Explicit ``stop`` and ``grid`` are applied as given; what is not given is searched
    (:func:`search_patch`). The choice and both peaks are stored in the model's metadata
    (``edgec.patch_inference``).

    Raises:
        UsageError: the stop tensor cannot end a patch stage (the message lists valid stops).
    """
    from edgec.errors import UsageError

    if any(n.name.startswith(NODE_PREFIX) for n in model.graph.node):
        return None  # already patched
    try:
        stop = _resolve_stop(model, options.stop) if options.stop else None
        if stop and options.grid:
            shapes = static_shapes(model)
            from edgec.frontend.memory import value_dtypes

            best = evaluate(model, stop, options.grid, shapes, value_dtypes(model), graph_macs(model, shapes))
        else:
            best, _ = search_patch(model, max_mac_overhead=options.max_mac_overhead, stop=stop, grid=options.grid,
                                   max_grid=options.max_grid)
    except PatchError as e:
        valid = stop_candidates(model)
        shown = ", ".join(valid[-12:]) if valid else "none"
        raise UsageError(f"patch_inference: {e}",
                         f"valid stop tensors, named as after the earlier passes (last {min(12, len(valid))} of "
                         f"{len(valid)}; `edgec memory MODEL` ranks them): {shown}") from None
    before = activation_memory(model).peak_activation_bytes
    if options.grid and best is None:
        raise UsageError(f"patch_inference: no stop tensor is large enough for a {options.grid}x{options.grid} grid "
                         f"within +{100 * options.max_mac_overhead:g}% MACs",
                         "give a smaller grid, or leave grid out to search it")
    if best is None:
        return None
    if best.peak_activation_bytes >= before:
        raise UsageError(f"patch_inference(stop={best.stop},grid={best.grid}) does not lower the peak activation "
                         f"memory ({before} -> {best.peak_activation_bytes} bytes fp32)",
                         "stop later (after the memory-heavy layers); `edgec memory MODEL` ranks the plans")
    patched, _ = patch_graph(model, plan_patches(model, best.stop, best.grid))
    record(patched, best, before)
    return patched


def _register() -> None:
    import onnx_ir as ir

    from edgec.passes.registry import register

    @register("patch_inference",
              matches="the spatially local stage before a stop tensor (Conv, pooling, element-wise, channel "
                      "Concat/Split) where a single tensor crosses",
              preconditions="static NCHW shapes; the stage has no global operator; searched unless stop and grid "
                            "are given; fires only when the peak activation bytes go down within max_mac_overhead",
              source="Lin et al., MCUNetV2, NeurIPS 2021, sec. 3.1 (patch-based inference)",
              options=PatchInferenceOptions)
    class PatchInference(ir.passes.InPlacePass):
        """Run the first stage on n x n spatial patches (exact; peak memory down, MACs up)."""

        def __init__(self, options: PatchInferenceOptions) -> None:
            super().__init__()
            self.options = options

        def call(self, model: ir.Model) -> ir.passes.PassResult:
            proto = ir.serde.serialize_model(model)
            patched = patch_inference(proto, self.options)
            if patched is None:
                return ir.passes.PassResult(model, False)
            new = ir.serde.deserialize_model(patched)
            model.graph = new.graph
            model.metadata_props.clear()
            model.metadata_props.update(new.metadata_props)
            return ir.passes.PassResult(model, True)


_register()
