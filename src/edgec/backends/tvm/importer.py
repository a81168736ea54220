"""ONNX (and TFLite) -> Relax import with clear errors for unsupported operators."""

from __future__ import annotations

import logging

import numpy as np
import onnx

from edgec.tvm_setup.capture import captured_fds
from edgec.errors import UnsupportedOpError
from edgec.frontend.tflite import TFLiteModel

log = logging.getLogger(__name__)


def supported_ops() -> set[str]:
    """ONNX op types TVM's Relax importer converts."""
    from tvm.relax.frontend.onnx import onnx_frontend

    return set(onnx_frontend._get_convert_map())


def check_supported(model: onnx.ModelProto) -> None:
    """Fail early, naming the op and the node, when TVM cannot import an operator.

    Raises:
        UnsupportedOpError: the first node whose op type (in the default domain)
            TVM's importer does not convert.
    """
    known = supported_ops()
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(
                f"op {node.domain}::{node.op_type} (node '{node.name or node.output[0]}') is a custom-domain "
                "operator TVM cannot import", "export the model with standard ONNX ops only")
        if node.op_type not in known:
            raise UnsupportedOpError(
                f"op {node.op_type} (node '{node.name or node.output[0]}') is not supported by TVM's ONNX importer",
                "rewrite it with supported ops before export, or see `edgec passes list`")


def import_onnx(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]],
                dtypes: dict[str, np.dtype] | None = None):
    """Import an ONNX model into a Relax ``IRModule`` with weights bound as constants.

    Args:
        model: Simplified ONNX model with static shapes.
        shapes: ``{input name: shape}``.
        dtypes: ``{input name: numpy dtype}`` (default float32).

    Returns:
        ``tvm.IRModule`` whose ``main`` takes the graph inputs in graph order.

    Raises:
        UnsupportedOpError: an op (or an op's attributes) TVM cannot import.
    """
    from tvm.relax.frontend.onnx import from_onnx

    check_supported(model)
    _clip_with_constant_bounds_as_relax_ops()
    dtype_dict = {k: str(np.dtype((dtypes or {}).get(k, np.float32))) for k in shapes}
    try:
        with captured_fds():
            mod = from_onnx(model, shape_dict={k: list(v) for k, v in shapes.items()},
                            dtype_dict=dtype_dict, keep_params_in_input=False)
    except Exception as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else type(exc).__name__
        where = _failing_node(exc, model)
        raise UnsupportedOpError(f"TVM's ONNX importer failed{where}: {last[:240]}",
                                 "rewrite that node with supported ops before export, or rerun with --debug "
                                 "for the importer's trace") from exc
    return mod


def check_supported_tflite(model: TFLiteModel, tfl=None) -> None:
    """Fail early, naming the operator and its index, when TVM's TFLite importer has no converter for it.

    Raises:
        UnsupportedOpError: the first operator TVM's Relax TFLite frontend does not convert.
    """
    import tflite
    from tvm import relax
    from tvm.relax.frontend.tflite.tflite_frontend import ExprTable, OperatorConverter

    tfl = tfl or tflite.Model.GetRootAsModel(model.data, 0)
    known = OperatorConverter(tfl, tfl.Subgraphs(0), ExprTable(), relax.BlockBuilder()).convert_map
    for index, name in model.info.ops:
        if name not in known:
            raise UnsupportedOpError(f"{model.path.name}: operator {index} ({name}) is not supported by TVM's TFLite "
                                     "importer", "convert the model without it, or convert it to ONNX")


def import_tflite(model: TFLiteModel):
    """Import a checked TFLite file into a Relax ``IRModule`` (TVM's Relax TFLite frontend; weights bound as
    constants; quantized tensors as ``relax.op.quantize``/``dequantize`` around float operators).

    Returns:
        ``tvm.IRModule`` whose ``main`` takes the inputs in the file's order, shapes and dtypes as stored (NHWC).

    Raises:
        UnsupportedOpError: an operator TVM cannot import (named, with its index where known).
    """
    import tflite
    from tvm.relax.frontend.tflite import from_tflite

    tfl = tflite.Model.GetRootAsModel(model.data, 0)
    check_supported_tflite(model, tfl)
    _quantized_data_movement_ops()
    try:
        with captured_fds():
            mod = from_tflite(tfl, shape_dict={k: list(v) for k, v in model.shapes.items()},
                              dtype_dict={k: str(v) for k, v in model.dtypes.items()})
    except Exception as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        last = lines[-1] if lines else type(exc).__name__
        raise UnsupportedOpError(f"TVM's TFLite importer failed on {model.path.name}: {last[:240]}",
                                 "rerun with --debug for the importer's trace") from exc
    return _declared_output_shapes(mod, [t.shape for t in model.info.outputs])


