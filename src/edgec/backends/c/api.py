"""The microcontroller C backend's interface (see :class:`edgec.backends.Backend`).

``compile`` takes ONNX with static shapes and writes into a folder the C sources of a static
runner (:mod:`edgec.backends.c.runner`) and of the firmware around it
(:mod:`edgec.backends.c.toolchain`), a ``Makefile`` that rebuilds the ELF elsewhere, the ELF
itself (``model.elf``) and ``model.elf.json`` (the emulated board and the ELF's inputs and outputs,
read by the ``qemu-system-arm`` device). Steps: Relax import, layout conversion, legalization and
fusion (the TVM backend's) -> static memory planning -> C kernels from TVM's ``c`` code generator ->
runner -> budget estimate -> compile, link, ``arm-none-eabi-size`` -> budget check.

``Compiled.memory`` (bytes; also ``kernels.json``'s ``memory``):

* ``planned_arena_bytes`` -- the one static activation arena, every activation buffer placed by its
  lifetime over the kernel calls (:mod:`edgec.backends.c.arena`, greedy by size). This is the figure
  a smaller activation footprint (e.g. a model rewritten to run its first stage in spatial patches)
  shows up in; ``tvm_storage_plan_bytes`` is TVM's own storage plan, for comparison;
* ``planned_activation_bytes``, ``planned_storages``, ``unplanned_activation_bytes``,
  ``peak_live_activation_bytes`` -- as for the TVM backend (:func:`edgec.backends.tvm.api.kernel_map`);
* ``workspace_bytes`` -- the static workspace stack (the largest kernel's requests), ``input_bytes``,
  ``stack_bytes``, ``weight_bytes``;
* ``text_bytes``, ``data_bytes``, ``bss_bytes`` (``arm-none-eabi-size``; bss includes the stack),
  ``flash_bytes_used`` (text + data), ``sram_bytes_used`` (data + bss), and the chip's ``flash_bytes_budget`` /
  ``sram_bytes_budget``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx

from edgec.backends import Compiled, Step, TuningOptions, VerifyPlan, untimed
from edgec.errors import UsageError
from edgec.frontend.tflite import TFLiteModel
from edgec.targets import TargetSpec

name = "c"
#: ``verify`` values this backend checks itself: none (the ELF runs on a verification device).
verify_checks: tuple[str, ...] = ()

#: Sidecar of the ELF for the verification device: ``<library>.json``.
SIDECAR_SUFFIX = ".json"


def resolved_target(spec: TargetSpec) -> dict[str, Any]:
    """The target's data as recorded (nothing is detected for a microcontroller)."""
    return spec.to_dict()


def check(spec: TargetSpec, tuning: TuningOptions) -> None:
    """Validate the target and the toolchain before any work.

    Raises:
        TargetError: TVM rejects the target's ``tvm`` data.
        ToolchainError: ``arm-none-eabi-gcc`` (or ``-size``) is missing; the message gives the apt command.
        UsageError: a tuning database was given (the C backend applies no tuning records).
    """
    from edgec.backends.c import toolchain
    from edgec.backends.tvm.compile import check_target

    check_target(spec)
    toolchain.check(spec)
    if tuning.database is not None:
        raise UsageError(f"tuning records do not apply to the microcontroller target '{spec.name}'",
                         "drop --db")


def count_kernels(model: onnx.ModelProto, spec: TargetSpec) -> dict[str, Any]:
    """The fused kernels ``model`` compiles to on ``spec``: ``{"count", "standalone"}``."""
    from edgec.backends.c.lower import c_target, fuse
    from edgec.backends.tvm.pipeline import fused_kernels, standalone_kernels

    names = fused_kernels(None, c_target(spec), fuse(model, spec))
    return {"count": len(names), "standalone": standalone_kernels(names)}


