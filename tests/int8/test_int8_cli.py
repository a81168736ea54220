"""int8 end to end through the CLI: ``edgec quantize`` writes a QDQ file that records its calibration and
function change; ``edgec build --quantize int8`` and ``edgec build FILE-int8.onnx`` compile integer kernels
that match onnxruntime's to the element on the host; a wrong integer kernel is refused; bad flags are one line."""

import json

import numpy as np
import onnx
import pytest

from .qdq_models import block_cnn


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return block_cnn(tmp_path_factory.mktemp("int8cli") / "block.onnx")


def test_quantize_writes_a_qdq_file_with_its_record(model, tmp_path, run_cli):
    out = tmp_path / "q" / "block-int8.onnx"
    code, stdout, err = run_cli("quantize", str(model), "--out", str(out), "--samples", "8")
    assert code == 0, err
    q = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in q.graph.node)
    record = json.loads({p.key: p.value for p in q.metadata_props}["edgec.quantization"])
    assert record["calibration"]["samples"] == 8 and record["calibration"]["source"] == "generated"
    fc = record["function_change"]
    assert 0 <= fc["top1_agreement"] <= 1 and fc["snr_db"] > 10 and fc["passes"] == ["quantize_int8(method=minmax)"]
    assert "no --calibrate" in stdout and "SNR" in stdout
    assert not list(out.parent.glob(".*tmp*"))  # staged, then renamed


