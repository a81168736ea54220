import numpy as np
import onnx
import pytest

from conftest import parse_model
from edgec.errors import ModelError, UsageError
from edgec.frontend.load import load_onnx, parse_input_shapes, prepare_onnx, resolve_input_shapes
from edgec.frontend.reference import compare, make_inputs, run_ort

# A dynamic-batch, dynamic-width graph whose Reshape target is computed from Shape:
# the pattern TVM's importer rejects ("Reshape requires the input new shape to be Shape").
DYNAMIC_RESHAPE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[N, 4, 8, W] x) => (float[N, M] y) {
    s = Shape(x)
    i0 = Constant<value = int64[1] {0}>()
    n = Gather<axis = 0>(s, i0)
    minus1 = Constant<value = int64[1] {-1}>()
    target = Concat<axis = 0>(n, minus1)
    r = Relu(x)
    y = Reshape(r, target)
}
"""


def write(tmp_path, name, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_missing_empty_truncated_garbage_files(tmp_path, ppocr_cls):
    with pytest.raises(ModelError, match="not found"):
        load_onnx(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="empty"):
        load_onnx(write(tmp_path, "empty.onnx", b""))
    with pytest.raises(ModelError, match="directory"):
        load_onnx(tmp_path)
    data = ppocr_cls.read_bytes()
    with pytest.raises(ModelError):
        load_onnx(write(tmp_path, "trunc.onnx", data[: len(data) // 2]))
    with pytest.raises(ModelError):
        load_onnx(write(tmp_path, "text.onnx", b"this is not a protobuf at all \x00\xff" * 10))


def test_malformed_graph_is_rejected(tmp_path):
    model = parse_model(DYNAMIC_RESHAPE)
    model.graph.node[-1].input[1] = "does_not_exist"
    path = tmp_path / "bad.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="not valid ONNX"):
        load_onnx(path)


def test_parse_input_shapes():
    assert parse_input_shapes(["x=1,3,48,192"]) == {"x": (1, 3, 48, 192)}
    assert parse_input_shapes(["1,3,224,224"]) == {None: (1, 3, 224, 224)}
    for bad in ["x=1,a,3", "x=", "x=1,-3", "x=0,3"]:
        with pytest.raises(UsageError):
            parse_input_shapes([bad])


def test_input_shape_errors_name_the_fix():
    model = parse_model(DYNAMIC_RESHAPE)
    with pytest.raises(UsageError) as exc:
        resolve_input_shapes(model, {})
    assert "pass --input-shape x=1,4,8,W, replacing W with sizes" in exc.value.one_line()
    with pytest.raises(UsageError, match="not an input"):
        resolve_input_shapes(model, {"y": (1, 4, 8, 8)})
    with pytest.raises(UsageError, match="rank"):
        resolve_input_shapes(model, {"x": (1, 4, 8)})
    with pytest.raises(UsageError, match="fixes it to 4"):
        resolve_input_shapes(model, {"x": (1, 5, 8, 8)})
    assert resolve_input_shapes(model, {None: (2, 4, 8, 6)}) == {"x": (2, 4, 8, 6)}


def test_shape_subgraph_is_folded_and_numerics_kept():
    model = parse_model(DYNAMIC_RESHAPE)
    prepared, shapes = prepare_onnx(model, {"x": (2, 4, 8, 6)})
    ops = [n.op_type for n in prepared.graph.node]
    assert "Shape" not in ops and "Gather" not in ops and "Concat" not in ops
    out_dims = [d.dim_value for d in prepared.graph.output[0].type.tensor_type.shape.dim]
    assert out_dims == [2, 192]
    x = make_inputs(shapes)
    cmp = compare(run_ort(prepared, x), run_ort(model, x), rtol=1e-6, check_top1=False)
    assert cmp.passed and cmp.max_abs_error == 0


def test_folded_graph_imports_into_tvm():
    from edgec.backends.tvm.importer import import_onnx

    model = parse_model(DYNAMIC_RESHAPE)
    with pytest.raises(Exception, match="Reshape requires"):
        from tvm.relax.frontend.onnx import from_onnx

        from edgec.tvm_setup.capture import captured_fds

        with captured_fds():
            from_onnx(model, shape_dict={"x": [2, 4, 8, 6]})
    prepared, shapes = prepare_onnx(model, {"x": (2, 4, 8, 6)})
    mod = import_onnx(prepared, shapes)
    assert "main" in [gv.name_hint for gv in mod.get_global_vars()]


def test_compare_tolerance_and_top1():
    ref = [np.array([[0.0, 10.0, 2.0]])]
    assert compare([ref[0] + 5e-4], ref, rtol=1e-4).passed
    assert not compare([ref[0] + 2e-3], ref, rtol=1e-4).passed
    # within the error tolerance (4.6 <= 5) but the classes it swapped are 8 apart in the reference
    swapped = [np.array([[0.0, 6.5, 6.6]])]
    c = compare(swapped, ref, rtol=0.5)
    assert c.max_abs_error <= c.tolerance and c.top1_match is False and not c.passed
    # a swap between classes the reference scores within the tolerance is a near-tie, not a failure
    near = compare([np.array([[0.0, 10.0, 10.0 + 1e-4]])], [np.array([[0.0, 10.0, 10.0 - 1e-4]])], rtol=1e-4)
    assert near.top1_match is True and near.top1_near_ties == 1 and near.passed
    assert not compare([np.full((1, 3), np.nan)], ref).passed
