"""The one artifact assembler: every artifact, of one part or several, is laid out, verified, reported
and written here (:func:`assemble`); its manifests by :func:`write_artifact_manifest` (through
:func:`edgec.artifact.write_manifest`, which writes every manifest) and its reports by :func:`write_report`.

A one-part artifact (part :data:`edgec.artifact.MAIN_PART`) keeps its files at the top: the library,
``model.onnx``, ``kernels.json``, ``report.json``/``.md`` and ``manifest.json``. A multi-part artifact
(a split deployment's ``head/`` and ``tail/``) holds one such folder per part, each compiled for its own
target and verified, and at the top a ``manifest.json`` listing the parts and their connections and a
``report.json`` whose verification is that of the composition (:mod:`edgec.flows.compose`). Everything is
written to a staging folder and renamed into place (:func:`edgec.artifact.staging_dir`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx

from edgec import artifact
from edgec.artifact import MAIN_PART, staging_dir, write_json
from edgec.backends import TuningOptions
from edgec.flows.compose import check_parts, cut_fidelity, set_part_inputs, verify_composition
from edgec.flows.lower import Source
from edgec.flows.parts import (CompiledPart, Connection, InputSets, PartRequest, References, compile_part,
                               fail_if_unverified, kernel_counts, model_io, model_stats, quick_latency,
                               reference_label, save_model)
from edgec.flows.request import BuildResult
from edgec.flows.steps import Progress, Steps
from edgec.frontend import reference
from edgec.frontend.tflite import TFLiteModel
from edgec.frontend.load import graph_inputs
from edgec.profiling import memory as memory_report
from edgec.profiling import report as reports
from edgec.targets import target_class


def assemble(source: Source, whole: onnx.ModelProto, parts: list[PartRequest], connections: list[Connection],
             out_dir: Path, name: str, *, tuning: TuningOptions | None = None, verify: bool = True,
             progress: Progress | None = None, steps: Steps | None = None, start: float | None = None,
             seed: int = 0, input_sets: InputSets | None = None, references: References | None = None,
             pass_spec: Any = None, build_options: dict[str, Any] | None = None,
             task: dict[str, Any] | None = None, attachments: Callable[[Path], None] | None = None,
             fidelity_sets: InputSets | None = None, verify_timeout: float | None = None) -> BuildResult:
    """Build an artifact of one part (``[PartRequest(MAIN_PART, ...)]``, no connections) or several.

    Each part is compiled for its own target and verified on its verification device against onnxruntime's
    run of its reference model, on every input set. With several parts (listed in execution order; a
    part's inputs are the whole model's inputs of the same name or outputs of earlier parts, as
    ``connections`` say), each part's inputs are onnxruntime's outputs of the earlier parts, and the
    composition -- every part on its device, fed by the earlier parts' device outputs -- must match
    onnxruntime's run of ``whole`` within the build tolerance.

    Args:
        source: The model as it entered (recorded in manifests and reports).
        whole: The whole model (ONNX, static shapes): the composition's reference.
        parts: The parts (``model``, ``target`` set; their ``inputs`` may be empty: computed here).
        connections: Which output feeds which input (none for one part).
        out_dir: Parent folder of the artifact.
        name: Artifact folder name.
        tuning: Tuning records to apply.
        verify: Run the numerical checks.
        verify_timeout: Seconds a verification device may take per run (None: scaled to the model,
            :func:`edgec.flows.parts.run_limit_s`).
        progress: Called with each step as it starts (when ``steps`` is not given).
        steps: The build's step timer, when the build started before (the frontend's steps are reported).
        start: ``time.perf_counter()`` at the start of the build (for the report's total seconds).
        seed: Seed of the generated verification inputs (and recorded for zoo models).
        input_sets: The whole model's verification input sets (default: generated from ``seed``).
        references: onnxruntime's outputs already computed (the frontend's), reused.
        pass_spec: The pass pipeline as given (recorded in part manifests).
        build_options: The options that decide what the artifact holds (recorded for reuse by ``edgec profile``).
        task: Accuracy on labelled images (:func:`edgec.split.task.task_accuracy`), reported in
            ``function_change.task``.
        attachments: Called with the staging folder to write extra files (hashed in the manifest).
        fidelity_sets: The whole model's input sets an encoded cut's function change is measured on
            (default: the verification sets its encodings were calibrated on).

    Returns:
        The artifact folder ``<out_dir>/<name>``, its top-level report and manifest.

    Raises:
        UsageError: duplicate or reserved part names, a part input fed by nothing.
        UnsupportedOpError, ToolchainError, DeviceError: from a backend or a device.
        VerificationError: a part, or the composition, differs from onnxruntime beyond the build tolerance.
    """
    start = time.perf_counter() if start is None else start
    steps = steps or Steps(progress)
    tuning = tuning or TuningOptions()
    references = references or References()
    single = len(parts) == 1 and parts[0].name == MAIN_PART and not connections
    if input_sets is None:
        shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs(whole)}
        input_sets = reference.verification_sets(shapes, reference.input_dtypes(whole), seed, source.preprocessing)
    whole_outputs: dict[str, Any] = {}
    if single:
        parts[0].input_sets = parts[0].input_sets or input_sets
        parts[0].inputs = parts[0].inputs or parts[0].input_sets["normal"]
    else:
        check_parts(whole, parts, connections)
        whole_outputs = steps.run("reference (onnxruntime)", lambda: references.outputs(whole, input_sets))
        set_part_inputs(parts, connections, input_sets, references)
    record = {"seed": seed, "passes": pass_spec, "build_options": build_options}
    final = Path(out_dir) / name
    with staging_dir(final, "one-part" if single else "split") as tmp, tempfile.TemporaryDirectory(prefix="edgec-verify-") as work:
        done: list[CompiledPart] = []
        for i, part in enumerate(parts):
            if not single:
                steps.progress(f"part {part.name} ({part.target.name})")
            folder = tmp if single else tmp / part.name
            compiled = compile_part(part, folder, steps, references, tuning=tuning, verify=verify,
                                    reference_label=reference_label(part.function_change), workdir=Path(work),
                                    verify_timeout=verify_timeout)
            report, manifest = _write_part(source, compiled, folder, steps, start, record, first=i == 0)
            fail_if_unverified(compiled.verification, "the artifact's" if single else f"part '{part.name}':")
            done.append(compiled)
        if single:
            return BuildResult(final, report, manifest)
        composition = (steps.run("verify the composition", lambda: verify_composition(
            done, connections, whole, input_sets, whole_outputs, steps.progress, references, steps.run,
            verify_timeout)) if verify
            else {"method": "parts chained on their devices", "skipped": True, "reason": "--no-verify",
                  "passed": None})
        report = _whole_report(source, whole, done, connections, composition, steps, start, tmp)
        change = cut_fidelity(parts, connections, whole, _fidelity_sets(connections, input_sets, fidelity_sets),
                              references)
        if change is not None:
            if task is not None:
                change["task"] = task
            bottlenecks = [c.encoding.bottleneck for c in connections if c.encoding and c.encoding.bottleneck]
            if bottlenecks:
                change["bottleneck"] = bottlenecks[0]
            report["function_change"] = change
        write_report(tmp, report)
        if attachments is not None:
            attachments(tmp)
        fields = {"parts": [_part_entry(d) for d in done], "connections": [c.to_dict() for c in connections]}
        manifest = write_artifact_manifest(tmp, source, whole, report["versions"], preprocessing=source.preprocessing,
                                           fields=fields)
        fail_if_unverified(composition, "the composed parts'")
    return BuildResult(final, report, manifest)


def _fidelity_sets(connections: list[Connection], input_sets: InputSets,
                   fidelity_sets: InputSets | None) -> InputSets:
    """The sets an encoded cut's fidelity rests on: ``fidelity_sets`` when given, else the verification
    sets the encodings were calibrated on (all of them when none is named)."""
    if fidelity_sets:
        return fidelity_sets
    wanted = {n for c in connections if c.encoding is not None for n in c.encoding.calibrated_on}
    return {k: v for k, v in input_sets.items() if k in wanted} or input_sets


def write_report(folder: Path, report: dict[str, Any]) -> None:
    """Validate a report against the schema and write it as ``report.json`` and ``report.md``.

    Raises:
        jsonschema.ValidationError: the report breaks the schema (a bug of ours).
    """
    reports.validate(report)
    write_json(folder / "report.json", report)
    (folder / "report.md").write_text(reports.render_markdown(report))


def write_artifact_manifest(folder: Path, source: Source, model: onnx.ModelProto, versions: dict[str, str], *,
                   preprocessing: dict[str, Any] | None, fields: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """Write ``manifest.json`` into ``folder`` (last: it holds the sha256 of every other file there).

    Args:
        source: The model as it entered.
        model: The model whose inputs and outputs the folder's library (or composition) has.
        versions: Versions of the compiler stack.
        preprocessing: How images become the input (recorded where the part takes the image), or None.
        fields: The rest: a part's target, library, steps and passes, or an artifact's parts and connections.
        seed: Seed of a zoo model's random weights.

    Returns:
        The manifest written.
    """
    manifest = {
        "edgec_manifest": 2, "created": reports.now_iso(), "versions": versions,
        "model": {"name": source.name, "source": source.kind, "path": source.path, "source_sha256": source.sha256,
                  "seed": seed if source.kind == "zoo" else None, "weights": source.weights},
        "inputs": model_io(model)[0], "outputs": model_io(model)[1],
        "preprocessing": preprocessing, **fields,
    }
    return artifact.write_manifest(folder, manifest)


def _model_section(source: Source, model: onnx.ModelProto | TFLiteModel,
                   before: onnx.ModelProto | TFLiteModel | None = None) -> dict[str, Any]:
    stats = model_stats(model)
    section = {**source.to_dict(), "params": stats.params, "param_bytes": stats.param_bytes, "macs": stats.macs,
               "nodes": stats.nodes}
    if before is not None:
        section["nodes_before_passes"] = model_stats(before).nodes
    inputs, outputs = model_io(model)
    return {**section, "weights": source.weights, "inputs": inputs, "outputs": outputs}


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _write_part(source: Source, part: CompiledPart, folder: Path, steps: Steps, start: float,
                record: dict[str, Any], first: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """A compiled part's files: ``kernels.json``, ``model.onnx``, the memory plot, report and manifest."""
    req, compiled = part.request, part.compiled
    if compiled.kernel_map is not None:
        write_json(folder / "kernels.json", compiled.kernel_map)
    kernels = steps.run("count fused kernels", lambda: kernel_counts(part))
    speed = None
    if part.verification.get("passed") and req.target.verify == "local" and req.target.kind == "cpu":
        speed = steps.run("quick latency", lambda: quick_latency(compiled.library, req.model, req.inputs,
                                                                 req.target.cores))
    save_model(req.model, folder)
    report = _part_report(source, part, kernels, steps, start, folder)
    if speed:
        report["build"]["quick_latency"] = speed
    if report.get("memory") and "after_passes" in report["memory"]:
        memory_report.write_plot(report["memory"], folder / memory_report.PLOT,
                                 f"live activation memory: {source.name} on {req.target.name}")
    write_report(folder, report)
    passes = [p for p in req.passes if not p.get("name", "").startswith("frontend")]
    manifest = write_artifact_manifest(folder, source, req.model, compiled.versions, seed=record.get("seed"),
                              preprocessing=source.preprocessing if first else None, fields={
        "part": req.name, "target": compiled.target, "library": compiled.library.name,
        "steps": (["load", "TFLite file checks (one subgraph, static shapes, no custom op)"]
                  if isinstance(req.model, TFLiteModel) else
                  ["export" if source.kind == "zoo" else "load", "onnx.checker(full_check)", "fix input shapes",
                   "onnxslim (constant folding, no fusion)", "shape inference"])
                 + [f"pass:{p.get('label', p['name'])}" for p in passes if p.get("applied")]
                 + [f"{compiled.backend}: compile for {req.target.name}"],
        "pass_pipeline": {"spec": record.get("passes"),
                          "passes": [{"name": p["name"], "label": p.get("label", p["name"]),
                                      "options": p.get("options", {}), "equivalence": p.get("equivalence"),
                                      "applied": p.get("applied", 0)} for p in passes]},
        "function_change": req.function_change, "build_options": record.get("build_options")})
    return report, manifest


