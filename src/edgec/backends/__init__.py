"""Backends: lower a verified ONNX model to a compiled library for a target.

One interface for every backend (:class:`Backend`); :func:`get_backend` picks the
one a target needs: the TVM Relax backend (:mod:`edgec.backends.tvm.api`) for CPU
and CUDA targets, the C backend (:mod:`edgec.backends.c.api`: a static C program and a
bare-metal ELF) for microcontrollers. Another backend plugs in beside them by
implementing the same functions and adding its target kinds to :data:`BACKENDS`.

A backend takes ONNX with static shapes (after the frontend and the passes) and
writes its files into a folder; what it produced is described by :class:`Compiled`.
Orchestration (:mod:`edgec.flows`) never touches the backend's own IR.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from edgec.targets import TargetSpec

#: Runs one named, timed step: ``step(name, fn) -> fn()`` (the build's progress and timings).
Step = Callable[[str, Callable[[], Any]], Any]


def untimed(_name: str, fn: Callable[[], Any]) -> Any:
    """A :data:`Step` that only calls ``fn``."""
    return fn()


@dataclass
class TuningOptions:
    """Which tuned schedules a compile applies.

    Attributes:
        use_database: Apply tuning records (the user's database and the shipped ones).
        database: The user's database folder (None: the default one for the target).
        default_schedule: Give CPU kernels that no record covers a rule-based default schedule
            (parallel, vectorized) instead of TVM's single-threaded scalar one.
    """

    use_database: bool = True
    database: Path | None = None
    default_schedule: bool = True


@dataclass
class Compiled:
    """What a backend produced for one model and target.

    Attributes:
        backend: Backend name (``"tvm"``).
        target: The target's data as compiled, with detected values filled in (e.g. LLVM's
            ``mcpu`` for ``native``).
        library: The deployable library (in the output folder).
        files: Names of every file the backend wrote into the output folder.
        compile_seconds: Wall time of lowering, code generation and linking (s).
        kernels: Fused-kernel facts: ``after_passes`` (count), ``standalone_after_passes``
            (element-wise/layout kernels alone), ``conv_layout`` (``NHWC``/``NCHW``).
        kernel_map: Kernels in call order with shapes, ONNX nodes and live bytes, and the
            memory plan (written as ``kernels.json``), or None.
        memory: Planned memory in bytes (``planned_activation_bytes``, ...).
        tuned_kernels: Kernels that got a schedule from tuning records (tuned or transferred).
        total_kernels: Kernels that could be tuned.
        tuning_source: Where the records came from (a database folder, "shipped ..."), or None.
        schedules: Kernels by provenance of their schedule: ``tuned`` (measured on this machine
            class), ``transferred`` (replayed from another class), ``untuned``.
        fallbacks: Kernels the code generator failed on for the target, compiled alone for a
            generic CPU: ``[{"kernel", "reason", "fallback"}]``.
        cubin_archs: SM numbers of embedded CUDA cubins, else empty.
        versions: Versions of the compiler stack.
    """

    backend: str
    target: dict[str, Any]
    library: Path
    files: list[str]
    compile_seconds: float
    kernels: dict[str, Any] = field(default_factory=dict)
    kernel_map: dict[str, Any] | None = None
    memory: dict[str, Any] = field(default_factory=dict)
    tuned_kernels: int = 0
    total_kernels: int = 0
    tuning_source: str | None = None
    schedules: dict[str, int] = field(default_factory=dict)
    fallbacks: list[dict[str, str]] = field(default_factory=list)
    cubin_archs: list[int] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass
class VerifyPlan:
    """How to check a compiled library numerically.

    Attributes:
        library: The library to run (the artifact's own, or a stand-in the device can run).
        device: The verification device: a kind registered for verification in :mod:`edgec.devices`
            (``local``, ``qemu-aarch64``, ``qemu-system-arm``, a plugin's).
        method: Human description when the plan is more than "run the library on the device".
        extra: Facts to record with the verification (e.g. ``cubin_archs``).
    """

    library: Path
    device: str
    method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    """The functions every backend module provides."""

    name: str
    #: Values of a target's ``verify`` field the backend checks itself (``cuda-cubin``); any other
    #: value names a verification device (:mod:`edgec.devices`).
    verify_checks: tuple[str, ...]

    def check(self, spec: TargetSpec, tuning: TuningOptions) -> None:
        """Validate the toolchain and tuning options before any work (raises ToolchainError/UsageError)."""

    def compile(self, model: Any, spec: TargetSpec, out_dir: Path, tuning: TuningOptions,
                step: Step = untimed) -> Compiled:
        """Compile an ONNX model (static shapes) into ``out_dir``."""

    def count_kernels(self, model: Any, spec: TargetSpec) -> dict[str, Any]:
        """Fused kernels the model would compile to: ``{"count", "standalone"}``."""

    def verify_plan(self, model: Any, spec: TargetSpec, compiled: Compiled, workdir: Path) -> VerifyPlan:
        """What to run, and where, to check ``compiled`` numerically."""

    def resolved_target(self, spec: TargetSpec) -> dict[str, Any]:
        """The target data with detected values filled in."""

    def planned_arena_bytes(self, model: Any, spec: TargetSpec) -> int | None:
        """The activation arena (bytes) the backend would plan for ``model`` without compiling it, or None
        where the backend does not plan one itself (reported beside a memory pass's arena)."""

    def check_weights(self, spec: TargetSpec, model: Any, weight_bytes: int, when: str) -> None:
        """Refuse a model whose weights (at least ``weight_bytes`` bytes) cannot fit the target's memory
        (raises BudgetError), before the passes and the compiler run."""

    def check_tune(self, spec: TargetSpec, trials: int | None, minutes: float | None, device: Any) -> None:
        """Validate a tuning request before any work (raises UsageError where the backend cannot tune)."""

    def tune(self, model: Any, spec: TargetSpec, device: Any, **kwargs: Any) -> Any:
        """Search kernel schedules for ``model``, measuring on ``device``; records go to the tuning database."""


#: Target kind -> backend module.
BACKENDS = {"cpu": "edgec.backends.tvm.api", "cuda": "edgec.backends.tvm.api",
            "mcu": "edgec.backends.c.api"}


def get_backend(spec: TargetSpec) -> Backend:
    """The backend that compiles for ``spec``.

    Raises:
        UsageError: no backend serves the target's kind.
    """
    from edgec.errors import UsageError

    if spec.kind not in BACKENDS:
        raise UsageError(f"no backend compiles for target kind '{spec.kind}' ({spec.name})",
                         f"kinds with a backend: {', '.join(sorted(BACKENDS))}")
    return importlib.import_module(BACKENDS[spec.kind])  # type: ignore[return-value]
