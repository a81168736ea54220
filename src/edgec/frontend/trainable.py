"""An ONNX graph as a trainable PyTorch module (for fine-tuning a compressed model by distillation).

graph_module(model) interprets the graph node by node with ``torch.nn.functional``; every floating
initializer read by a Conv, Gemm or MatMul becomes a ``torch.nn.Parameter`` and its ``to_onnx()``
writes the trained values back into the same initializers. The batch dimension is free (a Reshape whose
target starts with the exported batch 1 follows the input's batch). Activation nodes listed in ``skip``
act as the identity, so one module scores many activation-removal variants.

Covers the ops of the zoo's convolutional classifiers; anything else raises :class:`UsageError`
naming the op. (``onnx2torch`` was tried first: it refuses opset-18 ReduceMean and ``allowzero``.)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.errors import UsageError

_WEIGHT_OPS = {"Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def graph_module(model: onnx.ModelProto, skip: Iterable[str] = ()):
    """A ``torch.nn.Module`` computing ``model`` (one input, first output returned).

    Args:
        model: A static-shaped ONNX model (float32).
        skip: Names of activation nodes to run as the identity (changeable later via ``.skip``); with
            ``.blend = b`` (0 by default) they compute ``b * activation(x) + (1 - b) * x`` instead, so that
            training can remove them gradually.

    Raises:
        UsageError: an op this interpreter does not cover (named), or a model with several inputs.
    """
    import torch
    import torch.nn.functional as F

    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            inits[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
    runtime_inputs = [i.name for i in model.graph.input if i.name not in inits]
    if len(runtime_inputs) != 1:
        raise UsageError(f"fine-tuning needs a model with one input; this one has {len(runtime_inputs)}",
                         "export the model with a single image input")
    trained = {n.input[i] for n in model.graph.node if n.op_type in _WEIGHT_OPS
               for i in _WEIGHT_OPS[n.op_type] if i < len(n.input) and n.input[i] in inits
               and np.issubdtype(inits[n.input[i]].dtype, np.floating)}
    supported = set(_OPS)
    for n in model.graph.node:
        if n.op_type not in supported and n.op_type != "Constant":
            raise UsageError(f"fine-tuning cannot run op {n.op_type} (node {n.name or n.output[0]})",
                             "depth compression fine-tunes convolutional classifiers (Conv, activations, Add, "
                             "pooling, Gemm)")

    class _Module(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.names = {}
            self.params = torch.nn.ParameterDict()
            self.consts: dict[str, torch.Tensor] = {}
            for name, arr in inits.items():
                if name in trained:
                    key = f"p{len(self.names)}"
                    self.names[name] = key
                    self.params[key] = torch.nn.Parameter(torch.from_numpy(np.array(arr, np.float32)))
                else:
                    self.consts[name] = torch.from_numpy(np.array(arr))
            self.skip = set(skip)
            self.blend = 0.0
            self.input = runtime_inputs[0]
            self.output = model.graph.output[0].name

        def value(self, env: dict[str, Any], name: str):
            if name in self.names:
                return self.params[self.names[name]]
            if name in self.consts:
                return self.consts[name]
            return env[name]

        def forward(self, x):
            env = {self.input: x}
            for n in model.graph.node:
                if n.op_type == "Constant":
                    continue
                args = [self.value(env, i) if i else None for i in n.input]
                if (n.name or n.output[0]) in self.skip:
                    out = args[0]
                    if self.blend:  # on the way out: blend * activation + (1 - blend) * identity
                        out = self.blend * _OPS[n.op_type](F, torch, args, _attrs(n)) + (1.0 - self.blend) * out
                else:
                    out = _OPS[n.op_type](F, torch, args, _attrs(n))
                env[n.output[0]] = out
            return env[self.output]

        def to_onnx(self) -> onnx.ModelProto:
            """``model`` with the trained parameters written back into its initializers."""
            new = onnx.ModelProto()
            new.CopyFrom(model)
            for t in new.graph.initializer:
                if t.name in self.names:
                    arr = self.params[self.names[t.name]].detach().numpy().astype(numpy_helper.to_array(t).dtype)
                    t.CopyFrom(numpy_helper.from_array(arr, t.name))
            return new

    return _Module()


def _conv(F, torch, a, at):
    w = a[1]
    pads = list(at.get("pads", [0] * 4))
    if at.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise UsageError("fine-tuning needs explicit Conv pads (auto_pad SAME)", "run the default passes first")
    x = a[0]
    if pads[:2] == pads[2:]:
        padding = tuple(pads[:2])
    else:
        x, padding = F.pad(x, (pads[1], pads[3], pads[0], pads[2])), (0, 0)
    return F.conv2d(x, w, a[2] if len(a) > 2 else None, tuple(at.get("strides", [1, 1])), padding,
                    tuple(at.get("dilations", [1, 1])), int(at.get("group", 1)))


def _clip(F, torch, a, at):
    lo = a[1] if len(a) > 1 and a[1] is not None else at.get("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else at.get("max")
    lo = float(lo) if lo is not None else None
    hi = float(hi) if hi is not None else None
    return torch.clamp(a[0], lo, hi)


def _reduce_mean(F, torch, a, at):
    axes = a[1].tolist() if len(a) > 1 and a[1] is not None else at.get("axes")
    dims = list(range(a[0].dim())) if axes is None else [int(d) for d in axes]
    return a[0].mean(dim=dims, keepdim=bool(at.get("keepdims", 1)))


def _reshape(F, torch, a, at):
    shape = [int(s) for s in a[1].tolist()]
    x = a[0]
    if shape and shape[0] == 1 and x.shape[0] != 1:
        shape[0] = x.shape[0]
    shape = [x.shape[i] if s == 0 and not at.get("allowzero", 0) else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _gemm(F, torch, a, at):
    x, w = a[0], a[1]
    if at.get("transA", 0):
        x = x.t()
    if at.get("transB", 0):
        w = w.t()
    y = at.get("alpha", 1.0) * (x @ w)
    if len(a) > 2 and a[2] is not None:
        y = y + at.get("beta", 1.0) * a[2]
    return y


def _flatten(F, torch, a, at):
    axis = int(at.get("axis", 1))
    return a[0].reshape(int(np.prod(a[0].shape[:axis])), -1)


_OPS = {
    "Conv": _conv,
    "Clip": _clip,
    "Relu": lambda F, torch, a, at: F.relu(a[0]),
    "LeakyRelu": lambda F, torch, a, at: F.leaky_relu(a[0], at.get("alpha", 0.01)),
    "HardSwish": lambda F, torch, a, at: F.hardswish(a[0]),
    "HardSigmoid": lambda F, torch, a, at: torch.clamp(at.get("alpha", 0.2) * a[0] + at.get("beta", 0.5), 0, 1),
    "Sigmoid": lambda F, torch, a, at: torch.sigmoid(a[0]),
    "PRelu": lambda F, torch, a, at: torch.where(a[0] >= 0, a[0], a[0] * a[1]),
    "Add": lambda F, torch, a, at: a[0] + a[1],
    "Sub": lambda F, torch, a, at: a[0] - a[1],
    "Mul": lambda F, torch, a, at: a[0] * a[1],
    "Div": lambda F, torch, a, at: a[0] / a[1],
    "ReduceMean": _reduce_mean,
    "GlobalAveragePool": lambda F, torch, a, at: a[0].mean(dim=(2, 3), keepdim=True),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Gemm": _gemm,
    "MatMul": lambda F, torch, a, at: a[0] @ a[1],
    "Identity": lambda F, torch, a, at: a[0],
    "Concat": lambda F, torch, a, at: torch.cat(a, dim=int(at["axis"])),
}
