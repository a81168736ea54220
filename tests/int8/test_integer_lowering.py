"""Integer lowering (backends/tvm/integer.py): quantized convolutions and matrix products become integer kernels
that equal onnxruntime's integer kernels element for element; what is not lowered is counted; the TFLite
rounding matches its reference arithmetic."""

import numpy as np
import onnx
import pytest

from edgec.backends.tvm.integer import (INTEGER_ATTR, float_islands, is_quantized, lower_integer,
                                        quantize_multiplier, requantize_reference)
from edgec.frontend.quantize import calibration_samples, output_steps, quantize_int8

from .qdq_models import block_cnn

SHAPES = {"x": (1, 3, 16, 16)}


@pytest.fixture(scope="module")
def qdq(tmp_path_factory):
    path = block_cnn(tmp_path_factory.mktemp("int8") / "m.onnx")
    cal = calibration_samples(None, SHAPES, {"x": np.dtype(np.float32)}, None, 16)
    return quantize_int8(onnx.load(str(path)), cal), cal


def _compile(mod):
    import tvm
    from tvm import relax

    from edgec.backends.tvm.pipeline import relax_pipeline

    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target)), tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(x)).numpy()


def test_quantized_ops_are_lowered_and_the_rest_counted(qdq):
    from edgec.backends.tvm.api import import_model

    mod = import_model(qdq[0])
    report = __import__("json").loads(str(mod.attrs[INTEGER_ATTR]))
    assert sum(report["integer_ops"].values()) == 4 and report["integer_ops"]["conv2d"] >= 3  # the dense layer too
    assert set(report["float_islands"]) <= {"add", "mean"} and report["float_islands"]
    text = mod["main"].script()
    assert text.count('out_dtype="int32"') == 4  # int8 x int8 -> int32 accumulators
    assert "R.nn.conv2d(lv" in text and 'dtype="float32") = R.nn.conv2d' not in text  # no float convolution left


def test_a_float_model_is_not_quantized(tmp_path):
    from edgec.backends.tvm.api import import_model

    mod = import_model(onnx.load(str(block_cnn(tmp_path / "f.onnx"))))
    assert not is_quantized(mod) and mod.attrs is None or INTEGER_ATTR not in (mod.attrs or {})
    assert float_islands(mod) == {}


def test_integer_kernels_equal_onnxruntimes(qdq):
    from edgec.backends.tvm.api import import_model
    from edgec.frontend.reference import run_ort

    model, cal = qdq
    run = _compile(import_model(model))
    step = output_steps(model)[0]
    for sample in cal.samples[:4]:
        got, want = run(sample["x"]), run_ort(model, sample, optimized=True)[0]
        assert np.abs(got - want).max() <= 1e-6 * step  # every element equal (as int8)


def test_a_wrong_zero_point_would_be_seen(qdq, monkeypatch):
    """The equality above can fail: an integer kernel that ignores the input zero point differs by many steps."""
    from edgec.backends.tvm import api, integer
    from edgec.frontend.reference import run_ort

    model, cal = qdq
    real = integer._emit_integer

    def wrong(bb, m, y_scale, y_zero, requantize):
        m.x_zero = 0
        return real(bb, m, y_scale, y_zero, requantize)

    monkeypatch.setattr(integer, "_emit_integer", wrong)
    got = _compile(api.import_model(model))(cal.samples[0]["x"])
    want = run_ort(model, cal.samples[0], optimized=True)[0]
    assert np.abs(got - want).max() > 2 * output_steps(model)[0]


def test_tflite_fixed_point_requantization_matches_exact_rounding():
    rng = np.random.default_rng(0)
    multipliers = np.exp(rng.uniform(np.log(1e-5), np.log(2.0), 2000))
    q, shift = quantize_multiplier(multipliers)
    assert ((q >= 1 << 30) & (q < 1 << 31)).all()
    assert np.allclose(q * 2.0 ** (shift - 31), multipliers, rtol=2 ** -30)
    acc = rng.integers(-2 ** 24, 2 ** 24, 2000)
    got = requantize_reference(acc, q, shift)
    exact = acc * (q * 2.0 ** (shift - 31))
    right = np.maximum(-shift, 0)  # two roundings: half a step, plus half a step of the pre-shift value
    assert (np.abs(got - exact) <= 0.5 + 0.5 * 2.0 ** -right + 1e-9).all()
    assert got.tolist() == [_tflite_builtin(int(a), int(m), int(e)) for a, m, e in zip(acc, q, shift)]
    ties = np.array([5, -5, 7, -7])  # x / 2, x odd: SaturatingRoundingDoublingHighMul's nudge rounds ties up
    q2, s2 = quantize_multiplier(np.full(4, 0.5))
    assert requantize_reference(ties, q2, s2).tolist() == [3, -2, 4, -3]
    # x / 4 with x / 2 exact: the tie is the shift's; TFLite's built-in kernels round it up (gemmlowp's
    # RoundingDivideByPOT would give -1 and -2 for -2 and -6)
    q4, s4 = quantize_multiplier(np.full(4, 0.25))
    assert requantize_reference(np.array([2, -2, 6, -6]), q4, s4).tolist() == [1, 0, 2, -1]


