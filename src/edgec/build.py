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
parts (``head/``, ``tail/``), each compiled for its own target and verified, plus
the composition of the parts verified against the whole model
(:func:`build_parts`). This module orchestrates; it handles no backend IR.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.artifact import MAIN_PART, file_hashes, sha256_bytes, sha256_file, staging_dir, tensor_infos, write_json
from edgec.backends import Compiled, TuningOptions, get_backend
from edgec.errors import UsageError, VerificationError
from edgec.frontend import reference
from edgec.frontend.analysis import graph_stats
from edgec.frontend.load import graph_inputs, load_onnx, parse_input_shapes, prepare_onnx
from edgec.profiling import report as reports
from edgec.targets import TargetSpec, get_target, target_class

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


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
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    verify_inputs: list[Path] = field(default_factory=list)

    @property
    def tuning(self) -> TuningOptions:
        return TuningOptions(use_database=self.use_tune_db, database=self.tune_db)

    def record(self) -> dict[str, Any]:
        """The options that decide what an artifact holds (recorded in its manifest, compared for reuse)."""
        return {"model": self.model, "target": self.target, "input_shapes": list(self.input_shapes or []),
                "weights": str(self.weights) if self.weights else None, "pretrained": self.pretrained,
                "seed": self.seed, "passes": _pipeline_spec(self.passes), "use_tune_db": self.use_tune_db,
                "tune_db": str(self.tune_db) if self.tune_db else None, "model_kwargs": dict(self.model_kwargs)}


@dataclass
class BuildResult:
    """A finished build: the artifact folder, its report (``report.json``) and manifest."""

    artifact: Path
    report: dict[str, Any]
    manifest: dict[str, Any]


@dataclass
class Source:
    """The model as it entered the build."""

    name: str
    kind: str  # "zoo" | "onnx"
    path: str | None
    model: onnx.ModelProto
    sha256: str
    preprocessing: dict[str, Any] | None
    torch_model: Any = None
    weights: str = "onnx"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.kind, "path": self.path, "sha256": self.sha256}


def default_name(opts: BuildOptions, spec: TargetSpec) -> str:
    """The artifact folder name when ``--name`` is not given: ``<model>-<target>``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(opts.model).stem) if is_onnx_path(opts.model) else opts.model
    return f"{stem}-{spec.name}"


def is_onnx_path(model: str) -> bool:
    """Whether ``model`` names a file rather than a zoo entry."""
    return model.endswith(".onnx") or "/" in model or Path(model).is_file()


class Steps:
    """Times named steps and reports each to a progress callback as it starts."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.progress = progress or (lambda _m: None)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        self.progress(name)
        start = time.perf_counter()
        result = fn()
        self.records.append({"name": name, "seconds": round(time.perf_counter() - start, 3)})
        return result


def load_source(opts: BuildOptions) -> Source:
    """Export the zoo model or load the ONNX file named by ``opts.model``.

    Raises:
        UsageError, ModelError: unknown model, bad file, bad weights.
    """
    if is_onnx_path(opts.model):
        path = Path(opts.model)
        model = load_onnx(path)
        return Source(name=re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem), kind="onnx", path=str(path),
                      model=model, sha256=sha256_file(path), preprocessing=None)
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
    limit = int(os.environ.get("EDGEC_MAX_INPUT_BYTES", MAX_INPUT_BYTES))
    need = sum(4 * int(np.prod(shape, dtype=np.float64)) for shape in given.values())
    if need > limit:
        from edgec.profiling.report import human_bytes

        raise UsageError(f"--input-shape asks for {human_bytes(need)} of input alone, over the {human_bytes(limit)} "
                         "limit", "give a smaller shape, or raise the limit with EDGEC_MAX_INPUT_BYTES")


def _zoo_entries():
    from edgec.zoo import list_models

    return list_models()