def test_build_quantize_int8_matches_onnxruntime_integer_kernels(model, tmp_path, run_cli):
    code, stdout, err = run_cli("build", str(model), "--quantize", "int8", "--samples", "8", "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / "block-host" / "report.json").read_text())
    v = report["verification"]
    judged = [s for s in v["sets"] if s["passed"] is not None]
    assert {s["name"] for s in judged} >= {"calibration:0", "calibration:1"}
    assert all(s["max_steps"] == 0 and s["exact_fraction"] == 1.0 for s in judged if s["name"].startswith("calib"))
    assert v["passed"] and "integer kernels" in v["reference_engine"]
    assert sum(report["kernels"]["integer"]["integer_ops"].values()) == 4
    mem = report["memory"]
    assert mem["activations"] == "int8" and "int8 analytic (fp32 would be" in stdout
    assert mem["after_passes"]["int8"]["peak_activation_bytes"] * 4 == mem["after_passes"]["fp32"]["peak_activation_bytes"]
    fc = report["function_change"]
    assert fc["passes"] == ["quantize_int8(method=minmax)"] and "snr_db" in fc
    step = next(p for p in report["passes"] if p["name"] == "quantize_int8")
    assert step["changes_function"] and step["calibration"]["samples"] == 8
    assert "every element equal to onnxruntime" in stdout and "quantize_int8" in stdout
    md = (tmp_path / "block-host" / "report.md").read_text()
    assert "## int8" in md and "changes the function on purpose" in md and "Integer kernels: conv2d" in md
    assert "integer kernels: conv2d" in stdout and "edgec tune" not in stdout  # no tuning hint for an fp32 model


def test_a_quantized_file_builds_as_it_is(model, tmp_path, run_cli):
    q = tmp_path / "block-int8.onnx"
    assert run_cli("quantize", str(model), "--out", str(q), "--samples", "4")[0] == 0
    code, stdout, err = run_cli("build", str(q), "--out", str(tmp_path))
    assert code == 0, err
    v = json.loads((tmp_path / "block-int8-host" / "report.json").read_text())["verification"]
    assert v["passed"] and v["max_steps"] == 0
    code, stdout, err = run_cli("memory", str(q))
    assert code == 0 and "kB int8 analytic" in stdout, err


def test_a_wrong_integer_kernel_is_refused(model, tmp_path, run_cli, monkeypatch):
    from edgec.backends.tvm import integer

    real = integer._requantize_exact
    monkeypatch.setattr(integer, "_requantize_exact",
                        lambda acc, scale, y_zero, shape: real(acc, np.asarray(scale) * 1.5, y_zero, shape))
    code, _, err = run_cli("build", str(model), "--quantize", "int8", "--samples", "4", "--out", str(tmp_path))
    assert code == 6 and "differ from onnxruntime (integer kernels of the quantized model)" in err, err
    assert not (tmp_path / "block-host").exists()


@pytest.mark.parametrize("args, needle", [
    (["--quantize", "int4"], "not a known scheme"),
    (["--calibrate", "x.npz"], "without --quantize"),
    (["--quantize", "int8", "--calibrate", "nosuch"], "not found"),
    (["--quantize", "int8", "--samples", "0"], "out of range"),
    (["--quantize", "int8", "--calibration", "best"], "not a calibration method"),
])
def test_bad_quantize_flags_are_one_line(model, tmp_path, run_cli, args, needle):
    code, _, err = run_cli("build", str(model), "--out", str(tmp_path), *args)
    assert code == 2 and needle in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize("out, needle", [("x.txt", "does not end in .onnx"), ("dir.onnx", "is a folder")])
def test_quantize_out_must_be_an_onnx_file(model, tmp_path, run_cli, out, needle):
    (tmp_path / "dir.onnx").mkdir()
    code, _, err = run_cli("quantize", str(model), "--out", str(tmp_path / out))
    assert code == 2 and needle in err


def test_a_microcontrollers_flash_check_counts_int8_weights_at_one_byte():
    """2.4 MB of float32 weights do not fit a 2 MB flash; the same weights as int8 (0.6 MB) do."""
    from onnx import helper, numpy_helper

    from edgec.errors import BudgetError
    from edgec.flows.build import check_weights
    from edgec.targets import get_target

    w = numpy_helper.from_array(np.zeros((600, 1000, 1, 1), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", 1, [1, 1000, 4, 4])],
                              [helper.make_tensor_value_info("y", 1, [1, 600, 4, 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    spec = get_target("cortex-m7")
    with pytest.raises(BudgetError, match="flash"):
        check_weights(spec, model, ["fold_batchnorm"])
    check_weights(spec, model, ["fold_batchnorm"], int8=True)


@pytest.mark.slow
def test_build_reports_int8_accuracy_on_data(digits, tmp_path, run_cli):
    """The digits classifier: --data gives the build's function line its top-1 accuracy, int8 against float32,
    calibrated on the training images (the default number of them)."""
    model, folder = digits.onnx_path, digits.train_dir.parent
    code, stdout, err = run_cli("build", str(model), "--quantize", "int8", "--data", str(folder),
                                "--out", str(tmp_path), "--name", "d8")
    assert code == 0, err
    report = json.loads((tmp_path / "d8" / "report.json").read_text())
    acc = report["function_change"]["accuracy"]
    assert acc["images"] > 100 and acc["top1_fp32"] > 0.9
    assert abs(acc["top1_int8"] - acc["top1_fp32"]) <= 0.02
    step = next(p for p in report["passes"] if p["name"] == "quantize_int8")
    assert step["calibration"]["source"] == "--calibrate DIR" and "train" in step["calibration"]["description"]
    assert step["calibration"]["description"].startswith("128 images from")  # the default, not --samples
    assert "--data images" in stdout


def test_data_needs_quantize_and_a_folder(model, tmp_path, run_cli):
    code, _, err = run_cli("build", str(model), "--data", str(tmp_path), "--out", str(tmp_path))
    assert code == 2 and "--data is given without --quantize" in err
    code, _, err = run_cli("build", str(model), "--quantize", "int8", "--data", str(tmp_path / "no"),
                           "--out", str(tmp_path))
    assert code == 2 and "is not a folder" in err


def test_found_by_a_new_user(model, tmp_path, run_cli):
    """--out over the source, quantizing an int8 file, calibration flags without --quantize, an empty .npz."""
    import shutil

    src = tmp_path / "m.onnx"
    shutil.copy(model, src)
    before = src.read_bytes()
    code, _, err = run_cli("quantize", str(src), "--out", str(src))
    assert code == 2 and "is the model being quantized" in err and src.read_bytes() == before
    q = tmp_path / "m-int8.onnx"
    assert run_cli("quantize", str(src), "--out", str(q), "--samples", "4")[0] == 0
    code, _, err = run_cli("quantize", str(q), "--out", str(tmp_path / "again.onnx"))
    assert code == 2 and "quantized already" in err and "without --quantize" in err
    for flag, value in (("--samples", "8"), ("--calibration", "entropy")):
        code, _, err = run_cli("build", str(src), flag, value, "--out", str(tmp_path))
        assert code == 2 and f"{flag} is given without --quantize" in err
    np.savez(tmp_path / "zero.npz", x=np.zeros((0, 3, 16, 16), np.float32))
    code, _, err = run_cli("quantize", str(src), "--calibrate", str(tmp_path / "zero.npz"), "--out", str(q))
    assert code == 2 and "holds no samples" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli("build", str(src), "--quantize", "int8", "--data", str(tmp_path / "empty"),
                           "--out", str(tmp_path))
    assert code == 2 and "error: --data" in err and "holds no images" in err


def test_params_of_an_int8_model_count_its_integer_weights(model, tmp_path, run_cli):
    from edgec.frontend.analysis import graph_stats

    q = tmp_path / "q.onnx"
    assert run_cli("quantize", str(model), "--out", str(q), "--samples", "4")[0] == 0
    float_model = onnx.load(str(model))
    weights = sum(onnx.numpy_helper.to_array(i).size for i in float_model.graph.initializer
                  if i.name not in ("lo", "hi"))  # the ReLU6 bounds go with the Clip, folded into the ranges
    assert graph_stats(onnx.load(str(q))).params == weights == graph_stats(float_model).params - 2


@pytest.mark.parametrize("bad", ["nan", "inf", "shape", "steps"])
def test_synthetic_sets_excuse_rounding_only(bad):
    """A synthetic set that is a few steps off is reported, not judged; NaN, inf or a wrong shape still fail."""
    from edgec.flows.parts import compare_sets

    ref = np.zeros((1, 10), np.float32)
    out = {"nan": np.full((1, 10), np.nan, np.float32), "inf": np.full((1, 10), np.inf, np.float32),
           "shape": np.zeros((1, 9), np.float32), "steps": np.full((1, 10), 0.3, np.float32)}[bad]
    record = compare_sets({"normal": [out], "calibration:0": [ref]}, {"normal": [ref], "calibration:0": [ref]},
                          quantization_steps=[0.1])
    row = record["sets"][0]
    if bad == "steps":
        assert row["passed"] is None and row["max_steps"] == pytest.approx(3) and record["passed"]
    else:
        assert row["passed"] is False and record["passed"] is False
