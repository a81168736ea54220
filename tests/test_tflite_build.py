"""TFLite files built as they are (issue 27): the committed float32 and float16-weight models compile for the
host and verify against the TFLite interpreter; the artifact keeps the file's NHWC input and records it; a
wrong artifact is caught; the commands that rewrite ONNX refuse it in one line (int8 files: tests/int8)."""

import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data" / "tflite"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``edgec build cnn_fp32.tflite`` and ``cnn_fp16.tflite`` for the host, through the CLI (in-process)."""
    from edgec.cli.app import main

    out = tmp_path_factory.mktemp("tflite")
    codes = {}
    for name in ("cnn_fp32", "cnn_fp16"):
        with pytest.raises(SystemExit) as exc:
            main(["build", str(DATA / f"{name}.tflite"), "--out", str(out)])
        codes[name] = exc.value.code
    return out, codes


@pytest.mark.parametrize("name", ["cnn_fp32", "cnn_fp16"])
def test_a_float_tflite_file_builds_and_matches_the_interpreter(built, name):
    from edgec.devices.local import LocalDevice
    from edgec.frontend import reference

    out, codes = built
    assert codes[name] == 0
    art = out / f"{name}-host"
    assert (art / "model.tflite").read_bytes() == (DATA / f"{name}.tflite").read_bytes()
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["model"]["source"] == "tflite" and manifest["preprocessing"] == {"layout": "NHWC"}
    assert manifest["inputs"] == [{"name": "serving_default_input:0", "shape": [1, 32, 32, 3], "dtype": "float32",
                                   "layout": "NHWC"}]
    report = json.loads((art / "report.json").read_text())
    v = report["verification"]
    assert v["passed"] is True and v["reference_engine"] == "the TFLite interpreter" and len(v["sets"]) >= 3
    assert report["model"]["macs"] == 73808 and report["model"]["nodes"] == {"cnn_fp32": 9, "cnn_fp16": 15}[name]
    # independently of the build's own check: the library on the recorded input against the recorded output
    ref = np.load(DATA / f"{name}.npz")
    got = LocalDevice().run(art / "model.so", [ref["input_0"]])[0]
    tol = reference.BUILD_RTOL * max(1.0, float(np.abs(ref["output_0"]).max()))
    assert np.abs(got.astype(np.float64) - ref["output_0"]).max() <= tol


def test_a_wrong_artifact_is_caught(tmp_path, run_cli, monkeypatch):
    """The interpreter's outputs shifted by 1e-3 (10x the tolerance): the build must refuse with exit 6."""
    from edgec.frontend import litert

    real = litert.run_litert
    monkeypatch.setattr(litert, "run_litert", lambda *a, **k: [o + np.float32(1e-3) for o in real(*a, **k)])
    code, _, err = run_cli("build", str(DATA / "cnn_fp32.tflite"), "--out", str(tmp_path / "out"))
    assert code == 6 and "differ from the TFLite interpreter" in err and "--passes" not in err, err
    assert not any((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


@pytest.mark.parametrize("args,code,line", [
    (["build", "{d}/cnn_fp32.tflite", "--passes", "fold_batchnorm"], 2, "--passes rewrite ONNX models"),
    (["build", "{d}/cnn_fp32.tflite", "--quantize", "int8"], 2, "--quantize quantizes ONNX models"),
    (["build", "{d}/cnn_fp32.tflite", "--input-shape", "1,64,64,3"], 2, "input shapes are fixed in the file"),
    (["split", "{d}/cnn_fp32.tflite", "--list"], 3, "this command works on ONNX graphs"),
])
def test_what_a_tflite_file_cannot_do_is_refused_in_one_line(args, code, line, run_cli, tmp_path):
    got, _, err = run_cli(*[a.format(d=DATA) for a in args], "--out", str(tmp_path / "out")) if args[0] == "build" \
        else run_cli(*[a.format(d=DATA) for a in args])
    errors = [e for e in err.splitlines() if e.startswith("error:")]
    assert got == code and len(errors) == 1 and line in errors[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_tflite_build_profiles_against_litert(built, run_cli):
    out, _ = built
    code, stdout, err = run_cli("profile", str(out / "cnn_fp32-host"), "--repeats", "10", "--warmup", "2")
    assert code == 0, err
    report = json.loads((out / "cnn_fp32-host" / "profile" / "report.json").read_text())
    lat = report["profile"]["latency"]
    assert "onnxruntime" not in lat and lat["litert"]["runs"] == 10 and lat["ratio_vs_litert_p50"] > 0
    assert "edgec/LiteRT" in stdout


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
@pytest.mark.parametrize("name", ["cnn_fp32", "cnn_fp16"])
def test_the_float_files_build_for_the_emulated_boards(name, target, tmp_path, run_cli):
    code, _, err = run_cli("build", str(DATA / f"{name}.tflite"), "--target", target, "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / f"{name}-{target}" / "report.json").read_text())
    assert report["verification"]["passed"] is True and report["verification"]["emulated"] is True
    assert report["verification"]["reference_engine"] == "the TFLite interpreter"