def _check_output(opts: BuildOptions) -> None:
    """``--name`` is a plain folder name and ``--out`` a folder edgec can write, before any work."""
    import os

    if opts.name is not None and (not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", opts.name)
                                  or opts.name in (".", "..")):
        raise UsageError(f"--name '{opts.name}' is not a plain folder name",
                         "use letters, digits, '_', '.', '+' and '-'; the artifact goes inside --out")
    out = Path(opts.out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder", "give a folder (created if missing)")
    probe = out
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} cannot be written ({probe} is not writable)", "give a folder you can write")


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
    get_backend(spec).check(spec, opts.tuning)
    return spec


# --------------------------------------------------------------------------- parts


@dataclass
class PartRequest:
    """One part to compile and verify.

    Attributes:
        name: Part name (``head``, ``tail``; :data:`MAIN_PART` for a one-part artifact).
        model: ONNX with static shapes to compile.
        reference: The model the compiled part must match (default: ``model``).
        target: Its target.
        inputs: Verification inputs of the part, by input name.
        passes: Pass records to report (frontend parity first).
        function_change: The intended function change to report, or None.
        before_passes: The model before the passes (for kernel counts), or None.
        input_sets: Named verification input sets (default: ``{"normal": inputs}``).
    """

    name: str
    model: onnx.ModelProto
    target: TargetSpec
    inputs: dict[str, np.ndarray]
    reference: onnx.ModelProto | None = None
    passes: list[dict[str, Any]] = field(default_factory=list)
    function_change: dict[str, Any] | None = None
    before_passes: onnx.ModelProto | None = None
    input_sets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def sets(self) -> dict[str, dict[str, np.ndarray]]:
        return self.input_sets or {"normal": self.inputs}


@dataclass
class Connection:
    """A tensor flowing from one part's output to another part's input."""

    src_part: str
    src_tensor: str
    dst_part: str
    dst_tensor: str

    def to_dict(self) -> dict[str, Any]:
        return {"from": {"part": self.src_part, "tensor": self.src_tensor},
                "to": {"part": self.dst_part, "tensor": self.dst_tensor}}


def _run_on_device(plan, sets: list[list[np.ndarray]], say: Progress) -> tuple[list[list[np.ndarray]], Any]:
    from edgec.devices import verification_device

    device = verification_device(plan.device)
    return device.run_sets(plan.library, sets, progress=say), device