def compile(model: onnx.ModelProto, spec: TargetSpec, out_dir: Path, tuning: TuningOptions | None = None,
            step: Step = untimed) -> Compiled:
    """Compile ``model`` for the microcontroller ``spec`` into ``out_dir``.

    Args:
        model: ONNX with static input shapes (the frontend's and the passes' output).
        spec: An ``mcu`` target.
        out_dir: Existing folder receiving the sources, ``Makefile``, ``link.ld``, ``model.elf`` and
            ``model.elf.json``.
        tuning: Ignored (no tuning for C kernels).
        step: Runs and times each named step (the build's progress).

    Returns:
        A :class:`~edgec.backends.Compiled` whose ``memory`` holds the figures listed in the module
        docstring (bytes).

    Raises:
        UnsupportedOpError: an op TVM cannot import or lower, or a graph the static runner cannot express.
        BudgetError: the model needs more flash or SRAM than the chip has (checked on an estimate
            before compiling, and on the linked ELF).
        ToolchainError: the cross compiler is missing or fails.
    """
    from edgec.backends.c import budget, lower, runner, toolchain
    from edgec.backends.tvm.api import integer_kernels, kernel_map
    from edgec.tvm_setup.versions import versions
    from edgec.backends.tvm.pipeline import conv_layout, fused_kernels, standalone_kernels

    toolchain.check(spec)
    check_ops(model)
    out_dir = Path(out_dir).resolve()
    target = lower.c_target(spec)
    fused = step("import to Relax, legalize and fuse", lambda: lower.fuse(model, spec))
    start = time.perf_counter()
    scheduled, inlined = step("schedule kernels for memory", lambda: lower.schedule(fused, target))
    planned = step("plan memory", lambda: lower.plan_memory(scheduled, target))
    prog = lower.program(planned)
    kernels = step("generate C kernels", lambda: lower.kernels_c(planned, target, runner.HEADER))
    workspace = max((kernels.workspace.get(k, 0) for k, _ in prog.calls), default=0)
    sram = {"arena (inputs in it)": prog.arena_bytes, "workspace": workspace}
    budget.check(spec, model, {"weights": prog.weight_bytes}, sram, "estimated before compiling")

    files = runner.write_runner(out_dir, prog, kernels, workspace) + toolchain.write_sources(out_dir)
    with tempfile.TemporaryDirectory(prefix="edgec-mcu-") as tmp:
        frames = step(f"compile for {spec.name}", lambda: toolchain.compile_objects(out_dir, Path(tmp), spec))
        stack = toolchain.stack_need(frames)
        files += toolchain.write_build_files(out_dir, spec, stack)
        elf = step("link", lambda: toolchain.link(out_dir, Path(tmp), spec))
    seconds = time.perf_counter() - start
    size = toolchain.size(elf, spec)
    budget.check(spec, model, {"text": size.text, "data": size.data},
                 {"data": size.data, "bss (arena with the inputs, workspace, stack)": size.bss}, "linked")

    kmap = step("kernel and memory map", lambda: kernel_map(model, fused, spec))
    for call in kmap["calls"]:
        call["workspace_bytes"] = kernels.workspace.get(call["kernel"], 0)
    m = toolchain.mcu(spec)
    memory = {**kmap["memory"], "planned_arena_bytes": prog.arena_bytes,
              "tvm_storage_plan_bytes": prog.planned_bytes, "workspace_bytes": workspace,
              "input_bytes": prog.input_bytes, "stack_bytes": size.stack, "weight_bytes": prog.weight_bytes,
              "text_bytes": size.text, "data_bytes": size.data, "bss_bytes": size.bss,
              "flash_bytes_used": size.flash, "sram_bytes_used": size.sram,
              "flash_bytes_budget": m["flash_bytes"], "sram_bytes_budget": m["sram_bytes"]}
    kmap["memory"] = memory
    sidecar = write_sidecar(elf, spec, prog)
    after = fused_kernels(None, target, fused)
    return Compiled(backend=name, target=resolved_target(spec), library=elf,
                    files=sorted(set(files + [elf.name, sidecar.name])), compile_seconds=seconds,
                    kernels={"after_passes": len(after), "standalone_after_passes": standalone_kernels(after),
                             "conv_layout": conv_layout(fused), "int32_indices": kernels.int32_indices,
                             "memory_scheduled": len(inlined), **integer_kernels(fused)},
                    kernel_map=kmap, memory=memory,
                    versions={**versions(), "arm-none-eabi-gcc": toolchain.version(spec)})


