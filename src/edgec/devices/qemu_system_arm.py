"""An emulated Cortex-M board: a bare-metal ELF run under ``qemu-system-arm`` with semihosting.

Verifies the microcontroller builds (the ``qemu-system-arm`` verification of the ``cortex-m7`` /
``cortex-m4`` targets). The ELF is the artifact's own (``model.elf``); beside it,
``model.elf.json`` names the emulated board (``machine``: ``mps2-an500`` for Cortex-M7,
``mps2-an386`` for Cortex-M4) and the ELF's inputs and outputs (``shape``, ``dtype``).

Protocol (the firmware's ``main.c``, written by the C backend): in a fresh temporary folder,
``input.bin`` holds every input set back to back (each the inputs' raw little-endian bytes in graph
order); the ELF, started as ``qemu-system-arm -M MACHINE -nographic -monitor none -serial none
-semihosting-config enable=on,target=native -kernel model.elf``, runs the model on each set,
writes ``output.bin`` the same way through semihosting file calls, and exits 0 (non-zero after
a message on the semihosting console). Timings under emulation say nothing about a real chip;
Debian's QEMU has no TCG plugins for cycle counts (``docs/tvm-0.27.md``, "Microcontrollers").
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgec.devices.session import Progress
from edgec.devices.url import DeviceURL
from edgec.errors import DeviceError, ToolchainError, UsageError

if TYPE_CHECKING:
    from edgec.targets import TargetSpec

QEMU = "qemu-system-arm"
APT_PACKAGE = "qemu-system-arm"

#: Suffix of the ELF's sidecar: ``model.elf`` -> ``model.elf.json``.
SIDECAR_SUFFIX = ".json"


def check_tools() -> None:
    """Raise ToolchainError naming the apt command when ``qemu-system-arm`` is missing."""
    if shutil.which(QEMU) is None:
        raise ToolchainError(f"the Cortex-M emulator {QEMU} is not installed",
                             f"run: sudo apt-get install -y {APT_PACKAGE} (or pass --no-verify)")


def read_sidecar(library: str | Path) -> dict[str, Any]:
    """The ELF's sidecar (``<library>.json``): ``machine``, ``core``, ``inputs``, ``outputs``.

    Raises:
        DeviceError: it is missing or malformed.
    """
    path = Path(str(library) + SIDECAR_SUFFIX)
    try:
        data = json.loads(path.read_text())
        _ = data["machine"], data["inputs"], data["outputs"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeviceError(f"{path.name} beside {Path(library).name} is missing or malformed ({exc})",
                          "rebuild the artifact with edgec build --target cortex-m7 (or cortex-m4)") from exc
    return data


def command(machine: str, elf: str = "model.elf") -> list[str]:
    """The qemu-system-arm command line running ``elf`` on ``machine`` with semihosting."""
    return [QEMU, "-M", machine, "-nographic", "-monitor", "none", "-serial", "none",
            "-semihosting-config", "enable=on,target=native", "-kernel", elf]


def run_elf(library: str | Path, sets: list[list[np.ndarray]], timeout: float = 600,
            progress: Progress | None = None) -> tuple[list[list[np.ndarray]], float]:
    """Run the ELF once on every input set under qemu-system-arm.

    Args:
        library: ``model.elf`` with its ``model.elf.json`` beside it.
        sets: Input sets, each the input arrays in graph order.
        timeout: Seconds before the emulated run is killed.

    Returns:
        ``(outputs per set, wall seconds of the qemu run)``.

    Raises:
        ToolchainError: qemu-system-arm is missing.
        DeviceError: an input does not match the ELF's, or the run failed, timed out or wrote
            too little.
    """
    check_tools()
    meta = read_sidecar(library)
    ins, outs = meta["inputs"], meta["outputs"]
    blobs = []
    for xs in sets:
        if len(xs) != len(ins):
            raise DeviceError(f"{len(xs)} inputs given, the ELF takes {len(ins)}", "pass the model's inputs")
        for x, spec in zip(xs, ins):
            if list(np.shape(x)) != spec["shape"]:
                raise DeviceError(f"an input of shape {list(np.shape(x))}, the ELF takes {spec['shape']}",
                                  "pass inputs of the compiled shapes")
            blobs.append(np.ascontiguousarray(x, dtype=np.dtype(spec["dtype"]).newbyteorder("<")).tobytes())
    if progress:
        progress(f"running the ELF under {QEMU} -M {meta['machine']} (limit {timeout:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="edgec-qemu-arm-") as tmp:
        work = Path(tmp)
        shutil.copy(library, work / "model.elf")
        (work / "input.bin").write_bytes(b"".join(blobs))
        start = time.perf_counter()
        try:
            proc = subprocess.run(command(meta["machine"]), cwd=work, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"the ELF did not finish under {QEMU} within {timeout:.0f} s",
                              "give it longer: --verify-timeout SECONDS or EDGEC_VERIFY_TIMEOUT=SECONDS; "
                              "or skip the check: --no-verify") from exc
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            said = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()][-1:] or ["no output"]
            raise DeviceError(f"the ELF failed under {QEMU} -M {meta['machine']} (exit {proc.returncode}): "
                              f"{said[0][:240]}", "rerun with --debug; check the target's core and FPU")
        data = (work / "output.bin").read_bytes() if (work / "output.bin").exists() else b""
    sizes = [int(np.prod(o["shape"])) * np.dtype(o["dtype"]).itemsize for o in outs]
    if len(data) != sum(sizes) * len(sets):
        raise DeviceError(f"the ELF wrote {len(data)} bytes of output, {sum(sizes) * len(sets)} expected",
                          "rerun with --debug")
    results, at = [], 0
    for _ in sets:
        one = []
        for o, n in zip(outs, sizes):
            one.append(np.frombuffer(data[at:at + n], dtype=np.dtype(o["dtype"]).newbyteorder("<"))
                       .reshape(o["shape"]).astype(o["dtype"]))
            at += n
        results.append(one)
    return results, seconds


class QemuSystemArmDevice:
    """An emulated Cortex-M board (``--device qemu-system-arm``): the ELF under qemu-system-arm.

    ``run`` and ``run_sets`` execute the artifact's ELF (verification). There is no TVM runtime on
    a microcontroller: ``open`` (timing sessions) raises. Emulated: never device speed.
    """

    emulated = True
    description = "qemu-system-arm emulated Cortex-M board, the ELF with semihosting I/O"

    def __init__(self) -> None:
        self.url = DeviceURL("qemu-system-arm")
        self.last_run_seconds: float | None = None

    @classmethod
    def from_url(cls, url: DeviceURL, arch: str | None = None,  # noqa: ARG003
                 threads: int | None = None) -> QemuSystemArmDevice:
        """The registry's factory (``qemu-system-arm``)."""
        return cls()

    def check_tuning(self, spec: TargetSpec | None = None) -> None:  # noqa: ARG002
        """Refuse: there is no TVM runtime on a microcontroller to measure candidates with.

        Raises:
            UsageError: always.
        """
        raise UsageError("tuning cannot measure on a 'qemu-system-arm' device",
                         "tuning is not available for microcontrollers: build without tuning")

    def tuning_runner(self, timeout_s: float = 120, evaluator_config: Any = None):  # noqa: ARG002
        """Not available (see :meth:`check_tuning`).

        Raises:
            UsageError: always.
        """
        self.check_tuning()

    def probe(self, timeout: float = 10.0) -> None:  # noqa: ARG002
        """Check that qemu-system-arm is installed.

        Raises:
            ToolchainError: it is not (names the apt command).
        """
        check_tools()

    def run(self, library: str | Path, inputs: list[np.ndarray], timeout: float = 600,
            progress: Progress | None = None) -> list[np.ndarray]:
        """Run the ELF once on one input set; outputs in graph order (see :func:`run_elf`)."""
        return self.run_sets(library, [inputs], timeout=timeout, progress=progress)[0]

    def run_sets(self, library: str | Path, sets: list[list[np.ndarray]], timeout: float = 600,
                 progress: Progress | None = None) -> list[list[np.ndarray]]:
        """Run several input sets in one emulator start; outputs per set (see :func:`run_elf`)."""
        outs, self.last_run_seconds = run_elf(library, sets, timeout=timeout, progress=progress)
        return outs

    def open(self, timeout_s: float = 60.0, progress: Progress | None = None):  # noqa: ARG002
        """Not available: a microcontroller has no TVM runtime to time kernels through.

        Raises:
            DeviceError: always.
        """
        raise DeviceError("qemu-system-arm runs bare-metal ELFs only; it offers no profiling session",
                          "build with --target cortex-m7 to verify; time on the real board")
