"""``edgec build``: a zoo model or an ONNX file in, a verified device artifact out.

Stages (data flows one way, ``docs/design.md``):

1. source -- export a zoo model to ONNX (:mod:`edgec.frontend.export`) or load an ONNX file;
2. frontend -- check, fix input shapes, simplify (:mod:`edgec.frontend.load`), parity
   of the simplified graph against the source (PyTorch or onnxruntime);
3. passes -- ONNX -> ONNX rewrites (:mod:`edgec.passes`), each verified; function-changing
   passes report their fidelity and name the model the artifact must match;
4. backend -- compile for the target (:func:`edgec.backends.get_backend`);
5. verification -- the artifact against onnxruntime on fixed inputs, on the target's
   verification device (:mod:`edgec.devices`: this machine, the emulated Raspberry Pi),
   or as the backend plans it (CUDA: cubin architecture plus the same graph on the CPU);
6. artifact -- written to a temporary folder and renamed into place
   (:mod:`edgec.artifact`).

An artifact holds one part (today's layout: files at the top) or several named
parts (``head/``, ``tail/``; :mod:`edgec.multipart`). Each part is compiled and verified
by :mod:`edgec.part`. This module orchestrates; it handles no backend IR.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.artifact import MAIN_PART, sha256_bytes, sha256_file, staging_dir
from edgec.backends import TuningOptions, get_backend
from edgec.errors import UsageError, VerificationError
from edgec.frontend import reference
from edgec.frontend.load import load_onnx, parse_input_shapes, prepare_onnx
from edgec.part import (PartRequest, Progress, Source, Steps, fail_if_unverified, reference_label, write_part)
from edgec.targets import TargetSpec, get_target

log = logging.getLogger(__name__)



@dataclass
class BuildOptions:
    """Options of one build (the CLI flags of ``edgec build``).

    Attributes:
        model: Zoo name or path of an ``.onnx`` file.
        target: Target name (``edgec targets list``) or a target data file.
        out_dir: Parent folder of the artifact.
        name: Artifact folder name (default ``<model>-<target>``).
        input_shapes: ``--input-shape`` strings (``NAME=1,3,224,224``).
        weights: State dict for a zoo model.
        pretrained: Use timm's pretrained weights.
        seed: Seed for random weights and for the verification inputs.
        verify: Run the numerical check of the artifact.
        passes: Pass pipeline: ``"default"``, ``"none"``, ``"a,b(k=v)"``, a pipeline file,
            or pass calls (:func:`edgec.passes.resolve_pipeline`).
        dump_ir: Folder receiving the ONNX after each pass.
        tune_db: Tuning database folder (None: the default one for the target).
        use_tune_db: Apply a tuning database when one exists.
        default_schedule: Give CPU kernels that no tuning record covers edgec's rule-based
            default schedule (False: TVM's single-threaded default, for benchmarks).
        model_kwargs: Extra zoo factory arguments (e.g. ``width_mult``).
        verify_inputs: The user's own verification samples (``.npz``, ``.npy`` or images), checked
            besides the generated input sets.
    """

    model: str
    target: str = "host"
    out_dir: Path = Path("out")
    name: str | None = None
    input_shapes: list[str] | None = None
    weights: Path | None = None
    pretrained: bool = False
    seed: int = 0
    verify: bool = True
    passes: Any = "default"
    dump_ir: Path | None = None
    tune_db: Path | None = None
    use_tune_db: bool = True
    default_schedule: bool = True
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    verify_inputs: list[Path] = field(default_factory=list)

    @property
    def tuning(self) -> TuningOptions:
        return TuningOptions(use_database=self.use_tune_db, database=self.tune_db,
                             default_schedule=self.default_schedule)

    def record(self) -> dict[str, Any]:
        """The options that decide what an artifact holds (recorded in its manifest, compared for reuse)."""
        return {"model": self.model, "target": self.target, "input_shapes": list(self.input_shapes or []),
                "weights": str(self.weights) if self.weights else None, "pretrained": self.pretrained,
                "seed": self.seed, "passes": _pipeline_spec(self.passes), "use_tune_db": self.use_tune_db,
                "default_schedule": self.default_schedule,
                "tune_db": str(self.tune_db) if self.tune_db else None, "model_kwargs": dict(self.model_kwargs)}


@dataclass
class BuildResult:
    """A finished build: the artifact folder, its report (``report.json``) and manifest."""

    artifact: Path
    report: dict[str, Any]
    manifest: dict[str, Any]


def default_name(opts: BuildOptions, spec: TargetSpec) -> str:
    """The artifact folder name when ``--name`` is not given: ``<model>-<target>``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(opts.model).stem) if is_onnx_path(opts.model) else opts.model
    return f"{stem}-{spec.name}"


def is_onnx_path(model: str) -> bool:
    """Whether ``model`` names a file rather than a zoo entry."""
    return model.endswith(".onnx") or "/" in model or Path(model).is_file()


def load_source(opts: BuildOptions) -> Source:
    """Export the zoo model or load the ONNX file named by ``opts.model``.

    Raises:
        UsageError, ModelError: unknown model, bad file, bad weights.
    """
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
    given = parse_input_shapes(opts.input_shapes)
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