def compare_sets(outputs: dict[str, list[np.ndarray]], expected: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """Compare per input set at the build tolerance; the worst set's figures lead the record.

    Returns:
        ``{"sets": [{"name", "max_abs_error", "max_abs_ref", "tolerance", "top1_match", "passed"...}],
        "worst_set", and the worst set's comparison fields, "passed": every set passed}``.
    """
    rows = []
    for name, outs in outputs.items():
        cmp = reference.compare(outs, expected[name], rtol=reference.BUILD_RTOL)
        rows.append({"name": name, **cmp.to_dict()})
    worst = max(rows, key=lambda r: (not r["passed"], r["max_abs_error"] / max(r["tolerance"], 1e-30)))
    return {**{k: v for k, v in worst.items() if k != "name"}, "worst_set": worst["name"], "sets": rows,
            "passed": all(r["passed"] for r in rows)}


def _verify_part(req: PartRequest, compiled: Compiled, expected: dict[str, list[np.ndarray]], workdir: Path,
                 say: Progress, reference_label: str) -> tuple[dict[str, Any], Any]:
    """Run the compiled part on its verification device on every input set and compare with ``expected``."""
    backend = get_backend(req.target)
    plan = backend.verify_plan(req.model, req.target, compiled, workdir)
    sets = req.sets()
    outs, device = _run_on_device(plan, [list(v.values()) for v in sets.values()], say)
    record = {"method": plan.method or getattr(device, "description", plan.device),
              "reference": reference_label, "emulated": bool(device.emulated), **plan.extra,
              **compare_sets(dict(zip(sets, outs)), expected)}
    return record, plan


def compile_part(req: PartRequest, folder: Path, steps: Steps, *, tuning: TuningOptions, verify: bool,
                 reference_label: str) -> tuple[Compiled, dict[str, Any], Any]:
    """Compile one part into ``folder`` and verify it against onnxruntime on its input sets.

    Returns:
        ``(compiled, verification record, verify plan or None)``.

    Raises:
        UnsupportedOpError, ToolchainError, DeviceError: from the backend or the device.
    """
    backend = get_backend(req.target)
    folder.mkdir(parents=True, exist_ok=True)
    compiled = backend.compile(req.model, req.target, folder, tuning, step=steps.run)
    if compiled.kernel_map is not None:
        write_json(folder / "kernels.json", compiled.kernel_map)
    if not verify:
        return compiled, {"method": req.target.verify, "skipped": True, "reason": "--no-verify", "passed": None,
                          "cubin_archs": compiled.cubin_archs}, None
    session = reference.ort_session(req.reference or req.model)
    expected = {name: session.run(None, xs) for name, xs in req.sets().items()}
    with tempfile.TemporaryDirectory(prefix="edgec-verify-") as work:
        record, plan = steps.run("verify", lambda: _verify_part(req, compiled, expected, Path(work), steps.progress,
                                                                reference_label))
    return compiled, record, plan


def _kernel_counts(req: PartRequest, compiled: Compiled) -> dict[str, Any]:
    k = dict(compiled.kernels)
    if req.before_passes is not None and any(p.get("applied") for p in req.passes):
        before = get_backend(req.target).count_kernels(req.before_passes, req.target)
        k.update(before_passes=before["count"], standalone_before_passes=before["standalone"])
    else:
        k.update(before_passes=k.get("after_passes"), standalone_before_passes=k.get("standalone_after_passes", []))
    return k


def _part_report(source: Source, req: PartRequest, compiled: Compiled, verification: dict[str, Any],
                 kernels: dict[str, Any], steps: Steps, start: float, folder: Path) -> dict[str, Any]:
    stats = graph_stats(req.model)
    before = graph_stats(req.before_passes) if req.before_passes is not None else stats
    report = {
        "schema": reports.SCHEMA_ID, "kind": "build", "created": reports.now_iso(),
        "model": {**source.to_dict(), "params": stats.params, "param_bytes": stats.param_bytes,
                  "macs": stats.macs, "nodes": stats.nodes, "nodes_before_passes": before.nodes,
                  "weights": source.weights,
                  "inputs": tensor_infos(graph_inputs(req.model)), "outputs": tensor_infos(req.model.graph.output)},
        "target": compiled.target,
        "build": {"compile_seconds": round(compiled.compile_seconds, 3),
                  "total_seconds": round(time.perf_counter() - start, 3),
                  "artifact_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
                  "library_bytes": compiled.library.stat().st_size, "backend": compiled.backend,
                  "tuned_tasks": compiled.tuned_kernels, "total_tasks": compiled.total_kernels,
                  "tuning_database": compiled.tuning_source, "schedules": compiled.schedules,
                  "fallbacks": compiled.fallbacks,
                  "target_class": target_class(req.target), "cubin_archs": compiled.cubin_archs},
        "steps": steps.records,
        "passes": req.passes,
        "kernels": kernels,
        "verification": verification,
        "versions": compiled.versions,
    }
    if req.name != MAIN_PART:
        report["part"] = req.name
    if req.function_change:
        report["function_change"] = req.function_change
    reports.validate(report)
    return report


def _part_manifest(source: Source, req: PartRequest, compiled: Compiled, opts_record: dict[str, Any],
                   folder: Path) -> dict[str, Any]:
    passes = [p for p in req.passes if not p.get("name", "").startswith("frontend")]
    return {
        "edgec_manifest": 2,
        "created": reports.now_iso(),
        "versions": compiled.versions,
        "model": {"name": source.name, "source": source.kind, "path": source.path, "source_sha256": source.sha256,
                  "seed": opts_record.get("seed") if source.kind == "zoo" else None, "weights": source.weights},
        "part": req.name,
        "target": compiled.target,
        "library": compiled.library.name,
        "inputs": tensor_infos(graph_inputs(req.model)),
        "outputs": tensor_infos(req.model.graph.output),
        "preprocessing": source.preprocessing if req.name in (MAIN_PART, opts_record.get("first_part")) else None,
        "steps": ["export" if source.kind == "zoo" else "load", "onnx.checker(full_check)", "fix input shapes",
                  "onnxslim (constant folding, no fusion)", "shape inference"]
                 + [f"pass:{p.get('label', p['name'])}" for p in passes if p.get("applied")]
                 + [f"{compiled.backend}: compile for {req.target.name}"],
        "pass_pipeline": {"spec": opts_record.get("passes"),
                          "passes": [{"name": p["name"], "label": p.get("label", p["name"]),
                                      "options": p.get("options", {}), "equivalence": p.get("equivalence"),
                                      "applied": p.get("applied", 0)} for p in passes]},
        "function_change": req.function_change,
        "build_options": opts_record.get("build_options"),
        "files": file_hashes(folder),
    }


def _write_part(source: Source, req: PartRequest, folder: Path, steps: Steps, start: float, *,
                tuning: TuningOptions, verify: bool, opts_record: dict[str, Any],
                reference_label: str) -> tuple[dict[str, Any], dict[str, Any], Compiled, Any]:
    compiled, verification, plan = compile_part(req, folder, steps, tuning=tuning, verify=verify,
                                                reference_label=reference_label)
    kernels = steps.run("count fused kernels", lambda: _kernel_counts(req, compiled))
    speed = None
    if verify and verification.get("passed") and req.target.verify == "local" and req.target.kind == "cpu":
        speed = steps.run("quick latency", lambda: quick_latency(compiled.library, req.model, req.inputs,
                                                                 req.target.cores))
    onnx.save(req.model, str(folder / "model.onnx"))
    report = _part_report(source, req, compiled, verification, kernels, steps, start, folder)
    if speed:
        report["build"]["quick_latency"] = speed
        reports.validate(report)
    write_json(folder / "report.json", report)
    (folder / "report.md").write_text(reports.render_markdown(report))
    manifest = _part_manifest(source, req, compiled, opts_record, folder)
    write_json(folder / "manifest.json", manifest)
    return report, manifest, compiled, plan


#: Timed runs of the quick latency a host build's summary shows (``edgec profile`` measures properly).
QUICK_RUNS = 10


def quick_latency(library: Path, model: onnx.ModelProto, inputs: dict[str, np.ndarray],
                  threads: int) -> dict[str, Any]:
    """A quick p50 of the artifact beside onnxruntime's (all optimisations), same inputs and threads.

    Returns:
        ``{"runs", "threads", "edgec_ms_p50", "onnxruntime_ms_p50", "ratio_vs_onnxruntime_p50"}``.
    """
    from edgec.devices.local import LocalDevice
    from edgec.profiling.timing import LatencyStats, interleaved

    run = LocalDevice(threads).prepare(library, list(inputs.values()))
    sess = reference.ort_session(model, optimized=True, threads=threads)
    samples = interleaved({"edgec": run, "onnxruntime": lambda: sess.run(None, inputs)}, repeats=QUICK_RUNS,
                          warmup=2)
    p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
    return {"runs": QUICK_RUNS, "threads": threads, "edgec_ms_p50": p50["edgec"],
            "onnxruntime_ms_p50": p50["onnxruntime"], "ratio_vs_onnxruntime_p50": p50["edgec"] / p50["onnxruntime"]}


def _fail_if_unverified(verification: dict[str, Any], what: str) -> None:
    if verification.get("passed") is False:
        top1 = "" if verification.get("top1_match") is not False else ", top-1 differs"
        where = f" on the '{verification['worst_set']}' inputs" if verification.get("worst_set") else ""
        raise VerificationError(
            f"{what} outputs differ from onnxruntime{where}: max abs error {verification['max_abs_error']:.3g} "
            f"> {verification['tolerance']:.3g}{top1}",
            "rerun with --passes none or --no-tune-db to find the cause; no artifact was written")


def _reference_label(function_change: dict[str, Any] | None) -> str:
    base = "onnxruntime CPU, ORT_DISABLE_ALL"
    if function_change:
        return f"{base}, model after {', '.join(function_change['passes'])} (the function-changing passes)"
    return f"{base}, source model"


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
        report, manifest, _, _ = _write_part(low.source, req, tmp, steps, start, tuning=opts.tuning,
                                             verify=opts.verify, opts_record=opts_record,
                                             reference_label=_reference_label(low.function_change))
        _fail_if_unverified(report["verification"], "the artifact's")
    return BuildResult(Path(opts.out_dir) / name, report, manifest)


def _pipeline_spec(passes: Any) -> Any:
    if isinstance(passes, list):
        return ",".join(c.label() for c in passes)
    return passes


def build_parts(source: Source, whole: onnx.ModelProto, parts: list[PartRequest], connections: list[Connection],
                out_dir: Path, name: str, *, tuning: TuningOptions | None = None, verify: bool = True,
                progress: Progress | None = None, seed: int = 0) -> BuildResult:
    """Build a multi-part artifact: each part compiled for its own target and verified, and
    the composition of the parts verified against the whole model.

    The parts are listed in execution order; a part's inputs are the whole model's inputs
    of the same name or outputs of earlier parts (``connections``). Each part is verified
    on its own inputs (the whole model's inputs, or onnxruntime's outputs of the earlier
    parts); the composition runs every part on its verification device, each fed by the
    earlier parts' device outputs, and must match onnxruntime's run of ``whole`` within the
    build tolerance.

    Args:
        source: The model as it entered (recorded in manifests and reports).
        whole: The whole model (ONNX, static shapes), the composition's reference.
        parts: The parts, in execution order (``model``, ``target`` set; ``inputs`` may be
            empty: they are computed here).
        connections: Which output feeds which input.
        out_dir: Parent folder of the artifact.
        name: Artifact folder name.
        tuning: Tuning records to apply.
        verify: Run the numerical checks.
        progress: Called with each step as it starts.
        seed: Seed of the verification inputs.

    Returns:
        The artifact (``<out_dir>/<name>/<part>/`` per part, ``manifest.json`` and ``report.json``
        at the top).

    Raises:
        UsageError: duplicate or reserved part names, a part input fed by nothing.
        VerificationError: a part, or the composition, differs from onnxruntime.
        (and what :func:`build` raises)
    """
    start = time.perf_counter()
    tuning = tuning or TuningOptions()
    steps = Steps(progress)
    _check_parts(whole, parts, connections)
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs(whole)}
    whole_sets = reference.verification_sets(shapes, reference.input_dtypes(whole), seed, source.preprocessing)
    session = reference.ort_session(whole)
    whole_outputs = steps.run("reference (onnxruntime)",
                              lambda: {k: session.run(None, xs) for k, xs in whole_sets.items()})
    # each part's verification inputs: the whole model's inputs, or earlier parts' onnxruntime outputs, per set
    for part in parts:
        part.input_sets = {}
    for set_name, whole_inputs in whole_sets.items():
        values: dict[tuple[str, str], np.ndarray] = {}
        for part in parts:
            xs = {n: _feed(part.name, n, whole_inputs, values, connections) for n in _input_names(part.model)}
            part.input_sets[set_name] = xs
            outs = reference.run_ort(part.reference or part.model, xs)
            for o, arr in zip(part.model.graph.output, outs):
                values[(part.name, o.name)] = arr
    for part in parts:
        part.inputs = part.input_sets["normal"]
    final = Path(out_dir) / name
    records: list[dict[str, Any]] = []
    with staging_dir(final) as tmp:
        plans = {}
        for part in parts:
            steps.progress(f"part {part.name} ({part.target.name})")
            report, manifest, compiled, plan = _write_part(
                source, part, tmp / part.name, steps, start, tuning=tuning, verify=verify,
                opts_record={"seed": seed, "first_part": parts[0].name}, reference_label=_reference_label(None))
            _fail_if_unverified(report["verification"], f"part '{part.name}':")
            plans[part.name] = plan
            records.append({"name": part.name, "path": part.name, "target": compiled.target,
                            "library": f"{part.name}/{compiled.library.name}",
                            "inputs": manifest["inputs"], "outputs": manifest["outputs"],
                            "verification": report["verification"],
                            "build": {k: report["build"][k] for k in ("library_bytes", "tuned_tasks", "total_tasks",
                                                                      "compile_seconds")}})
        composition = (steps.run("verify the composition", lambda: _verify_composition(
            parts, plans, connections, whole, whole_sets, whole_outputs, steps.progress)) if verify
            else {"method": "parts chained on their devices", "skipped": True, "reason": "--no-verify",
                  "passed": None})
        report = _whole_report(source, whole, records, connections, composition, steps, start, tmp,
                               versions=compiled.versions)
        write_json(tmp / "report.json", report)
        (tmp / "report.md").write_text(reports.render_markdown(report))
        manifest = {"edgec_manifest": 2, "created": reports.now_iso(), "versions": report["versions"],
                    "model": {"name": source.name, "source": source.kind, "path": source.path,
                              "source_sha256": source.sha256, "weights": source.weights},
                    "inputs": tensor_infos(graph_inputs(whole)), "outputs": tensor_infos(whole.graph.output),
                    "preprocessing": source.preprocessing,
                    "parts": [{k: r[k] for k in ("name", "path", "target", "library", "inputs", "outputs")}
                              for r in records],
                    "connections": [c.to_dict() for c in connections],
                    "files": file_hashes(tmp)}
        write_json(tmp / "manifest.json", manifest)
        _fail_if_unverified(composition, "the composed parts'")
    return BuildResult(final, report, manifest)


