"""Full-integer TFLite files (issue 27 with the integer lowering of issue 26): the committed int8 models build,
their convolutions, pooling and mean become integer kernels with TFLite's own rounding, and the artifact equals
the TFLite interpreter within one quantization step (every element, on the test machines); an integer input
takes an image quantized with its scale and zero point."""

import json
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parents[1] / "data" / "tflite"
INT8_FILES = ["cnn_int8", "cnn_int8_io"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from edgec.cli.app import main

    out = tmp_path_factory.mktemp("tflite-int8")
    codes = {}
    for name in INT8_FILES:
        with pytest.raises(SystemExit) as exc:
            main(["build", str(DATA / f"{name}.tflite"), "--out", str(out)])
        codes[name] = exc.value.code
    return out, codes


@pytest.mark.parametrize("name", INT8_FILES)
def test_an_int8_tflite_file_builds_into_integer_kernels_equal_to_the_interpreter(built, name):
    from edgec.devices.local import LocalDevice

    out, codes = built
    assert codes[name] == 0
    art = out / f"{name}-host"
    report = json.loads((art / "report.json").read_text())
    v = report["verification"]
    assert v["passed"] is True and v["reference_engine"] == "the TFLite interpreter"
    assert v["tolerance_rule"] == "one quantization step of each output"
    assert all(s["max_steps"] <= 1 for s in v["sets"]) and v["exact_fraction"] >= 0.9
    if name == "cnn_int8_io":  # an int8 input: the whole int8 range is a set of its own
        assert "codes" in {s["name"] for s in v["sets"]}
    integer = report["kernels"]["integer"]
    assert integer["integer_ops"] == {"conv2d": 2, "avg_pool2d": 1, "mean": 1, "matmul": 1, "add": 1}
    assert set(integer["float_islands"]) <= {"add", "multiply", "softmax"}  # hard-swish and softmax
    # independently of the build's own check: the recorded input against the recorded output (that reference ran
    # XNNPACK's int8 kernels, which round differently from the built-in ones: one step at most)
    ref = np.load(DATA / f"{name}.npz")
    got = LocalDevice().run(art / "model.so", [ref["input_0"]])[0]
    step = 1.0 if name == "cnn_int8_io" else 1 / 256
    assert got.dtype == ref["output_0"].dtype
    assert np.abs(got.astype(np.float64) - ref["output_0"]).max() <= step * 1.0001


def test_an_int8_input_takes_an_image_quantized_with_its_scale(built, tmp_path):
    from PIL import Image

    from edgec.artifact import open_part
    from edgec.flows.run import image_tensor

    out, _ = built
    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(image)
    normalize = {"mean": [0.5] * 3, "std": [0.5] * 3}
    x, _ = image_tensor(*open_part(out / "cnn_int8_io-host"), image, normalize)
    t = open_part(out / "cnn_int8_io-host")[1].inputs[0]
    assert x.dtype == np.int8 and list(x.shape) == t["shape"] == [1, 32, 32, 3]
    xf, _ = image_tensor(*open_part(out / "cnn_int8-host"), image, normalize)
    want = np.clip(np.rint(xf / t["scale"]) + t["zero_point"], -128, 127)  # the float model's own input, quantized
    assert np.array_equal(x, want.astype(np.int8)) and len(np.unique(x)) > 100


def test_tflite_average_pooling_rounds_half_away_from_zero():
    """TVM's importer divides an int8 AVERAGE_POOL_2D's window sum by truncation; TFLite rounds half away from
    zero. Windows of 2 and 4 elements make every kind of tie."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.integer import lower_integer

    x = np.array([[1, 2, -1, -2], [0, 1, 0, -1], [127, 126, -128, -127], [3, 3, -3, -2]], np.int8).reshape(1, 4, 4, 1)
    x = np.concatenate([x, -x.clip(-127, 127)], axis=3)
    bb = relax.BlockBuilder()
    inp = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [inp]):
        with bb.dataflow():
            wide = bb.emit(relax.op.astype(inp, "int32"))
            pooled = bb.emit(relax.op.nn.avg_pool2d(wide, pool_size=[2, 2], strides=[1, 2], padding=[0, 0, 1, 0],
                                                    count_include_pad=False, layout="NHWC"))
            out = bb.emit_output(relax.op.astype(pooled, "int8"))
        bb.emit_func_output(out)
    mod, report = lower_integer(bb.get(), requantize="tflite")
    assert report.integer == {"avg_pool2d": 1}
    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = np.zeros_like(got, dtype=np.int64)
    xs = x.astype(np.int64)
    for i in range(got.shape[1]):
        for j in range(got.shape[2]):
            window = xs[0, i:min(i + 2, 4), 2 * j:2 * j + 2, :]  # bottom padding: fewer rows, not zeros
            total, count = window.sum(axis=(0, 1)), window.shape[0] * window.shape[1]
            want[0, i, j] = np.sign(total) * ((np.abs(total) + count // 2) // count)
    assert np.array_equal(got, want), (got[..., 0], want[..., 0])


@pytest.mark.slow
@pytest.mark.parametrize("target", ["rpi4", "cortex-m7"])
@pytest.mark.parametrize("name", INT8_FILES)
def test_an_int8_tflite_file_builds_for_the_emulated_boards(target, name, tmp_path, run_cli):
    code, _, err = run_cli("build", str(DATA / f"{name}.tflite"), "--target", target, "--out", str(tmp_path))
    assert code == 0, err
    report = json.loads((tmp_path / f"{name}-{target}" / "report.json").read_text())
    v = report["verification"]
    assert v["passed"] is True and v["emulated"] is True and v["reference_engine"] == "the TFLite interpreter"
    assert all(s["max_steps"] <= 1 for s in v["sets"])
    assert report["kernels"]["integer"]["integer_ops"]["conv2d"] == 2


def test_a_per_tensor_tflite_convolution_with_a_fused_relu6_is_lowered():
    """TVM's importer writes a per-tensor quantized CONV_2D's bias scale as ``multiply(scale_x, scale_w)`` (not a
    constant) and its fused RELU6 as a clip of the int8 output: both must still give one integer kernel, equal
    to a NumPy transcription of TFLite's arithmetic."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.integer import lower_integer, quantize_multiplier, requantize_reference

    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (1, 6, 6, 4)).astype(np.int8)
    w = rng.integers(-127, 128, (3, 3, 4, 5)).astype(np.int8)  # HWIO
    b = rng.integers(-2000, 2000, (5,)).astype(np.int32)
    sx, zx, sw, sy, zy = 0.05, -3, 0.01, 0.2, 7
    f32 = "float32"

    def dq(v, scale, zero, axis=0):
        return relax.op.dequantize(v, relax.const(scale, f32) if isinstance(scale, float) else scale,
                                   relax.const(zero, "int32"), axis=axis)

    bb = relax.BlockBuilder()
    inp = relax.Var("x", relax.TensorType(x.shape, "int8"))
    with bb.function("main", [inp]):
        with bb.dataflow():
            conv = bb.emit(relax.op.nn.conv2d(dq(inp, sx, zx), dq(relax.const(w), sw, 0, 3), padding=[1, 1, 1, 1],
                                              data_layout="NHWC", kernel_layout="HWIO", out_layout="NHWC"))
            bias_scale = relax.op.multiply(relax.const(sx, f32), relax.const(sw, f32))
            out = bb.emit(relax.op.add(conv, dq(relax.const(b), bias_scale, 0)))
            q = bb.emit(relax.op.quantize(out, relax.const(sy, f32), relax.const(zy, "int32"), axis=0, out_dtype="int8"))
            lo, hi = zy, zy + round(6 / sy)
            y = bb.emit_output(relax.op.clip(q, lo, min(hi, 127)))
        bb.emit_func_output(y)
    mod, report = lower_integer(bb.get(), requantize="tflite")
    assert report.integer == {"conv2d": 1}
    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    xp = np.full((1, 8, 8, 4), zx, np.int64)
    xp[:, 1:7, 1:7] = x
    acc = np.zeros((1, 6, 6, 5), np.int64)
    for i in range(3):
        for j in range(3):
            acc += np.einsum("nhwc,co->nhwo", xp[:, i:i + 6, j:j + 6] - zx, w[i, j].astype(np.int64))
    m = np.float64(np.float32(sx)) * np.float64(np.float32(sw)) / np.float64(np.float32(sy))
    q, shift = quantize_multiplier(np.array([m]))
    want = np.clip(requantize_reference(acc + b, q, shift) + zy, lo, min(hi, 127))
    assert np.array_equal(got.astype(np.int64), want)
