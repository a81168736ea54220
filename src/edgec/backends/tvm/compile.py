"""Compile a Relax module for a target and export the device library."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgec.backends.tvm import cuda
from edgec.tvm_setup.capture import captured_fds
from edgec.errors import CompilerError, ToolchainError, UnsupportedOpError, raise_if_interrupted
from edgec.targets import TargetSpec

log = logging.getLogger(__name__)


@dataclass
class CompileResult:
    """What a compile produced.

    Attributes:
        library: Path of the exported shared library.
        compile_seconds: Wall time of lowering, code generation and linking (s).
        cubin_archs: SM numbers of embedded cubins (CUDA targets), else empty.
        tuned_tasks: Fused kernels that got a schedule from the tuning database.
        total_tasks: Fused kernels in the module.
        fallbacks: Kernels the code generator failed on, compiled alone for a generic CPU:
            ``[{"kernel", "reason", "fallback"}]``.
        default_scheduled: Kernels that got edgec's default schedule (no tuning record).
    """

    library: Path
    compile_seconds: float
    cubin_archs: list[int] = field(default_factory=list)
    tuned_tasks: int = 0
    total_tasks: int = 0
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    default_scheduled: list[str] = field(default_factory=list)


def resolve_native(target: dict[str, Any]) -> dict[str, Any]:
    """A TVM target dict with ``"mcpu": "native"`` replaced by LLVM's name for this CPU."""
    if target.get("mcpu") != "native":
        return target
    return {**target, "mcpu": host_cpu_name()}


def host_cpu_name() -> str:
    """LLVM's name for this machine's CPU (e.g. ``znver4``, ``skylake-avx512``)."""
    import tvm.target.codegen as codegen

    return str(codegen.llvm_get_system_cpu())


def tvm_target(spec: TargetSpec):
    """The ``tvm.target.Target`` of a target spec (with its host for CUDA; ``native`` resolved)."""
    from tvm.target import Target

    if spec.host is not None:
        return Target(resolve_native(spec.tvm), host=resolve_native(spec.host))
    return Target(resolve_native(spec.tvm))


def check_target(spec: TargetSpec) -> None:
    """Check the target's TVM data against TVM and LLVM before any work.

    Raises:
        TargetError: an option TVM does not know, a triple LLVM has no backend for, or a CPU
            name LLVM does not know for that triple (it would silently fall back to ``generic``).
    """
    import tvm.target.codegen as codegen
    from tvm.target import Target

    from edgec.targets import TargetError

    llvm_archs = set(codegen.llvm_get_targets())
    for field_name, data in (("tvm", spec.tvm), ("host", spec.host)):
        if data is None:
            continue
        data = resolve_native(data)
        where = f"target '{spec.name}': {field_name}"
        triple, cpu = data.get("mtriple", ""), data.get("mcpu")
        if data.get("kind") == "llvm" and triple:
            if triple.split("-")[0] not in llvm_archs:
                raise TargetError(f"{where}.mtriple: '{triple}' names no architecture LLVM can generate",
                                  "e.g. x86_64-linux-gnu or aarch64-linux-gnu")
            if cpu and not codegen.llvm_is_valid_cpu(cpu, triple):
                raise TargetError(f"{where}.mcpu: LLVM knows no CPU '{cpu}' for {triple}",
                                  "use an LLVM CPU name, e.g. cortex-a72 or znver3")
        try:
            with captured_fds():
                Target(data)  # an unknown option raises here
        except Exception as exc:  # noqa: BLE001  TVM raises ValueError / TVMError
            raise TargetError(f"{where}: TVM rejects it: {str(exc).strip().splitlines()[-1][:200]}",
                              "fix the target file") from exc


def check_toolchain(spec: TargetSpec) -> None:
    """Make sure the linker (and for CUDA targets, a toolkit for the arch) exists.

    Raises:
        ToolchainError: the cross compiler is missing (the message gives the apt
            command), or no CUDA toolkit supports the target's arch.
    """
    compiler = spec.cross_compiler or "g++"
    if shutil.which(compiler) is None:
        pkg = spec.toolchain_apt or "g++"
        raise ToolchainError(f"the C++ toolchain for target '{spec.name}' ({compiler}) is not installed",
                             f"run: sudo apt-get install -y {pkg}")
    if spec.kind == "cuda":
        with cuda.cuda_env(spec.tvm["arch"]):
            pass


def _export(ex, spec: TargetSpec, path: Path) -> None:
    if spec.cross_compiler:
        from tvm.support import cc

        ex.export_library(str(path), fcompile=cc.cross_compiler(spec.cross_compiler))
    else:
        ex.export_library(str(path))


