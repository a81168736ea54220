"""One small model per op family that mobile vision exports use, built with `edgec build` and checked
independently against onnxruntime on several input sets (shapes, attributes and values from the ONNX spec)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

RNG = np.random.default_rng(21)


def _c(name, array):
    return nh.from_array(np.asarray(array), name)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "case", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs], list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m


def _pad(mode):
    return _model([helper.make_node("Pad", ["x", "p", "", "axes"], ["y"], mode=mode)], [("x", [1, 3, 6, 6])],
                  [("y", [1, 3, 9, 7])], [_c("p", np.array([1, 0, 2, 1], np.int64)), _c("axes", np.array([2, 3], np.int64))],
                  opset=18)


def _conv_transpose_net():
    """A detector's upsampling head (PP-OCRv4's text detector): convolutions around a stride-2 ConvTranspose,
    so the backend picks NHWC for the convolutions and must keep the transpose convolution in a layout it
    can lower (it was left NHWC and never lowered: exit 8)."""
    w = lambda *s: RNG.standard_normal(s).astype(np.float32) * 0.3  # noqa: E731
    return _model([helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c1"], ["r1"]),
                   helper.make_node("ConvTranspose", ["r1", "wt", "bt"], ["t"], strides=[2, 2], kernel_shape=[2, 2]),
                   helper.make_node("Relu", ["t"], ["r2"]),
                   helper.make_node("Conv", ["r2", "w2"], ["c2"], pads=[1, 1, 1, 1]),
                   helper.make_node("Relu", ["c2"], ["r3"]),
                   helper.make_node("Conv", ["r3", "w3"], ["y"], pads=[1, 1, 1, 1])],
                  [("x", [1, 3, 32, 32])], [("y", [1, 4, 64, 64])],
                  [_c("w1", w(32, 3, 3, 3)), _c("b1", w(32)), _c("wt", w(32, 16, 2, 2)), _c("bt", w(16)),
                   _c("w2", w(16, 16, 3, 3)), _c("w3", w(4, 16, 3, 3))])


CASES = {
    "pad_constant_axes": lambda: _pad("constant"),
    "pad_reflect_axes": lambda: _pad("reflect"),
    "pad_edge_axes": lambda: _pad("edge"),
    "slice_steps": lambda: _model(
        [helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])], [("x", [1, 4, 9, 9])], [("y", [1, 4, 4, 3])],
        [_c("st", np.array([1, 8], np.int64)), _c("en", np.array([9, 0], np.int64)), _c("ax", np.array([2, 3], np.int64)),
         _c("sp", np.array([2, -3], np.int64))]),
    "gather_negative": lambda: _model(
        [helper.make_node("Gather", ["x", "i"], ["y"], axis=3)], [("x", [1, 2, 4, 5])], [("y", [1, 2, 4, 3])],
        [_c("i", np.array([-1, 0, -5], np.int64))]),
    "gather_elements_negative": lambda: _model(
        [helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1)], [("x", [2, 3])], [("y", [2, 2])],
        [_c("i", np.array([[-1, 0], [1, -3]], np.int64))]),
    "topk": lambda: _model(
        [helper.make_node("TopK", ["x", "k"], ["y", "idx"], axis=-1)], [("x", [2, 10])], [("y", [2, 3])],
        [_c("k", np.array([3], np.int64))]),
    "softmax_opset11_axis1": lambda: _model(
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)], [("x", [2, 3, 4])], [("y", [2, 3, 4])], opset=11),
    "prelu_channel_slopes": lambda: _model(
        [helper.make_node("PRelu", ["x", "s"], ["y"])], [("x", [1, 3, 4, 4])], [("y", [1, 3, 4, 4])],
        [_c("s", RNG.uniform(0.05, 0.3, (3, 1, 1)).astype(np.float32))]),
    "conv_transpose_same_upper": lambda: _model(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], auto_pad="SAME_UPPER", kernel_shape=[3, 3])],
        [("x", [1, 2, 5, 5])], [("y", [1, 3, 10, 10])], [_c("w", RNG.standard_normal((2, 3, 3, 3)).astype(np.float32))]),
    "conv_transpose_in_an_nhwc_network": lambda: _conv_transpose_net(),
    "space_to_depth_crd": lambda: _model(  # opset 28's mode attribute; TVM's importer computes DCR
        [helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, mode="CRD")], [("x", [1, 2, 4, 6])],
        [("y", [1, 8, 2, 3])], opset=28),
    "space_to_depth_dcr_default": lambda: _model(  # no mode: DCR, TVM's own; the CRD rewrite must not fire
        [helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)], [("x", [1, 2, 4, 6])], [("y", [1, 8, 2, 3])]),
    "depth_to_space_crd": lambda: _model(
        [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="CRD")], [("x", [1, 8, 3, 3])],
        [("y", [1, 2, 6, 6])]),
    "depth_to_space_dcr": lambda: _model(
        [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=2, mode="DCR")], [("x", [1, 8, 3, 3])],
        [("y", [1, 2, 6, 6])]),
    "grid_sample_bilinear": lambda: _model(
        [helper.make_node("Tanh", ["g"], ["gt"]),
         helper.make_node("GridSample", ["x", "gt"], ["y"], mode="linear", padding_mode="zeros", align_corners=0)],
        [("x", [1, 2, 5, 5]), ("g", [1, 4, 4, 2])], [("y", [1, 2, 4, 4])], opset=20),
    "layer_norm": lambda: _model(
        [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)], [("x", [1, 4, 8])], [("y", [1, 4, 8])],
        [_c("s", RNG.uniform(0.5, 2, 8).astype(np.float32)), _c("b", RNG.standard_normal(8).astype(np.float32))]),
    "layer_norm_with_statistics": lambda: _model(  # Mean and InvStdDev outputs (training-mode statistics)
        [helper.make_node("LayerNormalization", ["x", "s", "b"], ["y", "mean", "istd"], axis=-1)], [("x", [1, 4, 8])],
        [("y", [1, 4, 8]), ("mean", [1, 4, 1]), ("istd", [1, 4, 1])],
        [_c("s", RNG.uniform(0.5, 2, 8).astype(np.float32)), _c("b", RNG.standard_normal(8).astype(np.float32))]),
    "instance_norm": lambda: _model(
        [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])], [("x", [1, 3, 5, 5])], [("y", [1, 3, 5, 5])],
        [_c("s", RNG.uniform(0.5, 2, 3).astype(np.float32)), _c("b", RNG.standard_normal(3).astype(np.float32))]),
    "shape_subgraph_reshape": lambda: _model(
        [helper.make_node("Shape", ["x"], ["sh"]), helper.make_node("Gather", ["sh", "i0"], ["n"], axis=0),
         helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]), helper.make_node("Concat", ["n1", "m1"], ["ns"], axis=0),
         helper.make_node("Reshape", ["x", "ns"], ["y"])],
        [("x", [2, 3, 4, 4])], [("y", [2, 48])],
        [_c("i0", np.array(0, np.int64)), _c("ax0", np.array([0], np.int64)), _c("m1", np.array([-1], np.int64))]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_op_family_builds_and_matches(name, tmp_path):
    from edgec.flows.build import BuildOptions, build
    from edgec.devices.local import LocalDevice
    from edgec.frontend.reference import run_ort

    model = CASES[name]()
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    result = build(BuildOptions(model=str(path), out_dir=tmp_path))
    assert result.report["verification"]["passed"], result.report["verification"]
    # independent check: fresh inputs, ranges the build did not use
    names = [i.name for i in model.graph.input]
    shapes = [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    for scale, offset in ((1.0, 0.0), (10.0, 50.0), (0.01, -3.0)):
        feeds = {n: (offset + scale * RNG.standard_normal(s)).astype(np.float32) for n, s in zip(names, shapes)}
        ours = LocalDevice().run(result.artifact / "model.so", list(feeds.values()))
        ref = run_ort(model, feeds)
        for o, r in zip(ours, ref):
            assert o.shape == r.shape
            assert np.abs(o.astype(np.float64) - r).max() <= 1e-4 * max(1.0, np.abs(r).max()), (name, scale, offset)


def test_a_transpose_convolution_stays_in_a_layout_the_backend_lowers(tmp_path):
    from edgec.flows.build import BuildOptions, build

    path = tmp_path / "ct.onnx"
    onnx.save(_conv_transpose_net(), str(path))
    result = build(BuildOptions(model=str(path), out_dir=tmp_path))
    assert result.report["kernels"]["conv_layout"] == "NHWC" and result.report["verification"]["passed"]
