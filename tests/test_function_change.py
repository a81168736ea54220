"""Function-changing passes: the artifact is checked against the model after the change (exactly),
and the change itself is reported against the source, as two separate lines."""

import json

import pytest

from conftest import tiny_cnn
from edgec.flows.build import BuildOptions, build
from edgec.errors import VerificationError
from edgec.profiling.report import render_markdown, validate


def test_scaled_output_builds_verified_and_reports_both_lines(tmp_path, scale_output_pass):
    model = tiny_cnn(tmp_path / "tiny.onnx")
    result = build(BuildOptions(model=str(model), out_dir=tmp_path, passes="default,scale_output(factor=1.01)"))
    r = result.report
    validate(r)
    v, fc = r["verification"], r["function_change"]
    assert v["passed"] and v["max_abs_error"] <= 1e-4 * max(1.0, v["max_abs_ref"])
    assert "after scale_output" in v["reference"]
    assert fc["passes"] == ["scale_output"] and fc["inputs"] == 8
    assert fc["relative_error"] == pytest.approx(0.01, rel=1e-3) and fc["top1_agreement"] == 1.0
    rec = next(p for p in r["passes"] if p["name"] == "scale_output")
    assert rec["equivalence"]["kind"] == "changes-function" and rec["applied"] == 1  # ran once, not to a fixed point
    assert rec["fidelity"]["relative_error"] == pytest.approx(0.01, rel=1e-3)
    md = render_markdown(r)
    assert "compiler exactness (artifact vs the model after scale_output) | PASS" in md
    assert "function change (vs the source model) | changed on purpose by scale_output" in md and "1.00%" in md
    manifest = json.loads((result.artifact / "manifest.json").read_text())
    assert manifest["function_change"]["passes"] == ["scale_output"]
    assert "pass:scale_output" in manifest["steps"]


def test_verifying_against_the_source_would_fail(tmp_path, scale_output_pass, monkeypatch):
    """The exactness check must use the changed model: against the source, a 5% change fails the build."""
    import edgec.flows.build as b

    real = b.lower

    def lower_with_source_reference(opts, steps=None, *rest):
        low = real(opts, steps, *rest)
        low.reference = low.prepared
        return low

    monkeypatch.setattr(b, "lower", lower_with_source_reference)
    model = tiny_cnn(tmp_path / "tiny.onnx")
    with pytest.raises(VerificationError, match="differ from onnxruntime"):
        build(BuildOptions(model=str(model), out_dir=tmp_path / "out", passes="scale_output(factor=1.05)"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_summary_shows_the_function_line(run_cli, tmp_path, scale_output_pass):
    model = tiny_cnn(tmp_path / "tiny.onnx")
    code, out, err = run_cli("build", str(model), "--out", str(tmp_path / "out"), "--passes",
                             "scale_output(factor=1.02)")
    assert code == 0, err
    flat = " ".join(out.split())  # table cells wrap
    assert "verify" in flat and "PASS" in flat and "vs the model after scale_output(factor=1.02)" in flat
    assert "function" in flat and "changed on purpose by scale_output(factor=1.02)" in flat and "2.00%" in flat
    code, _, err = run_cli("build", str(model), "--out", str(tmp_path / "out"), "--passes",
                           "scale_output(factor=-1)")
    assert code == 2 and "factor must be positive" in err and len(err.strip().splitlines()) == 1
