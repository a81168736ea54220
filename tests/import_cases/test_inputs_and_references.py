"""Import, part 2. Parameter inputs (Resize scales, Slice starts, Reshape shape, Clip bounds... fed as graph
inputs): never given random values; the user gives them (--input-value, or the --verify-inputs .npz), edgec
folds them in. Rank-0 data inputs work end to end. Old opsets onnxruntime has no kernel for are checked
against the model as edgec converted it."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx import numpy_helper as nh

from edgec.frontend.params import parameter_inputs

F, I64 = TensorProto.FLOAT, TensorProto.INT64


def _model(nodes, inputs, outputs, inits=(), opset=13):
    g = helper.make_graph(nodes, "p", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, F, s) for n, s in outputs], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def resize_scales():
    return _model([helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")],
                  [("x", F, [1, 3, 8, 8]), ("scales", F, [4])], [("y", [1, 3, 16, 16])])


def slice_starts():
    return _model([helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["y"])],
                  [("x", F, [1, 3, 8, 8]), ("starts", I64, [2]), ("ends", I64, [2])], [("y", [1, 3, 4, 4])],
                  [nh.from_array(np.array([2, 3], np.int64), "axes")])


def clip_scalars():
    return _model([helper.make_node("Clip", ["x", "lo", "hi"], ["y"])],
                  [("x", F, [1, 3, 4, 4]), ("lo", F, []), ("hi", F, [])], [("y", [1, 3, 4, 4])])


def reshape_through_concat():
    """The target shape is the batch (a constant) concatenated with an input, through a Cast."""
    return _model([helper.make_node("Cast", ["rest"], ["rest64"], to=I64),
                   helper.make_node("Concat", ["one", "rest64"], ["shape"], axis=0),
                   helper.make_node("Reshape", ["x", "shape"], ["y"])],
                  [("x", F, [1, 3, 4, 4]), ("rest", F, [1])], [("y", [1, 48])],
                  [nh.from_array(np.array([1], np.int64), "one")])


def test_parameter_inputs_are_found_through_shape_arithmetic_but_not_through_shape():
    assert parameter_inputs(resize_scales()) == {"scales": "Resize 'scales' (node y)"}
    assert set(parameter_inputs(slice_starts())) == {"starts", "ends"}
    assert set(parameter_inputs(clip_scalars())) == {"lo", "hi"}
    assert set(parameter_inputs(reshape_through_concat())) == {"rest"}
    by_shape = _model([helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Reshape", ["x", "s"], ["y"])],
                      [("x", F, [1, 3, 4, 4])], [("y", [1, 3, 4, 4])])
    assert parameter_inputs(by_shape) == {}  # the image's shape is not the image's values


def pad_pads():
    return _model([helper.make_node("Pad", ["x", "pads"], ["y"], mode="constant")],
                  [("x", F, [1, 3, 4, 4]), ("pads", I64, [8])], [("y", [1, 3, 5, 7])])


def reduce_mean_axes():
    return _model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)],
                  [("x", F, [1, 3, 4, 4]), ("axes", I64, [2])], [("y", [1, 3, 1, 1])], opset=18)


def unsqueeze_axes():
    return _model([helper.make_node("Unsqueeze", ["x", "axes"], ["y"])],
                  [("x", F, [1, 3, 4, 4]), ("axes", I64, [1])], [("y", [1, 3, 4, 4, 1])])


CASES = {  # model, --input-value flags, expected output from the input x
    "resize_scales": (resize_scales, ["scales=1,1,2,2"], lambda x: x.repeat(2, axis=2).repeat(2, axis=3)),
    "slice_starts": (slice_starts, ["starts=2,1", "ends=6,5"], lambda x: x[:, :, 2:6, 1:5]),
    "clip_scalars": (clip_scalars, ["lo=-0.5", "hi=0.25"], lambda x: np.clip(x, -0.5, 0.25)),
    "reshape_through_concat": (reshape_through_concat, ["rest=48"], lambda x: x.reshape(1, 48)),
    "pad_pads": (pad_pads, ["pads=0,0,1,2,0,0,0,1"], lambda x: np.pad(x, ((0, 0), (0, 0), (1, 0), (2, 1)))),
    "reduce_mean_axes": (reduce_mean_axes, ["axes=2,3"], lambda x: x.mean(axis=(2, 3), keepdims=True)),
    "unsqueeze_axes": (unsqueeze_axes, ["axes=4"], lambda x: x[..., None]),
    "reduce_mean_empty_axes": (lambda: _model([helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=1)],
                                              [("x", F, [1, 3, 4, 4]), ("axes", I64, [0])], [("y", [1, 1, 1, 1])],
                                              opset=18),
                               ["axes="], lambda x: x.mean(keepdims=True)),  # empty: every axis
}


@pytest.mark.parametrize("name", list(CASES))
def test_given_values_build_and_match_the_expected_output(name, tmp_path, run_cli):
    from edgec.devices.local import LocalDevice

    make, values, expected = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(make(), str(path))
    flags = [f for v in values for f in ("--input-value", v)]
    code, out, err = run_cli("build", str(path), "--out", str(tmp_path / "o"), *flags)
    assert code == 0, err
    assert "fixed by --input-value" in " ".join(out.split())
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8) if name in ("resize_scales", "slice_starts")
                                                 else (1, 3, 4, 4)).astype(np.float32)
    (y,) = LocalDevice().run(tmp_path / "o" / f"{name}-host" / "model.so", [x])
    assert y.shape == expected(x).shape and np.abs(y - expected(x)).max() <= 1e-6


@pytest.mark.parametrize("name", list(CASES))
def test_a_missing_value_is_refused_naming_the_input_before_any_work(name, tmp_path, run_cli):
    make, values, _ = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(make(), str(path))
    code, _, err = run_cli("build", str(path), "--out", str(tmp_path / "o"))
    first = values[0].split("=")[0]
    assert code == 2 and f"input '{first}' feeds" in err and f"--input-value {first}=" in err, err
    assert "simplify" not in err  # refused right after loading


def test_values_from_the_verify_inputs_npz(tmp_path, run_cli):
    path = tmp_path / "r.onnx"
    onnx.save(resize_scales(), str(path))
    np.savez(tmp_path / "samples.npz", x=np.ones((1, 3, 8, 8), np.float32), scales=np.array([1, 1, 2, 2], np.float32))
    code, _, err = run_cli("build", str(path), "--out", str(tmp_path / "o"), "--verify-inputs", str(tmp_path / "samples.npz"))
    assert code == 0, err


@pytest.mark.parametrize("flags, message", [
    (["--input-value", "scales=1,1,2"], "has 3 values; the input's shape [4] holds 4"),
    (["--input-value", "scales=1,1,2,2", "--input-value", "nope=1"], "names 'nope', which is not an input"),
    (["--input-value", "scales"], "bad --input-value 'scales'"),
    (["--input-value", "scales=a,b"], "bad --input-value"),
])
def test_bad_values_are_one_line_usage_errors(flags, message, tmp_path, run_cli):
    path = tmp_path / "r.onnx"
    onnx.save(resize_scales(), str(path))
    code, _, err = run_cli("build", str(path), "--out", str(tmp_path / "o"), *flags)
    assert code == 2 and message in err and "Traceback" not in err, err


def test_a_zoo_model_takes_no_input_value(run_cli, tmp_path):
    code, _, err = run_cli("build", "mobilenetv4", "--input-value", "x=1", "--out", str(tmp_path))
    assert code == 2 and "--input-value applies to ONNX files" in err


def test_a_rank0_data_input_builds_verifies_and_runs(tmp_path, run_cli):
    """A scalar that is data (a gain multiplied in), not a parameter: random like any input, kept rank 0."""
    from edgec.devices.local import LocalDevice

    path = tmp_path / "gain.onnx"
    onnx.save(_model([helper.make_node("Mul", ["x", "gain"], ["y"])], [("x", F, [1, 3, 4, 4]), ("gain", F, [])],
                     [("y", [1, 3, 4, 4])]), str(path))
    code, _, err = run_cli("build", str(path), "--out", str(tmp_path / "o"))
    assert code == 0, err
    x, gain = np.ones((1, 3, 4, 4), np.float32), np.array(2.5, np.float32)
    (y,) = LocalDevice().run(tmp_path / "o" / "gain-host" / "model.so", [x, gain])
    assert np.array_equal(y, x * 2.5)
    code, out, err = run_cli("profile", str(tmp_path / "o" / "gain-host"), "--repeats", "5", "--warmup", "1",
                             "--out", str(tmp_path / "p"))
    assert code == 0, err


@pytest.mark.parametrize("opset", [1, 6])
def test_an_opset_onnxruntime_cannot_run_builds_against_the_converted_model(opset, tmp_path, run_cli):
    """onnxruntime has no kernel for Add(1)/Add(6) (it supports opset 7 on): the reference is the model as edgec
    converted it, and the summary says so."""
    from edgec.devices.local import LocalDevice

    g = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"]), helper.make_node("Relu", ["z"], ["o"])], "a",
                          [helper.make_tensor_value_info("x", F, [1, 3, 4, 4]),
                           helper.make_tensor_value_info("y", F, [1, 3, 4, 4])],
                          [helper.make_tensor_value_info("o", F, [1, 3, 4, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 3
    path = tmp_path / f"add{opset}.onnx"
    onnx.save(m, str(path))
    code, out, err = run_cli("build", str(path), "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "the reference is the model as edgec converted it" in " ".join(out.split())
    x, y = (np.random.default_rng(s).standard_normal((1, 3, 4, 4)).astype(np.float32) for s in (1, 2))
    (o,) = LocalDevice().run(tmp_path / "o" / f"add{opset}-host" / "model.so", [x, y])
    assert np.array_equal(o, np.maximum(x + y, 0))
