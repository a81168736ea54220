"""Integer lowering of quantized (QDQ) models: ``dequantize -> conv2d / matmul (+ bias) (+ clamp) -> quantize``
becomes one integer kernel.

TVM 0.27 has no QNN dialect: its ONNX and TFLite importers turn a QDQ model into ``R.quantize`` /
``R.dequantize`` around float operators, which would compile into float kernels with int8 tensors between
them. :func:`lower_integer` rewrites each quantized convolution and matrix product into the integer form of
TFLite's reference kernels (``tensorflow/lite/kernels/internal/reference/integer_ops/conv.h``,
``depthwise_conv.h``, ``fully_connected.h``) and of onnxruntime's ``QLinearConv``:

* the int8 input, padded with its own ``zero_point`` (a real 0), times the int8 weights (per-output-channel
  symmetric, ``zero_point`` 0), accumulated in int32;
* an int32 bias, with the input ``zero_point``'s share folded in: ``bias - zero_point_x * sum(w)``;
* requantization of the int32 accumulator to int8, in one of two roundings:

  - ``onnxruntime`` (the default for ONNX models; the name is historical): the QDQ model's own function,
    ``round(acc * scale_x * scale_w[c] / scale_y)`` with one rounding (:func:`_requantize_exact`: the
    multiplier as a 31-bit integer and a shift, in int64, no float). onnxruntime's ``QLinearConv`` multiplies
    in float32 (MLAS ``MlasRequantizeOutput``) and runs other quantized convolutions as float ``Conv``
    between ``DequantizeLinear`` and ``QuantizeLinear``; both are a float32 rounding away from that function,
    and on ``mcunetv2_large`` with random weights its one-step flips grow to two steps at the output. The
    build's verification tells the two apart with the QDQ model computed in float64
    (:mod:`edgec.frontend.float64`); on the zoo's image set this form equals it on every output element
    where onnxruntime is two steps off;
  - ``tflite``: a fixed-point multiplier and shift (``QuantizeMultiplier``) in int64, rounded as TFLite's
    built-in kernels do through ruy: gemmlowp's ``SaturatingRoundingDoublingHighMul``
    (``gemmlowp/fixedpoint/fixedpoint.h``), then a rounding right shift with ties toward +inf (ruy's
    ``ApplyMultiplier``, NEON's ``vrshl``; gemmlowp's ``RoundingDivideByPOT`` would round those ties away from
    zero). For TFLite int8 files: every element equal to the TFLite interpreter's convolutions on the test
    models. It compiles slowly: LLVM takes minutes over MobileNetV4's int64 epilogues on x86;
* the output ``zero_point`` added and clamped to int8 (and to a ReLU / ReLU6 that sits between the
  operator and its quantize, in the quantized domain).

The elementwise tail fuses into the convolution (one kernel, int8 in and int8 out), so between kernels every
activation stays int8. Every other operator (residual adds, pooling, hard-swish) keeps ``dequantize -> float
-> quantize``, fused into one kernel with int8 at its edges: that is also how onnxruntime runs them on x86
(its optimizer leaves them as float operators between ``DequantizeLinear`` and ``QuantizeLinear``);
:func:`float_islands` names them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

INT8_MIN, INT8_MAX = -128, 127

#: The module attribute that carries :class:`IntegerReport` (JSON) from the import to the build's report.
INTEGER_ATTR = "edgec_integer"


def quantize_multiplier(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's ``QuantizeMultiplier`` (``tensorflow/lite/kernels/internal/quantization_util.cc``), per element.

    Args:
        multiplier: Real multipliers ``M`` (float64, any shape), each >= 0.

    Returns:
        ``(q, shift)``: int64 arrays with ``M ~= q * 2**(shift - 31)``, ``q`` in ``[2**30, 2**31)`` (0 for
        ``M == 0`` or one too small to matter, ``M < 2**-62``).
    """
    m = np.asarray(multiplier, dtype=np.float64)
    mantissa, exponent = np.frexp(m)
    q = np.round(mantissa * (1 << 31)).astype(np.int64)
    carry = q == (1 << 31)
    q = np.where(carry, q // 2, q)
    exponent = np.where(carry, exponent + 1, exponent).astype(np.int64)
    tiny = (m == 0) | (exponent < -31)
    return np.where(tiny, 0, q), np.where(tiny, 0, exponent)


def requantize_reference(acc: np.ndarray, q: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``MultiplyByQuantizedMultiplier(acc, q, shift)`` in NumPy (int64), rounded as TFLite's built-in kernels
    (module docstring: a doubling high multiply, then a right shift with ties toward +inf): the test oracle of
    the Relax form :func:`lower_integer` emits.

    Args:
        acc: int32 accumulators (any shape, broadcast with ``q``, ``shift``).
        q, shift: From :func:`quantize_multiplier`.
    """
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    p = acc.astype(np.int64) * (np.int64(1) << left) * q
    v = p + np.where(p >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(v >= 0, v >> 31, -((-v) >> 31))
    return (high + ((np.int64(1) << right) >> 1)) >> right


@dataclass
class IntegerReport:
    """What :func:`lower_integer` did.

    Attributes:
        integer: Operators lowered to integer kernels, by kind (``{"conv2d": 40, "matmul": 1}``).
        float_islands: Operators left as ``dequantize -> float -> quantize``, by Relax op name.
    """

    integer: dict[str, int]
    float_islands: dict[str, int]

    def to_dict(self) -> dict:
        return {"integer_ops": dict(self.integer), "float_islands": dict(self.float_islands)}


def is_quantized(mod) -> bool:
    """Whether ``mod``'s ``main`` holds a ``quantize`` (a QDQ model)."""
    import tvm

    quantize = tvm.ir.Op.get("relax.quantize")
    found = False

    def visit(expr):
        nonlocal found
        if hasattr(expr, "op") and expr.op == quantize:
            found = True

    tvm.relax.analysis.post_order_visit(mod["main"].body, visit)
    return found


def _const(expr) -> np.ndarray | None:
    import tvm

    return expr.value.numpy() if isinstance(expr, tvm.ir.Constant) else None


def _scalar(value: np.ndarray | None) -> float | None:
    """The one value of a constant array (``None`` unless it holds exactly one)."""
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


class _Bindings:
    """``main``'s dataflow bindings by variable, to walk a pattern backwards."""

    def __init__(self, func) -> None:
        from tvm import relax

        self.values: dict = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if isinstance(binding, relax.VarBinding):
                    self.values[binding.var] = binding.value

    def call(self, expr, op_name: str):
        """The call of ``op_name`` that ``expr`` is bound to (or is), else None."""
        import tvm

        expr = self.values.get(expr, expr)
        if isinstance(expr, tvm.relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == op_name:
            return expr
        return None

    def const(self, expr) -> np.ndarray | None:
        value = _const(expr)
        return value if value is not None else _const(self.values.get(expr, expr))


@dataclass
class _Match:
    kind: str  # "conv2d" | "matmul"
    core: object  # the float conv2d / matmul call
    xq: object  # int8 input expression
    x_scale: float
    x_zero: int
    w_q: np.ndarray  # int8 weights: in the conv's kernel layout (OIHW, HWIO, HWOI...), or (N, K) for matmul
    w_scale: np.ndarray  # per output channel (float64)
    bias: np.ndarray | None  # int32 (C,) or None
    lo: float  # real clamp between the operator and its quantize
    hi: float
    out_axis: int = 0  # the output-channel axis of ``w_q``


def _folded_const(b: _Bindings, expr) -> np.ndarray | None:
    """The value of a constant, of ``reshape`` / ``permute_dims`` of one (TFLite's importer transposes
    fully-connected weights with ``permute_dims`` before dequantizing them), or of the product of two."""
    value = b.const(expr)
    if value is not None:
        return value
    reshape, perm = b.call(expr, "relax.reshape"), b.call(expr, "relax.permute_dims")
    mul = b.call(expr, "relax.multiply")
    if mul is not None:  # TFLite's importer scales a per-tensor bias by multiply(scale_x, scale_w)
        left, right = _folded_const(b, mul.args[0]), _folded_const(b, mul.args[1])
        return None if left is None or right is None else np.multiply(left, right)
    if reshape is not None:
        inner = _folded_const(b, reshape.args[0])
        shape = _static_shape(reshape)
        return None if inner is None or shape is None else inner.reshape(shape)
    if perm is not None:
        inner = _folded_const(b, perm.args[0])
        axes = None if perm.attrs.axes is None else [int(a) for a in perm.attrs.axes]
        return None if inner is None else np.transpose(inner, axes)
    return None


def _static_shape(call) -> tuple[int, ...] | None:
    ty = getattr(call, "ty", None) or getattr(call, "struct_info", None)
    try:
        return tuple(int(d) for d in ty.shape)
    except (TypeError, AttributeError, ValueError):
        return None


def _dequantized_const(b: _Bindings, expr, dtype: str):
    """``(values, scale)`` of ``dequantize(constant)`` behind any float ``reshape`` / ``permute_dims``:
    ``values`` as the consumer sees them, ``scale`` the per-element scale (float64, the same shape), or None
    when the zero point is not 0 or ``expr`` is not a dequantized constant of ``dtype``."""
    reshape, perm = b.call(expr, "relax.reshape"), b.call(expr, "relax.permute_dims")
    if reshape is not None or perm is not None:
        inner = _dequantized_const(b, (reshape if reshape is not None else perm).args[0], dtype)
        if inner is None:
            return None
        if reshape is not None:
            shape = _static_shape(reshape)
            return None if shape is None else (inner[0].reshape(shape), inner[1].reshape(shape))
        axes = None if perm.attrs.axes is None else [int(a) for a in perm.attrs.axes]
        return np.transpose(inner[0], axes), np.transpose(inner[1], axes)
    dq = b.call(expr, "relax.dequantize")
    if dq is None:
        return None
    values, scale, zero = _folded_const(b, dq.args[0]), _folded_const(b, dq.args[1]), b.const(dq.args[2])
    if values is None or scale is None or zero is None or str(values.dtype) != dtype or np.any(zero != 0):
        return None
    scale = scale.astype(np.float64).reshape(-1)
    if scale.size == 1:
        return values, np.full(values.shape, scale[0])
    axis = int(dq.attrs.axis) % max(values.ndim, 1)
    if values.ndim == 0 or scale.size != values.shape[axis]:
        return None
    shape = [1] * values.ndim
    shape[axis] = -1
    return values, np.broadcast_to(scale.reshape(shape), values.shape).copy()


def _int8_activation(b: _Bindings, expr):
    """``(x_q, scale, zero_point)`` of ``dequantize(x_q)`` with an int8 ``x_q`` and per-tensor constant
    parameters, else None."""
    dq = b.call(expr, "relax.dequantize")
    if dq is None or str(dq.args[0].ty.dtype) != "int8":
        return None
    scale, zero = _scalar(b.const(dq.args[1])), _scalar(b.const(dq.args[2]))
    return None if scale is None or zero is None else (dq.args[0], scale, int(zero))


def _per_channel(scale: np.ndarray, axis: int) -> np.ndarray | None:
    """The scale along ``axis`` when it is constant over every other axis, else None."""
    rows = np.moveaxis(scale, axis, 0).reshape(scale.shape[axis], -1)
    return rows[:, 0].copy() if np.all(rows == rows[:, :1]) else None


_CONV_LAYOUTS = {("NCHW", "OIHW"), ("NHWC", "HWIO"), ("NHWC", "HWOI"), ("NHWC", "OHWI")}


def _match(b: _Bindings, quantize) -> _Match | None:
    """The quantized conv2d / matmul ``quantize`` closes, or None."""
    y = quantize.args[0]
    lo, hi = -math.inf, math.inf
    while True:  # a clamp between the operator and its quantize (ReLU, ReLU6 as maximum/minimum)
        relu, mx, mn = b.call(y, "relax.nn.relu"), b.call(y, "relax.maximum"), b.call(y, "relax.minimum")
        if relu is not None:
            lo, y = max(lo, 0.0), relu.args[0]
        elif mx is not None and _scalar(b.const(mx.args[1])) is not None:
            lo, y = max(lo, _scalar(b.const(mx.args[1]))), mx.args[0]
        elif mn is not None and _scalar(b.const(mn.args[1])) is not None:
            hi, y = min(hi, _scalar(b.const(mn.args[1]))), mn.args[0]
        else:
            break
    bias_expr = None
    add = b.call(y, "relax.add")
    if add is not None:
        y, bias_expr = add.args
    conv, matmul = b.call(y, "relax.nn.conv2d"), b.call(y, "relax.matmul")
    if conv is not None:
        layouts = (str(conv.attrs.data_layout), str(conv.attrs.kernel_layout))
        if layouts not in _CONV_LAYOUTS or str(conv.attrs.out_layout) != layouts[0]:
            return None
        kind, core, x_expr, w_expr, out_axis = "conv2d", conv, conv.args[0], conv.args[1], layouts[1].index("O")
    elif matmul is not None:
        kind, core, x_expr, w_expr, out_axis = "matmul", matmul, matmul.args[0], matmul.args[1], 1
        if len(matmul.args[0].ty.shape) < 2 or len(matmul.args[1].ty.shape) != 2:
            return None
    else:
        return None
    x = _int8_activation(b, x_expr)
    if x is None:
        return None
    x_q, x_scale, x_zero = x
    weights = _dequantized_const(b, w_expr, "int8")
    if weights is None:
        return None
    w_q, w_scale = weights[0], _per_channel(weights[1], out_axis)
    if w_scale is None:
        return None
    if kind == "matmul":  # (K, N) weights, per-N scales: as (N, K)
        w_q, out_axis = w_q.T, 0
    out_channels = w_q.shape[out_axis]
    bias = None
    if bias_expr is not None:
        bias_values = _dequantized_const(b, bias_expr, "int32")
        if bias_values is None or bias_values[0].size != out_channels:
            return None
        bias, b_scale = bias_values[0].reshape(-1), bias_values[1].reshape(-1)
        if not np.allclose(b_scale, x_scale * w_scale, rtol=1e-5, atol=0):
            return None
    return _Match(kind, core, x_q, x_scale, x_zero, w_q, w_scale, bias, lo, hi, out_axis)


def round_half_even(v):
    """``v`` (a float32 Relax expression) rounded to the nearest integer, ties to even, as onnxruntime rounds:
    ``relax.op.round`` becomes ``llvm.nearbyint`` (one vector instruction) on LLVM targets and ``nearbyintf``
    in the C backend, both ties-to-even in the default rounding mode (``tests/int8``: the ties checked on
    every code generator)."""
    from tvm import relax

    return relax.op.round(v)


def _clamp_int8(out, dtype: str, lo: int = INT8_MIN, hi: int = INT8_MAX, shape: tuple[int, ...] | None = None):
    """``out`` clamped to ``[lo, hi]`` and cast to int8. With ``shape`` (the per-channel broadcast shape), the
    bounds are one-element tensors, not immediates: a kernel's code then depends on its shapes only, not on the
    calibration's zero points and ReLU bounds, so one tuning record serves every calibration."""
    from tvm import relax

    return relax.op.astype(relax.op.minimum(relax.op.maximum(out, _channel_const(lo, dtype, shape)),
                                            _channel_const(hi, dtype, shape)), "int8")


def _channel_const(value: int, dtype: str, shape: tuple[int, ...] | None):
    """``value`` as a one-element tensor of ``shape``'s rank (see :func:`_clamp_int8` for why not a scalar): one
    element, not one per channel, so a microcontroller's flash holds 4 bytes for it (and equal ones once)."""
    from tvm import relax

    return relax.const(np.full([1] * len(shape), value, dtype), dtype) if shape else relax.const(value, dtype)


def _requantize_exact(acc, multiplier: np.ndarray, y_zero: int, shape: tuple[int, ...]):
    """``round(acc * multiplier)`` plus the zero point, with one rounding (int64 out, not clamped): the multiplier
    as a 31-bit integer ``q`` and a shift ``n`` (``multiplier = q / 2**n``), then ``(acc * q + 2**(n-1)) >> n``
    (ties toward +inf). Its only error is the multiplier's (relative 2**-31), where float32's
    ``float(acc) * scale`` is off by 2**-24 and TFLite's two roundings (``SaturatingRoundingDoublingHighMul``,
    then a rounding shift) by up to 2**-(31 - shift) of a step: each put 1 in 1000 elements one step away
    from the QDQ model's function on MobileNet-like layers, and random-weight networks amplify such steps
    layer after layer."""
    from tvm import relax

    i64 = "int64"
    q, shift = quantize_multiplier(multiplier)
    n = (31 - shift).astype(np.int64)
    if (n < 1).any() or (n > 62).any():
        raise ValueError(f"requantization multiplier out of range: {multiplier}")

    def per_channel(values):  # stored narrow in flash (edgec.backends.tvm.pipeline.narrow_int64_constants)
        return relax.const(np.asarray(values).astype(i64).reshape(shape), i64)

    p = relax.op.multiply(relax.op.astype(acc, i64), per_channel(q))
    # floor((p + 2**(n-1)) / 2**n) == (floor(p / 2**(n-1)) + 1) >> 1: no 2**(n-1) constant (it needs int64)
    one = relax.const(1, i64)
    out = relax.op.right_shift(relax.op.add(relax.op.right_shift(p, per_channel(n - 1)), one), one)
    return relax.op.add(out, _channel_const(y_zero, i64, shape))


def _requantize_fixed(acc, multiplier: np.ndarray, y_zero: int, shape: tuple[int, ...], ties: str = "up"):
    """TFLite's requantization (``MultiplyByQuantizedMultiplier`` rounded as its built-in kernels, in int64),
    plus the zero point (int64 out, not clamped). ``ties``: how the final right shift rounds a tie, ``"up"``
    (ruy, the convolutions and fully-connected layers) or ``"away"`` from zero (gemmlowp's ``RoundingDivideByPOT``,
    TFLite's ``MultiplyByQuantizedMultiplierSmallerThanOneExp`` in its ADD kernel)."""
    from tvm import relax

    i64 = "int64"
    q, shift = quantize_multiplier(multiplier)

    def per_channel(values):
        return relax.const(np.asarray(values).astype(i64).reshape(shape), i64)

    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    p = relax.op.multiply(relax.op.astype(acc, i64), per_channel((np.int64(1) << left) * q))
    # SaturatingRoundingDoublingHighMul: (p + nudge) / 2**31 truncated, nudge = 2**30 or 1 - 2**30 by the sign of
    # p, is floor((p + 2**30) / 2**31) for every p (ties toward +inf on both sides): one use of p, so the kernel's
    # inlined expression does not double at each step (it did with where(p >= 0, ...): minutes in TVM's simplifier)
    high = relax.op.right_shift(relax.op.add(p, relax.const(1 << 30, i64)), relax.const(31, i64))
    if ties == "up":  # a rounding right shift, ties toward +inf
        out = relax.op.right_shift(relax.op.add(high, per_channel((np.int64(1) << right) >> 1)), per_channel(right))
    else:  # RoundingDivideByPOT, ties away from zero: (high + half - [high < 0]) >> right
        negative = relax.op.multiply(relax.op.astype(relax.op.less(high, relax.const(0, i64)), i64),
                                     per_channel((right > 0).astype(np.int64)))  # no shift, no rounding
        out = relax.op.right_shift(relax.op.subtract(relax.op.add(high, per_channel((np.int64(1) << right) >> 1)),
                                                     negative), per_channel(right))
    return relax.op.add(out, _channel_const(y_zero, i64, shape))


def _quantized_add(b: _Bindings, quantize):
    """``(a_q, a_scale, a_zero, b_q, b_scale, b_zero)`` of ``quantize(add(dequantize(a_q), dequantize(b_q)))``
    with int8 operands of the same shape and per-tensor parameters, else None."""
    add = b.call(quantize.args[0], "relax.add")
    if add is None:
        return None
    out = []
    for arg in add.args:
        operand = _int8_activation(b, arg)
        if operand is None:
            return None
        out += list(operand)
    if [int(d) for d in out[0].ty.shape] != [int(d) for d in out[3].ty.shape]:
        return None
    return tuple(out)


#: TFLite's int8 ADD shifts both operands left by this many bits before rescaling them (``add.cc``).
ADD_LEFT_SHIFT = 20


def _integer_add(a, a_scale: float, a_zero: int, b, b_scale: float, b_zero: int, y_scale: float, y_zero: int):
    """TFLite's int8 ADD (``reference_integer_ops::Add``): each operand minus its zero point, shifted left by
    :data:`ADD_LEFT_SHIFT` and rescaled to twice the larger input scale by a fixed-point multiplier smaller than
    one, summed, and rescaled to the output (gemmlowp's rounding, ties away from zero), plus the output zero
    point, clamped to int8."""
    from tvm import relax

    twice_max = 2.0 * max(np.float64(np.float32(a_scale)), np.float64(np.float32(b_scale)))
    terms = []
    for x, scale, zero in ((a, a_scale, a_zero), (b, b_scale, b_zero)):
        shifted = relax.op.multiply(relax.op.subtract(relax.op.astype(x, "int32"), relax.const(zero, "int32")),
                                    relax.const(1 << ADD_LEFT_SHIFT, "int32"))
        terms.append(_requantize_fixed(shifted, np.float64(np.float32(scale)) / twice_max, 0, (), ties="away"))
    total = relax.op.add(*terms)
    out = _requantize_fixed(total, twice_max / ((1 << ADD_LEFT_SHIFT) * np.float64(np.float32(y_scale))), y_zero, (),
                            ties="away")
    return _clamp_int8(out, "int64")


def _pad_with(x, padding: list[int], value: int, layout: str = "NCHW"):
    """``x`` (int8, in ``layout``) padded by ``(top, left, bottom, right)`` rows and columns of ``value``, as
    concats of borders computed from slices of ``x`` (``slice * 0 + value``): ``nn.pad`` has no layout rule,
    and a concat that starts with a constant keeps the constant's layout, so ConvertLayout would transpose
    around either; slices of ``x`` follow its layout, and the whole pad fuses into one kernel."""
    from tvm import relax

    top, left, bottom, right = padding
    zero, fill = relax.const(0, "int8"), relax.const(value, "int8")

    def border(t, axis: int, size: int):
        piece = relax.op.strided_slice(t, axes=[axis], begin=[0], end=[1])
        piece = relax.op.add(relax.op.multiply(piece, zero), fill)
        return relax.op.repeat(piece, size, axis=axis) if size > 1 else piece

    for axis, (before, after) in ((layout.index("W"), (left, right)), (layout.index("H"), (top, bottom))):
        parts = [border(x, axis, before)] * bool(before) + [x] + [border(x, axis, after)] * bool(after)
        x = relax.op.concat(parts, axis=axis) if len(parts) > 1 else x
    return x


def _emit_integer(bb, m: _Match, y_scale: float, y_zero: int, requantize: str):
    """Emit the integer kernel of ``m`` (int8 out) into ``bb``; returns its expression (None when the folded
    bias leaves int32)."""
    from tvm import relax

    i32 = "int32"
    out_channels = m.w_q.shape[m.out_axis]
    padded = m.kind == "conv2d" and any(int(p) for p in m.core.attrs.padding)
    # x - zero_point fits uint8 when the zero point is -128 (a ReLU's output, whose range starts at 0): then the
    # convolution's own zero padding is the input's zero point, and no padded copy of the input is made
    shifted = padded and m.x_zero == INT8_MIN
    x_zero = 0 if shifted else m.x_zero
    w_sum = np.moveaxis(m.w_q, m.out_axis, 0).reshape(out_channels, -1).astype(np.int64).sum(axis=1)
    bias = (m.bias.astype(np.int64) if m.bias is not None else np.zeros(out_channels, np.int64)) - x_zero * w_sum
    if np.abs(bias).max(initial=0) >= 2 ** 31:
        return None
    if m.kind == "conv2d":
        attrs = m.core.attrs
        layout, kernel_layout = str(attrs.data_layout), str(attrs.kernel_layout)
        channel = tuple(out_channels if d == "C" else 1 for d in layout)
        padding = [int(p) for p in attrs.padding]
        x = m.xq
        if shifted:  # x + 128 as uint8 (the element-wise shift fuses into the kernel that wrote x)
            x = bb.emit(relax.op.astype(relax.op.add(relax.op.astype(x, "int16"), relax.const(-INT8_MIN, "int16")),
                                        "uint8"))
        elif padded and m.x_zero != 0:  # a padded element is a real 0: the input's zero point
            x = bb.emit(_pad_with(x, padding, m.x_zero, layout))
            padding = [0, 0, 0, 0]
        acc = bb.emit(relax.op.nn.conv2d(x, relax.const(m.w_q.astype(np.int8)), strides=[int(s) for s in attrs.strides],
                                         padding=padding, dilation=[int(d) for d in attrs.dilation],
                                         groups=int(attrs.groups), data_layout=layout, kernel_layout=kernel_layout,
                                         out_layout=layout, out_dtype=i32))
    else:
        channel = (1,) * (len(m.core.args[0].ty.shape) - 1) + (out_channels,)
        acc = bb.emit(relax.op.matmul(m.xq, relax.const(np.ascontiguousarray(m.w_q.T).astype(np.int8)), out_dtype=i32))
    acc = relax.op.add(acc, relax.const(bias.astype(np.int32).reshape(channel), i32))
    if requantize == "tflite":
        # a grouped CONV_2D (weights HWIO with groups > 1; a DEPTHWISE_CONV_2D arrives as HWOI) runs TFLite's
        # reference kernel, whose shift rounds ties away from zero; the optimized kernels round them up
        grouped = m.kind == "conv2d" and int(m.core.attrs.groups) > 1 and str(m.core.attrs.kernel_layout) == "HWIO"
        out, dtype = _requantize_fixed(acc, m.x_scale * m.w_scale / y_scale, y_zero, channel,
                                       ties="away" if grouped else "up"), "int64"
    else:  # the QDQ model's own function: the real scale x_scale * w_scale / y_scale, to 31 bits (module docstring)
        scale = (np.float64(np.float32(m.x_scale)) * m.w_scale.astype(np.float32).astype(np.float64)
                 / np.float64(np.float32(y_scale)))
        out, dtype = _requantize_exact(acc, scale, y_zero, channel), "int64"
    lo = INT8_MIN if m.lo == -math.inf else max(INT8_MIN, y_zero + round(m.lo / y_scale))
    hi = INT8_MAX if m.hi == math.inf else min(INT8_MAX, y_zero + round(m.hi / y_scale))
    return _clamp_int8(out, dtype, lo, hi, channel)


def _integer_avg_pool(b: _Bindings, cast):
    """The ``avg_pool2d`` of ``astype(int8, avg_pool2d(astype(int32, x)))`` (x int8: TVM's TFLite importer's
    form of a quantized AVERAGE_POOL_2D), else None."""
    pool = b.call(cast.args[0], "relax.nn.avg_pool2d")
    if pool is None:
        return None
    widen = b.call(pool.args[0], "relax.astype")
    if widen is None or str(widen.attrs.dtype) != "int32" or str(widen.args[0].ty.dtype) != "int8":
        return None
    return pool


def _rounded_avg_pool(x, pool):
    """int8 ``x`` average-pooled with TFLite's rounding (``reference_integer_ops::AveragePool``: the sum over
    the window's in-bounds elements divided by their count, rounded half away from zero), where TVM's integer
    ``avg_pool2d`` divides by truncation. The mean is exact in float32 (an int8 window sum is far below 2**24),
    so the rounding is too."""
    from tvm import relax

    a = pool.attrs
    mean = relax.op.nn.avg_pool2d(relax.op.astype(x, "float32"), pool_size=[int(v) for v in a.pool_size],
                                  strides=[int(v) for v in a.strides], padding=[int(v) for v in a.padding],
                                  dilation=[int(v) for v in a.dilation], ceil_mode=bool(a.ceil_mode),
                                  count_include_pad=bool(a.count_include_pad), layout=str(a.layout),
                                  out_layout=str(a.out_layout))
    sign = relax.op.sign(mean)  # |v| as v * sign(v): C code generation has no fabs
    rounded = relax.op.multiply(sign, relax.op.floor(relax.op.add(relax.op.multiply(mean, sign),
                                                                  relax.const(0.5, "float32"))))
    return relax.op.astype(rounded, "int8")


def _tflite_input_quantize(x, scale: float, zero: int):
    """A float input quantized as TFLite's optimized QUANTIZE kernel does: ``x * float32(1 / scale)`` rounded to
    nearest even, plus the zero point, saturated to int8 (TVM's ``quantize`` divides by the scale, which differs
    in the last bit now and then: one input element in 150,000 one step off, which a deep network carries to
    several steps at its output)."""
    from tvm import relax

    inverse = np.float32(1.0) / np.float32(scale)
    v = relax.op.round(relax.op.multiply(x, relax.const(inverse, "float32")))
    return _clamp_int8(relax.op.add(relax.op.astype(v, "int32"), relax.const(zero, "int32")), "int32")


def _quantized_mean(b: _Bindings, quantize):
    """``(x_q, x_scale, x_zero, mean call)`` of ``quantize(mean(dequantize(x_q)))`` with per-tensor
    parameters, else None."""
    mean = b.call(quantize.args[0], "relax.mean")
    x = None if mean is None else _int8_activation(b, mean.args[0])
    if x is None or mean.attrs.axis is None:
        return None
    return (*x, mean)


def _integer_mean(xq, x_scale: float, x_zero: int, mean, y_scale: float, y_zero: int):
    """TFLite's int8 MEAN, in the kernel TFLite picks:

    * ``keep_dims`` over H and W of an NHWC tensor (``optimized_integer_ops::Mean``, a global average pool): the
      int32 sum of the raw codes, times the fixed-point ``float32(x_scale / (count * y_scale))``, plus
      ``y_zero - int(float32(x_zero * x_scale) / y_scale)`` (truncated: the zero point leaves before the sum);
    * otherwise (``QuantizedMeanOrSum``): the int32 sum of ``x_q - x_zero``, times the fixed-point
      ``x_scale / (count * y_scale)``, plus ``y_zero``;

    clamped to int8. Both round as the convolutions do (:func:`_requantize_fixed`); each equals the interpreter
    on every element of the test files (a global pool of MobileNetV4, the small CNN's MEAN)."""
    from tvm import relax

    shape = [int(d) for d in xq.ty.shape]
    axes = sorted(int(a) % len(shape) for a in mean.attrs.axis)
    count = int(np.prod([shape[a] for a in axes]))
    total = relax.op.sum(relax.op.astype(xq, "int32"), axis=axes, keepdims=bool(mean.attrs.keepdims))
    if bool(mean.attrs.keepdims) and len(shape) == 4 and axes == [1, 2]:
        f32 = np.float32
        bias = y_zero - int(f32(f32(x_zero) * f32(x_scale)) / f32(y_scale))
        scale = f32(f32(x_scale) / (f32(count) * f32(y_scale)))
        out = _requantize_fixed(total, np.float64(scale), bias, ())
    else:
        acc = relax.op.subtract(total, relax.const(count * x_zero, "int32"))
        out = _requantize_fixed(acc, np.float64(x_scale) / (np.float64(y_scale) * count), y_zero, ())
    return _clamp_int8(out, "int64")


def lower_integer(mod, requantize: str = "onnxruntime") -> tuple[object, IntegerReport]:
    """Rewrite ``mod``'s quantized convolutions, matrix products and additions into integer kernels (module
    docstring).

    Args:
        mod: A Relax ``IRModule`` as TVM's importers make it from a QDQ model (NCHW convolutions, before
            layout conversion and legalization).
        requantize: ``"onnxruntime"`` (float32 scale, ties to even: element for element what onnxruntime's
            integer kernels compute, the reference of an ONNX model) or ``"tflite"`` (fixed-point multiplier and
            shift rounded as TFLite's built-in kernels; the default for TFLite files).

    Returns:
        ``(module, report)``: the rewritten module (dead float operators removed) and what was lowered.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    quantize_op, astype_op = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.astype")
    bindings = _Bindings(mod["main"])
    lowered: dict[str, int] = {}

    @mutator
    class _Rewrite(PyExprMutator):
        def visit_call_(self, call):
            new = super().visit_call_(call)
            if call.op == astype_op and str(call.attrs.dtype) == "int8":
                pool = _integer_avg_pool(bindings, call)
                if pool is None:
                    return new
                lowered["avg_pool2d"] = lowered.get("avg_pool2d", 0) + 1
                return _rounded_avg_pool(self.visit_expr(bindings.call(pool.args[0], "relax.astype").args[0]), pool)
            if call.op != quantize_op or str(call.attrs.out_dtype) != "int8":
                return new
            y_scale, y_zero = _scalar(bindings.const(call.args[1])), _scalar(bindings.const(call.args[2]))
            if y_scale is None or y_zero is None:
                return new
            parts = bindings.call(call.args[0], "relax.concat")
            if parts is not None and isinstance(parts.args[0], relax.Tuple):
                # quantize(concat(xs)) is concat(quantize(x) for x in xs), exactly: the concat then moves int8
                # (patch_inference stitches its patches so; a float concat kept each patch's output as float32)
                lowered["concat"] = lowered.get("concat", 0) + 1
                return relax.op.concat([self.visit_expr(relax.Call(call.op, [f, *call.args[1:]], call.attrs))
                                        for f in parts.args[0].fields], axis=parts.attrs.axis)
            if requantize == "tflite" and isinstance(call.args[0], relax.Var) and call.args[0] not in bindings.values:
                return _tflite_input_quantize(self.visit_expr(call.args[0]), y_scale, int(y_zero))
            pair = _quantized_add(bindings, call) if requantize == "tflite" else None
            if pair is not None:
                lowered["add"] = lowered.get("add", 0) + 1
                a, sa, za, b, sb, zb = pair
                return _integer_add(self.visit_expr(a), sa, za, self.visit_expr(b), sb, zb, y_scale, int(y_zero))
            mean = _quantized_mean(bindings, call) if requantize == "tflite" else None
            if mean is not None:
                lowered["mean"] = lowered.get("mean", 0) + 1
                return _integer_mean(self.visit_expr(mean[0]), *mean[1:], y_scale, int(y_zero))
            m = _match(bindings, call)
            if m is not None:
                m.xq = self.visit_expr(m.xq)
                out = _emit_integer(self.builder_, m, y_scale, int(y_zero), requantize)
                kind = m.kind
            else:
                return new
            if out is None:
                return new
            lowered[kind] = lowered.get(kind, 0) + 1
            return out

    out = relax.transform.DeadCodeElimination()(rewrite_functions(_Rewrite(mod), mod))
    report = IntegerReport(lowered, float_islands(out))
    out = elementwise_qdq(decode_per_use(out))
    return (float64_islands(out) if requantize == "onnxruntime" else out), report


def rewrite_functions(rewriter, mod):
    """``mod`` with each Relax function rewritten by ``rewriter`` (a ``PyExprMutator`` made over ``mod``)."""
    from tvm import relax

    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    return rewriter.builder_.get()


def float64_islands(mod):
    """``mod`` (integer kernels and float islands, int8 inputs and outputs) with its float islands computed in
    float64: every float32 constant and cast becomes float64, and an operator that takes float32 only (a float
    convolution left unlowered) gets float32 operands and a float64 result.

    The integer kernels compute the QDQ model's function exactly (:func:`_requantize_exact`); a float island
    in float32 does not, and on a random-weight ``mcunetv2_large`` one element's float32 rounding in a
    squeeze-excite multiply grew to two steps at the output (on a Cortex-M7 and on x86, in different elements).
    In float64 the islands are the QDQ model's function too, up to exact ties. A model with a float32 input or
    output is left as it is.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    main = mod["main"]
    outputs = main.ret_ty.fields if isinstance(main.ret_ty, tvm.ir.TupleType) else [main.ret_ty]
    if any(str(getattr(t, "dtype", "")) == "float32" for t in [p.ty for p in main.params] + list(outputs)):
        return mod
    astype = tvm.ir.Op.get("relax.astype")

    def wide(expr):
        if isinstance(expr, tvm.ir.Constant) and hasattr(expr.value, "numpy") and expr.value.numpy().dtype == np.float32:
            return relax.const(expr.value.numpy().astype(np.float64), "float64")
        return expr

    @mutator
    class _Float64(PyExprMutator):
        def visit_call_(self, call):
            if not isinstance(call.op, tvm.ir.Op):
                return super().visit_call_(call)
            args = [relax.Tuple([wide(self.visit_expr(f)) for f in a.fields]) if isinstance(a, relax.Tuple)
                    else wide(self.visit_expr(a)) for a in call.args]
            if call.op == astype and str(call.attrs.dtype) == "float32":
                return relax.op.astype(args[0], "float64")
            try:
                return self.builder_.normalize(relax.Call(call.op, args, call.attrs, call.ty_args))
            except Exception:  # noqa: BLE001  an operator of float32 only: float32 in, float64 out
                narrow = [relax.op.astype(a, "float32") if str(getattr(a.ty, "dtype", "")) == "float64" else a
                          for a in args if not isinstance(a, relax.Tuple)]
                if len(narrow) != len(args):
                    raise
                out = self.builder_.emit(relax.Call(call.op, narrow, call.attrs, call.ty_args))
                return relax.op.astype(out, "float64") if str(out.ty.dtype) == "float32" else out

    return rewrite_functions(_Float64(mod), mod)


def elementwise_qdq(mod):
    """``mod`` with each per-tensor ``quantize``/``dequantize`` written as the element-wise operators TVM's
    legalization makes of it (the same arithmetic: ``(float32)(x - zero_point) * scale``, and
    ``clip(round(y / scale) + zero_point)`` cast to int8, rounding half to even).

    ``quantize`` and ``dequantize`` have no layout rule, so ConvertLayout kept the float islands between them
    (a squeeze-excite block's mean and multiply) in NCHW and transposed the NHWC int8 tensors around them: a
    full copy of the block's widest tensor each time. Element-wise operators follow any layout.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    quantize_op, dequantize_op = tvm.ir.Op.get("relax.quantize"), tvm.ir.Op.get("relax.dequantize")
    bindings = _Bindings(mod["main"])

    @mutator
    class _Elementwise(PyExprMutator):
        def visit_call_(self, call):
            new = super().visit_call_(call)
            if call.op not in (quantize_op, dequantize_op):
                return new
            scale, zero = _scalar(bindings.const(call.args[1])), _scalar(bindings.const(call.args[2]))
            x = new.args[0]
            if scale is None or zero is None:
                return new
            if call.op == dequantize_op and str(call.attrs.out_dtype) == "float32" and str(x.ty.dtype) in (
                    "int8", "uint8", "int32"):
                diff = relax.op.subtract(relax.op.astype(x, "int32"), relax.const(int(zero), "int32"))
                return relax.op.multiply(relax.op.astype(diff, "float32"), relax.const(np.float32(scale), "float32"))
            if call.op == quantize_op and str(call.attrs.out_dtype) == "int8" and str(x.ty.dtype) == "float32":
                scaled = relax.op.divide(x, relax.const(np.float32(scale), "float32"))
                shifted = relax.op.add(relax.op.round(scaled), relax.const(np.float32(zero), "float32"))
                return relax.op.astype(relax.op.clip(shifted, INT8_MIN, INT8_MAX), "int8")
            return new

    return rewrite_functions(_Elementwise(mod), mod)


def decode_per_use(mod):
    """``mod`` with each decode of an int8 activation (``dequantize``, or ``astype`` to a wider type) emitted
    again beside each operator that uses it, so that the decode fuses forward into its consumer's kernel.

    Without this, a decode with several consumers (a squeeze-excite block's ``mean`` and ``multiply``, a float
    island's two inputs) fuses backward into the integer kernel that produced its int8 input: that kernel then
    writes the float32 (or int32) tensor, four times the int8 bytes, and the arena holds it. TVM's FuseOps ends a
    kernel at a tensor with several consumers, so with one decode per use the int8 tensor is what lies between
    kernels.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    decode_ops = {tvm.ir.Op.get("relax.dequantize"), tvm.ir.Op.get("relax.astype")}
    mean_op = tvm.ir.Op.get("relax.mean")
    bindings = _Bindings(mod["main"])

    def decode_of(expr):
        value = bindings.values.get(expr) if isinstance(expr, relax.Var) else None
        if (isinstance(value, relax.Call) and value.op in decode_ops and isinstance(value.args[0], relax.Var)
                and value.args[0] in bindings.values and str(value.args[0].ty.dtype) == "int8"):
            return value
        return None

    @mutator
    class _PerUse(PyExprMutator):
        def again(self, expr):
            value = decode_of(expr)
            if value is None:
                return self.visit_expr(expr)
            return self.builder_.emit(relax.Call(value.op, [self.visit_expr(a) for a in value.args], value.attrs,
                                                 value.ty_args))

        def visit_call_(self, call):
            if call.op in decode_ops or not any(decode_of(a) is not None or (
                    isinstance(a, relax.Tuple) and any(decode_of(f) is not None for f in a.fields))
                    for a in call.args):
                return super().visit_call_(call)
            args = [relax.Tuple([self.again(f) for f in a.fields]) if isinstance(a, relax.Tuple) else self.again(a)
                    for a in call.args]
            if call.op == mean_op:  # sum, then divide: a decode fuses into a sum (FuseOps: an elementwise op
                # joins a following reduction), not into a mean, whose two-stage kernel is not a plain reduction
                x_shape = [int(d) for d in call.args[0].ty.shape]
                axes = [int(a) % len(x_shape) for a in call.attrs.axis] if call.attrs.axis is not None else list(
                    range(len(x_shape)))
                total = self.builder_.emit(relax.op.sum(args[0], axes, call.attrs.keepdims))
                count = relax.const(float(np.prod([x_shape[a] for a in axes])), str(call.ty.dtype))
                return relax.op.divide(total, count)
            return relax.Call(self.visit_expr(call.op) if isinstance(call.op, relax.Expr) and not isinstance(
                call.op, tvm.ir.Op) else call.op, args, call.attrs, call.ty_args)

    return relax.transform.DeadCodeElimination()(rewrite_functions(_PerUse(mod), mod))


def float_islands(mod) -> dict[str, int]:
    """Operators of ``main`` that compute in float between a ``dequantize`` and a ``quantize`` (by Relax op
    name, e.g. ``{"mean": 1, "add": 3}``): what integer lowering left as ``dequantize -> float -> quantize``."""
    import tvm

    b = _Bindings(mod["main"])
    skip = {"relax.quantize", "relax.dequantize", "relax.reshape", "relax.permute_dims"}
    counts: dict[str, int] = {}
    for value in b.values.values():
        if not (isinstance(value, tvm.relax.Call) and isinstance(value.op, tvm.ir.Op)) or value.op.name in skip:
            continue
        ty = getattr(value, "ty", None) or getattr(value, "struct_info", None)
        if getattr(ty, "dtype", None) is None or not str(ty.dtype).startswith("float"):
            continue
        if not any(b.call(a, "relax.dequantize") is not None and b.const(b.call(a, "relax.dequantize").args[0]) is None
                   for a in value.args if isinstance(a, tvm.relax.Expr)):
            continue  # not fed by a dequantized activation: the integer kernels' own float epilogue, or weights
        name = value.op.name.removeprefix("relax.").removeprefix("nn.")
        counts[name] = counts.get(name, 0) + 1
    return counts
