"""Import normalisations: each keeps the function (onnxruntime before/after), and the normalisation family
compiles correctly at large offsets (against a float64 reference, offsets 0, 1e3 and 1e5)."""

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx import numpy_helper as nh

from edgec.frontend.normalize import normalize
from edgec.frontend.reference import run_ort

RNG = np.random.default_rng(11)
C, H, W = 8, 6, 6


def _model(node, inits, opset, shape=(1, C, H, W)):
    g = helper.make_graph([node], "n", [helper.make_tensor_value_info("x", 1, list(shape))],
                          [helper.make_tensor_value_info("y", 1, list(shape))], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m, full_check=True)
    return m


def _affine(n):
    return RNG.uniform(0.5, 2, n).astype(np.float32), RNG.standard_normal(n).astype(np.float32)


def _norm64(x, axes, eps, inside=True):
    x = x.astype(np.float64)
    m = x.mean(axis=axes, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axes, keepdims=True)
    return (x - m) / (np.sqrt(v + eps) if inside else np.sqrt(v) + eps)


def cases():
    s, b = _affine(C)
    ls, lb = _affine(W)
    gs, gb = _affine(C)
    return {
        "mvn": (_model(helper.make_node("MeanVarianceNormalization", ["x"], ["y"], axes=[0, 2, 3]), [], 13),
                lambda x: _norm64(x, (0, 2, 3), 1e-9, inside=False)),
        "instance": (_model(helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], epsilon=1e-5),
                            [nh.from_array(s, "s"), nh.from_array(b, "b")], 17),
                     lambda x: _norm64(x, (2, 3), 1e-5) * s.reshape(1, C, 1, 1) + b.reshape(1, C, 1, 1)),
        "layer": (_model(helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1),
                         [nh.from_array(ls, "s"), nh.from_array(lb, "b")], 17),
                  lambda x: _norm64(x, (3,), 1e-5) * ls + lb),
        "group21": (_model(helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2),
                           [nh.from_array(gs, "s"), nh.from_array(gb, "b")], 21),
                    lambda x: _norm64(x.reshape(1, 2, -1), (2,), 1e-5).reshape(x.shape) * gs.reshape(1, C, 1, 1)
                    + gb.reshape(1, C, 1, 1)),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_rewrite_keeps_the_function(name):
    model, ref64 = cases()[name]
    new, applied = normalize(model)
    assert applied and "shifted two-pass" in applied[0]
    assert all(n.op_type not in ("MeanVarianceNormalization", "InstanceNormalization", "LayerNormalization",
                                 "GroupNormalization") for n in new.graph.node)
    x = RNG.standard_normal((1, C, H, W)).astype(np.float32)
    want, got = run_ort(model, {"x": x})[0], run_ort(new, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max())
    assert np.abs(got - ref64(x)).max() <= 1e-5 * max(1.0, np.abs(ref64(x)).max())


@pytest.mark.parametrize("name", list(cases()))
def test_compiled_normalisation_is_right_at_large_offsets(name, tmp_path):
    from edgec.backends.tvm import api
    from edgec.devices.local import LocalDevice
    from edgec.targets import get_target

    model, ref64 = cases()[name]
    new, _ = normalize(model)
    compiled = api.compile(new, get_target("host"), tmp_path)
    for offset in (0.0, 1e3, 1e5):
        x = (offset + RNG.standard_normal((1, C, H, W))).astype(np.float32)
        (got,) = LocalDevice().run(compiled.library, [x])
        want = ref64(x)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max()), (name, offset)


def test_sum_becomes_adds_and_old_opsets_are_converted():
    w = nh.from_array(np.ones((2, 2, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Sum", ["a", "x", "a"], ["y"])]
    g = helper.make_graph(nodes, "s", [helper.make_tensor_value_info("x", 1, [1, 2, 3, 3]), ],
                          [helper.make_tensor_value_info("y", 1, [1, 2, 3, 3])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 4
    new, applied = normalize(m)
    assert [n.op_type for n in new.graph.node] == ["Conv", "Add", "Add"]
    assert any("opset 9 converted to 17" in a for a in applied) and any("Sum" in a for a in applied)
    x = RNG.standard_normal((1, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(run_ort(new, {"x": x})[0], run_ort(m, {"x": x})[0], rtol=1e-6)


@pytest.mark.parametrize("scale", [2.0, 1.5, 3.0])
def test_upsample_keeps_its_floor_semantics_at_any_scale(scale):
    nodes = [helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, scale, scale])]
    out = int(5 * scale)
    g = helper.make_graph(nodes, "u", [helper.make_tensor_value_info("x", 1, [1, 1, 5, 5])],
                          [helper.make_tensor_value_info("y", 1, [1, 1, out, out])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 7)])
    m.ir_version = 4
    new, _ = normalize(m)
    x = RNG.standard_normal((1, 1, 5, 5)).astype(np.float32)
    idx = np.floor(np.arange(out) / scale).astype(int)
    np.testing.assert_array_equal(run_ort(new, {"x": x})[0], x[:, :, idx][:, :, :, idx])


def test_space_to_depth_is_written_out_only_in_crd_mode():
    from onnx import TensorProto, helper

    from edgec.frontend.normalize import normalize

    def model(**mode):
        g = helper.make_graph([helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2, **mode)], "s",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 2, 3])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 28)])

    crd, notes = normalize(model(mode="CRD"))
    assert [n.op_type for n in crd.graph.node] == ["Reshape", "Transpose", "Reshape"] and notes
    dcr, notes = normalize(model())
    assert [n.op_type for n in dcr.graph.node] == ["SpaceToDepth"] and not notes
