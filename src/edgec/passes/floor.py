"""What a pipeline cannot take away: a lower bound of the weight bytes after the passes.

A microcontroller's flash must hold the weights. That need is known exactly only after the passes,
but a build should refuse a model that cannot fit before minutes of passes and verification. The
passes of :data:`KEEP_KERNEL_WEIGHTS` never shrink a convolution's or a matrix product's weight
tensor, except ``reparameterize_branches``, which sums parallel branches into the largest one; so
the kernel weights, with only the largest of each group of summed branches counted, are a floor.
A pipeline with any other pass (``depth_merge`` merges convolutions; a function-changing pass may
remove them) has no floor.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import onnx

#: Passes that never shrink a kernel's weights below the largest of its summed branches.
KEEP_KERNEL_WEIGHTS = frozenset({"remove_noop", "fold_constant_gather", "fold_pad_conv", "fold_batchnorm",
                                 "reparameterize_branches", "fold_constant_scale", "batchnorm_to_affine",
                                 "patch_inference"})
KERNELS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops a branch may pass through between its convolution and the sum (reparameterized with it).
BRANCH_OPS = ("BatchNormalization", "Identity")


def weight_floor(model: onnx.ModelProto, pass_names: list[str]) -> int | None:
    """Bytes of weights that stay after every pass of the pipeline (a lower bound), or None.

    Args:
        model: ONNX after the frontend (static shapes, simplified).
        pass_names: The pipeline's pass names, in order.

    Returns:
        The bytes of the kernel weights (initializers feeding input 1 of Conv, ConvTranspose, Gemm and
        MatMul, each counted once), where convolutions of one input summed by one Add or Sum count only
        the largest; None when a pass outside :data:`KEEP_KERNEL_WEIGHTS` is in the pipeline.
    """
    if any(name not in KEEP_KERNEL_WEIGHTS for name in pass_names):
        return None
    inits = {i.name: i for i in model.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    groups: dict[tuple[str, str], int] = {}
    counted: set[str] = set()
    for node in model.graph.node:
        if node.op_type not in KERNELS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        weight = node.input[1]
        if weight in counted:
            continue
        counted.add(weight)
        key = (_sink(node, consumers) or f"#{weight}", node.input[0])
        groups[key] = max(groups.get(key, 0), _bytes(inits[weight]))
    return sum(groups.values())


def _sink(node: onnx.NodeProto, consumers: dict[str, list[onnx.NodeProto]]) -> str | None:
    """The Add/Sum node summing ``node``'s branch (through BatchNormalization/Identity), or None."""
    out = node.output[0]
    for _ in range(3):
        users = consumers.get(out, [])
        if len(users) != 1:
            return None
        user = users[0]
        if user.op_type in ("Add", "Sum"):
            return user.name or user.output[0]
        if user.op_type not in BRANCH_OPS:
            return None
        out = user.output[0]
    return None


def _bytes(init: onnx.TensorProto) -> int:
    return math.prod(init.dims) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
