"""``edgec build``: a zoo model or an ONNX file in, a verified device artifact out.

Stages (data flows one way, ``shared/README.md``):

1. source -- export a zoo model to ONNX (:mod:`edgec.frontend.export`) or load an ONNX file;
2. frontend -- check, fix input shapes, simplify (:mod:`edgec.frontend.load`), parity
   of the simplified graph against the source (PyTorch or onnxruntime);
3. passes -- ONNX -> ONNX rewrites (:mod:`edgec.passes`), each verified;
4. backend -- Relax import, compilation and linking for the target;
5. verification -- the artifact against onnxruntime on fixed inputs: run locally
   (``host``), under qemu-aarch64 (Raspberry Pi), or for CUDA targets the cubin's
   architecture plus the same graph compiled for the CPU;
6. artifact -- library, ``model.onnx``, ``manifest.json``, ``report.json``/``.md``,
   written to a temporary folder and renamed into place.
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

from edgec.artifact import file_hashes, sha256_bytes, sha256_file, staging_dir, write_json
from edgec.errors import UsageError, VerificationError
from edgec.frontend import reference
from edgec.frontend.analysis import graph_stats
from edgec.frontend.load import graph_inputs, load_onnx, parse_input_shapes, prepare_onnx
from edgec.profiling import report as reports
from edgec.targets import TargetSpec, get_target

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class BuildOptions:
    """Options of one build (the CLI flags of ``edgec build``).

    Attributes:
        model: Zoo name or path of an ``.onnx`` file.
        target: Target name (``edgec targets list``).
        out_dir: Parent folder of the artifact.
        name: Artifact folder name (default ``<model>-<target>``).
        input_shapes: ``--input-shape`` strings (``NAME=1,3,224,224``).
        weights: State dict for a zoo model.
        pretrained: Use timm's pretrained weights.
        seed: Seed for random weights and for the verification inputs.
        verify: Run the numerical check of the artifact.
        passes: Pass pipeline: ``"default"``, ``"none"`` or a comma-separated list.
        dump_ir: Folder receiving the ONNX after each pass.
        tune_db: Tuning database folder (None: the default one for the target).
        use_tune_db: Apply a tuning database when one exists.
        model_kwargs: Extra zoo factory arguments (e.g. ``width_mult``).
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
    passes: str = "default"
    dump_ir: Path | None = None
    tune_db: Path | None = None
    use_tune_db: bool = True
    model_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    """A finished build: the artifact folder and its report (``report.json`` content)."""

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


def is_onnx_path(model: str) -> bool:
    """Whether ``model`` names a file rather than a zoo entry."""
    return model.endswith(".onnx") or "/" in model or Path(model).is_file()


def _tensor_infos(values) -> list[dict[str, Any]]:
    out = []
    for v in values:
        tt = v.type.tensor_type
        out.append({"name": v.name, "shape": [d.dim_value for d in tt.shape.dim],
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name})
    return out


class _Steps:
    """Times named steps and reports them to the progress callback."""

    def __init__(self, progress: Progress | None) -> None:
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
    return Source(name=entry.name, kind="zoo", path=None, model=model,
                  sha256=sha256_bytes(model.SerializeToString()), preprocessing=pre, torch_model=torch_model)


def _torch_reference(source: Source, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import torch

    with torch.no_grad():
        out = source.torch_model(*[torch.from_numpy(x) for x in inputs.values()])
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().numpy() for o in outs]


def _frontend(source: Source, opts: BuildOptions, steps: _Steps):
    given = {} if source.kind == "zoo" else parse_input_shapes(opts.input_shapes)
    prepared, shapes = steps.run("simplify", lambda: prepare_onnx(source.model, given, source.path or source.name))
    dtypes = reference.input_dtypes(prepared)
    inputs = reference.make_inputs(shapes, dtypes, seed=opts.seed)
    ref = steps.run("reference (onnxruntime)", lambda: reference.run_ort(source.model, inputs))
    simplified = reference.run_ort(prepared, inputs)
    parity = reference.compare(simplified, ref, rtol=reference.PASS_RTOL, check_top1=False)
    parity_record = {"name": "frontend parity (simplified vs source, onnxruntime)", **parity.to_dict()}
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