def build_split(opts: BuildOptions, cut: str, head_target: str, tail_target: str,
                progress: Progress | None = None) -> BuildResult:
    """Build a head/tail artifact: ``opts.model`` after the frontend and the passes, cut at tensor ``cut``,
    the head compiled for ``head_target`` and the tail for ``tail_target``, each verified on its
    device, and their composition verified against the whole model.

    Raises:
        UsageError: ``cut`` is not a valid cut (see ``edgec split MODEL --list``), unknown targets.
        (and what :func:`build` and :func:`build_parts` raise)
    """
    from edgec.split import split_model

    head_opts = BuildOptions(**{**opts.__dict__, "target": head_target})
    tail_opts = BuildOptions(**{**opts.__dict__, "target": tail_target})
    head_spec, tail_spec = check_request(head_opts), check_request(tail_opts)
    steps = Steps(progress)
    low = lower(opts, steps)
    head, tail = split_model(low.final, cut)
    name = opts.name or f"{low.source.name}-split-{head_spec.name}-{tail_spec.name}"
    parts = [PartRequest("head", head, head_spec, {}, passes=low.records),
             PartRequest("tail", tail, tail_spec, {}, passes=low.records)]
    return build_parts(low.source, low.final, parts, [Connection("head", cut, "tail", cut)], Path(opts.out_dir), name,
                       tuning=opts.tuning, verify=opts.verify, progress=progress, seed=opts.seed)


