"""TensorFlow Lite files in: read and check a ``.tflite`` flatbuffer before any work (issue 27).

:func:`inspect_tflite` reads the file with the ``tflite`` package (the flatbuffer schema's generated
Python classes: no TensorFlow) and refuses, with one line each, what no build can take:

* not a TFLite flatbuffer, or truncated: :class:`~edgec.errors.ModelError` (exit 3);
* several subgraphs (control flow, one subgraph per signature) or dynamic shapes (``-1`` in a
  tensor's ``shape_signature``): :class:`~edgec.errors.ModelError` (exit 3), with the fix;
* a custom operator (``TFLite_Detection_PostProcess``, a Flex op): :class:`~edgec.errors.UnsupportedOpError`
  (exit 4) naming the op and its operator index. Whether every *builtin* op has a converter is the
  backend's question (``edgec.backends.tvm.importer.check_supported_tflite``).

The result describes the file: its operators, its inputs and outputs (shape as stored -- NHWC for
images -- dtype, and ``scale``/``zero_point`` of quantized tensors) and its kind: ``fp32``,
``fp16-weights`` (float16 constants dequantized at load) or ``int8`` (full-integer quantization).
Schema: ``tensorflow/compiler/mlir/lite/schema/schema.fbs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import ModelError, UnsupportedOpError

#: The flatbuffer file identifier of TFLite models (bytes 4-8).
IDENTIFIER = b"TFL3"

#: ``tflite.TensorType`` codes -> numpy dtype names (the types image models use).
_DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
           10: "float64"}


@dataclass
class TFLiteTensor:
    """One input or output of a TFLite model.

    Attributes:
        name: The tensor's name in the file.
        shape: Its static shape (NHWC for images, as TFLite stores them).
        dtype: numpy dtype name (``float32``, ``int8``, ``uint8``...).
        scale: Quantization scale (real value of one integer step), None for float tensors.
        zero_point: Integer code of 0.0, None for float tensors.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            out.update(scale=self.scale, zero_point=self.zero_point)
        return out


@dataclass
class TFLiteStats:
    """Size of a TFLite model (the fields of :class:`edgec.frontend.analysis.GraphStats`).

    Attributes:
        nodes: Operators.
        params: Scalars held by constant float (float32/float16) and int8 weight buffers, and int32 biases.
        param_bytes: Bytes of every constant buffer.
        macs: Multiply-accumulates of one inference: CONV_2D (output elements x kh x kw x Cin),
            DEPTHWISE_CONV_2D (output elements x kh x kw), FULLY_CONNECTED (output elements x in features),
            TRANSPOSE_CONV (input elements x kh x kw x Cout).
        op_counts: Operators per op name.
    """

    nodes: int
    params: int
    param_bytes: int
    macs: int
    op_counts: dict[str, int]


@dataclass
class TFLiteInfo:
    """What :func:`inspect_tflite` read.

    Attributes:
        path: The file.
        version: The schema version the file declares (3 today).
        ops: ``[(operator index, op name)]`` in execution order (``CUSTOM:<name>`` for custom ops).
        inputs, outputs: The subgraph's inputs and outputs.
        kind: ``fp32``, ``fp16-weights`` or ``int8`` (any int8/uint8 activation: full-integer quantization).
        layout: ``NHWC`` when the first input is an image tensor (rank 4), else None.
        output_steps: Per output, its quantization step: 1.0 for an integer output (its values are steps), the
            scale of the int8 tensor a ``DEQUANTIZE`` turns into a float output, None for a float output.
    """

    path: Path
    version: int
    ops: list[tuple[int, str]] = field(default_factory=list)
    inputs: list[TFLiteTensor] = field(default_factory=list)
    outputs: list[TFLiteTensor] = field(default_factory=list)
    kind: str = "fp32"
    layout: str | None = None
    stats: TFLiteStats | None = None
    output_steps: list[float | None] = field(default_factory=list)