def _verify(spec: TargetSpec, mod, library: Path, inputs: dict[str, np.ndarray], ref: list[np.ndarray],
            cubin_archs: list[int], progress: Progress) -> dict[str, Any]:
    base = {"reference": "onnxruntime CPU, ORT_DISABLE_ALL, source model", "emulated": False}
    args = list(inputs.values())
    if spec.verify == "local":
        from edgec.backends.tvm.runtime import run_local

        outs = run_local(library, args)
        method = "local run (host)"
    elif spec.verify == "qemu-aarch64":
        from edgec.profiling.emulator import run_artifact

        outs = run_artifact(library, args, progress=progress)
        method = "qemu-aarch64 emulated device, plain TVM runtime"
        base["emulated"] = True
    elif spec.verify == "cuda-cubin":
        want = int(re.sub(r"\D", "", spec.tvm["arch"]))
        if not cubin_archs or any(a != want for a in cubin_archs):
            raise VerificationError(f"the library's cubins are for sm_{cubin_archs or 'none'}, not {spec.tvm['arch']}",
                                    "check the CUDA toolkit (rerun with --debug)")
        progress("verifying the same graph on the CPU")
        from edgec.backends.tvm.compile import compile_module
        from edgec.backends.tvm.runtime import run_local

        with tempfile.TemporaryDirectory(prefix="edgec-cpu-check-") as tmp:
            cpu_lib = Path(tmp) / "cpu.so"
            compile_module(mod, get_target("host"), cpu_lib)
            outs = run_local(cpu_lib, args)
        method = f"cubin arch sm_{want} checked; same graph run on the host CPU (no GPU here)"
        base["cubin_archs"] = cubin_archs
    else:
        raise UsageError(f"target '{spec.name}' has unknown verify method '{spec.verify}'", "fix the target file")
    cmp = reference.compare(outs, ref, rtol=reference.BUILD_RTOL)
    return {"method": method, **base, **cmp.to_dict()}


@dataclass
class Lowered:
    """The model after the frontend and the passes, imported into Relax (shared by build, tune, profile)."""

    source: Source
    prepared: onnx.ModelProto
    final: onnx.ModelProto
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, np.dtype]
    inputs: dict[str, np.ndarray]
    reference: list[np.ndarray]
    records: list[dict[str, Any]]
    mod: Any


def lower(opts: BuildOptions, steps: _Steps) -> Lowered:
    """Source -> frontend -> passes -> Relax module, with the parity and per-pass checks.

    Raises:
        UsageError, ModelError, UnsupportedOpError, VerificationError: see :func:`build`.
    """
    from edgec.passes import run_pipeline

    source = steps.run("load model" if is_onnx_path(opts.model) else "export to ONNX", lambda: load_source(opts))
    prepared, shapes, dtypes, inputs, ref, parity = _frontend(source, opts, steps)
    final, pass_records = steps.run("passes", lambda: run_pipeline(prepared, opts.passes, inputs=inputs,
                                                                   dump_dir=opts.dump_ir, progress=steps.progress))
    from edgec.backends.tvm.importer import import_onnx

    mod = steps.run("import to Relax", lambda: import_onnx(final, shapes, dtypes))
    return Lowered(source, prepared, final, shapes, dtypes, inputs, ref, [parity] + pass_records, mod)


def check_request(opts: BuildOptions) -> TargetSpec:
    """Validate the target, toolchain and pass names before any work.

    Raises:
        UsageError, ToolchainError.
    """
    spec = get_target(opts.target)
    from edgec.backends.tvm.compile import check_toolchain
    from edgec.passes import resolve_pipeline

    resolve_pipeline(opts.passes)
    check_toolchain(spec)
    return spec


