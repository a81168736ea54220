"""What a compiled model is made of: its fused kernels, their arguments, and planned memory.

``kernel_calls`` lists the ``call_tir`` calls of ``main`` after fusion, in
execution order, with every argument's shape and dtype and where it comes from
(a graph input, a constant, or an earlier kernel). This is what the profiler
times kernel by kernel, on the host or on a device over RPC, and what the
memory timeline is computed from. ``planned_memory`` runs TVM's static memory
planning (``StaticPlanBlockMemory``) and sums the storage it allocates.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def _tensor_info(ty) -> list[dict[str, Any]]:
    """``[{"shape", "dtype"}]`` of a tensor type or a tuple of them."""
    fields = getattr(ty, "fields", None)
    if fields is not None:
        out = []
        for f in fields:
            out.extend(_tensor_info(f))
        return out
    shape = [int(d) for d in ty.shape] if getattr(ty, "shape", None) is not None else []
    return [{"shape": shape, "dtype": str(ty.dtype)}]


def _nbytes(info: dict[str, Any]) -> int:
    return int(math.prod(info["shape"]) * np.dtype(info["dtype"]).itemsize)


def kernel_calls(fused) -> list[dict[str, Any]]:
    """The fused kernels ``main`` calls, in order.

    Args:
        fused: Relax IRModule after legalization and fusion (``pipeline.fused_module``).

    Returns:
        One dict per call: ``index``, ``kernel`` (the symbol in the library),
        ``args`` (``[{"shape", "dtype", "source"}]`` where ``source`` is ``"input"``,
        ``"const"`` or ``"kernel:<index>"``), ``outputs`` (``[{"shape", "dtype"}]``),
        ``output_bytes``.
    """
    from tvm import relax

    main = fused["main"]
    params = {p.name for p in main.params}
    producer: dict[Any, int] = {}
    calls: list[dict[str, Any]] = []
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.TupleGetItem) and value.tuple_value in producer:
                producer[binding.var] = producer[value.tuple_value]
                continue
            if isinstance(value, relax.Var) and value in producer:
                producer[binding.var] = producer[value]
                continue
            if not (isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.call_tir"):
                continue
            gvar, args = value.args[0], value.args[1]
            arg_infos = []
            for a in getattr(args, "fields", [args]):
                info = _tensor_info(a.ty)[0]
                if isinstance(a, relax.Var) and a in producer:
                    info["source"] = f"kernel:{producer[a]}"
                elif isinstance(a, relax.Var) and a.name in params:
                    info["source"] = "input"
                else:
                    info["source"] = "const"
                arg_infos.append(info)
            outputs = _tensor_info(binding.var.ty)
            index = len(calls)
            producer[binding.var] = index
            calls.append({"index": index, "kernel": gvar.name_hint, "args": arg_infos, "outputs": outputs,
                          "output_bytes": sum(_nbytes(o) for o in outputs)})
    return calls


def live_activation_bytes(calls: list[dict[str, Any]]) -> list[int]:
    """Bytes of activations alive while each kernel runs (its inputs, outputs and anything used later).

    Unplanned: every kernel output is a separate tensor, freed after its last use.
    The peak of this list is the activation memory a naive runtime needs.
    """
    last_use = {c["index"]: c["index"] for c in calls}
    for c in calls:
        for a in c["args"]:
            if a["source"].startswith("kernel:"):
                p = int(a["source"].split(":")[1])
                last_use[p] = max(last_use[p], c["index"])
    input_bytes = sum(_nbytes(a) for c in calls for a in c["args"] if a["source"] == "input")
    live = []
    for c in calls:
        alive = sum(calls[p]["output_bytes"] for p in range(c["index"] + 1) if last_use[p] >= c["index"])
        live.append(alive + input_bytes)
    return live


def planned_memory(fused, target) -> dict[str, int]:
    """Activation storage after TVM's static memory planning.

    Returns:
        ``{"planned_activation_bytes": sum of alloc_storage sizes in main,
        "planned_storages": their count, "unplanned_activation_bytes": sum of all
        kernel outputs}``.
    """
    import tvm
    from tvm import relax

    with target:
        planned = tvm.transform.Sequential([
            relax.transform.RewriteDataflowReshape(), relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(), relax.transform.CallTIRRewrite(),
            relax.transform.StaticPlanBlockMemory()])(fused)
    sizes = []
    for block in planned["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.memory.alloc_storage":
                shape = value.args[0]
                sizes.append(int(math.prod(int(v) for v in shape.values)))
    unplanned = sum(c["output_bytes"] for c in kernel_calls(fused))
    return {"planned_activation_bytes": int(sum(sizes)), "planned_storages": len(sizes),
            "unplanned_activation_bytes": int(unplanned)}


# ONNX op -> the Relax/TOPI operator names it lowers to (as they appear in fused kernel names).
_ONNX_TOKENS: dict[str, list[str]] = {
    "Conv": ["conv2d", "conv1d", "conv3d", "add"], "ConvTranspose": ["conv2d_transpose", "add"],
    "Relu": ["relu"], "Clip": ["clip", "maximum", "minimum"], "Add": ["add"], "Sub": ["subtract"],
    "Mul": ["multiply"], "Div": ["divide"], "Gemm": ["matmul", "add", "multiply", "permute_dims"],
    "MatMul": ["matmul"], "Reshape": ["reshape"], "Flatten": ["reshape"], "Transpose": ["permute_dims", "transpose"],
    "Softmax": ["softmax"], "ReduceMean": ["mean"], "GlobalAveragePool": ["mean", "adaptive_avg_pool2d"],
    "Sigmoid": ["sigmoid"], "HardSigmoid": ["multiply", "add", "clip", "tir_clip"],
    "HardSwish": ["add", "clip", "tir_clip", "divide", "multiply"], "Concat": ["concatenate"],
    "Split": ["split"], "AveragePool": ["avg_pool2d"], "MaxPool": ["max_pool2d"], "Resize": ["resize2d"],
    "Unsqueeze": ["expand_dims"], "Squeeze": ["squeeze"], "BatchNormalization": ["batch_norm"],
    "Pad": ["pad"], "Gather": ["take"], "Slice": ["strided_slice"], "Tanh": ["tanh"], "Exp": ["exp"],
    "Sqrt": ["sqrt"], "Pow": ["power"], "Erf": ["erf"], "LayerNormalization": ["layer_norm"],
    "ReduceSum": ["sum"], "ReduceMax": ["max"], "Expand": ["broadcast_to"], "Cast": ["astype"],
}


def _kernel_tokens(name: str) -> list[str]:
    import re

    parts = [re.sub(r"\d+$", "", p) for p in name.split("_")]
    out, i = [], 0
    while i < len(parts):  # rejoin multi-word ops (e.g. adaptive_avg_pool2d, tir_clip, permute_dims)
        for width in (4, 3, 2, 1):
            cand = "_".join(parts[i:i + width])
            if width == 1 or cand in {t for ts in _ONNX_TOKENS.values() for t in ts}:
                out.append(cand)
                i += width
                break
    return [t for t in out if t and t != "fused"]


#: ``onnx_nodes`` entry of a kernel that only converts activations between NCHW and NHWC
#: (inserted by the compiler for NHWC convolutions; no ONNX node of its own).
LAYOUT_TRANSFORM = "<layout NCHW<->NHWC>"


def map_onnx_nodes(calls: list[dict[str, Any]], onnx_nodes: list[tuple[str, str]], window: int = 8) -> None:
    """Attach ``onnx_nodes`` (names) to each kernel call, best effort.

    TVM's importer keeps no source locations, so the mapping aligns the two
    sequences: ONNX nodes in graph order against kernels in call order, each node
    taking the first of its operator names still free in one of the next ``window``
    kernels. Nodes that fuse away entirely (reshapes folded into constants) stay
    unmapped; kernels that only transpose between NCHW and NHWC get :data:`LAYOUT_TRANSFORM`.

    Args:
        calls: From :func:`kernel_calls`; gains an ``onnx_nodes`` list each.
        onnx_nodes: ``[(node name, op type)]`` in graph order.
    """
    remaining = [_kernel_tokens(c["kernel"]) for c in calls]
    for c in calls:
        c["onnx_nodes"] = []
    k = 0
    for name, op in onnx_nodes:
        tokens = _ONNX_TOKENS.get(op)
        if not tokens:
            continue
        for j in range(k, min(len(calls), k + window)):
            primary = [t for t in tokens if t in remaining[j]]
            if primary:
                calls[j]["onnx_nodes"].append(name)
                for t in tokens:  # an op consumes every token it lowers to (Conv: conv2d + bias add)
                    if t in remaining[j]:
                        remaining[j].remove(t)
                k = j
                break
    for c, tokens in zip(calls, remaining):
        if not c["onnx_nodes"] and tokens and set(tokens) <= {"fused", "transpose"}:
            c["onnx_nodes"] = [LAYOUT_TRANSFORM]