def _declared_output_shapes(mod, shapes: list[tuple[int, ...]]):
    """``mod`` with each output reshaped to the shape the TFLite file declares where TVM's importer left the
    same elements in another shape (its quantized FULLY_CONNECTED keeps a 4-D input's leading 1s: (1, 1, 1, 1000)
    for the file's (1, 1000))."""
    import tvm
    from tvm import relax

    func = mod["main"]
    ret = func.ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    got = [tuple(int(d) for d in f.shape) for f in fields]
    if got == [tuple(s) for s in shapes] or len(got) != len(shapes) or any(
            int(np.prod(g)) != int(np.prod(s)) for g, s in zip(got, shapes)):
        return mod
    result = func.body.body
    bindings, outs = [], []
    for i, (f, g, want) in enumerate(zip(fields, got, shapes)):
        part = result if len(fields) == 1 else relax.TupleGetItem(result, i)
        if g != tuple(want):
            var = relax.Var(f"output_{i}", relax.TensorType(want, f.dtype))
            bindings.append(relax.VarBinding(var, relax.op.reshape(part, want)))
            part = var
        outs.append(part)
    body = relax.SeqExpr(list(func.body.blocks) + [relax.BindingBlock(bindings)],
                         outs[0] if len(fields) == 1 else relax.Tuple(outs))
    types = [relax.TensorType(tuple(want), f.dtype) for f, want in zip(fields, shapes)]
    fixed = relax.Function(func.params, body, types[0] if len(types) == 1 else relax.TupleType(types),
                           attrs=func.attrs)
    return relax.transform.Normalize()(tvm.IRModule({"main": fixed}, attrs=mod.attrs))


#: TFLite operators that only move int8 values (no arithmetic: their output has the input's scale and zero
#: point, and PAD fills with that zero point): TVM's converters are right for them on quantized tensors, but its
#: importer refuses every quantized operator outside its list, and MobileNet-style int8 files hold PAD
#: (onnx2tf writes one before each strided depthwise convolution).
QUANTIZED_DATA_MOVEMENT = frozenset({"PAD", "PADV2", "TRANSPOSE", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE",
                                     "SPLIT", "SPLIT_V", "PACK", "UNPACK", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"})


def _quantized_data_movement_ops() -> None:
    """Let TVM's TFLite importer convert :data:`QUANTIZED_DATA_MOVEMENT` on quantized tensors."""
    from tvm.relax.frontend.tflite.tflite_frontend import OperatorConverter

    OperatorConverter._SUPPORTED_QUANTIZED_OPS = OperatorConverter._SUPPORTED_QUANTIZED_OPS | QUANTIZED_DATA_MOVEMENT


def _failing_node(exc: Exception, model: onnx.ModelProto) -> str:
    """`` on op X (node 'n', opset K)`` for the node TVM's importer was converting when it failed, else ``""``.

    The importer converts node by node in a loop whose local ``node`` is the ONNX node; the
    innermost such frame of the traceback names it.
    """
    import traceback

    node = None
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        candidate = frame.f_locals.get("node")
        if isinstance(candidate, onnx.NodeProto):
            node = candidate
    if node is None:
        return ""
    opset = next((o.version for o in model.opset_import if o.domain == node.domain or
                  (node.domain in ("", "ai.onnx") and o.domain in ("", "ai.onnx"))), None)
    return f" on op {node.op_type} (node '{node.name or node.output[0]}', opset {opset})"


def _clip_with_constant_bounds_as_relax_ops() -> None:
    """Import ``Clip(x, lo, hi)`` with constant scalar bounds (ReLU6) as ``R.minimum(R.maximum(x, lo), hi)``.

    TVM 0.27's converter emits Clip as opaque TE kernels (``call_tir``), which Relax's
    ConvertLayout cannot see through: an NHWC network would be transposed to NCHW and back
    around every ReLU6. The Relax element-wise ops compute the same values, follow any layout
    and fuse the same way. Clips with tensor or NaN bounds keep TVM's conversion.
    """
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import onnx_frontend

    clip = onnx_frontend.Clip
    if getattr(clip, "_edgec_patched", False):
        return
    original = clip._impl_v13.__func__

    def _scalar(expr):
        if not isinstance(expr, tvm.ir.Constant):
            return None
        value = expr.value.numpy()
        return float(value) if value.size == 1 and not np.isnan(value).any() else None

    def _impl_v13(cls, bb, inputs, attr, params):
        x, lo, hi = (list(inputs) + [None, None])[:3]
        bounds = [None if b is None else _scalar(b) for b in (lo, hi)]
        if any(b is not None and v is None for b, v in zip((lo, hi), bounds)):
            return original(cls, bb, inputs, attr, params)
        dtype = str(x.ty.dtype)
        out = x
        if bounds[0] is not None:
            out = bb.emit(relax.op.maximum(out, relax.const(bounds[0], dtype)))
        if bounds[1] is not None:
            out = bb.emit(relax.op.minimum(out, relax.const(bounds[1], dtype)))
        return out

    clip._impl_v13 = classmethod(_impl_v13)
    clip._edgec_patched = True
