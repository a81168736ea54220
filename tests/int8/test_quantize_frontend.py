"""Post-training static quantization (frontend): calibration samples from every source and their refusals,
the QDQ form TFLite's conventions ask for, and the output steps the verification counts in."""

import numpy as np
import onnx
import pytest

from edgec.errors import UsageError
from edgec.frontend.quantize import calibration_samples, is_qdq, output_steps, quantize_int8, snr_db

from .qdq_models import block_cnn

SHAPES = {"x": (1, 3, 16, 16)}
DTYPES = {"x": np.dtype(np.float32)}


def test_without_calibrate_package_and_generated_images_are_used_and_said():
    cal = calibration_samples(None, SHAPES, DTYPES, None, 20)
    assert len(cal.samples) == 20 and cal.source == "generated"
    assert "generated images" in cal.description and "no --calibrate" in cal.description
    x = np.stack([s["x"] for s in cal.samples])
    assert x.shape == (20, 1, 3, 16, 16) and 0 <= x.min() and x.max() <= 1  # scaled to [0, 1] without preprocessing
    assert len({float(s["x"].sum()) for s in cal.samples}) == 20  # all different


def test_zoo_preprocessing_is_applied():
    pre = {"scale": 1 / 255, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    x = np.stack([s["x"] for s in calibration_samples(None, SHAPES, DTYPES, pre, 4).samples])
    assert x.min() >= -2.0 - 1e-6 and x.max() <= 2.0 + 1e-6 and x.min() < -0.5  # (v - 0.5) / 0.25


def test_a_folder_of_images_and_an_npz(tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs" / "cat"
    folder.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((20, 30, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    cal = calibration_samples(tmp_path / "imgs", SHAPES, DTYPES, None, 3)
    assert len(cal.samples) == 3 and cal.source == "--calibrate DIR"
    assert [round(float(s["x"].mean()) * 255) for s in cal.samples] == [0, 80, 160]  # evenly over sorted files
    arrays = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    np.savez(tmp_path / "cal.npz", x=arrays)
    cal = calibration_samples(tmp_path / "cal.npz", SHAPES, DTYPES, None, 32)
    assert len(cal.samples) == 6 and np.array_equal(cal.samples[2]["x"][0], arrays[2])


@pytest.mark.parametrize("case, needle", [
    ("missing", "not found"), ("text", "neither a folder"), ("empty_dir", "holds no images"),
    ("npz_name", "has no array 'x'"), ("npz_shape", "has shape"), ("npz_nan", "NaN")])
def test_bad_calibration_inputs_are_one_line(tmp_path, case, needle):
    path = tmp_path / "c"
    if case == "text":
        path = tmp_path / "c.txt"
        path.write_text("hello")
    elif case == "empty_dir":
        path.mkdir()
    elif case.startswith("npz"):
        path = tmp_path / "c.npz"
        a = np.zeros((2, 3, 16, 16), np.float32)
        if case == "npz_nan":
            a[0, 0, 0, 0] = np.nan
        np.savez(path, **({"y": a} if case == "npz_name" else {"x": a[:, :, :8] if case == "npz_shape" else a}))
    with pytest.raises(UsageError, match=needle):
        calibration_samples(path, SHAPES, DTYPES, None, 8)


def test_a_non_image_model_needs_calibration_arrays():
    with pytest.raises(UsageError, match="one image input"):
        calibration_samples(None, {"a": (1, 7)}, {"a": np.dtype(np.float32)}, None, 8)


def test_qdq_form_follows_tflite_conventions(tmp_path):
    model = onnx.load(str(block_cnn(tmp_path / "m.onnx")))
    q = quantize_int8(model, calibration_samples(None, SHAPES, DTYPES, None, 8))
    assert is_qdq(q) and not is_qdq(model)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    weight_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
                 and inits[n.input[0]].dtype == np.int8 and inits[n.input[0]].ndim == 4]
    assert len(weight_dq) == 3
    for n in weight_dq:  # per output channel, symmetric
        assert inits[n.input[1]].shape == (inits[n.input[0]].shape[0],) and not inits[n.input[2]].any()
    bias_dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
               and inits[n.input[0]].dtype == np.int32]
    assert bias_dq  # int32 biases
    zero_points = {int(inits[n.input[2]]) for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert zero_points - {0}  # asymmetric activations
    steps = output_steps(q)
    assert len(steps) == 1 and steps[0] > 0


def test_snr():
    x = np.array([3.0, 4.0])
    assert snr_db(x, x) == float("inf")
    assert snr_db(x + np.array([0.3, 0.4]), x) == pytest.approx(20.0)