#: Operators with no static C kernel: data-dependent output sizes, control flow, sorting and random
#: numbers lower to TVM runtime calls (packed functions, dynamic allocation) a bare-metal runner lacks.
NO_STATIC_KERNEL = frozenset({"TopK", "Unique", "NonZero", "NonMaxSuppression", "Loop", "If", "Scan",
                              "RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                              "Multinomial", "Bernoulli", "StringNormalizer", "TfIdfVectorizer"})


#: The same operators as TFLite names them.
NO_STATIC_KERNEL_TFLITE = frozenset({"TOPK_V2", "UNIQUE", "WHERE", "NON_MAX_SUPPRESSION_V4", "NON_MAX_SUPPRESSION_V5",
                                     "WHILE", "IF", "CALL_ONCE", "RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL",
                                     "MULTINOMIAL", "HASHTABLE", "HASHTABLE_LOOKUP", "HASHTABLE_FIND",
                                     "HASHTABLE_IMPORT", "HASHTABLE_SIZE", "VAR_HANDLE", "READ_VARIABLE",
                                     "ASSIGN_VARIABLE"})


def check_ops(model: onnx.ModelProto | TFLiteModel) -> None:
    """Refuse operators the static runner cannot run, before any work.

    Raises:
        UnsupportedOpError: names the first such operator and its node (a TFLite file's: its index).
    """
    from edgec.errors import UnsupportedOpError

    if isinstance(model, TFLiteModel):
        for index, op in model.info.ops:
            if op in NO_STATIC_KERNEL_TFLITE:
                raise UnsupportedOpError(
                    f"operator {index} ({op}) has no static C kernel for microcontroller targets (data-dependent "
                    "sizes, control flow, state, sorting or random numbers)", "build for --target host")
        return
    for node in model.graph.node:
        if node.op_type in NO_STATIC_KERNEL:
            raise UnsupportedOpError(
                f"op {node.op_type} (node '{node.name or node.output[0]}') has no static C kernel for microcontroller "
                "targets (data-dependent sizes, control flow, sorting or random numbers)",
                "run that part of the model elsewhere (edgec split), or build for --target host")


def check_weights(spec: TargetSpec, model: onnx.ModelProto, weight_bytes: int, when: str) -> None:
    """Refuse a model whose weights cannot fit the chip's flash, before any pass or compilation.

    Args:
        spec: An ``mcu`` target.
        model: The model after the frontend (names the largest weight).
        weight_bytes: A lower bound of the weights' bytes after the passes
            (:func:`edgec.passes.weight_floor`).
        when: How the figure was found, for the message.

    Raises:
        BudgetError: ``weight_bytes`` alone exceed ``mcu.flash_bytes`` (one line: budget, need, largest weight).
    """
    from edgec.backends.c import budget

    budget.check(spec, model, {"weights": weight_bytes}, {}, when)


def planned_arena_bytes(model: onnx.ModelProto, spec: TargetSpec) -> int:
    """The activation arena ``compile`` would plan for ``model`` (bytes), without generating code.

    Used to report the arena of the model before a memory pass (``patch_inference``) beside the
    one built.
    """
    from edgec.backends.c import lower

    target = lower.c_target(spec)
    scheduled, _ = lower.schedule(lower.fuse(model, spec), target)
    return lower.program(lower.plan_memory(scheduled, target)).arena_bytes


def check_tune(spec: TargetSpec, trials: int | None, minutes: float | None, device: Any) -> None:  # noqa: ARG001
    """Tuning is not available for microcontrollers: the C kernels are scheduled for memory, not searched.

    Raises:
        UsageError: always.
    """
    raise UsageError(f"edgec tune does not tune microcontroller targets ('{spec.name}'): their C kernels are "
                     "scheduled for memory, not searched", "build it directly: edgec build MODEL --target "
                     f"{spec.name}")


def tune(model: onnx.ModelProto, spec: TargetSpec, device: Any, **kwargs: Any) -> None:  # noqa: ARG001
    """See :func:`check_tune` (raises UsageError)."""
    check_tune(spec, None, None, device)


def write_sidecar(elf: Path, spec: TargetSpec, prog) -> Path:
    """``<elf>.json``: what the ``qemu-system-arm`` device needs to run the ELF.

    ``{"machine": qemu machine, "core", "inputs": [{"shape", "dtype"}], "outputs": [...]}``; the ELF
    reads ``input.bin`` and writes ``output.bin`` (raw bytes, sets back to back) in its working folder.
    """
    m = spec.extra["mcu"]

    def io(numbers):
        return [{"shape": list(prog.tensors[t].shape), "dtype": prog.tensors[t].dtype} for t in numbers]

    path = elf.with_name(elf.name + SIDECAR_SUFFIX)
    path.write_text(json.dumps({"machine": m["qemu"]["machine"], "core": m["core"], "inputs": io(prog.inputs),
                                "outputs": io(prog.outputs)}, indent=1) + "\n")
    return path


def verify_plan(model: onnx.ModelProto, spec: TargetSpec, compiled: Compiled, workdir: Path) -> VerifyPlan:
    """Run the ELF itself under ``qemu-system-arm`` on the target's emulated board."""
    m = spec.extra["mcu"]
    machine = m["qemu"]["machine"]
    return VerifyPlan(compiled.library, spec.verify,
                      f"qemu-system-arm -M {machine} ({m['core']}, emulated), the ELF itself with semihosting I/O",
                      {"qemu_machine": machine})


__all__ = ["check", "check_tune", "check_weights", "compile", "count_kernels", "name", "planned_arena_bytes", "resolved_target", "tune",
           "verify_checks", "verify_plan"]