def _tflite_builtin(x: int, multiplier: int, shift: int) -> int:
    """``MultiplyByQuantizedMultiplier`` as TFLite's built-in kernels compute it (gemmlowp's doubling high
    multiply, then ruy's rounding right shift, ties toward +inf), with Python integers (C's division toward zero
    spelled out): an oracle independent of the NumPy form."""
    left, right = max(shift, 0), max(-shift, 0)
    ab = (x * (1 << left)) * multiplier
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    v = ab + nudge
    high = abs(v) // (1 << 31) * (1 if v >= 0 else -1)
    return (high + ((1 << right) >> 1)) >> right


@pytest.mark.slow
def test_tflite_rounding_kernels_stay_within_one_step_of_onnxruntime(qdq):
    from edgec.backends.tvm.importer import import_onnx
    from edgec.frontend.reference import run_ort

    model, cal = qdq
    mod, report = lower_integer(import_onnx(model, SHAPES), requantize="tflite")
    # the global average pool is TFLite's MEAN, the residual add TFLite's integer ADD
    assert report.integer == {"conv2d": 3, "matmul": 1, "mean": 1, "add": 1}
    run = _compile(mod)
    got, want = run(cal.samples[0]["x"]), run_ort(model, cal.samples[0], optimized=True)[0]
    assert np.abs(got - want).max() <= 1.0001 * output_steps(model)[0]


@pytest.mark.parametrize("cin, cout, kernel, stride, pads, group, relu6", [
    (3, 8, 3, 1, [1, 1, 1, 1], 1, False),   # the stem: padded with the input zero point
    (3, 8, 3, 2, [0, 0, 1, 1], 1, True),    # stride 2, asymmetric (TF "SAME") padding, ReLU6
    (8, 8, 3, 1, [1, 1, 1, 1], 8, True),    # depthwise
    (16, 16, 5, 2, [2, 2, 2, 2], 16, False),  # depthwise 5x5 stride 2
    (8, 24, 1, 1, [0, 0, 0, 0], 1, False),  # pointwise expansion
    (12, 6, 3, 1, [1, 1, 1, 1], 3, False),  # grouped
])
def test_each_convolution_form_equals_onnxruntime(tmp_path, cin, cout, kernel, stride, pads, group, relu6):
    from edgec.backends.tvm.api import import_model
    from edgec.frontend.reference import run_ort
    from .qdq_models import single_conv

    size = 11
    path = single_conv(tmp_path / "c.onnx", cin=cin, cout=cout, kernel=kernel, stride=stride, pads=pads,
                       group=group, size=size, relu6=relu6)
    shapes = {"x": (1, cin, size, size)}
    rng = np.random.default_rng(1)
    cal = type("C", (), {"samples": [{"x": rng.standard_normal((1, cin, size, size)).astype(np.float32)}
                                     for _ in range(8)]})()
    model = quantize_int8(onnx.load(str(path)), cal)
    mod = import_model(model)
    assert __import__("json").loads(str(mod.attrs[INTEGER_ATTR]))["integer_ops"] == {"conv2d": 1}
    run = _compile(mod)
    step = output_steps(model)[0]
    for sample in cal.samples[:3] + [{"x": 3 * rng.standard_normal(shapes["x"]).astype(np.float32)}]:  # + saturating
        got, want = run(sample["x"]), run_ort(model, sample, optimized=True)[0]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1e-6 * step


