"""The model's way in, shared by every flow that builds, tunes or analyses one: export a zoo model to
ONNX or load an ONNX file (:func:`load_source`), then the frontend (check, fix shapes, simplify; parity
with PyTorch and onnxruntime) and the passes, each verified (:func:`lower`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.artifact import sha256_bytes, sha256_file
from edgec.errors import UsageError, VerificationError
from edgec.flows.parts import References
from edgec.flows.request import BuildOptions, check_input_bytes, is_onnx_path
from edgec.flows.steps import Steps
from edgec.frontend import reference
from edgec.frontend.load import load_onnx, prepare_onnx
from edgec.frontend.tflite import TFLiteModel, is_tflite


@dataclass
class Source:
    """The model as it entered the build."""

    name: str
    kind: str  # "zoo" | "onnx" | "tflite"
    path: str | None
    model: onnx.ModelProto | TFLiteModel
    sha256: str
    preprocessing: dict[str, Any] | None
    torch_model: Any = None
    weights: str = "onnx"
    input_values: dict[str, list] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "source": self.kind, "path": self.path, "sha256": self.sha256}
        if self.input_values:
            out["input_values"] = self.input_values  # parameter inputs folded into the model
        return out


def load_source(opts: BuildOptions, tflite: bool = False) -> Source:
    """Export the zoo model or load the ONNX file named by ``opts.model`` (or, with ``tflite``, a TFLite file).

    Raises:
        UsageError, ModelError: unknown model, bad file, bad weights.
        UnsupportedOpError: a TFLite file with a custom operator.
    """
    if tflite and is_onnx_path(opts.model) and (Path(opts.model).suffix.lower() == ".tflite" or is_tflite(opts.model)):
        path = Path(opts.model)
        model = TFLiteModel(path)
        return Source(name=re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem), kind="tflite", path=str(path), model=model,
                      sha256=sha256_file(path), preprocessing={"layout": model.info.layout} if model.info.layout else None,
                      weights="tflite")
    if is_onnx_path(opts.model):
        path = Path(opts.model)
        model = load_onnx(path)
        from edgec.frontend.image import recorded_preprocessing

        return Source(name=re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem), kind="onnx", path=str(path),
                      model=model, sha256=sha256_file(path), preprocessing=recorded_preprocessing(model))
    from edgec.frontend.export import export_torch
    from edgec.zoo import create_model, get

    entry = get(opts.model)
    shape = entry.input_shape
    given = opts.given_shapes
    if given:
        if len(given) != 1:
            raise UsageError("a zoo model has one input", "pass one --input-shape, e.g. 1,3,160,160")
        shape = next(iter(given.values()))
        if len(shape) != 4 or shape[1] != 3:
            raise UsageError(f"--input-shape {','.join(map(str, shape))} is not (N, 3, H, W)",
                             "zoo models take NCHW RGB input, e.g. 1,3,224,224")
    torch_model = create_model(opts.model, pretrained=opts.pretrained, weights=opts.weights, seed=opts.seed,
                               **opts.model_kwargs)
    model = export_torch(torch_model, shape)
    pre = dict(entry.preprocessing)
    pre["resize"] = list(shape[2:])
    weights = str(opts.weights) if opts.weights else ("timm pretrained" if opts.pretrained else "random")
    return Source(name=entry.name, kind="zoo", path=None, model=model,
                  sha256=sha256_bytes(model.SerializeToString()), preprocessing=pre, torch_model=torch_model,
                  weights=weights)


def _torch_reference(source: Source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = source.torch_model(*[torch.from_numpy(x) for x in inputs.values()])
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().numpy() for o in outs]


def _simplify(source: Source, opts: BuildOptions, steps: Steps) -> tuple[onnx.ModelProto, dict, list[str]]:
    given = {} if source.kind == "zoo" else opts.given_shapes
    notes: list[str] = []
    if source.kind == "onnx":
        from edgec.frontend.load import resolve_input_shapes
        from edgec.frontend.params import bind_parameters, parameter_inputs, sample_values

        samples = sample_values(opts.verify_inputs, set(parameter_inputs(source.model)))
        source.model, source.input_values = bind_parameters(source.model, opts.given_values, samples, notes)
        check_input_bytes(resolve_input_shapes(source.model, given), "the model's inputs take")
    prepared, shapes = steps.run("simplify", lambda: prepare_onnx(source.model, given, source.path or source.name,
                                                                  notes))
    return prepared, shapes, notes


def _reference_model(source: Source, shapes: dict[str, tuple[int, ...]], notes: list[str]) -> onnx.ModelProto:
    """The model onnxruntime's reference runs: the source, or -- where onnxruntime has no kernel for the
    source's old opset (``Add(6)``: it supports opset 7 and later) -- the source converted by edgec's import
    normalisation (opset 17, shapes fixed, not simplified), said so in ``notes``.

    Raises:
        UnsupportedOpError: onnxruntime loads neither.
    """
    from edgec.errors import UnsupportedOpError

    try:
        reference.ort_session(source.model)
        return source.model
    except UnsupportedOpError as exc:
        if source.kind != "onnx" or min((o.version for o in source.model.opset_import if o.domain in ("", "ai.onnx")),
                                        default=99) >= 7:
            raise
        from edgec.frontend.load import fix_input_shapes
        from edgec.frontend.normalize import normalize

        converted, _ = normalize(onnx.ModelProto.FromString(source.model.SerializeToString()))
        converted = fix_input_shapes(converted, shapes)
        try:
            reference.ort_session(converted)
        except UnsupportedOpError:
            raise exc from None
        notes.append(f"onnxruntime cannot run the original model ({exc.message.removeprefix('onnxruntime cannot load the model: ')}); "
                     "the reference is the model as edgec converted it to opset 17")
        return converted


def _parity(source: Source, ref_model: onnx.ModelProto, prepared: onnx.ModelProto, inputs: dict[str, np.ndarray],
            simplified: list[np.ndarray], ref: list[np.ndarray], notes: list[str],
            references: References) -> dict[str, Any]:
    """The simplified model against the source (onnxruntime; the float64 truth decides a failure by the size
    of the error), and the export against PyTorch (zoo models).

    Raises:
        VerificationError: either differs beyond its tolerance.
    """
    from edgec.frontend.float64 import decides

    parity = reference.compare(simplified, ref, rtol=reference.PASS_RTOL, check_top1=False)
    record = {"name": "frontend parity (simplified vs source, onnxruntime)", **parity.to_dict(), "normalizations": notes}
    if decides(parity):
        record["float64"] = references.oracle(ref_model).check("normal", inputs, simplified, reference.PASS_RTOL,
                                                                   check_top1=False)
        if record["float64"].get("unstable"):
            parity.passed = record["passed"] = None
        elif record["float64"]["passed"] is not None:
            parity.passed = record["passed"] = record["float64"]["passed"]
    if source.torch_model is not None:
        export = reference.compare(ref, _torch_reference(source, inputs), rtol=reference.BUILD_RTOL)
        record["export"] = {"reference": "PyTorch", **export.to_dict()}
        if export.passed is False:
            raise VerificationError(
                "the ONNX export differs from PyTorch: "
                + (export.reason or f"max abs error {export.max_abs_error:.3g} > {export.tolerance:.3g}"),
                "report this model; rerun with --debug")
    if parity.passed is False:
        why = parity.reason or (record.get("float64") or {}).get("reason") or f"max abs error {parity.max_abs_error:.3g}"
        raise VerificationError(f"simplification changed the outputs: {why}", "rerun with --debug")
    return record


@dataclass
class Lowered:
    """The model after the frontend and the passes (ONNX; shared by build, tune and profile).

    Attributes:
        source: The model as it entered.
        prepared: After the frontend (checked, static shapes, simplified).
        final: After the passes: what the backend compiles.
        reference: What the artifact must match exactly: ``prepared`` unless a pass changed
            the function, then the model after the last such pass.
        inputs: The fixed verification inputs.
        source_outputs: onnxruntime's outputs of the source model on ``inputs`` (of the model as edgec
            converted it, where onnxruntime cannot run the source's old opset).
        records: The frontend parity record, then one record per pass.
        function_change: The intended change of function (see ``PipelineResult``), or None.
        input_sets: Named verification input sets (``normal`` is ``inputs``; see
            :func:`edgec.frontend.reference.verification_sets`), with the user's samples.
        references: onnxruntime's outputs computed so far (the simplified model on every input set),
            shared with the verification.
    """

    source: Source
    prepared: onnx.ModelProto
    final: onnx.ModelProto
    reference: onnx.ModelProto
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    inputs: dict[str, np.ndarray]
    source_outputs: list[np.ndarray]
    records: list[dict[str, Any]]
    function_change: dict[str, Any] | None = None
    input_sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    references: References = field(default_factory=References)

    @property
    def passes_changed(self) -> bool:
        return any(p.get("applied") for p in self.records)


def lower(opts: BuildOptions, steps: Steps | None = None,
          check_prepared: Callable[[onnx.ModelProto, list[str]], None] | None = None, *,
          tflite: bool = False) -> Lowered:
    """Source -> frontend -> passes, with the parity and per-pass checks.

    Args:
        opts: The request.
        steps: Names and times the steps.
        check_prepared: Called with the model after the frontend and the pipeline's pass names, before
            the reference and the passes run (a target's early refusal, e.g. a microcontroller's flash).
        tflite: Take a TFLite file too (:func:`lower_tflite`); the flows that rewrite ONNX leave it False
            and such a file is refused.

    Raises:
        UsageError, ModelError, UnsupportedOpError, VerificationError: see :func:`edgec.flows.build.build`.
    """
    from edgec.passes import run_pipeline

    steps = steps or Steps()
    source = steps.run("load model" if is_onnx_path(opts.model) else "export to ONNX",
                       lambda: load_source(opts, tflite))
    if source.kind == "tflite":
        return lower_tflite(source, opts, steps)
    prepared, shapes, notes = _simplify(source, opts, steps)
    if check_prepared is not None:
        from edgec.passes import resolve_pipeline

        check_prepared(prepared, [c.name for c in resolve_pipeline(opts.passes)])
    dtypes = reference.input_dtypes(prepared)
    sets = reference.verification_sets(shapes, dtypes, seed=opts.seed, preprocessing=source.preprocessing)
    if opts.verify_inputs:
        from edgec.frontend.image import load_samples

        sets.update(load_samples(opts.verify_inputs, shapes, dtypes, source.preprocessing))
    inputs = sets["normal"]
    references = References()
    ref_model = steps.run("reference (onnxruntime)", lambda: _reference_model(source, shapes, notes))
    from edgec.frontend.quantize import is_qdq

    ref = reference.run_ort(ref_model, inputs, optimized=is_qdq(ref_model))  # an int8 file: its integer kernels
    parity = _parity(source, ref_model, prepared, inputs, references.outputs(prepared, {"normal": inputs})["normal"],
                     ref, notes, references)
    result = steps.run("passes", lambda: run_pipeline(prepared, opts.passes, inputs=inputs, dump_dir=opts.dump_ir,
                                                      progress=steps.progress, input_sets=sets,
                                                      oracle=references.oracle(prepared)))
    low = Lowered(source, prepared, result.model, result.reference, shapes, dtypes, inputs, ref,
                  [parity] + result.records, result.function_change, sets, references)
    return quantized(low, opts, steps) if opts.quantize else low


def quantized(low: Lowered, opts: BuildOptions, steps: Steps) -> Lowered:
    """``low`` with its final model quantized to int8 (:func:`edgec.flows.int8.quantize`): the quantized model
    is what the backend compiles and what the artifact must match; the quantization's record follows the passes'
    and its fidelity against the float32 source is the function change.

    Raises:
        UsageError: bad ``--calibrate``.
    """
    from edgec.flows import int8
    from edgec.frontend.quantize import is_qdq

    if is_qdq(low.prepared):
        raise UsageError(f"{opts.model} is quantized already (it holds QuantizeLinear nodes)",
                         f"build it as it is, without --quantize: edgec build {opts.model}")
    fp32 = low.references.outputs(low.prepared, low.input_sets)
    q = int8.quantize(low.final, low.shapes, low.dtypes, low.source.preprocessing, low.input_sets, fp32,
                      calibrate=opts.calibrate, samples=opts.calibration_samples, method=opts.calibration_method,
                      seed=opts.seed, steps=steps, data=opts.data)
    from edgec.frontend.integer_io import integer_io, io_quantization, quantize_sets

    # int8 in and out, as a full-integer TFLite model: the artifact takes the image's int8 codes (a quarter of
    # the float32 input's bytes) and gives the output's codes; the verification sets are quantized to match
    low.final = low.reference = integer_io(q.model)
    coded = io_quantization(low.final)["inputs"]
    low.input_sets = quantize_sets({**low.input_sets, **q.verification_sets}, coded)
    low.dtypes = {k: (np.dtype(np.int8) if k in coded else v) for k, v in low.dtypes.items()}
    if coded:  # codes over the whole int8 range (reported, not judged: int8.SYNTHETIC_SETS)
        low.input_sets["codes"] = reference.verification_sets(low.shapes, low.dtypes, seed=opts.seed)["codes"]
    low.inputs = low.input_sets["normal"]
    low.records.append(q.record)
    low.function_change = int8.function_change(low.function_change, q)
    return low


def lower_tflite(source: Source, opts: BuildOptions, steps: Steps) -> Lowered:
    """A TFLite file as it is: no frontend and no passes (they rewrite ONNX); its verification sets
    (in the file's own layout and dtypes) and the TFLite interpreter's outputs on them as the reference.

    Raises:
        UsageError: ``--passes`` other than the default, ``--input-shape`` (a TFLite file's shapes are fixed), or
            ``--quantize`` (it quantizes ONNX models).
        ModelError: the TFLite interpreter cannot run the file.
    """
    if opts.quantize:
        raise UsageError("--quantize quantizes ONNX models; a TFLite file is compiled as it is (an int8 file "
                         "builds into integer kernels by itself)",
                         "drop --quantize (and --calibrate, --samples), or build the model's ONNX form with it")
    if opts.passes not in ("default", "none"):
        raise UsageError("--passes rewrite ONNX models; a TFLite file is compiled as it is",
                         "drop --passes, or convert the model to ONNX to run passes on it")
    if opts.given_shapes:
        raise UsageError("a TFLite file's input shapes are fixed in the file; --input-shape does not apply",
                         "drop --input-shape (convert the model again for another shape)")
    model = source.model
    sets = reference.verification_sets(model.shapes, model.dtypes, seed=opts.seed)
    if opts.verify_inputs:
        from edgec.frontend.image import load_samples

        sets.update(load_samples(opts.verify_inputs, model.shapes, model.dtypes, None))
    references = References()
    ref = steps.run("reference (TFLite interpreter)", lambda: references.outputs(model, {"normal": sets["normal"]}))
    record = {"name": "frontend (TFLite file: compiled as it is, no ONNX passes)", "passed": True,
              "kind": model.info.kind, "operators": len(model.info.ops), "normalizations": []}
    return Lowered(source, model, model, model, model.shapes, model.dtypes, sets["normal"], ref["normal"], [record],
                   None, sets, references)