def _input_names(model: onnx.ModelProto) -> list[str]:
    return [i.name for i in graph_inputs(model)]


def _feed(part: str, tensor: str, whole_inputs: dict[str, np.ndarray], values: dict[tuple[str, str], np.ndarray],
          connections: list[Connection]) -> np.ndarray:
    for c in connections:
        if c.dst_part == part and c.dst_tensor == tensor:
            return values[(c.src_part, c.src_tensor)]
    return whole_inputs[tensor]


def _check_parts(whole: onnx.ModelProto, parts: list[PartRequest], connections: list[Connection]) -> None:
    names = [p.name for p in parts]
    if len(set(names)) != len(names) or MAIN_PART in names:
        raise UsageError(f"part names must be unique and not '{MAIN_PART}': {', '.join(names)}",
                         "name the parts e.g. head and tail")
    for p in names:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", p):
            raise UsageError(f"part name '{p}' is not a plain folder name", "use letters, digits, _ and -")
    whole_in = set(_input_names(whole))
    produced: set[tuple[str, str]] = set()
    for part in parts:
        for n in _input_names(part.model):
            fed = [c for c in connections if c.dst_part == part.name and c.dst_tensor == n]
            if fed and (fed[0].src_part, fed[0].src_tensor) not in produced:
                raise UsageError(f"part '{part.name}' input '{n}' is fed by {fed[0].src_part}:{fed[0].src_tensor}, "
                                 "which no earlier part produces", "list the parts in execution order")
            if not fed and n not in whole_in:
                raise UsageError(f"part '{part.name}' input '{n}' is fed by nothing",
                                 "connect it to an earlier part's output")
        produced |= {(part.name, o.name) for o in part.model.graph.output}