@pytest.mark.parametrize("spoil", ["weight_zero_point", "bias_scale"])
def test_a_quantized_conv_the_integer_form_cannot_express_stays_float(tmp_path, spoil):
    """Asymmetric weights (a non-zero weight zero point) and a bias whose scale is not ``scale_x * scale_w`` have
    no int8 x int8 -> int32 form here: the matcher must leave the convolution as ``dequantize -> float ->
    quantize`` (counted), and the build must still compute what onnxruntime computes."""
    from onnx import numpy_helper

    from edgec.backends.tvm.api import import_model
    from edgec.frontend.reference import run_ort
    from .qdq_models import single_conv

    path = single_conv(tmp_path / "c.onnx", cin=3, cout=8, kernel=3, stride=1, pads=[1, 1, 1, 1], group=1, size=9,
                       relu6=False)
    rng = np.random.default_rng(2)
    cal = type("C", (), {"samples": [{"x": rng.standard_normal((1, 3, 9, 9)).astype(np.float32)} for _ in range(8)]})()
    model = quantize_int8(onnx.load(str(path)), cal)
    inits = {i.name: i for i in model.graph.initializer}
    weight_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                     and inits[n.input[0]].data_type == onnx.TensorProto.INT8)
    bias_dq = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                   and inits[n.input[0]].data_type == onnx.TensorProto.INT32)
    if spoil == "weight_zero_point":
        zp = inits[weight_dq.input[2]]
        zp.CopyFrom(numpy_helper.from_array(np.full(numpy_helper.to_array(zp).shape, 3, np.int8), zp.name))
    else:
        scale = inits[bias_dq.input[1]]
        scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(1.5), scale.name))
    mod = import_model(model)
    report = __import__("json").loads(str(mod.attrs[INTEGER_ATTR]))
    assert report["integer_ops"] == {} and report["float_islands"].get("conv2d") == 1
    got, want = _compile(mod)(cal.samples[0]["x"]), run_ort(model, cal.samples[0], optimized=True)[0]
    assert np.abs(got - want).max() <= 1.0001 * output_steps(model)[0]


def test_requantization_rounds_ties_to_even_on_every_code_generator():
    """onnxruntime rounds a requantized value's ties to even: LLVM's code must too, and the C backend must call
    ``nearbyintf`` (ties to even in the default rounding mode), never ``roundf`` (ties away from zero)."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.integer import round_half_even

    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 3.4999998, 1e6 + 0.5, -126.5, 127.5], np.float32)
    bb = relax.BlockBuilder()
    v = relax.Var("x", relax.TensorType(x.shape, "float32"))
    with bb.function("main", [v]):
        with bb.dataflow():
            out = bb.emit_output(round_half_even(v))
        bb.emit_func_output(out)
    mod = bb.get()
    exe = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert got.tolist() == np.rint(x).tolist()
    funcs = [f for _, f in relax.transform.LegalizeOps()(mod).functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    source = tvm.tirx.build(funcs[0].with_attr("global_symbol", "r"), target=tvm.target.Target({"kind": "c"}))
    text = source.inspect_source()
    assert "nearbyintf(" in text and "roundf(" not in text


@pytest.mark.parametrize("ties", ["up", "away"])
def test_the_fixed_point_requantization_kernel_equals_its_numpy_transcription(ties):
    """The Relax form of TFLite's requantization (int64, compiled by LLVM) against the NumPy one, per channel,
    with the ties of both roundings: ``up`` (the convolutions) and ``away`` from zero (grouped convolutions, ADD)."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.integer import _requantize_fixed

    rng = np.random.default_rng(0)
    multipliers = np.exp(rng.uniform(np.log(1e-5), np.log(2.0), 64))
    acc = rng.integers(-2 ** 24, 2 ** 24, (50, 64)).astype(np.int32)
    acc[0, :8], multipliers[:8] = [2, -2, 6, -6, 1, -1, 3, -3], [0.25] * 4 + [0.5] * 4  # ties of the shift, of the
    bb = relax.BlockBuilder()                                                           # high multiply
    v = relax.Var("acc", relax.TensorType(acc.shape, "int32"))
    with bb.function("main", [v]):
        with bb.dataflow():
            out = bb.emit_output(_requantize_fixed(v, multipliers, 0, (1, 64), ties=ties))
        bb.emit_func_output(out)
    exe = tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(acc)).numpy()
    q, shift = quantize_multiplier(multipliers)
    if ties == "up":
        want = requantize_reference(acc, q, shift)
    else:
        want = np.array([[_gemmlowp_away(int(a), int(m), int(e)) for a, m, e in zip(row, q, shift)] for row in acc])
    assert np.array_equal(got, want)
    assert got[0, :8].tolist() == ([1, 0, 2, -1, 1, 0, 2, -1] if ties == "up" else [1, -1, 2, -2, 1, 0, 2, -1])


def _gemmlowp_away(x: int, multiplier: int, shift: int) -> int:
    """``MultiplyByQuantizedMultiplier`` with gemmlowp's ``RoundingDivideByPOT`` (ties away from zero), from its
    C++ with Python integers."""
    high = _tflite_builtin(x, multiplier, max(shift, 0))  # the doubling high multiply alone (no right shift)
    right = max(-shift, 0)
    mask = (1 << right) - 1
    threshold = (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if (high & mask) > threshold else 0)
