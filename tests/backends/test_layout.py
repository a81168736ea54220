"""CPU convolutions run NHWC/HWIO unless the transposes that adds outweigh the convolutions; clip becomes
min/max so it follows."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.backends.tvm.compile import tvm_target
from edgec.backends.tvm.importer import import_onnx
from edgec.backends.tvm.pipeline import conv_layout, convert_layout, fused_kernels, fused_module, nhwc_pays
from edgec.flows.build import BuildOptions, build
from edgec.targets import get_target

RNG = np.random.default_rng(3)


def _const(name, shape):
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32) * 0.3, name)


def _model(nodes, inits, out_shape, size=16, channels=8) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 3, size, size])],
                          [helper.make_tensor_value_info("y", 1, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _cnn() -> onnx.ModelProto:
    """conv/2 -> HardSwish -> depthwise conv -> Clip(0, 6) -> 1x1 conv -> HardSigmoid -> pool -> Gemm."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4),
        helper.make_node("HardSwish", ["c1"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1] * 4, group=8),
        helper.make_node("Clip", ["c2", "lo", "hi"], ["a2"]),
        helper.make_node("Conv", ["a2", "w3"], ["c3"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["c3"], ["a3"]),
        helper.make_node("GlobalAveragePool", ["a3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1),
    ]
    inits = [_const("w1", (8, 3, 3, 3)), _const("b1", (8,)), _const("w2", (8, 1, 3, 3)), _const("w3", (16, 8, 1, 1)),
             _const("wf", (10, 16)), _const("bf", (10,)),
             numpy_helper.from_array(np.array(0, np.float32), "lo"), numpy_helper.from_array(np.array(6, np.float32), "hi")]
    return _model(nodes, inits, [1, 10])


def _attention_like(size: int = 8, channels: int = 8, kernel: int = 1) -> onnx.ModelProto:
    """conv -> reshape (N, C, HW) -> transpose -> matmul -> transpose -> reshape -> conv, twice."""
    nodes, inits, cur, c = [], [], "x", channels
    for i in range(2):
        nodes += [helper.make_node("Conv", [cur, f"w{i}"], [f"c{i}"], kernel_shape=[kernel] * 2,
                                   pads=[kernel // 2] * 4),
                  helper.make_node("Reshape", [f"c{i}", "s3"], [f"r{i}"]),
                  helper.make_node("Transpose", [f"r{i}"], [f"t{i}"], perm=[0, 2, 1]),
                  helper.make_node("MatMul", [f"t{i}", f"m{i}"], [f"mm{i}"]),
                  helper.make_node("Transpose", [f"mm{i}"], [f"u{i}"], perm=[0, 2, 1]),
                  helper.make_node("Reshape", [f"u{i}", "s4"], [f"o{i}"])]
        inits += [_const(f"w{i}", (c, 3 if i == 0 else c, kernel, kernel)), _const(f"m{i}", (c, c))]
        cur = f"o{i}"
    nodes[-1].output[0] = "y"
    inits += [numpy_helper.from_array(np.array([1, c, size * size], np.int64), "s3"),
              numpy_helper.from_array(np.array([1, c, size, size], np.int64), "s4")]
    return _model(nodes, inits, [1, c, size, size], size=size)


def test_cnn_runs_nhwc_with_no_standalone_transposes_and_matches_onnxruntime(tmp_path):
    model = _cnn()
    target = tvm_target(get_target("host"))
    fused = fused_module(import_onnx(model, {"x": (1, 3, 16, 16)}), target)
    assert conv_layout(fused) == "NHWC"
    kernels = fused_kernels(None, target, fused)
    transposes = [k for k in kernels if "transpose" in k and "conv" not in k]
    assert len(transposes) <= 2, kernels  # the input to NHWC; the pooled features back before Flatten
    assert not [k for k in kernels if ("clip" in k or "minimum" in k) and "conv" not in k], kernels
    path = tmp_path / "cnn.onnx"
    onnx.save(model, path)
    built = build(BuildOptions(model=str(path), target="host", out_dir=tmp_path / "out", passes="none",
                               use_tune_db=False))
    assert built.report["kernels"]["conv_layout"] == "NHWC"
    assert built.report["verification"]["passed"] and built.report["verification"]["top1_match"] is not False


@pytest.mark.parametrize("shape, layout", [
    ({}, "NCHW"),  # tiny 1x1 convolutions: the transposes NHWC adds around each reshape dominate
    ({"size": 16, "channels": 32, "kernel": 3}, "NHWC"),  # 3x3 convolutions outweigh them (EfficientViT's case)
], ids=["tiny-convs-stay-nchw", "conv-heavy-goes-nhwc"])
def test_attention_graph_layout_follows_the_cost_model_and_matches_onnxruntime(tmp_path, shape, layout):
    model = _attention_like(**shape)
    size = shape.get("size", 8)
    mod = import_onnx(model, {"x": (1, 3, size, size)})
    _converted, chosen = convert_layout(mod, tvm_target(get_target("host")))
    assert chosen == layout
    path = tmp_path / "attn.onnx"
    onnx.save(model, path)
    built = build(BuildOptions(model=str(path), target="host", out_dir=tmp_path / "out", passes="none",
                               use_tune_db=False))
    assert built.report["kernels"]["conv_layout"] == layout and built.report["verification"]["passed"]


def test_nhwc_cost_model():
    assert nhwc_pays(2, 10**9, 1)  # the model's boundary transposes are always worth it
    assert not nhwc_pays(4, 1728, 5632)  # tiny convs: the extra transposes dominate
    assert nhwc_pays(115, 320_832, 76_653_696)  # EfficientViT-M0 at 224x224 (measured 2x faster NHWC)
    assert not nhwc_pays(115, 320_832, 7_000_000)


def test_cuda_keeps_nchw():
    mod = import_onnx(_cnn(), {"x": (1, 3, 16, 16)})
    _same, layout = convert_layout(mod, tvm_target(get_target("jetson-orin-nano")))
    assert layout == "NCHW"