def _verify_composition(parts: list[PartRequest], plans: dict[str, Any], connections: list[Connection],
                        whole: onnx.ModelProto, whole_sets: dict[str, dict[str, np.ndarray]],
                        whole_outputs: dict[str, list[np.ndarray]], say: Progress) -> dict[str, Any]:
    """Chain the parts on their verification devices, per input set, and compare with the whole model."""
    values = {k: {} for k in whole_sets}
    emulated = False
    for part in parts:
        args = [[_feed(part.name, n, whole_sets[k], values[k], connections) for n in _input_names(part.model)]
                for k in whole_sets]
        outs, device = _run_on_device(plans[part.name], args, say)
        emulated = emulated or bool(device.emulated)
        for k, set_outs in zip(whole_sets, outs):
            for o, arr in zip(part.model.graph.output, set_outs):
                values[k][(part.name, o.name)] = arr
    finals = {k: [_whole_output(o.name, parts, values[k]) for o in whole.graph.output] for k in whole_sets}
    return {"method": "parts chained on their verification devices: " + " -> ".join(
        f"{p.name} ({plans[p.name].device})" for p in parts),
            "reference": "onnxruntime CPU, ORT_DISABLE_ALL, whole model", "emulated": emulated,
            **compare_sets(finals, whole_outputs)}


