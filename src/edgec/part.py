"""One part of an artifact: compile it for its target, verify it on its device, write its files.

Shared by one-part builds (:func:`edgec.build.build`) and multi-part ones
(:mod:`edgec.multipart`). A part is verified on every input set against onnxruntime's run of
its reference model (the model after any function-changing pass); its folder gets the
library, ``model.onnx``, ``kernels.json``, ``report.json``/``.md`` and ``manifest.json``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.artifact import MAIN_PART, file_hashes, tensor_infos, write_json
from edgec.backends import Compiled, TuningOptions, get_backend
from edgec.errors import VerificationError, raise_if_interrupted
from edgec.frontend import reference
from edgec.frontend.analysis import graph_stats
from edgec.frontend.load import graph_inputs
from edgec.profiling import memory as memory_report
from edgec.profiling import report as reports
from edgec.split.encoding import CutEncoding
from edgec.targets import TargetSpec, target_class

Progress = Callable[[str], None]


class Steps:
    """Times named steps and reports each to a progress callback as it starts."""

    def __init__(self, progress: Progress | None = None) -> None:
        self.records: list[dict[str, Any]] = []
        self.progress = progress or (lambda _m: None)

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        raise_if_interrupted()
        self.progress(name)
        start = time.perf_counter()
        result = fn()
        raise_if_interrupted()  # an interrupt TVM turned into an error some fallback caught
        self.records.append({"name": name, "seconds": round(time.perf_counter() - start, 3)})
        return result


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
    """A tensor flowing from one part's output to another part's input, with how it travels
    (``encoding``: :class:`edgec.split.encoding.CutEncoding`; None is fp32 as computed)."""

    src_part: str
    src_tensor: str
    dst_part: str
    dst_tensor: str
    encoding: CutEncoding | None = None

    def carry(self, value: np.ndarray) -> np.ndarray:
        """What the destination part receives when the source part produced ``value``."""
        return value if self.encoding is None else self.encoding.roundtrip(value)

    def to_dict(self) -> dict[str, Any]:
        out = {"from": {"part": self.src_part, "tensor": self.src_tensor},
               "to": {"part": self.dst_part, "tensor": self.dst_tensor}}
        if self.encoding is not None:
            out["encoding"] = self.encoding.to_dict()
        return out


def run_on_device(plan, sets: list[list[np.ndarray]], say: Progress) -> tuple[list[list[np.ndarray]], Any]:
    """Run ``plan.library`` on every input set on the verification device ``plan.device`` names.

    Returns:
        ``(outputs per set, the device)`` (an :class:`edgec.devices.Device`).

    Raises:
        UsageError: ``plan.device`` names no registered verification device.
        DeviceError, ToolchainError: the device failed, or its emulator is missing.
    """
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
    outs, device = run_on_device(plan, [list(v.values()) for v in sets.values()], say)
    record = {"method": plan.method or device.description,
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
    memory = steps.run("memory analysis", lambda: memory_report.memory_section(
        req.model, req.before_passes if any(p.get("applied") for p in req.passes) else None, compiled.memory))
    if memory:
        backend = get_backend(req.target)
        if memory.get("patch_inference") and hasattr(backend, "planned_arena_bytes") and "planned" in memory:
            memory["planned"]["planned_arena_bytes_before_passes"] = steps.run(
                "plan the arena without the passes", lambda: backend.planned_arena_bytes(req.before_passes,
                                                                                         req.target))
        report["memory"] = memory
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


def write_part(source: Source, req: PartRequest, folder: Path, steps: Steps, start: float, *,
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
    if report.get("memory") and "after_passes" in report["memory"]:
        memory_report.write_plot(report["memory"], folder / memory_report.PLOT,
                                 f"live activation memory: {source.name} on {req.target.name}")
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


def fail_if_unverified(verification: dict[str, Any], what: str) -> None:
    if verification.get("passed") is False:
        top1 = "" if verification.get("top1_match") is not False else ", top-1 differs"
        where = f" on the '{verification['worst_set']}' inputs" if verification.get("worst_set") else ""
        raise VerificationError(
            f"{what} outputs differ from onnxruntime{where}: max abs error {verification['max_abs_error']:.3g} "
            f"> {verification['tolerance']:.3g}{top1}",
            "rerun with --passes none or --no-tune-db to find the cause; no artifact was written")


def reference_label(function_change: dict[str, Any] | None) -> str:
    base = "onnxruntime CPU, ORT_DISABLE_ALL"
    if function_change:
        return f"{base}, model after {', '.join(function_change['passes'])} (the function-changing passes)"
    return f"{base}, source model"