def _part_report(source: Source, part: CompiledPart, kernels: dict[str, Any], steps: Steps, start: float,
                 folder: Path) -> dict[str, Any]:
    req, compiled = part.request, part.compiled
    report = {
        "schema": reports.SCHEMA_ID, "kind": "build", "created": reports.now_iso(),
        "model": _model_section(source, req.model, req.before_passes if req.before_passes is not None else req.model),
        "target": compiled.target,
        "build": {"compile_seconds": round(compiled.compile_seconds, 3),
                  "total_seconds": round(time.perf_counter() - start, 3),
                  "artifact_bytes": _folder_bytes(folder), "library_bytes": compiled.library.stat().st_size,
                  "backend": compiled.backend, "tuned_tasks": compiled.tuned_kernels,
                  "total_tasks": compiled.total_kernels, "tuning_database": compiled.tuning_source,
                  "schedules": compiled.schedules, "fallbacks": compiled.fallbacks,
                  "target_class": target_class(req.target), "cubin_archs": compiled.cubin_archs},
        "steps": steps.records,
        "passes": req.passes,
        "kernels": kernels,
        "verification": part.verification,
        "versions": compiled.versions,
    }
    if req.name != MAIN_PART:
        report["part"] = req.name
    if req.function_change:
        report["function_change"] = req.function_change
    before = req.before_passes if req.passes_changed else None
    if isinstance(req.model, TFLiteModel):  # the per-node analysis reads ONNX graphs
        memory = {"convention": memory_report.CONVENTION,
                  "skipped": "a TFLite file (the per-node analysis reads ONNX graphs)",
                  "planned": memory_report.planned_figures(compiled.memory)}
    else:
        memory = steps.run("memory analysis",
                           lambda: memory_report.memory_section(req.model, before, compiled.memory))
    if memory:
        if memory.get("patch_inference") and "planned" in memory:
            arena = steps.run("plan the arena without the passes",
                              lambda: part.backend.planned_arena_bytes(req.before_passes, req.target))
            if arena is not None:
                memory["planned"]["planned_arena_bytes_before_passes"] = arena
        report["memory"] = memory
    return report


