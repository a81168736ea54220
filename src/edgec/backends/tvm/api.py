"""The TVM backend's interface (see :class:`edgec.backends.Backend`).

``compile`` takes ONNX with static shapes and writes into a folder: the
deployable library (Relax VM executable, weights embedded), and for CPU targets
``kernels.so`` (the fused kernels alone, for per-kernel timing on a device) and
``kernels.json`` (kernels in call order with shapes, ONNX nodes, live bytes and the
memory plan). Steps: Relax import -> layout conversion, legalization and fusion
-> tuning records looked up (user database, then shipped records) -> code
generation and linking -> kernel and memory map.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.backends import Compiled, Step, TuningOptions, VerifyPlan, untimed
from edgec.errors import VerificationError
from edgec.frontend.tflite import TFLiteModel
from edgec.targets import TargetSpec

name = "tvm"
#: ``verify`` values this backend checks itself: a CUDA library's cubin architecture (:func:`verify_plan`).
verify_checks = ("cuda-cubin",)

KERNELS_LIBRARY = "kernels.so"
KERNELS_JSON = "kernels.json"


def _io(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, np.dtype]]:
    """Static input shapes and dtypes of an ONNX model (initializers listed as inputs excluded)."""
    inits = {i.name for i in model.graph.initializer}
    shapes, dtypes = {}, {}
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        shapes[v.name] = tuple(int(d.dim_value) for d in tt.shape.dim)
        dtypes[v.name] = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
    return shapes, dtypes


def import_model(model: onnx.ModelProto | TFLiteModel):
    """The Relax module of an ONNX model with static input shapes, or of a checked TFLite file.

    Raises:
        UnsupportedOpError: an op TVM cannot import.
    """
    from edgec.backends.tvm.importer import import_onnx, import_tflite
    from edgec.backends.tvm.integer import INTEGER_ATTR, is_quantized, lower_integer

    if isinstance(model, TFLiteModel):
        mod = import_tflite(model)
    else:
        shapes, dtypes = _io(model)
        mod = import_onnx(model, shapes, dtypes)
    if is_quantized(mod):
        import json

        # a TFLite file's reference is TFLite's own kernels: their fixed-point requantization
        mod, report = lower_integer(mod, requantize="tflite" if isinstance(model, TFLiteModel) else "onnxruntime")
        mod = mod.with_attr(INTEGER_ATTR, json.dumps(report.to_dict()))
    return mod


def integer_kernels(mod) -> dict[str, Any]:
    """``{"integer": {"integer_ops": {...}, "float_islands": {...}}}`` for a module :func:`import_model`
    lowered to integer kernels (:mod:`edgec.backends.tvm.integer`), else ``{}``."""
    import json

    from edgec.backends.tvm.integer import INTEGER_ATTR

    attrs = mod.attrs
    return {"integer": json.loads(str(attrs[INTEGER_ATTR]))} if attrs is not None and INTEGER_ATTR in attrs else {}


def resolved_target(spec: TargetSpec) -> dict[str, Any]:
    """``spec.to_dict()`` with ``"mcpu": "native"`` replaced by LLVM's name for this CPU."""
    from edgec.backends.tvm.compile import resolve_native

    data = spec.to_dict()
    data["tvm"] = resolve_native(spec.tvm)
    if spec.host is not None:
        data["host"] = resolve_native(spec.host)
    if spec.tvm.get("mcpu") == "native":
        data["description"] = f"{spec.description}, LLVM mcpu {data['tvm']['mcpu']}"
    return data


def check(spec: TargetSpec, tuning: TuningOptions) -> None:
    """Validate the toolchain and the tuning database before any work.

    Raises:
        TargetError: TVM or LLVM rejects the target's data (an unknown option, triple or CPU).
        ToolchainError: the linker or CUDA toolkit for the target is missing.
        UsageError: ``tuning.database`` holds no records.
    """
    from edgec.backends.tvm import tuning as tuning_db
    from edgec.backends.tvm.compile import check_target, check_toolchain

    check_target(spec)
    check_toolchain(spec)
    if tuning.use_database:
        tuning_db.open_user_database(spec, tuning.database)


def count_kernels(model: onnx.ModelProto, spec: TargetSpec) -> dict[str, Any]:
    """The fused kernels ``model`` compiles to on ``spec``: ``{"count", "standalone"}``."""
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.pipeline import fused_kernels, standalone_kernels

    names = fused_kernels(import_model(model), tvm_target(spec))
    return {"count": len(names), "standalone": standalone_kernels(names)}


