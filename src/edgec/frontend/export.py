"""PyTorch -> ONNX export.

Uses ``torch.onnx.export(..., dynamo=True)`` (the torch.export-based exporter,
the default since PyTorch 2.9) at a fixed input shape. The exporter's own
optimiser runs (constant folding, dead-code removal); edgec's frontend then
checks, infers shapes and simplifies the result (:mod:`edgec.frontend.load`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

import onnx

from edgec.errors import ModelError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_torch(model, input_shape: tuple[int, ...], *, opset: int = DEFAULT_OPSET,
                 input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME) -> onnx.ModelProto:
    """Export a PyTorch module to ONNX at a fixed input shape.

    Args:
        model: ``torch.nn.Module`` in eval mode taking one float32 tensor.
        input_shape: ``(N, C, H, W)`` NCHW.
        opset: ONNX opset (>= 17).
        input_name: Name of the graph input.
        output_name: Name of the graph output.

    Returns:
        The ONNX model (weights embedded, static shapes).

    Raises:
        ModelError: the exporter failed (the message names the PyTorch error).
    """
    import torch

    example = torch.zeros(*input_shape, dtype=torch.float32)
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                                        input_names=[input_name], output_names=[output_name],
                                        external_data=False, verbose=False)
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"PyTorch -> ONNX export failed: {msg[:200]}",
                         "rerun with --debug for the exporter's log") from exc
    log.debug("exporter output: %s", sink.getvalue())
    return program.model_proto