def _frontend(source: Source, opts: BuildOptions, steps: Steps):
    given = {} if source.kind == "zoo" else parse_input_shapes(opts.input_shapes)
    notes: list[str] = []
    if source.kind == "onnx":
        from edgec.frontend.load import resolve_input_shapes

        check_input_bytes(resolve_input_shapes(source.model, given), "the model's inputs take")
    prepared, shapes = steps.run("simplify", lambda: prepare_onnx(source.model, given, source.path or source.name,
                                                                  notes))
    dtypes = reference.input_dtypes(prepared)
    inputs = reference.make_inputs(shapes, dtypes, seed=opts.seed)
    ref = steps.run("reference (onnxruntime)", lambda: reference.run_ort(source.model, inputs))
    simplified = reference.run_ort(prepared, inputs)
    parity = reference.compare(simplified, ref, rtol=reference.PASS_RTOL, check_top1=False)
    parity_record = {"name": "frontend parity (simplified vs source, onnxruntime)", **parity.to_dict(),
                     "normalizations": notes}
    if source.torch_model is not None:
        export = reference.compare(ref, _torch_reference(source, inputs), rtol=reference.BUILD_RTOL)
        parity_record["export"] = {"reference": "PyTorch", **export.to_dict()}
        if not export.passed:
            raise VerificationError(
                f"the ONNX export differs from PyTorch: max abs error {export.max_abs_error:.3g} "
                f"> {export.tolerance:.3g}", "report this model; rerun with --debug")
    if not parity.passed:
        raise VerificationError(f"simplification changed the outputs: max abs error {parity.max_abs_error:.3g}",
                                "rerun with --debug")
    return prepared, shapes, dtypes, inputs, ref, parity_record


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
        source_outputs: onnxruntime's outputs of the source model on ``inputs``.
        records: The frontend parity record, then one record per pass.
        function_change: The intended change of function (see ``PipelineResult``), or None.
        input_sets: Named verification input sets (``normal`` is ``inputs``; see
            :func:`edgec.frontend.reference.verification_sets`), with the user's samples.
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

    @property
    def passes_changed(self) -> bool:
        return any(p.get("applied") for p in self.records)


def lower(opts: BuildOptions, steps: Steps | None = None) -> Lowered:
    """Source -> frontend -> passes, with the parity and per-pass checks.

    Raises:
        UsageError, ModelError, UnsupportedOpError, VerificationError: see :func:`build`.
    """
    from edgec.passes import run_pipeline

    steps = steps or Steps()
    source = steps.run("load model" if is_onnx_path(opts.model) else "export to ONNX", lambda: load_source(opts))
    prepared, shapes, dtypes, inputs, ref, parity = _frontend(source, opts, steps)
    result = steps.run("passes", lambda: run_pipeline(prepared, opts.passes, inputs=inputs, dump_dir=opts.dump_ir,
                                                      progress=steps.progress))
    sets = reference.verification_sets(shapes, dtypes, seed=opts.seed, preprocessing=source.preprocessing)
    if opts.verify_inputs:
        from edgec.frontend.image import load_samples

        sets.update(load_samples(opts.verify_inputs, shapes, dtypes, source.preprocessing))
    return Lowered(source, prepared, result.model, result.reference, shapes, dtypes, inputs, ref,
                   [parity] + result.records, result.function_change, sets)


#: Largest total input size a build accepts (bytes; ``$EDGEC_MAX_INPUT_BYTES`` overrides): activations
#: of vision models run to tens of times their input, so beyond this a build would exhaust memory.
MAX_INPUT_BYTES = 1 << 30

#: ``--width-mult`` range the zoo's width-scalable models accept.
WIDTH_MULT_RANGE = (0.1, 4.0)


def _check_model_options(opts: BuildOptions) -> None:
    """The options that depend on the model: refused when they do not apply or are out of range."""
    import os

    from edgec.frontend.load import parse_input_shapes

    given = parse_input_shapes(opts.input_shapes)
    if is_onnx_path(opts.model):
        if not Path(opts.model).exists():
            from edgec.errors import ModelError

            raise ModelError(f"ONNX file not found: {opts.model}", "check the path, or give a zoo name (`edgec zoo list`)")
        if opts.weights is not None or opts.pretrained:
            flag = "--weights" if opts.weights is not None else "--pretrained"
            raise UsageError(f"{flag} applies to zoo models; an ONNX file carries its own weights",
                             f"drop {flag}, or give a zoo name (`edgec zoo list`)")
        if opts.model_kwargs:
            raise UsageError(f"--{next(iter(opts.model_kwargs)).replace('_', '-')} applies to zoo models, "
                             "not to an ONNX file", "drop it")
    else:
        from edgec.zoo import get

        entry = get(opts.model)  # an unknown name fails here, before the passes and the compiler are loaded
        for key, value in opts.model_kwargs.items():
            flag = f"--{key.replace('_', '-')}"
            if key not in entry.options:
                takes = sorted({e.name for e in _zoo_entries() if key in e.options and not e.alias_of})
                raise UsageError(f"{flag} does not apply to '{opts.model}'", f"models that take it: {', '.join(takes)}")
            lo, hi = WIDTH_MULT_RANGE
            if key == "width_mult" and not lo <= float(value) <= hi:
                raise UsageError(f"{flag} {value} is outside [{lo}, {hi}]", "e.g. --width-mult 0.5")
        unknown = [n for n in given if n not in (None, "input")]
        if unknown:
            raise UsageError(f"--input-shape names '{unknown[0]}', but zoo models have one input, 'input'",
                             "write --input-shape 1,3,H,W or input=1,3,H,W")
    check_input_bytes(given, "--input-shape asks for")


