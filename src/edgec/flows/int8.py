"""The int8 quantization step of a build (``--quantize int8``) and of ``edgec quantize``: calibrate, quantize
(:mod:`edgec.frontend.quantize`), and measure the function change against the float32 model.

Quantization changes the function on purpose: its record says so (``changes_function``) and carries its own
fidelity figures (top-1 agreement with float32, output SNR in dB, max abs error) on the calibration samples
and on each verification set. The artifact is then checked against the quantized model run by onnxruntime's
integer kernels, within one quantization step (:func:`edgec.flows.parts.compare_sets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx

from edgec.flows.steps import Steps
from edgec.frontend import reference
from edgec.frontend.quantize import Calibration, calibration_samples, quantize_int8, snr_db
from edgec.passes.fidelity import Tally

#: The label of the step in reports and in ``function_change.passes``.
LABEL = "quantize_int8"


@dataclass
class Quantized:
    """The quantized model and what the step measured.

    Attributes:
        model: QDQ ONNX.
        record: The step's record (a pass record's keys where they apply, ``changes_function`` True).
        fidelity: The function change against the float32 model (``function_change`` figures).
        verification_sets: Calibration samples to verify the artifact on besides the build's sets (named
            ``calibration:<i>``): inputs of the distribution the ranges were chosen for.
    """

    model: onnx.ModelProto
    record: dict[str, Any]
    fidelity: dict[str, Any]
    verification_sets: dict[str, dict[str, np.ndarray]]


#: Calibration samples the artifact is verified on (besides the build's input sets).
VERIFY_CALIBRATION_SAMPLES = 2

#: Input sets drawn from no data distribution (:func:`edgec.frontend.reference.verification_sets`). An int8
#: artifact is compared with onnxruntime on them and the figures reported, but not judged: far from the
#: calibration data, onnxruntime runs some quantized operators as float (its optimizer keeps ``DequantizeLinear
#: -> Conv -> QuantizeLinear`` where it finds no integer kernel), one-step rounding differences appear, and they
#: compound through the layers (two steps at the output of MobileNetV4 on N(0, 1) inputs; 0 on the calibration
#: samples).
SYNTHETIC_SETS = ("normal", "offset", "pixels_0_255", "unit_0_1", "codes")


def int8_outputs(model: onnx.ModelProto, sets: dict[str, dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """onnxruntime's outputs of a QDQ model with its integer kernels (graph optimizations on), per set."""
    session = reference.ort_session(model, optimized=True)
    return {name: reference.run_session(session, xs) for name, xs in sets.items()}


def fidelity(got: list[list[np.ndarray]], want: list[list[np.ndarray]]) -> dict[str, Any]:
    """The function change over paired runs (quantized, float32): :class:`Tally`'s figures plus ``snr_db``
    (the first output's, over all runs pooled; inf when equal)."""
    tally = Tally()
    for g, w in zip(got, want):
        tally.add(g, w)
    out = tally.result()
    if got:
        out["snr_db"] = snr_db(np.concatenate([np.ravel(g[0]) for g in got]),
                               np.concatenate([np.ravel(w[0]) for w in want]))
    return out


