"""Small float models for the int8 tests: every quantized operator kind edgec lowers (3x3 conv with padding,
depthwise conv with stride, ReLU6, 1x1 conv, residual add, global average pool, a dense layer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx


def block_cnn(path: Path, size: int = 16, seed: int = 0) -> Path:
    """An inverted-residual-like CNN with random weights at ``path`` (input ``x``, (1, 3, size, size); output
    ``y``, (1, 10) logits)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("wd", 8, 1, 3, 3), w("bd", 8), w("wp", 8, 8, 1, 1), w("bp", 8),
             w("wf", 8, 10), w("bf", 10), numpy_helper.from_array(np.float32(0), "lo"),
             numpy_helper.from_array(np.float32(6), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "wd", "bd"], ["cd"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Clip", ["cd", "lo", "hi"], ["rd"]),
             helper.make_node("Conv", ["rd", "wp", "bp"], ["cp"]),
             helper.make_node("Add", ["cp", "r1"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "wf"], ["m"]),
             helper.make_node("Add", ["m", "bf"], ["y"])]
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", 1, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", 1, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def single_conv(path: Path, *, cin: int, cout: int, kernel: int, stride: int, pads: list[int], group: int,
                size: int, relu6: bool = False, seed: int = 0) -> Path:
    """One Conv (+ ReLU6) with random weights at ``path`` (input ``x`` (1, cin, size, size), output ``y``)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.standard_normal((cout, cin // group, kernel, kernel)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c" if relu6 else "y"], pads=pads, strides=[stride, stride],
                              group=group)]
    inits = [w, b]
    if relu6:
        inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    out = (size + pads[0] + pads[2] - kernel) // stride + 1
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", 1, [1, cin, size, size])],
                              [helper.make_tensor_value_info("y", 1, [1, cout, out, out])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def patched_se_cnn(path: Path, size: int = 16, seed: int = 0) -> Path:
    """A CNN shaped as ``patch_inference`` leaves a model, with a squeeze-excite block, at ``path`` (input ``x``,
    (1, 3, size, size); output ``y``, (1, 8, size, size)): the input sliced into two overlapping column halves,
    a padded 3x3 conv + ReLU on each, the halves concatenated, a 1x1 conv, then squeeze-excite (global mean ->
    1x1 conv -> HardSigmoid -> multiply)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def ints(name, values):
        return numpy_helper.from_array(np.asarray(values, np.int64), name)

    half = size // 2
    inits = [w("w1", 8, 3, 3, 3), w("b1", 8), w("wp", 8, 8, 1, 1), w("bp", 8), w("ws", 8, 8, 1, 1), w("bs", 8),
             ints("s0", [0]), ints("e0", [half + 1]), ints("s1", [half - 1]), ints("e1", [size]), ints("ax", [3])]
    nodes = [helper.make_node("Slice", ["x", "s0", "e0", "ax"], ["x0"]),
             helper.make_node("Slice", ["x", "s1", "e1", "ax"], ["x1"]),
             helper.make_node("Conv", ["x0", "w1", "b1"], ["c0"], pads=[1, 1, 1, 0]),
             helper.make_node("Conv", ["x1", "w1", "b1"], ["c1"], pads=[1, 0, 1, 1]),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Concat", ["r0", "r1"], ["cat"], axis=3),
             helper.make_node("Conv", ["cat", "wp", "bp"], ["p"]),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]),
             helper.make_node("Conv", ["g", "ws", "bs"], ["e"]),
             helper.make_node("HardSigmoid", ["e"], ["h"]),
             helper.make_node("Mul", ["p", "h"], ["y"])]
    graph = helper.make_graph(nodes, "patched", [helper.make_tensor_value_info("x", 1, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", 1, [1, 8, size, size])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path
