"""TFLite files edgec cannot build are refused through the CLI with one line and their own exit code
(issue 27): a damaged file 3, a custom op 4 (named, with its operator index), several subgraphs 3, a
dynamic shape 3. A sound file is read (its kind and operators) and the LiteRT reference runs it."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from frontend.tflite_builder import relu_model

DATA = Path(__file__).parents[1] / "data" / "tflite"


def _truncated(tmp: Path) -> Path:
    (tmp / "t.tflite").write_bytes((DATA / "cnn_fp32.tflite").read_bytes()[:3000])
    return tmp / "t.tflite"


def _not_tflite(tmp: Path) -> Path:
    (tmp / "n.tflite").write_text("hello, not a model\n")
    return tmp / "n.tflite"


def _renamed(tmp: Path) -> Path:  # a TFLite file whatever its name
    shutil.copy(DATA / "custom_op.tflite", tmp / "model.onnx")
    return tmp / "model.onnx"


CASES = [
    ("truncated", _truncated, 3, r"t\.tflite is truncated or damaged"),
    ("not-tflite", _not_tflite, 3, r"n\.tflite is not a TensorFlow Lite model"),
    ("custom-op", lambda tmp: DATA / "custom_op.tflite", 4, r"custom operator 'Erfinv' at operator 1 has no kernel"),
    ("detection-postprocess", lambda tmp: DATA / "detection_postprocess.tflite", 4,
     r"custom operator 'TFLite_Detection_PostProcess' at operator 0"),
    ("custom-op-named-onnx", _renamed, 4, r"custom operator 'Erfinv'"),
    ("two-subgraphs", lambda tmp: relu_model(tmp / "two.tflite", subgraphs=2), 3,
     r"two\.tflite has 2 subgraphs .* edgec builds single-subgraph models"),
    ("dynamic-shape", lambda tmp: relu_model(tmp / "dyn.tflite", signature=[-1, 8]), 3,
     r"tensor 'x' has a dynamic shape \[-1, 8\]; edgec compiles static shapes"),
]


@pytest.mark.parametrize("make,code,line", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_tflite_file_no_build_can_take_is_refused_in_one_line(make, code, line, tmp_path, run_cli):
    import re

    model = make(tmp_path)
    got, out, err = run_cli("build", str(model), "--out", str(tmp_path / "out"))
    assert got == code, err
    errors = [e for e in err.splitlines() if e.startswith("error:")]
    assert len(errors) == 1 and re.search(line, errors[0]), err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_sound_file_is_read_and_the_litert_reference_matches_its_recorded_outputs():
    from edgec.frontend.litert import run_litert
    from edgec.frontend.tflite import inspect_tflite

    kinds = {"cnn_fp32": "fp32", "cnn_fp16": "fp16-weights", "cnn_int8": "int8", "cnn_int8_io": "int8"}
    for name, kind in kinds.items():
        info = inspect_tflite(DATA / f"{name}.tflite")
        assert info.kind == kind and info.layout == "NHWC" and info.inputs[0].shape == (1, 32, 32, 3)
        assert info.stats.params == 394  # the same network: int8 weights and int32 biases count as float ones
        assert [op for _, op in info.ops if op in ("CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH")] == \
            ["CONV_2D", "DEPTHWISE_CONV_2D", "HARD_SWISH"]
        ref = np.load(DATA / f"{name}.npz")
        if info.outputs[0].dtype == "int8":
            tol = 1.0  # int8 codes: one quantization step
        elif kind == "int8":
            tol = 1 / 256  # a float output after DEQUANTIZE: one step of TFLite's int8 softmax (scale 1/256)
        else:
            tol = 1e-5 * max(1.0, float(np.abs(ref["output_0"].astype(np.float64)).max()))
        # the recorded outputs are XNNPACK's on the machine that made them; this CPU's vector width may round
        # otherwise, so both the delegate and the built-in kernels are held to the tolerance, not to the bit
        for xnnpack in (True, False):
            out = run_litert(DATA / f"{name}.tflite", [ref["input_0"]], xnnpack=xnnpack)[0]
            assert np.abs(out.astype(np.float64) - ref["output_0"].astype(np.float64)).max() <= tol, (name, xnnpack)
    io = inspect_tflite(DATA / "cnn_int8_io.tflite")
    assert io.inputs[0].dtype == "int8" and io.inputs[0].scale is not None and io.inputs[0].zero_point is not None