def _whole_output(name: str, parts: list[PartRequest], values: dict[tuple[str, str], np.ndarray]) -> np.ndarray:
    for part in reversed(parts):
        if (part.name, name) in values:
            return values[(part.name, name)]
    raise UsageError(f"no part produces the model output '{name}'", "the last part must end at the model's outputs")


def _whole_report(source: Source, whole: onnx.ModelProto, parts: list[dict[str, Any]],
                  connections: list[Connection], composition: dict[str, Any], steps: Steps, start: float,
                  folder: Path, versions: dict[str, str]) -> dict[str, Any]:
    stats = graph_stats(whole)
    report = {
        "schema": reports.SCHEMA_ID, "kind": "build", "created": reports.now_iso(),
        "model": {**source.to_dict(), "params": stats.params, "param_bytes": stats.param_bytes, "macs": stats.macs,
                  "nodes": stats.nodes, "weights": source.weights,
                  "inputs": tensor_infos(graph_inputs(whole)), "outputs": tensor_infos(whole.graph.output)},
        "parts": parts,
        "connections": [c.to_dict() for c in connections],
        "build": {"total_seconds": round(time.perf_counter() - start, 3),
                  "artifact_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())},
        "steps": steps.records,
        "verification": composition,
        "versions": versions,
    }
    reports.validate(report)
    return report
