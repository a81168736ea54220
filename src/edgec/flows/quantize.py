"""``edgec quantize``: a zoo model or an ONNX file in, a verified-to-run int8 QDQ ONNX file out.

The model goes through the frontend and the passes as for a build (:func:`edgec.flows.lower.lower`), then
post-training static quantization (:mod:`edgec.flows.int8`). The file is written next to its final name and
renamed into place; its ``metadata_props`` record the calibration and the function change
(``edgec.quantization``), and edgec's preprocessing record where the model has one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.errors import UsageError
from edgec.flows.request import BuildOptions, check_request
from edgec.flows.steps import Progress, Steps

#: The ``metadata_props`` key of the quantization record in the written file.
RECORD_KEY = "edgec.quantization"


@dataclass
class QuantizeResult:
    """The written file and what the quantization measured.

    Attributes:
        path: The QDQ ONNX file.
        record: The quantization step's record (:func:`edgec.flows.int8.quantize`).
        function_change: The int8 model against the float32 source (``top1_agreement``, ``snr_db``,
            ``max_abs_error``, per-set figures in ``sets``).
        weights: ``"random"`` when a zoo model had random weights.
    """

    path: Path
    record: dict[str, Any]
    function_change: dict[str, Any]
    weights: str


def check_output_file(out: Path) -> None:
    """``--out FILE.onnx``: an ``.onnx`` name in a folder that exists or can be made, not a folder.

    Raises:
        UsageError: it is not.
    """
    from edgec.artifact import check_writable_folder

    if out.suffix.lower() != ".onnx":
        raise UsageError(f"--out {out} does not end in .onnx", "name the quantized file, e.g. --out model-int8.onnx")
    if out.is_dir():
        raise UsageError(f"--out {out} is a folder", "name the quantized file, e.g. --out model-int8.onnx")
    check_writable_folder(out.parent if str(out.parent) else Path("."), "--out")


def quantize(opts: BuildOptions, out: Path, progress: Progress | None = None) -> QuantizeResult:
    """Quantize ``opts.model`` to int8 QDQ ONNX at ``out``.

    Args:
        opts: The model, input shapes, passes and calibration options (``quantize`` is set to ``"int8"``).
        out: The ``.onnx`` file to write (replaced if it exists).
        progress: Called with each step as it starts.

    Raises:
        UsageError, ModelError, UnsupportedOpError, VerificationError: as :func:`edgec.flows.build.build`.
    """
    opts.quantize = opts.quantize or "int8"
    out = Path(out)
    check_output_file(out)
    if out.exists() and Path(opts.model).exists() and out.resolve() == Path(opts.model).resolve():
        raise UsageError(f"--out {out} is the model being quantized", "write the int8 model to another file")
    check_request(opts)
    import onnx

    from edgec.flows.lower import lower

    steps = Steps(progress)
    low = lower(opts, steps)
    record = next(r for r in low.records if r.get("changes_function") and r.get("quantization"))
    from edgec.frontend.integer_io import METADATA_KEY as IO_KEY

    model = low.final
    kept = [(p.key, p.value) for p in model.metadata_props if p.key == IO_KEY]  # int8 inputs' scale, zero_point
    del model.metadata_props[:]
    for key, value in [(p.key, p.value) for p in low.prepared.metadata_props] + kept:
        model.metadata_props.add(key=key, value=value)
    from edgec.frontend.image import PREPROCESSING_KEY

    if low.source.preprocessing and PREPROCESSING_KEY not in {p.key for p in model.metadata_props}:
        # a zoo model's preprocessing travels with the file, so that `edgec build` and `edgec run` of it know it
        model.metadata_props.add(key=PREPROCESSING_KEY, value=json.dumps(low.source.preprocessing))
    summary = {"calibration": record["calibration"], "quantization": record["quantization"],
               "function_change": {k: v for k, v in low.function_change.items() if k != "sets"}}
    model.metadata_props.add(key=RECORD_KEY, value=json.dumps(summary, default=str))
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        steps.run("write", lambda: onnx.save(model, str(staged)))
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    return QuantizeResult(out, record, low.function_change, low.source.weights)
