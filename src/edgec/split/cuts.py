"""The cut table: every valid split point of a model with what crosses it and what each side costs.

For each tensor where the model can be cut (:func:`edgec.split.partition.valid_cuts`): its
name, shape and bytes (fp32, and int8 at 1 byte per element), and the MACs and parameters of
the head (everything the cut tensor depends on) and of the tail (the rest). The raw input's
bytes and a JPEG of a real image at the model's input size (quality 90, scikit-image's
``astronaut``, or a generated image without scikit-image) give the two baselines: sending the
input instead of a cut tensor (Kang et al., "Neurosurgeon", ASPLOS 2017, section 3; Matsubara
et al., sc2bench, 2023).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
import onnx

from edgec.frontend.analysis import static_shapes, node_macs
from edgec.split.partition import valid_cuts


def _ancestors(model: onnx.ModelProto, tensor: str) -> set[int]:
    producers = {out: i for i, n in enumerate(model.graph.node) for out in n.output if out}
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        i = producers.get(stack.pop())
        if i is None or i in seen:
            continue
        seen.add(i)
        stack.extend(model.graph.node[i].input)
    return seen


def head_node_names(model: onnx.ModelProto, tensor: str) -> set[str]:
    """Names of the ONNX nodes the cut at ``tensor`` puts in the head (everything ``tensor`` depends on)."""
    return {model.graph.node[i].name for i in _ancestors(model, tensor)}


def _node_params(model: onnx.ModelProto) -> list[int]:
    sizes = {i.name: int(np.prod(i.dims)) for i in model.graph.initializer if i.data_type in (1, 10, 11, 16)}
    return [sum(sizes.get(x, 0) for x in n.input) for n in model.graph.node]


def jpeg_bytes(height: int, width: int, quality: int = 90) -> int:
    """Bytes of a JPEG (quality ``quality``) of a real image resized to ``height`` x ``width``."""
    from PIL import Image

    try:
        from skimage import data

        image = Image.fromarray(data.astronaut())
    except ImportError:  # a smooth generated image; scikit-image ships the real one
        yy, xx = np.mgrid[0:512, 0:512]
        image = Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8))
    buf = io.BytesIO()
    image.convert("RGB").resize((width, height), Image.Resampling.BILINEAR).save(buf, "JPEG", quality=quality)
    return buf.tell()


def cut_table(model: onnx.ModelProto) -> dict[str, Any]:
    """Every valid cut of ``model`` (ONNX with static shapes) with its costs.

    Returns:
        ``{"input": {"name", "shape", "bytes_fp32", "bytes_uint8", "jpeg_q90_bytes"}, "macs", "params",
        "cuts": [{"tensor", "shape", "bytes_fp32", "bytes_int8", "head_macs", "tail_macs",
        "head_params", "tail_params"}]}`` in graph order.
    """
    shapes = static_shapes(model)
    macs = [node_macs(n, shapes) for n in model.graph.node]
    params = _node_params(model)
    total_macs, total_params = sum(macs), sum(params)
    inits = {i.name for i in model.graph.initializer}
    first = next(i for i in model.graph.input if i.name not in inits)
    in_shape = [d.dim_value for d in first.type.tensor_type.shape.dim]
    table = {"input": {"name": first.name, "shape": in_shape, "bytes_fp32": 4 * math.prod(in_shape),
                       "bytes_uint8": math.prod(in_shape)},
             "macs": total_macs, "params": total_params, "cuts": []}
    if len(in_shape) == 4 and in_shape[1] == 3:
        table["input"]["jpeg_q90_bytes"] = jpeg_bytes(in_shape[2], in_shape[3])
    for tensor in valid_cuts(model):
        head = _ancestors(model, tensor)
        shape = list(shapes.get(tensor, ()))
        elems = math.prod(shape) if shape else 0
        hm, hp = sum(macs[i] for i in head), sum(params[i] for i in head)
        table["cuts"].append({"tensor": tensor, "shape": shape, "bytes_fp32": 4 * elems, "bytes_int8": elems,
                              "head_macs": hm, "tail_macs": total_macs - hm,
                              "head_params": hp, "tail_params": total_params - hp})
    return table
