"""What every device provides (:class:`Device`), whatever its kind or transport.

A device is where compiled code runs: this machine, an emulated board, a board behind TVM RPC,
or a kind a plugin registers (:func:`edgec.devices.register_device`). Callers hold devices only
through this protocol; the backend's tuner receives one duck-typed against it (``edgec.backends``
never imports ``edgec.devices``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from edgec.devices.session import Progress, Session
from edgec.devices.url import DeviceURL

if TYPE_CHECKING:
    from edgec.targets import TargetSpec


@runtime_checkable
class Device(Protocol):
    """A place compiled code runs (what :func:`edgec.devices.open_device` returns).

    Attributes:
        url: The device's address (``local``, ``qemu-aarch64``, ``rpc://HOST:PORT``...).
        emulated: Timings on it come from an emulator (or are suspected to): never device speed.
        description: One line saying what it is, recorded as a build's verification method.
    """

    url: DeviceURL
    emulated: bool
    description: str

    def probe(self, timeout: float = 10.0) -> None:
        """Fail fast when the device cannot be reached or used; cheap, before any work.

        Args:
            timeout: Seconds to wait for an answer.

        Raises:
            DeviceError: unreachable (nothing listens, no such key at the tracker).
            ToolchainError: an emulator's tools are not installed (names the apt command).
        """

    def run(self, library: str | Path, inputs: list[np.ndarray], timeout: float = 600,
            progress: Progress | None = None) -> list[np.ndarray]:
        """Run a compiled library once (build verification).

        Args:
            library: The library (``model.so``, or a microcontroller's ``model.elf``).
            inputs: Input arrays in graph order.
            timeout: Seconds before the run is given up.
            progress: Called with a short description of each slow step (emulator set-up...).

        Returns:
            Output arrays in graph order.

        Raises:
            DeviceError: the run failed, timed out, or the device dropped.
            ToolchainError: an emulator's tools are missing.
        """

    def run_sets(self, library: str | Path, sets: list[list[np.ndarray]], timeout: float = 600,
                 progress: Progress | None = None) -> list[list[np.ndarray]]:
        """Run a compiled library on several input sets (one start or session for all).

        Args:
            library: As for :meth:`run`.
            sets: Input sets, each the input arrays in graph order.
            timeout: Seconds before the whole run is given up.
            progress: As for :meth:`run`.

        Returns:
            Output arrays in graph order, one list per set.

        Raises:
            DeviceError, ToolchainError: as for :meth:`run`.
        """

    def open(self, timeout_s: float = 60.0, progress: Progress | None = None) -> AbstractContextManager[Session]:
        """A :class:`~edgec.devices.session.Session` for the duration of a ``with`` block (load, run, time).

        Args:
            timeout_s: Session limit in seconds (remote devices).
            progress: Called with each slow step (starting an emulator...).

        Returns:
            A context manager yielding the session; the connection or emulator ends with the block.

        Raises:
            DeviceError: unreachable, no free board in time, or a device that offers no sessions
                (``qemu-system-arm``: bare-metal ELFs have no TVM runtime to time through).
        """

    def check_tuning(self, spec: TargetSpec) -> None:
        """Refuse, cheaply and before any work, to measure tuning candidates built for ``spec``.

        Args:
            spec: The target the candidates are compiled for.

        Raises:
            UsageError: one line saying what and how to fix: the device cannot measure candidates
                (an emulator run once per library, a microcontroller), or cannot run ``spec``'s code
                (this machine and another ISA).
        """

    def tuning_runner(self, timeout_s: float = 120, evaluator_config: Any = None) -> Any:
        """MetaSchedule's runner measuring candidates on this device.

        Args:
            timeout_s: Seconds per measurement (a remote device's session limit).
            evaluator_config: ``tvm.s_tir.meta_schedule.runner.EvaluatorConfig`` (None: MetaSchedule's
                default): the tuner's choice of repeats.

        Returns:
            A ``tvm.s_tir.meta_schedule.runner.Runner`` (``LocalRunner`` on this machine, an
            ``RPCRunner`` opening its sessions through the device for ``rpc://`` and ``tracker://``).

        Raises:
            UsageError: the device cannot measure tuning candidates (as :meth:`check_tuning`).
        """