def check_input_bytes(shapes: dict[Any, tuple[int, ...]], what: str) -> None:
    """The inputs of ``shapes`` (4 bytes per element) fit under ``$EDGEC_MAX_INPUT_BYTES``.

    Raises:
        UsageError: they do not; ``what`` starts the message (``"--input-shape asks for"``).
    """
    limit = int(os.environ.get("EDGEC_MAX_INPUT_BYTES", MAX_INPUT_BYTES))
    need = sum(4 * int(np.prod(shape, dtype=np.float64)) for shape in shapes.values())
    if need > limit:
        from edgec.profiling.report import human_bytes

        raise UsageError(f"{what} {human_bytes(need)} of input alone, over the {human_bytes(limit)} limit",
                         "give a smaller --input-shape, or raise the limit with EDGEC_MAX_INPUT_BYTES")


def _zoo_entries():
    from edgec.zoo import list_models

    return list_models()


def _check_output(opts: BuildOptions) -> None:
    """``--name`` is a plain folder name, ``--out`` and ``--dump-ir`` folders edgec can write, before any work."""
    from edgec.artifact import MAX_NAME_BYTES, check_writable_folder

    if opts.name is not None and (not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", opts.name)
                                  or opts.name in (".", "..")):
        raise UsageError(f"--name '{opts.name}' is not a plain folder name",
                         "use letters, digits, '_', '.', '+' and '-' (not first); the artifact goes inside --out")
    if opts.name is not None and len(opts.name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"--name is {len(opts.name.encode())} bytes long", f"use at most {MAX_NAME_BYTES}")
    check_writable_folder(Path(opts.out_dir), "--out")
    if opts.dump_ir is not None:
        check_writable_folder(Path(opts.dump_ir), "--dump-ir")


def check_request(opts: BuildOptions) -> TargetSpec:
    """Validate the model's options, the output folder, the target, the pipeline, the toolchain
    and the tuning database, before any work.

    Raises:
        UsageError, TargetError, ToolchainError.
    """
    _check_model_options(opts)
    _check_output(opts)
    spec = get_target(opts.target)
    from edgec.artifact import check_replaceable

    check_replaceable(Path(opts.out_dir) / (opts.name or default_name(opts, spec)))
    from edgec.passes import resolve_pipeline

    resolve_pipeline(opts.passes)
    backend = get_backend(spec)
    backend.check(spec, opts.tuning)
    from edgec.devices import check_verification_kind

    check_verification_kind(spec.verify, target=spec.name, checks=backend.verify_checks)
    return spec




#: Timed runs of the quick latency a host build's summary shows (``edgec profile`` measures properly).


def build(opts: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build a verified one-part artifact for a target.

    Args:
        opts: Build options.
        progress: Called with the name of each step as it starts.

    Returns:
        The artifact folder (``<out_dir>/<model>-<target>``), its report and manifest.

    Raises:
        UsageError: unknown model/target/pass/option, bad ``--input-shape``, empty ``--db``.
        TargetError: a malformed target file.
        ModelError: unreadable or malformed model.
        UnsupportedOpError: an op the backend cannot import or lower.
        ToolchainError: cross compiler, emulator or CUDA toolkit missing.
        VerificationError: a pass or the artifact changed the outputs beyond tolerance.
        DeviceError: the verification device failed.
    """
    start = time.perf_counter()
    spec = check_request(opts)
    steps = Steps(progress)
    low = lower(opts, steps)
    name = opts.name or default_name(opts, spec)
    req = PartRequest(MAIN_PART, low.final, spec, low.inputs, reference=low.reference, passes=low.records,
                      function_change=low.function_change, before_passes=low.prepared, input_sets=low.input_sets)
    opts_record = {"seed": opts.seed, "passes": _pipeline_spec(opts.passes), "build_options": opts.record()}
    with staging_dir(Path(opts.out_dir) / name) as tmp:
        report, manifest, _, _ = write_part(low.source, req, tmp, steps, start, tuning=opts.tuning,
                                             verify=opts.verify, opts_record=opts_record,
                                             reference_label=reference_label(low.function_change))
        fail_if_unverified(report["verification"], "the artifact's")
    return BuildResult(Path(opts.out_dir) / name, report, manifest)


def _pipeline_spec(passes: Any) -> Any:
    if isinstance(passes, list):
        return ",".join(c.label() for c in passes)
    return passes