def quantize(fp32: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype],
             preprocessing: dict[str, Any] | None, sets: dict[str, dict[str, np.ndarray]],
             fp32_outputs: dict[str, list[np.ndarray]], *, calibrate: str | None, samples: int, method: str,
             seed: int, steps: Steps, data: str | None = None) -> Quantized:
    """Calibrate and quantize ``fp32`` to int8 QDQ, and measure the change.

    Args:
        fp32: The float32 model to quantize (after the passes).
        shapes, dtypes, preprocessing: Its inputs and preprocessing.
        sets: The build's verification input sets.
        fp32_outputs: The float32 reference's outputs on ``sets`` (the model the change is measured against).
        calibrate: ``--calibrate`` (a folder of images or a ``.npz``), or None for package/generated images.
        samples: At most this many calibration samples.
        method: Calibration method (:data:`edgec.frontend.quantize.METHODS`).
        data: ``--data DIR`` (ImageFolder, optionally ``train/`` and ``val/``): top-1 accuracy of float32 and
            int8 on its validation images (``fidelity["accuracy"]``); without ``calibrate``, calibration takes
            its training images.

    Raises:
        UsageError: bad ``--calibrate`` or method.
    """
    flag = "--calibrate"
    if calibrate is None and data is not None:
        from edgec.frontend.data import data_splits

        calibrate, flag = str(data_splits(data)[0]), "--data"
    calibration: Calibration = steps.run("calibration samples", lambda: calibration_samples(
        calibrate, shapes, dtypes, preprocessing, samples, seed, flag))
    model = steps.run(f"quantize to int8 ({method} calibration, {len(calibration.samples)} samples)",
                      lambda: quantize_int8(fp32, calibration, method))

    def measure() -> dict[str, Any]:
        calib_sets = {f"calibration:{i}": xs for i, xs in enumerate(calibration.samples)}
        q = int8_outputs(model, {**sets, **calib_sets})
        session = reference.ort_session(fp32)
        f_calib = [reference.run_session(session, xs) for xs in calib_sets.values()]
        head = fidelity([q[k] for k in calib_sets], f_calib)
        per_set = [{"name": name, **fidelity([q[name]], [fp32_outputs[name]])} for name in sets]
        return {**head, "measured_on": f"{len(calib_sets)} calibration samples", "sets": per_set}

    figures = steps.run("int8 fidelity (onnxruntime integer kernels against float32)", measure)
    if data is not None:
        figures["accuracy"] = steps.run(f"accuracy on --data {data}", lambda: accuracy(fp32, model, data,
                                                                                      preprocessing))
    stats_before, stats_after = _counts(fp32), _counts(model)
    record = {"name": LABEL, "label": f"{LABEL}(method={method})", "options": {"method": method, "samples": samples},
              "equivalence": {"kind": "changes-function"}, "changes_function": True, "applied": 1,
              "calibration": {"source": calibration.source, "description": calibration.description,
                              "samples": len(calibration.samples), "method": method},
              "quantization": {"weights": "int8 per output channel, symmetric",
                               "activations": "int8 per tensor, asymmetric", "bias": "int32",
                               "format": "QDQ (onnxruntime.quantization.quantize_static)",
                               "quantized_tensors": stats_after["QuantizeLinear"]},
              "nodes": [stats_before["nodes"], stats_after["nodes"]],
              "fidelity": figures, "passed": True}
    shown = {f"calibration:{i}": xs for i, xs in enumerate(calibration.samples[:VERIFY_CALIBRATION_SAMPLES])}
    return Quantized(model, record, figures, shown)


def accuracy(fp32: onnx.ModelProto, int8: onnx.ModelProto, data: str, preprocessing: dict[str, Any] | None
             ) -> dict[str, Any]:
    """Top-1 accuracy (fractions) of the float32 and the int8 model (onnxruntime; its integer kernels for int8)
    on ``--data``'s validation images (:func:`edgec.frontend.data.read_task_data`).

    Raises:
        UsageError: the folder does not fit the model (classes, images).
    """
    from edgec.frontend.data import read_task_data

    _, val = read_task_data(data, fp32, preprocessing)
    name = fp32.graph.input[0].name

    def top1(model, optimized: bool) -> float:
        session = reference.ort_session(model, optimized=optimized)
        scores = np.concatenate([session.run(None, {name: val.x[i:i + 1]})[0] for i in range(len(val.x))])
        return float((scores.argmax(axis=1) == val.labels).mean())

    return {"images": len(val.x), "top1_fp32": top1(fp32, False), "top1_int8": top1(int8, True)}


def function_change(earlier: dict[str, Any] | None, q: Quantized) -> dict[str, Any]:
    """The build's ``function_change``: the int8 model against the float32 source, naming the function-changing
    passes before it and the quantization."""
    passes = list((earlier or {}).get("passes", [])) + [q.record["label"]]
    out = {k: v for k, v in q.fidelity.items() if k != "sets"}
    out["inputs"] = out.get("inputs", 0)
    return {**out, "passes": passes, "quantization": q.record["calibration"]["description"],
            "sets": q.fidelity.get("sets", [])}


def _counts(model: onnx.ModelProto) -> dict[str, int]:
    return {"nodes": len(model.graph.node),
            "QuantizeLinear": sum(n.op_type == "QuantizeLinear" for n in model.graph.node)}


def describe(fid: dict[str, Any]) -> str:
    """One line: ``top-1 agreement 96.9%, SNR 24.1 dB, max abs err 0.031 on 32 calibration samples``."""
    parts = []
    if fid.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {100 * fid['top1_agreement']:.1f}%")
    snr = fid.get("snr_db")
    if snr is not None:
        parts.append("SNR inf dB" if math.isinf(snr) else f"SNR {snr:.1f} dB")
    parts.append(f"max abs err {fid.get('max_abs_error', float('nan')):.3g}")
    line = ", ".join(parts) + f" on {fid.get('measured_on', str(fid.get('inputs', 0)) + ' input sets')}"
    acc = fid.get("accuracy")
    if acc:
        line += (f"; top-1 accuracy {100 * acc['top1_int8']:.2f}% int8 against {100 * acc['top1_fp32']:.2f}% "
                 f"float32 on {acc['images']} --data images")
    return line