def build(opts: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build a verified artifact for a target.

    Args:
        opts: Build options.
        progress: Called with the name of each step as it starts.

    Returns:
        The artifact folder (``<out_dir>/<model>-<target>``) and its report.

    Raises:
        UsageError: unknown model/target/pass, bad ``--input-shape``, empty ``--db``.
        ModelError: unreadable or malformed model.
        UnsupportedOpError: an op TVM cannot import or lower.
        ToolchainError: cross compiler, emulator or CUDA toolkit missing.
        VerificationError: a pass or the artifact changed the outputs beyond tolerance.
        DeviceError: the emulated device failed.
    """
    start = time.perf_counter()
    say = progress or (lambda _m: None)
    spec = check_request(opts)
    from edgec.backends.tvm import tuning
    from edgec.backends.tvm.compile import compile_module

    if opts.use_tune_db:
        tuning.open_user_database(spec, opts.tune_db)  # a bad --db fails before any work
    steps = _Steps(say)
    low = lower(opts, steps)
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.pipeline import fused_module

    fused = steps.run("legalize and fuse", lambda: fused_module(low.mod, tvm_target(spec)))
    database, db_label = None, None
    if opts.use_tune_db and spec.kind == "cpu":
        tasks = steps.run("look up tuning records", lambda: tuning.extract_tasks(low.mod, spec, fused))
        database, db_label = tuning.open_database(spec, opts.tune_db, tasks)
    kernels = steps.run("count fused kernels", lambda: _kernel_counts(
        low.prepared, fused, low.shapes, low.dtypes, spec, any(p.get("applied") for p in low.records)))
    name = opts.name or f"{low.source.name}-{spec.name}"
    final_dir = Path(opts.out_dir) / name
    with staging_dir(final_dir) as tmp:
        library = tmp / spec.library
        kernels_lib = tmp / KERNELS_LIBRARY if spec.kind == "cpu" else None
        compiled = steps.run(f"compile for {spec.name}", lambda: compile_module(
            fused, spec, library, database, prefused=True, kernels_library=kernels_lib))
        steps.run("kernel and memory map", lambda: write_json(tmp / KERNELS_JSON, kernel_map(low, fused, spec)))
        if database is not None:
            compiled.tuned_tasks, compiled.total_tasks = steps.run(
                "count tuned kernels", lambda: tuning.count_tuned(low.mod, spec, database, fused))
        if opts.verify:
            verification = steps.run("verify", lambda: _verify(spec, low.mod, library, low.inputs, low.reference,
                                                               compiled.cubin_archs, say))
        else:
            verification = {"method": spec.verify, "skipped": True, "reason": "--no-verify", "passed": None,
                            "cubin_archs": compiled.cubin_archs}
        onnx.save(low.final, str(tmp / "model.onnx"))
        report = _report(opts, spec, low, compiled, verification, kernels, steps, db_label, start, tmp)
        write_json(tmp / "report.json", report)
        (tmp / "report.md").write_text(reports.render_markdown(report))
        manifest = _manifest(opts, spec, low, tmp)
        write_json(tmp / "manifest.json", manifest)
        if verification.get("passed") is False:
            raise VerificationError(
                f"the artifact's outputs differ from onnxruntime: max abs error {verification['max_abs_error']:.3g} "
                f"> {verification['tolerance']:.3g}"
                + ("" if verification.get("top1_match") is not False else ", top-1 differs"),
                "rerun with --passes none or --no-tune-db to find the cause; no artifact was written")
    return BuildResult(final_dir, report, manifest)


KERNELS_LIBRARY = "kernels.so"
KERNELS_JSON = "kernels.json"


def kernel_map(low: Lowered, fused, spec: TargetSpec) -> dict[str, Any]:
    """``kernels.json``: fused kernels in call order with shapes and ONNX nodes, and the memory plan."""
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.kernel_info import kernel_calls, live_activation_bytes, map_onnx_nodes, planned_memory

    calls = kernel_calls(fused)
    map_onnx_nodes(calls, [(n.name or n.output[0], n.op_type) for n in low.final.graph.node])
    memory = planned_memory(fused, tvm_target(spec))
    live = live_activation_bytes(calls)
    memory["peak_live_activation_bytes"] = max(live) if live else 0
    return {"calls": calls, "live_activation_bytes": live, "memory": memory,
            "library": KERNELS_LIBRARY if spec.kind == "cpu" else None}


def _kernel_counts(prepared, fused, shapes, dtypes, spec: TargetSpec, passes_changed: bool) -> dict[str, Any]:
    """Fused TVM kernels after the passes (and before them, when the passes changed the graph)."""
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.importer import import_onnx
    from edgec.backends.tvm.pipeline import conv_layout, fused_kernels, standalone_kernels

    target = tvm_target(spec)
    after = fused_kernels(None, target, fused)
    out: dict[str, Any] = {"after_passes": len(after), "standalone_after_passes": standalone_kernels(after),
                           "conv_layout": conv_layout(fused)}
    if passes_changed:
        before = fused_kernels(import_onnx(prepared, shapes, dtypes), target)
        out.update(before_passes=len(before), standalone_before_passes=standalone_kernels(before))
    else:
        out.update(before_passes=len(after), standalone_before_passes=out["standalone_after_passes"])
    return out


def _report(opts, spec, low: Lowered, compiled, verification, kernels, steps, db_label, start,
            folder) -> dict[str, Any]:
    from edgec.backends.tvm.env import versions

    final = low.final
    stats, stats_before = graph_stats(final), graph_stats(low.prepared)
    lib_bytes = compiled.library.stat().st_size
    artifact_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    report = {
        "schema": reports.SCHEMA_ID, "kind": "build", "created": reports.now_iso(),
        "model": {"name": low.source.name, "source": low.source.kind, "path": low.source.path,
                  "sha256": low.source.sha256, "params": stats.params, "param_bytes": stats.param_bytes,
                  "macs": stats.macs, "nodes": stats.nodes, "nodes_before_passes": stats_before.nodes,
                  "inputs": _tensor_infos(graph_inputs(final)), "outputs": _tensor_infos(final.graph.output)},
        "target": spec.to_dict(),
        "build": {"compile_seconds": round(compiled.compile_seconds, 3),
                  "total_seconds": round(time.perf_counter() - start, 3),
                  "artifact_bytes": artifact_bytes, "library_bytes": lib_bytes,
                  "tuned_tasks": compiled.tuned_tasks, "total_tasks": compiled.total_tasks,
                  "tuning_database": db_label, "cubin_archs": compiled.cubin_archs},
        "steps": steps.records,
        "passes": low.records,
        "kernels": kernels,
        "verification": verification,
        "versions": versions(),
    }
    reports.validate(report)
    return report


def _manifest(opts, spec, low: Lowered, folder) -> dict[str, Any]:
    from edgec.backends.tvm.env import versions

    source, final = low.source, low.final
    passes = [p for p in low.records if not p.get("name", "").startswith("frontend")]
    if source.kind == "zoo":
        weights = str(opts.weights) if opts.weights else ("timm pretrained" if opts.pretrained else "random")
    else:
        weights = "onnx"
    return {
        "edgec_manifest": 1,
        "created": reports.now_iso(),
        "versions": versions(),
        "model": {"name": source.name, "source": source.kind, "path": source.path, "source_sha256": source.sha256,
                  "seed": opts.seed if source.kind == "zoo" else None, "weights": weights},
        "target": spec.to_dict(),
        "library": spec.library,
        "inputs": _tensor_infos(graph_inputs(final)),
        "outputs": _tensor_infos(final.graph.output),
        "preprocessing": source.preprocessing,
        "steps": ["export" if source.kind == "zoo" else "load", "onnx.checker(full_check)", "fix input shapes",
                  "onnxslim (constant folding, no fusion)", "shape inference"]
                 + [f"pass:{p['name']}" for p in passes if p.get("applied")]
                 + ["tvm.relax import", "relax pipeline (legalize, fuse, apply tuning database, plan memory)",
                    f"link ({spec.cross_compiler or 'g++'})"],
        "pass_pipeline": {"spec": opts.passes,
                          "passes": [{"name": p["name"], "equivalence": p.get("equivalence"),
                                      "applied": p.get("applied", 0)} for p in passes]},
        "files": file_hashes(folder),
    }
