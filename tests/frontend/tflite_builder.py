"""Tiny TFLite files written with the ``tflite`` package's flatbuffer builders (no TensorFlow), for the
shapes of file the committed test models do not have: several subgraphs, a dynamic shape."""

import importlib.util
from pathlib import Path

import flatbuffers
import tflite
from tflite.BuiltinOperator import BuiltinOperator
from tflite.TensorType import TensorType

# the vector helpers of the maintainer script that writes the committed test models (stdlib imports only)
_spec = importlib.util.spec_from_file_location(
    "make_tflite_models", Path(__file__).parents[2] / "scripts" / "make_tflite_models.py")
_maker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_maker)


def relu_model(path: Path, *, subgraphs: int = 1, signature: list[int] | None = None) -> Path:
    """``y = relu(x)``, x and y float32 [1, 8] (``signature``: the input's shape_signature, e.g. [-1, 8]),
    with the same subgraph repeated ``subgraphs`` times."""
    b = flatbuffers.Builder(1024)

    def ivec(start, vals):
        return _maker.int_vector(b, start, vals)

    def offvec(start, offs):
        return _maker.offset_vector(b, start, offs)

    tflite.BufferStart(b)
    empty = tflite.BufferEnd(b)
    graphs = []
    for _ in range(subgraphs):
        tensors = []
        for name, sig in (("x", signature), ("y", None)):
            n = b.CreateString(name)
            shape = ivec(tflite.TensorStartShapeVector, [1, 8])
            sig_vec = ivec(tflite.TensorStartShapeSignatureVector, sig) if sig else None
            tflite.TensorStart(b)
            tflite.TensorAddShape(b, shape)
            if sig_vec is not None:
                tflite.TensorAddShapeSignature(b, sig_vec)
            tflite.TensorAddType(b, TensorType.FLOAT32)
            tflite.TensorAddBuffer(b, 0)
            tflite.TensorAddName(b, n)
            tensors.append(tflite.TensorEnd(b))
        op_in, op_out = ivec(tflite.OperatorStartInputsVector, [0]), ivec(tflite.OperatorStartOutputsVector, [1])
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, 0)
        tflite.OperatorAddInputs(b, op_in)
        tflite.OperatorAddOutputs(b, op_out)
        op = tflite.OperatorEnd(b)
        tvec = offvec(tflite.SubGraphStartTensorsVector, tensors)
        sg_in, sg_out = ivec(tflite.SubGraphStartInputsVector, [0]), ivec(tflite.SubGraphStartOutputsVector, [1])
        ovec = offvec(tflite.SubGraphStartOperatorsVector, [op])
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, tvec)
        tflite.SubGraphAddInputs(b, sg_in)
        tflite.SubGraphAddOutputs(b, sg_out)
        tflite.SubGraphAddOperators(b, ovec)
        graphs.append(tflite.SubGraphEnd(b))
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, BuiltinOperator.RELU)
    tflite.OperatorCodeAddBuiltinCode(b, BuiltinOperator.RELU)
    tflite.OperatorCodeAddVersion(b, 1)
    code = tflite.OperatorCodeEnd(b)
    codes = offvec(tflite.ModelStartOperatorCodesVector, [code])
    sgs = offvec(tflite.ModelStartSubgraphsVector, graphs)
    bufs = offvec(tflite.ModelStartBuffersVector, [empty])
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, sgs)
    tflite.ModelAddBuffers(b, bufs)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return path