def is_tflite(path: str | Path) -> bool:
    """Whether ``path`` is a file carrying the TFLite identifier (whatever its suffix)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(8)[4:8] == IDENTIFIER
    except OSError:
        return False


def _op_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _tensor(subgraph, index: int) -> TFLiteTensor:
    t = subgraph.Tensors(index)
    q = t.Quantization()
    scale = zero_point = None
    if q is not None and q.ScaleLength() == 1:  # per-tensor parameters (inputs and outputs are)
        scale, zero_point = float(q.Scale(0)), int(q.ZeroPoint(0))
    name = (t.Name() or b"").decode("utf-8", "replace")
    return TFLiteTensor(name, tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else (),
                        _DTYPES.get(t.Type(), f"type {t.Type()}"), scale, zero_point)


def _read(buf: bytes, path: Path) -> TFLiteInfo:
    """Walk every table the build reads (so a truncated file fails here, not in the middle of a build)."""
    import tflite

    model = tflite.Model.GetRootAsModel(buf, 0)
    names = _op_names()
    info = TFLiteInfo(path, int(model.Version()))
    if model.SubgraphsLength() == 0:
        raise ModelError(f"{path} has no subgraph: a TFLite file with no model in it", "re-export the model")
    if model.SubgraphsLength() != 1:
        raise ModelError(f"{path} has {model.SubgraphsLength()} subgraphs (control flow, or one per signature); "
                         "edgec builds single-subgraph models",
                         "convert the model with one signature and no control flow (tf.lite.TFLiteConverter)")
    subgraph = model.Subgraphs(0)
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = names.get(builtin, f"builtin {builtin}")
        if name == "CUSTOM":
            name = "CUSTOM:" + (code.CustomCode() or b"?").decode("utf-8", "replace")
        op.InputsAsNumpy(), op.OutputsAsNumpy()  # noqa: B018  read to the end: a truncated file fails here
        info.ops.append((i, name))
    for i in range(subgraph.TensorsLength()):
        t = subgraph.Tensors(i)
        signature = t.ShapeSignatureAsNumpy() if t.ShapeSignatureLength() else np.zeros(0)
        if (np.asarray(signature) < 0).any():
            raise ModelError(f"{path}: tensor '{(t.Name() or b'').decode('utf-8', 'replace')}' has a dynamic shape "
                             f"{list(map(int, signature))}; edgec compiles static shapes",
                             "convert with a fixed batch and image size (e.g. set the Keras Input's batch_size=1)")
        if t.Buffer() >= model.BuffersLength():
            raise ModelError(f"{path} is damaged: tensor {i} names buffer {t.Buffer()} of {model.BuffersLength()}",
                             "re-export or re-download the model")
    for b in range(model.BuffersLength()):
        buffer = model.Buffers(b)
        if buffer.Offset() and buffer.Offset() + buffer.Size() > len(buf):
            raise ModelError(f"{path} is truncated: buffer {b} ends past the end of the file",
                             "re-export or re-download the model")
        buffer.DataAsNumpy() if buffer.DataLength() else None  # noqa: B018  read: a truncated file fails here
    info.stats = _stats(model, subgraph, info.ops)
    info.inputs = [_tensor(subgraph, int(i)) for i in subgraph.InputsAsNumpy()]
    info.outputs = [_tensor(subgraph, int(i)) for i in subgraph.OutputsAsNumpy()]
    integer = any(t.dtype in ("int8", "uint8") for t in info.inputs + info.outputs) or any(
        name in ("QUANTIZE",) for _, name in info.ops)
    halves = any(_DTYPES.get(subgraph.Tensors(i).Type()) == "float16" for i in range(subgraph.TensorsLength()))
    info.kind = "int8" if integer else ("fp16-weights" if halves else "fp32")
    info.layout = "NHWC" if info.inputs and len(info.inputs[0].shape) == 4 else None
    info.output_steps = _output_steps(subgraph, info)
    return info


def _output_steps(subgraph, info: TFLiteInfo) -> list[float | None]:
    """:attr:`TFLiteInfo.output_steps`."""
    producers = {}
    for i, name in info.ops:
        op = subgraph.Operators(i)
        for out in op.OutputsAsNumpy():
            producers[int(out)] = (name, [int(v) for v in op.InputsAsNumpy()])
    steps: list[float | None] = []
    for index, tensor in zip(subgraph.OutputsAsNumpy(), info.outputs):
        step = None
        if tensor.dtype in ("int8", "uint8"):
            step = 1.0
        else:
            name, ins = producers.get(int(index), ("", []))
            if name == "DEQUANTIZE" and ins:
                source = _tensor(subgraph, ins[0])
                step = source.scale if source.dtype in ("int8", "uint8") else None
        steps.append(step)
    return steps


def _stats(model, subgraph, ops: list[tuple[int, str]]) -> TFLiteStats:
    from collections import Counter

    def shape(t: int) -> list[int]:
        return [int(d) for d in subgraph.Tensors(t).ShapeAsNumpy()] if t >= 0 else []

    macs = 0
    biases = set()  # int32 biases of an int8 model count as parameters, as float32 ones do
    for i, name in ops:
        op = subgraph.Operators(i)
        ins, outs = [int(v) for v in op.InputsAsNumpy()], [int(v) for v in op.OutputsAsNumpy()]
        bias_at = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "FULLY_CONNECTED": 2, "TRANSPOSE_CONV": 3}.get(name)
        if bias_at is not None and len(ins) > bias_at and ins[bias_at] >= 0:
            biases.add(ins[bias_at])
        out = int(np.prod(shape(outs[0]))) if outs else 0
        w = shape(ins[1]) if len(ins) > 1 else []
        if name == "CONV_2D" and len(w) == 4:  # weights OHWI
            macs += out * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D" and len(w) == 4:  # weights 1HW(C*M)
            macs += out * w[1] * w[2]
        elif name == "FULLY_CONNECTED" and len(w) == 2:
            macs += out * w[1]
        elif name == "TRANSPOSE_CONV" and len(ins) > 2:  # inputs: output shape, weights OHWI, input
            macs += int(np.prod(shape(ins[2]))) * int(np.prod(shape(ins[1])[:3]))
    params = param_bytes = 0
    for i in range(subgraph.TensorsLength()):
        t = subgraph.Tensors(i)
        size = model.Buffers(t.Buffer()).DataLength() if t.Buffer() > 0 else 0
        if size:
            param_bytes += size
            if t.Type() in (0, 1, 9) or (t.Type() == 2 and i in biases):  # float32, float16, int8 weights; biases
                params += int(np.prod(shape(i))) if t.ShapeLength() else 1
    return TFLiteStats(len(ops), params, param_bytes, macs, dict(Counter(name for _, name in ops)))


def inspect_tflite(path: str | Path) -> TFLiteInfo:
    """Read and check a ``.tflite`` file (see the module's docstring for what is refused).

    Returns:
        A :class:`TFLiteInfo`.

    Raises:
        ModelError: missing, empty, unreadable, not TFLite, truncated or damaged; several subgraphs;
            a dynamic shape.
        UnsupportedOpError: a custom operator (its name and operator index).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"TFLite file not found: {path}", "check the path")
    try:
        buf = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from exc
    if len(buf) < 8 or buf[4:8] != IDENTIFIER:
        raise ModelError(f"{path} is not a TensorFlow Lite model (no 'TFL3' identifier)",
                         "give a .tflite file written by the TFLite converter")
    try:
        info = _read(buf, path)
    except (ModelError, UnsupportedOpError):
        raise
    except Exception:  # flatbuffers reads past the end of a truncated file: struct.error, IndexError...
        raise ModelError(f"{path} is truncated or damaged (its TFLite flatbuffer cannot be read)",
                         "re-export or re-download the model") from None
    custom = [(i, name) for i, name in info.ops if name.startswith("CUSTOM:")]
    if custom:
        i, name = custom[0]
        more = f" (and {len(custom) - 1} more)" if len(custom) > 1 else ""
        raise UnsupportedOpError(f"{path}: custom operator '{name.split(':', 1)[1]}' at operator {i}{more} has no "
                                 "kernel in edgec", "convert the model without it; run post-processing such as "
                                 "TFLite_Detection_PostProcess outside the model")
    return info