def compile_module(mod, spec: TargetSpec, library: str | Path, database: Any = None,
                   prefused: bool = False, kernels_library: str | Path | None = None,
                   default_schedule: bool = True) -> CompileResult:
    """Lower ``mod`` with edgec's Relax pipeline and export the device library.

    Args:
        mod: Relax ``IRModule`` from :func:`edgec.backends.tvm.importer.import_onnx`.
        spec: The target.
        library: Output path of the shared library (``.so``).
        database: MetaSchedule database to apply (tuned schedules), or None.
        prefused: ``mod`` is already the output of ``pipeline.fused_module`` (saves redoing it).
        kernels_library: Also export the compiled kernels alone (no VM, no weights) here: each
            kernel is then a top-level function, which is what per-kernel profiling times with
            ``time_evaluator`` -- also over RPC, where the VM library's kernels are not reachable.
            CPU targets only.
        default_schedule: Give CPU kernels without a tuning record edgec's default schedule
            (:mod:`edgec.backends.tvm.default_schedule`).

    Returns:
        A :class:`CompileResult`.

    Raises:
        ToolchainError: linker or CUDA toolkit missing.
        UnsupportedOpError: TVM failed to lower an operator.
    """
    import tvm

    from edgec.backends.tvm.pipeline import relax_pipeline

    check_toolchain(spec)
    library = Path(library)
    target = tvm_target(spec)
    start = time.perf_counter()
    fallbacks: list[dict[str, str]] = []
    applied: set[str] = set()

    def pipeline(db):
        return relax_pipeline(target, db, prefused, default_schedule, applied)

    try:
        if spec.kind == "cuda":
            import tvm.support.nvcc  # noqa: F401  registers the CUDA compile callback

            with cuda.cuda_env(spec.tvm["arch"]), target, captured_fds():
                ex = tvm.compile(mod, target=target, relax_pipeline=pipeline(database))
                _export(ex, spec, library)
        else:
            try:
                with captured_fds():
                    ex = tvm.compile(mod, target=target, relax_pipeline=pipeline(database))
                extra: list = []
            except Exception as exc:  # noqa: BLE001  try the per-kernel fallback before giving up
                raise_if_interrupted()  # TVM turns a Ctrl-C inside a Python pass into its own error
                if not prefused or _looks_like_toolchain(exc):
                    raise
                applied.clear()
                ex, extra, fallbacks = _compile_with_fallbacks(mod, spec, target, pipeline(database), exc)
            with captured_fds():
                for m in extra:
                    ex.mod.import_module(m)
                _export(ex, spec, library)
                if kernels_library is not None and ex.mod.imports:
                    kernels = ex.mod.imports[0]
                    for m in extra:
                        kernels.import_module(m)
                    _export(kernels, spec, Path(kernels_library))
    except (ToolchainError, CompilerError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise_if_interrupted()
        last = _last_line(exc)
        if _looks_like_toolchain(exc):
            raise ToolchainError(f"linking the library for '{spec.name}' failed: {last[:200]}",
                                 "rerun with --debug for the compiler output") from exc
        raise UnsupportedOpError(f"TVM failed to compile the model for '{spec.name}': {_cause(exc)[:400]}",
                                 "rerun with --debug for TVM's trace") from exc
    seconds = time.perf_counter() - start
    archs = cuda.cubin_archs(library) if spec.kind == "cuda" else []
    return CompileResult(library=library, compile_seconds=seconds, cubin_archs=archs, fallbacks=fallbacks,
                         default_scheduled=sorted(applied))


def _last_line(exc: Exception) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def _cause(exc: Exception) -> str:
    """TVM's reason in one line: its error message (not the tail of the IR dump TVM appends), and the Relax
    operator call it names, if the dump holds one (``CodeGenVM cannot emit ... -- at R.nn.conv2d_transpose(...)``)."""
    import re

    lines = [ln.strip() for ln in str(exc).strip().splitlines()
             if ln.strip() and not ln.strip().startswith(("# Metadata omitted", "# from tvm.script"))]
    if not lines:
        return type(exc).__name__
    head = next((ln for ln in lines if re.search(r"\w*Error|cannot|failed|Check failed", ln)), lines[0])
    head = re.sub(r"^(tvm\.error\.)?\w*Error:\s*", "", head)
    call = next((ln for ln in reversed(lines) if re.search(r"\bR\.[\w.]+\(", ln) and ln != head), None)
    if call:
        call = re.sub(r"^[\w\s:=\[\],.\"()]*?=\s*(?=R\.)", "", call)  # drop "lv3: R.Tensor(...) = "
        head = f"{head} -- at {call[:240]}"
    return head


def _looks_like_toolchain(exc: Exception) -> bool:
    last = _last_line(exc)
    return "compiler" in last.lower() or "ld" in last.split(":")[0]


def _compile_with_fallbacks(fused, spec: TargetSpec, target, pipeline, first: Exception):
    """Compile with the kernels that fail alone built for a generic CPU (:mod:`edgec.backends.tvm.fallback`).

    Raises:
        CompilerError: no single kernel fails (the module as a whole does), or a kernel fails
            for the generic CPU too.
    """
    import tvm
    from tvm.target import Target

    from edgec.backends.tvm.fallback import failing_kernels, fallback_target, split_out

    failing = failing_kernels(fused, target)
    if not failing:
        raise CompilerError(f"TVM/LLVM failed on the model for '{spec.name}', though every kernel compiles alone: "
                            f"{_cause(first)[:400]}", "rerun with --debug and report it") from first
    generic = fallback_target(resolve_native(spec.cpu_target))
    fb = Target(generic)
    try:
        with captured_fds():
            kept, built = split_out(fused, set(failing), fb)
            ex = tvm.compile(kept, target=target, relax_pipeline=pipeline)
    except Exception as exc:  # noqa: BLE001
        names = ", ".join(sorted(failing))
        raise CompilerError(f"the code generator fails on kernel {names} for '{spec.name}', also for a generic "
                            f"{generic['mcpu']} CPU: {_cause(exc)[:300]}",
                            "rerun with --debug and report it; see kernels.json for its ONNX nodes") from exc
    log.warning("kernels %s failed to compile for %s; compiled for %s instead", ", ".join(failing),
                resolve_native(spec.cpu_target).get("mcpu"), generic["mcpu"])
    return ex, built, [{"kernel": k, "reason": r, "fallback": f"compiled alone for a generic {generic['mcpu']} CPU"}
                       for k, r in failing.items()]
