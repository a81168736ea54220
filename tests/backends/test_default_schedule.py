"""Kernels no tuning record covers get edgec's default schedule (parallel, vectorized): still exact,
reported per kernel, and a kernel the rule cannot schedule keeps TVM's default."""

import json

import numpy as np
import onnx

from conftest import parse_model, tiny_cnn


def _kernels(model):
    from edgec.backends.tvm import api
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.pipeline import fused_module
    from edgec.frontend.load import prepare_onnx
    from edgec.targets import get_target
    from tvm import tirx

    prepared, _ = prepare_onnx(model, {})
    target = tvm_target(get_target("host"))
    fused = fused_module(api.import_model(prepared), target)
    return {gv.name_hint: f for gv, f in fused.functions_items() if isinstance(f, tirx.PrimFunc)}, target


def test_a_conv_kernel_is_parallel_and_vectorized_and_unchanged_in_value(tmp_path):
    from edgec.backends.tvm.default_schedule import default_schedule, is_scheduled

    kernels, target = _kernels(onnx.load(str(tiny_cnn(tmp_path / "t.onnx", channels=16, size=20))))
    name, conv = next((n, f) for n, f in kernels.items() if "conv2d" in n)
    scheduled = default_schedule(conv, target)
    assert scheduled is not None and is_scheduled(scheduled) and not is_scheduled(conv)
    text = scheduled.script()
    assert "T.parallel(" in text and "T.vectorized(" in text
    assert "T.parallel(" not in conv.script()
    _compare_scheduled(conv, target)


def _compare_scheduled(func, target):
    import tvm

    from edgec.backends.tvm.default_schedule import default_schedule

    scheduled = default_schedule(func, target)
    assert scheduled is not None
    outs = []
    for f in (func, scheduled):
        lib = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=target).mod
        rng = np.random.default_rng(3)
        args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.ty.shape]).astype("float32"))
                for p in f.params]
        lib["main"](*args)
        outs.append(args[-1].numpy())
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-6, atol=1e-6)


def test_a_sliced_residual_fused_after_the_conv_keeps_its_values():
    """A block after the conv that does not read it (the Slice of a residual, as patch_inference makes) must
    be inlined into the epilogue, not computed at the conv's loops (that gave wrong values)."""
    from passes.test_patch_inference import _block_model

    from edgec.passes import run_pipeline

    m = run_pipeline(_block_model(), "patch_inference(stop=h,grid=3)").model
    kernels, target = _kernels(m)
    fused = [f for n, f in kernels.items() if "conv2d" in n and "slice" in n]
    assert fused, f"no conv+slice kernel in {list(kernels)}"
    for func in fused:
        _compare_scheduled(func, target)


def test_a_kernel_the_rule_cannot_schedule_keeps_tvms_default(tmp_path, monkeypatch):
    from edgec.backends.tvm import default_schedule as ds

    kernels, target = _kernels(onnx.load(str(tiny_cnn(tmp_path / "t.onnx"))))
    conv = next(f for n, f in kernels.items() if "conv2d" in n)

    def illegal(func, target):
        raise RuntimeError("ScheduleError: simulated illegal primitive")

    monkeypatch.setattr(ds, "parallel_vectorize", illegal)
    assert ds.default_schedule(conv, target) is None


def test_softmax_and_layernorm_kernels_are_scheduled_and_exact(tmp_path):
    """Kernels with two reductions (softmax, normalisation) take DLight's CPU reduction rule."""
    from edgec.flows.build import BuildOptions, build

    model = parse_model("""
        <ir_version: 8, opset_import: ["" : 17]>
        g (float[1, 8, 64] x) => (float[1, 8, 64] y) {
            s = Softmax <axis = -1> (x)
            sc = Constant <value = float[64] {""" + ", ".join(["1.5"] * 64) + """}> ()
            b = Constant <value = float[64] {""" + ", ".join(["0.25"] * 64) + """}> ()
            y = LayerNormalization <axis = -1> (s, sc, b)
        }""")
    onnx.save(model, tmp_path / "sm.onnx")
    result = build(BuildOptions(model=str(tmp_path / "sm.onnx"), out_dir=tmp_path / "o", use_tune_db=False))
    assert result.report["verification"]["passed"]
    calls = json.loads((result.artifact / "kernels.json").read_text())["calls"]
    assert calls and all(c.get("schedule", {}).get("kind") == "default" for c in calls), calls


def test_build_reports_default_schedules_and_matches(tmp_path):
    """--no-tune-db: every kernel gets the default schedule, and the build still verifies; with the
    default schedule off, kernels.json says nothing about a schedule."""
    from edgec.flows.build import BuildOptions, build

    model = str(tiny_cnn(tmp_path / "t.onnx"))
    on = build(BuildOptions(model=model, out_dir=tmp_path / "a", use_tune_db=False))
    assert on.report["verification"]["passed"]
    calls = json.loads((on.artifact / "kernels.json").read_text())["calls"]
    conv = [c for c in calls if "conv2d" in c["kernel"]]
    assert conv and all(c["schedule"]["kind"] == "default" for c in conv)
    off = build(BuildOptions(model=model, out_dir=tmp_path / "b", use_tune_db=False, default_schedule=False))
    assert off.report["verification"]["passed"]
    assert not any("schedule" in c for c in json.loads((off.artifact / "kernels.json").read_text())["calls"])


def test_summary_counts_default_schedules(tmp_path):
    """With the databases on, the report counts the kernels that got the default schedule."""
    from edgec.flows.build import BuildOptions, build
    from edgec.profiling.report import schedules_line

    result = build(BuildOptions(model=str(tiny_cnn(tmp_path / "t.onnx", channels=24, size=12)),
                                out_dir=tmp_path / "o", tune_db=None))
    b = result.report["build"]
    sched = b["schedules"]
    assert sum(sched.values()) == b["total_tasks"] >= 1
    assert sched["default"] >= 1 and sched["untuned"] == 0  # no record knows these shapes
    assert f"{sched['default']} with edgec's default schedule" in schedules_line(b)
