"""A kernel the code generator cannot compile is compiled alone for a generic CPU; a failure with no fallback
is exit 8 naming the kernel."""

import numpy as np
import onnx

from conftest import tiny_cnn


def _fused(path):
    from edgec.backends.tvm import api
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.pipeline import fused_module
    from edgec.frontend.load import prepare_onnx
    from edgec.targets import get_target

    model, _ = prepare_onnx(onnx.load(str(path)), {})
    spec = get_target("host")
    return model, spec, fused_module(api.import_model(model), tvm_target(spec))


def test_a_kernel_split_out_for_a_generic_cpu_still_computes_the_model(tmp_path):
    import tvm
    from tvm.target import Target

    from edgec.backends.tvm.compile import resolve_native, tvm_target
    from edgec.backends.tvm.fallback import fallback_target, split_out
    from edgec.backends.tvm.pipeline import relax_pipeline
    from edgec.devices.local import LocalDevice
    from edgec.frontend.reference import run_ort

    model, spec, fused = _fused(tiny_cnn(tmp_path / "t.onnx"))
    conv = next(gv.name_hint for gv, f in fused.functions_items() if "conv2d" in gv.name_hint)
    generic = fallback_target(resolve_native(spec.cpu_target))
    assert generic["mcpu"] in ("x86-64-v2", "generic") and "mattr" not in generic
    kept, built = split_out(fused, {conv}, Target(generic))
    assert conv not in {gv.name_hint for gv, _ in kept.functions_items()}
    target = tvm_target(spec)
    ex = tvm.compile(kept, target=target, relax_pipeline=relax_pipeline(target, None, True))
    for m in built:
        ex.mod.import_module(m)
    ex.export_library(str(tmp_path / "m.so"))
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    (got,) = LocalDevice().run(tmp_path / "m.so", [x])
    np.testing.assert_allclose(got, run_ort(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_fallback_is_reported(tmp_path, monkeypatch):
    """Simulate a code-generator crash in one kernel on this CPU: the build falls back for it alone."""
    import tvm

    from edgec.backends.tvm import fallback
    from edgec.flows.build import BuildOptions, build

    real_compile = tvm.compile
    calls = {"n": 0}

    def first_compile_fails(mod, *a, **k):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("LLVM module verification failed with the following errors: (simulated)")
        return real_compile(mod, *a, **k)

    monkeypatch.setattr(tvm, "compile", first_compile_fails)
    monkeypatch.setattr(fallback, "failing_kernels",
                        lambda fused, target: {next(gv.name_hint for gv, _ in fused.functions_items()
                                                    if "conv2d" in gv.name_hint): "simulated"})
    result = build(BuildOptions(model=str(tiny_cnn(tmp_path / "t.onnx")), out_dir=tmp_path / "o", use_tune_db=False))
    (fb,) = result.report["build"]["fallbacks"]
    assert "conv2d" in fb["kernel"] and ("generic" in fb["fallback"] or "x86-64-v2" in fb["fallback"])
    assert result.report["verification"]["passed"]
    import json

    calls_map = json.loads((result.artifact / "kernels.json").read_text())["calls"]
    assert any(c.get("fallback") for c in calls_map)


def test_a_compiler_failure_with_no_fallback_is_exit_8(run_cli, tmp_path, monkeypatch):
    import tvm

    from edgec.backends.tvm import fallback

    def always_fails(*_a, **_k):
        raise RuntimeError("LLVM module verification failed (simulated)")

    monkeypatch.setattr(tvm, "compile", always_fails)
    monkeypatch.setattr(fallback, "failing_kernels", lambda fused, target: {})
    code, _, err = run_cli("build", str(tiny_cnn(tmp_path / "t.onnx")), "--out", str(tmp_path / "o"))
    assert code == 8 and "every kernel compiles alone" in err and "Traceback" not in err
    monkeypatch.setattr(fallback, "failing_kernels", lambda fused, target: {"fused_conv2d_add_relu": "x"})
    code, _, err = run_cli("build", str(tiny_cnn(tmp_path / "t.onnx")), "--out", str(tmp_path / "o"))
    assert code == 8 and "fails on kernel fused_conv2d_add_relu" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_a_compiler_failure_names_its_cause_not_the_tail_of_the_ir_dump():
    from edgec.backends.tvm.compile import _cause

    exc = RuntimeError(
        "CodeGenVM cannot emit this Relax operator directly. Run the appropriate lowering pass.\n"
        "@R.function\ndef main(x: R.Tensor((1, 32, 32, 32), dtype=\"float32\")):\n"
        "    lv3: R.Tensor((1, 64, 64, 16), dtype=\"float32\") = R.nn.conv2d_transpose(x, w, data_layout=\"NHWC\")\n"
        "    return lv3\n# Metadata omitted. Use show_meta=True in script() method to show it.")
    text = _cause(exc)
    assert text.startswith("CodeGenVM cannot emit this Relax operator directly")
    assert text.endswith('-- at R.nn.conv2d_transpose(x, w, data_layout="NHWC")') and "Metadata" not in text