def compile(model: onnx.ModelProto, spec: TargetSpec, out_dir: Path, tuning: TuningOptions | None = None,
            step: Step = untimed) -> Compiled:
    """Compile ``model`` for ``spec`` into ``out_dir``.

    Args:
        model: ONNX with static input shapes (the frontend's and the passes' output).
        spec: Target.
        out_dir: Existing folder receiving ``spec.library`` (and, for CPU targets,
            ``kernels.so``); ``kernels.json`` is returned as ``Compiled.kernel_map``.
        tuning: Which tuning records to apply (default: the user's database and the shipped records).
        step: Runs and times each named step (the build's progress).

    Returns:
        A :class:`~edgec.backends.Compiled`.

    Raises:
        UnsupportedOpError: an op TVM cannot import or lower.
        ToolchainError: linker or CUDA toolkit missing.
        UsageError: an empty ``--db``.
    """
    from edgec.backends.tvm import tuning as tuning_db
    from edgec.backends.tvm.compile import compile_module, tvm_target
    from edgec.backends.tvm.default_schedule import DEFAULT
    from edgec.backends.tvm.default_schedule import SOURCE as DEFAULT_SOURCE
    from edgec.tvm_setup.versions import versions
    from edgec.backends.tvm.pipeline import conv_layout, fused_kernels, fused_module, standalone_kernels

    tuning = tuning or TuningOptions()
    out_dir = Path(out_dir)
    mod = step("import to Relax", lambda: import_model(model))
    target = tvm_target(spec)
    fused = step("legalize and fuse", lambda: fused_module(mod, target))
    schedules = None
    if tuning.use_database and spec.kind == "cpu":
        tasks = step("look up tuning records", lambda: tuning_db.extract_tasks(mod, spec, fused))
        schedules = tuning_db.open_database(spec, tuning.database, tasks)
    database = schedules.database if schedules is not None else None
    after = fused_kernels(None, target, fused)
    kernels = {"after_passes": len(after), "standalone_after_passes": standalone_kernels(after),
               "conv_layout": conv_layout(fused), **integer_kernels(mod)}
    library = out_dir / spec.library
    kernels_lib = out_dir / KERNELS_LIBRARY if spec.kind == "cpu" else None
    result = step(f"compile for {spec.name}", lambda: compile_module(
        fused, spec, library, database, prefused=True, kernels_library=kernels_lib,
        default_schedule=tuning.default_schedule))
    kmap = step("kernel and memory map", lambda: kernel_map(model, fused, spec))
    fallen = {f["kernel"]: f for f in result.fallbacks}
    for call in kmap["calls"]:
        if call["kernel"] in fallen:
            call["fallback"] = fallen[call["kernel"]]["fallback"]
    counts: dict[str, int] = {}
    if schedules is not None:
        schedules.mark_default(result.default_scheduled)
        counts = schedules.counts()
    for call in kmap["calls"]:
        if schedules is not None and call["kernel"] in schedules.provenance:
            call["schedule"] = schedules.provenance[call["kernel"]]
        elif call["kernel"] in result.default_scheduled:
            call["schedule"] = {"kind": DEFAULT, "source": DEFAULT_SOURCE}
        elif schedules is not None:
            call["schedule"] = {"kind": tuning_db.UNTUNED, "source": "not a tunable kernel"}
    files = [p.name for p in (library, kernels_lib) if p is not None and p.exists()]
    return Compiled(backend=name, target=resolved_target(spec), library=library, files=files,
                    compile_seconds=result.compile_seconds, kernels=kernels, kernel_map=kmap,
                    memory=dict(kmap["memory"]), tuned_kernels=counts.get("tuned", 0) + counts.get("transferred", 0),
                    total_kernels=sum(counts.values()), tuning_source=schedules.label if schedules else None,
                    schedules=counts, fallbacks=result.fallbacks, cubin_archs=result.cubin_archs,
                    versions=versions())


def kernel_map(model: onnx.ModelProto, fused, spec: TargetSpec) -> dict[str, Any]:
    """``kernels.json``: fused kernels in call order with shapes and ONNX nodes, and the memory plan."""
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.kernel_info import kernel_calls, live_activation_bytes, map_onnx_nodes, planned_memory

    calls = kernel_calls(fused)
    if not isinstance(model, TFLiteModel):  # TFLite operators carry no names to map kernels back to
        map_onnx_nodes(calls, [(n.name or n.output[0], n.op_type) for n in model.graph.node])
    memory = planned_memory(fused, tvm_target(spec))
    live = live_activation_bytes(calls)
    memory["peak_live_activation_bytes"] = max(live) if live else 0
    return {"calls": calls, "live_activation_bytes": live, "memory": memory,
            "library": KERNELS_LIBRARY if spec.kind == "cpu" else None}