def _part_entry(part: CompiledPart) -> dict[str, Any]:
    """A part as the top-level manifest lists it: name, folder, target, library, inputs, outputs."""
    name, model = part.request.name, part.request.model
    return {"name": name, "path": name, "target": part.compiled.target, "library": f"{name}/{part.compiled.library.name}",
            "inputs": model_io(model)[0], "outputs": model_io(model)[1]}


def _whole_report(source: Source, whole: onnx.ModelProto, done: list[CompiledPart], connections: list[Connection],
                  composition: dict[str, Any], steps: Steps, start: float, folder: Path) -> dict[str, Any]:
    parts = [{**_part_entry(d), "verification": d.verification,
              "build": {"library_bytes": d.compiled.library.stat().st_size, "tuned_tasks": d.compiled.tuned_kernels,
                        "total_tasks": d.compiled.total_kernels,
                        "compile_seconds": round(d.compiled.compile_seconds, 3)}} for d in done]
    return {
        "schema": reports.SCHEMA_ID, "kind": "build", "created": reports.now_iso(),
        "model": _model_section(source, whole),
        "parts": parts,
        "connections": [c.to_dict() for c in connections],
        "build": {"total_seconds": round(time.perf_counter() - start, 3), "artifact_bytes": _folder_bytes(folder)},
        "steps": steps.records,
        "verification": composition,
        "versions": done[-1].compiled.versions,
    }
