"""The default pipeline on zoo models: the figures of the passes issue, idempotence, the harness records."""

from collections import Counter

import onnx
import pytest

from edgec.errors import UsageError
from edgec.frontend.export import export_torch
from edgec.frontend.load import prepare_onnx
from edgec.passes import resolve_pipeline, run_pipeline
from edgec.zoo import create_model, get


def prepared(name):
    m, _ = prepare_onnx(export_torch(create_model(name), get(name).input_shape), {})
    return m


def pipeline(m, spec, **kw):
    result = run_pipeline(m, spec, **kw)
    return result.model, result.records


def ops(m):
    return Counter(n.op_type for n in m.graph.node)


def changes(records):
    out = {}
    for r in records:
        for op, (a, b) in r.get("op_changes", {}).items():
            out.setdefault(op, [a, b])[1] = b
    return out


@pytest.mark.slow
def test_ghostnetv3_100_figures():
    m = prepared("ghostnetv3_100")
    before = ops(m)
    out, records = pipeline(m, "default")
    after = ops(out)
    assert before["BatchNormalization"] == 32 and after["BatchNormalization"] == 0
    assert before["Conv"] == 309 and after["Conv"] == 137
    assert len(out.graph.node) <= 618
    assert all(r["passed"] in (True, None) for r in records)


@pytest.mark.slow
def test_efficientvit_m0_figures():
    m = prepared("efficientvit_m0")
    out, records = pipeline(m, "default")
    assert ops(m)["BatchNormalization"] == 1 and ops(out)["BatchNormalization"] == 0
    # 24 query-scale Muls (one per attention head); the 2 left are the squeeze-excite gates x * sigmoid(.)
    assert ops(m)["Mul"] - ops(out)["Mul"] == 24
    assert all(n.input[1] not in {i.name for i in out.graph.initializer} for n in out.graph.node if n.op_type == "Mul")


@pytest.mark.slow
def test_mobilenetv4_hybrid_medium_figures():
    m = prepared("mobilenetv4_hybrid_medium")
    out, records = pipeline(m, "default")
    inits = {i.name for i in m.graph.initializer}
    const_muls = [n for n in m.graph.node if n.op_type == "Mul" and n.input[1] in inits]
    layerscale = [n for n in const_muls if len(m.graph.initializer[[i.name for i in m.graph.initializer].index(
        n.input[1])].dims) == 4]
    assert len(layerscale) == 30 and len(const_muls) - len(layerscale) == 16
    assert not {n.name for n in const_muls} & {n.name for n in out.graph.node}
    # the only Muls left are BatchNormalizations before padded convs, rewritten as x * s + t
    assert all(n.input[1].startswith("bn_scale") for n in out.graph.node if n.op_type == "Mul")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "ghostnet_100", "ghostnetv2_100"])
def test_pipeline_is_a_noop_and_idempotent_on_exported_models(name):
    m = prepared(name)
    out, records = pipeline(m, "default")
    assert ops(out) == ops(m) and len(out.graph.node) == len(m.graph.node)
    assert not any(r["applied"] for r in records)
    again, records2 = pipeline(out, "default")
    assert not any(r["applied"] for r in records2)


def test_records_dump_and_idempotence(tmp_path):
    m = prepared("ghostnetv3_050")
    out, records = pipeline(m, "reparameterize_branches,fold_batchnorm", dump_dir=tmp_path)
    rep = records[0]
    assert rep["name"] == "reparameterize_branches" and rep["applied"] >= 1 and rep["passed"]
    assert rep["nodes_after"] < rep["nodes_before"] and rep["macs_after"] < rep["macs_before"]
    assert rep["op_changes"]["BatchNormalization"][1] == 0
    assert rep["max_abs_error"] <= rep["tolerance"]
    dumped = sorted(p.name for p in tmp_path.iterdir())
    assert dumped[0] == "00_input.onnx" and any("reparameterize_branches" in d for d in dumped)
    onnx.checker.check_model(onnx.load(str(tmp_path / dumped[-1])), full_check=True)
    _, again = pipeline(out, "default")
    assert not any(r["applied"] for r in again)


def test_unknown_pass_is_a_usage_error():
    with pytest.raises(UsageError) as exc:
        resolve_pipeline("fold_batchnorm,fold_batchnrom")
    assert "did you mean fold_batchnorm" in exc.value.one_line()
    assert resolve_pipeline("none") == []


def test_broken_pass_is_caught_by_the_harness(monkeypatch):
    """A pass that changes the outputs must stop the build (the harness can fail)."""
    import onnx_ir as ir

    from edgec.errors import VerificationError
    from edgec.passes import registry

    class Breaks(ir.passes.InPlacePass):
        def call(self, model):
            for node in model.graph:
                if node.op_type == "Conv":
                    w = node.inputs[1]
                    arr = w.const_value.numpy() * 1.01
                    w.const_value = ir.tensor(arr, name=w.name)
                    return ir.passes.PassResult(model, True)
            return ir.passes.PassResult(model, False)

    monkeypatch.setitem(registry._PASSES, "breaks", registry.PassInfo(
        "breaks", "Conv", "-", registry.EXACT, "-", Breaks))
    m = prepared("mcunetv2")
    with pytest.raises(VerificationError, match="pass breaks changed the outputs"):
        run_pipeline(m, "breaks")


def test_hard_activations_fuse_into_the_conv_kernel():
    """HardSwish/HardSigmoid are kept as ONNX ops: TVM imports them as clip-based element-wise ops,
    which edgec's pipeline turns into min/max (layout-agnostic), and FuseOps puts into the
    producing conv's kernel."""
    from onnx import helper, numpy_helper
    import numpy as np

    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.importer import import_onnx
    from edgec.backends.tvm.pipeline import fused_kernels
    from edgec.targets import get_target

    for act in ("HardSwish", "HardSigmoid"):
        w = numpy_helper.from_array(np.ones((8, 8, 3, 3), np.float32), "w")
        nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node(act, ["c"], ["y"])]
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, [1, 8, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 8, 8, 8])], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        kernels = fused_kernels(import_onnx(m, {"x": (1, 8, 8, 8)}), tvm_target(get_target("host")))
        compute = [k for k in kernels if k not in ("transpose", "transpose1", "transpose2")]  # NHWC in and out
        assert len(compute) == 1 and "conv2d" in compute[0] and "minimum" in compute[0], kernels
