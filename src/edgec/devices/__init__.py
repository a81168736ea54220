"""Devices: the one place that reaches where compiled code runs.

Every device satisfies one protocol (:class:`~edgec.devices.base.Device`): ``url``, ``emulated``,
``description``, ``probe(timeout)``, ``run`` / ``run_sets`` (verification), ``open(timeout_s)``
(a :class:`~edgec.devices.session.Session`: ``run``, ``prepare``, ``time_model``,
``time_functions``, locally or over RPC), ``check_tuning(spec)`` and ``tuning_runner(...)``
(MetaSchedule's runner: the tuner asks the device how to measure).

A device is addressed by a URL (:class:`DeviceURL`) whose kind is registered in
:mod:`edgec.devices.registry`:

* ``local`` -- this machine (:class:`~edgec.devices.local.LocalDevice`);
* ``qemu-aarch64`` -- an emulated aarch64 Linux board (:class:`~edgec.devices.qemu_aarch64.QemuAarch64Device`);
* ``qemu-system-arm`` -- an emulated Cortex-M board running a bare-metal ELF
  (:class:`~edgec.devices.qemu_system_arm.QemuSystemArmDevice`; ``run`` only, no sessions);
* ``rpc://HOST:PORT`` / ``tracker://HOST:PORT/KEY`` -- a board behind TVM RPC
  (:class:`~edgec.devices.rpc.RemoteDevice`).

A new transport or emulated board is one module plus one :func:`register_device` line; a target's
``verify`` field may name any kind registered with ``verification=True``.

Build verification, ``edgec profile`` and ``edgec tune`` all go through this package; no
other package spawns qemu or opens an RPC session. Importing it prepares TVM's process
settings (:func:`edgec.tvm_setup.prepare`); TVM itself is imported only when a device is used.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

from edgec.devices.base import Device
from edgec.devices.registry import (DeviceKind, check_verification_kind, device_kinds, register_device,
                                    registered_device, unregister_device)
from edgec.devices.registry import open_url as _open_url
from edgec.devices.registry import parse as parse_url
from edgec.devices.registry import verification_url as _verification_url
from edgec.devices.url import DeviceURL
from edgec.tvm_setup import prepare as _prepare

_prepare()

__all__ = ["Device", "DeviceKind", "DeviceURL", "parse_url", "check_verification_kind", "device_kinds", "open_device",
           "probe", "register_device", "registered_device", "start_emulator", "start_tracker", "stop_emulator",
           "unregister_device", "verification_device"]


def probe(url: str | DeviceURL, timeout: float = 10.0) -> None:
    """Check that a device answers (see :func:`edgec.devices.probe.probe`).

    Raises:
        UsageError: malformed address.
        DeviceError: unreachable.
    """
    from edgec.devices.probe import probe as _probe

    _probe(url if isinstance(url, DeviceURL) else parse_url(url), timeout)


def open_device(url: str | DeviceURL, *, arch: str | None = None, threads: int | None = None) -> Device:
    """The device at ``url`` (nothing is contacted or started: see ``probe`` and ``open``).

    Args:
        url: A registered form: ``local``, ``qemu-aarch64``, ``qemu-system-arm``, ``rpc://HOST:PORT``,
            ``tracker://HOST:PORT/KEY``, or a plugin's kind.
        arch: CPU architecture of the code to run (labels a loopback RPC board as emulated).
        threads: Thread-pool size for a local device (None: one per core).

    Returns:
        A :class:`~edgec.devices.base.Device` (``LocalDevice``, ``QemuAarch64Device``,
        ``QemuSystemArmDevice``, ``RemoteDevice``, or what the kind's factory makes).

    Raises:
        UsageError: malformed address, or a kind nobody registered.
    """
    return _open_url(url if isinstance(url, DeviceURL) else parse_url(url), arch, threads)


def verification_device(method: str) -> Device:
    """The device a target's ``verify`` method runs builds on (a kind registered with ``verification=True``:
    ``local``, ``qemu-aarch64``, ``qemu-system-arm``, or a plugin's).

    Raises:
        UsageError: the method names no verification device.
    """
    return _open_url(_verification_url(method))


def start_emulator(port: int = 9090, host: str = "127.0.0.1", tracker: str | None = None, key: str = "rpi4",
                   progress: Callable[[str], None] | None = None) -> subprocess.Popen:
    """Start TVM's RPC server inside the emulated aarch64 board (``edgec device emulate``); returns once it
    accepts sessions. See :func:`edgec.devices.qemu_aarch64.start_rpc_server`.

    Raises:
        UsageError: the port is taken.
        ToolchainError, DeviceError: set-up failed, or the server did not come up in time.
    """
    from edgec.devices.qemu_aarch64 import start_rpc_server

    return start_rpc_server(port=port, host=host, tracker=tracker, key=key, progress=progress)


def stop_emulator(proc: subprocess.Popen) -> None:
    """Stop an emulated RPC server started by :func:`start_emulator`, and every process it started."""
    from edgec.devices.qemu_aarch64 import stop_rpc_server

    stop_rpc_server(proc)


def start_tracker(host: str = "127.0.0.1", port: int = 9190):
    """Start a TVM RPC tracker in this process (``edgec device tracker``); returns it (``.port``, ``.terminate()``)."""
    from edgec.devices.rpc import start_tracker as _start

    return _start(host, port)