def verify_plan(model: onnx.ModelProto, spec: TargetSpec, compiled: Compiled, workdir: Path) -> VerifyPlan:
    """What to run where to check ``compiled``.

    CPU targets run their own library on the target's verification device. A CUDA
    library cannot run without a GPU: its cubins' architecture is checked, and the
    same graph compiled for this machine's CPU stands in for the numbers.

    Raises:
        VerificationError: the cubins are for another architecture.
    """
    if spec.verify != "cuda-cubin":
        return VerifyPlan(compiled.library, spec.verify)
    want = int(re.sub(r"\D", "", spec.tvm["arch"]))
    archs = compiled.cubin_archs
    if not archs or any(a != want for a in archs):
        raise VerificationError(f"the library's cubins are for sm_{archs or 'none'}, not {spec.tvm['arch']}",
                                "check the CUDA toolkit (rerun with --debug)")
    from edgec.targets import get_target

    host = get_target("host")
    cpu_dir = Path(tempfile.mkdtemp(prefix="cpu-check-", dir=workdir))
    cpu = compile(model, host, cpu_dir, TuningOptions(use_database=False))
    return VerifyPlan(cpu.library, "local",
                      f"cubin arch sm_{want} checked; same graph run on the host CPU (no GPU here)",
                      {"cubin_archs": archs})


def tune(model: onnx.ModelProto, spec: TargetSpec, device, **kwargs):
    """Tune the fused kernels of ``model`` for ``spec``, measuring on ``device``.

    Args:
        model: ONNX with static shapes (as ``edgec build`` compiles it, after the same passes).
        spec: Target (CPU).
        device: An :mod:`edgec.devices` device, already probed.
        **kwargs: ``trials``, ``minutes``, ``db``, ``per_iter``, ``progress``, ``seed``
            (see :func:`edgec.backends.tvm.tuning.tune`).

    Returns:
        :class:`edgec.backends.tvm.tuning.TuneResult`.

    Raises:
        UsageError: no budget, a CUDA target, or a device that cannot measure the candidates
            (this machine and foreign code, an emulator).
    """
    from edgec.backends.tvm import tuning as tuning_db

    return tuning_db.tune(import_model(model), spec, device, **kwargs)


def check_tune(spec: TargetSpec, trials: int | None, minutes: float | None, device) -> None:
    """Validate a tuning request before any work (see :func:`edgec.backends.tvm.tuning.check_tune_request`).

    Args:
        spec: Target.
        trials, minutes: Budgets.
        device: The measuring device (duck-typed: its ``check_tuning(spec)`` refuses what it cannot measure).

    Raises:
        UsageError: no budget, a CUDA target, or a device that cannot measure the candidates.
    """
    from edgec.backends.tvm.tuning import check_tune_request

    check_tune_request(spec, trials, minutes, device)


def check_weights(spec: TargetSpec, model: onnx.ModelProto, weight_bytes: int, when: str) -> None:  # noqa: ARG001
    """Nothing to refuse: CPU and GPU targets hold their weights in main memory."""


def tuning_records(folder: Path) -> int:
    """Tuning records (complete lines) in a database folder, after dropping a line torn by a stopped run.

    Args:
        folder: The database folder (``edgec tune --db``).

    Returns:
        The number of records (0 when there is no database).
    """
    from edgec.backends.tvm import tuning as tuning_db

    if folder.is_dir():
        tuning_db.repair_database(folder)
    return tuning_db.record_count(folder)


def planned_arena_bytes(model: onnx.ModelProto, spec: TargetSpec) -> int | None:  # noqa: ARG001
    """None: TVM's own storage planner places the activations (``Compiled.memory`` reports it after compiling)."""
    return None


def extract_tasks(model: onnx.ModelProto, spec: TargetSpec) -> list:
    """MetaSchedule tasks of ``model`` on ``spec`` (for exporting shipped records)."""
    from edgec.backends.tvm import tuning as tuning_db

    return tuning_db.extract_tasks(import_model(model), spec)


__all__ = ["check", "check_tune", "check_weights", "compile", "count_kernels", "extract_tasks", "kernel_map", "name", "planned_arena_bytes",
           "resolved_target", "tune", "tuning_records", "verify_checks", "verify_plan"]