class TFLiteModel:
    """A checked TFLite file as a build carries it (beside ONNX models): its bytes, what
    :func:`inspect_tflite` read, and the few facts the build asks of a model.

    Attributes:
        path: The file it came from.
        data: Its bytes (what is compiled and written into the artifact as ``model.tflite``).
        info: What :func:`inspect_tflite` read.
    """

    FILE = "model.tflite"

    def __init__(self, path: str | Path) -> None:
        self.info = inspect_tflite(path)
        self.path = Path(path)
        self.data = self.path.read_bytes()

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """``{input name: shape}`` (as the file stores them: NHWC for images)."""
        return {t.name: t.shape for t in self.info.inputs}

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return {t.name: np.dtype(t.dtype) for t in self.info.inputs}

    def input_infos(self) -> list[dict[str, Any]]:
        """``[{"name", "shape", "dtype", ["scale", "zero_point"], "layout"}]`` of the inputs (manifests)."""
        return [{**t.to_dict(), **({"layout": self.info.layout} if i == 0 and self.info.layout else {})}
                for i, t in enumerate(self.info.inputs)]

    def output_infos(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.info.outputs]

    def save(self, folder: Path) -> Path:
        """Write the file into ``folder`` as :attr:`FILE`; its path."""
        out = Path(folder) / self.FILE
        out.write_bytes(self.data)
        return out


__all__ = ["IDENTIFIER", "TFLiteInfo", "TFLiteModel", "TFLiteStats", "TFLiteTensor", "inspect_tflite", "is_tflite"]
