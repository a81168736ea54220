"""Small ONNX graphs for pass tests: ONNX text for the structure, NumPy for the weights."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.passes import verify_pass

RNG = np.random.default_rng(1234)


def rand(*shape, low=-1.0, high=1.0):
    return RNG.uniform(low, high, shape).astype(np.float32)


def bn_params(c):
    """Non-trivial BN statistics: variance far from 0 and 1, non-zero mean, gamma and beta."""
    return {"gamma": rand(c, low=0.5, high=2.0), "beta": rand(c), "mean": rand(c, low=-0.5, high=0.5),
            "var": rand(c, low=0.3, high=3.0)}


def model(text: str, **weights: np.ndarray) -> onnx.ModelProto:
    """Parse ONNX text; graph inputs named in ``weights`` become initializers with those values."""
    m = onnx.parser.parse_model(text)
    keep = [i for i in m.graph.input if i.name not in weights]
    del m.graph.input[:]
    m.graph.input.extend(keep)
    for name, arr in weights.items():
        m.graph.initializer.append(numpy_helper.from_array(np.asarray(arr), name))
    onnx.checker.check_model(m, full_check=True)
    return onnx.shape_inference.infer_shapes(m)


def ops(m: onnx.ModelProto) -> Counter:
    return Counter(n.op_type for n in m.graph.node)


def fires(name: str, m: onnx.ModelProto):
    """Apply pass ``name``; assert it changed the graph and kept the outputs within its tolerance."""
    new, changed, cmp = verify_pass(name, m)
    assert changed, f"{name} did not fire"
    assert cmp.passed, f"{name} changed outputs: {cmp}"
    onnx.checker.check_model(new, full_check=True)
    return new


def refuses(name: str, m: onnx.ModelProto):
    """Apply pass ``name``; assert it left the graph alone."""
    new, changed, cmp = verify_pass(name, m)
    assert not changed, f"{name} fired where it must not"
    assert cmp.passed
    return new
