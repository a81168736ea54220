"""Devices: the one place that reaches where compiled code runs.

A device is addressed by a URL (:class:`DeviceURL`):

* ``local`` -- this machine (:class:`~edgec.devices.local.LocalDevice`);
* ``qemu-aarch64`` -- an emulated aarch64 Linux board (:class:`~edgec.devices.qemu_aarch64.QemuAarch64Device`);
* ``qemu-system-arm`` -- an emulated Cortex-M board running a bare-metal ELF
  (:class:`~edgec.devices.qemu_system_arm.QemuSystemArmDevice`; ``run`` only, no sessions);
* ``rpc://HOST:PORT`` / ``tracker://HOST:PORT/KEY`` -- a board behind TVM RPC
  (:class:`~edgec.devices.rpc.RemoteDevice`).

Every device has the same three calls:

* ``probe(timeout)`` -- fail fast (:class:`~edgec.errors.DeviceError`) when it cannot be reached;
* ``run(library, inputs) -> outputs`` -- run a compiled library once (verification);
* ``open(timeout_s) -> Session`` (a context manager) -- load, run and time libraries
  (:class:`~edgec.devices.session.Session`: ``run``, ``prepare``, ``time_model``,
  ``time_functions``), locally or over RPC.

Build verification, ``edgec profile`` and ``edgec tune`` all go through this package; no
other package spawns qemu or opens an RPC session. Importing it prepares TVM's process
settings (:func:`edgec.tvm_setup.prepare`); TVM itself is imported only when a device is used.
"""

from __future__ import annotations

from typing import Any

from edgec.devices.url import DeviceURL
from edgec.errors import UsageError
from edgec.tvm_setup import prepare as _prepare

_prepare()

__all__ = ["DeviceURL", "open_device", "verification_device", "probe"]


def probe(url: str | DeviceURL, timeout: float = 10.0) -> None:
    """Check that a device answers (see :func:`edgec.devices.probe.probe`).

    Raises:
        UsageError: malformed address.
        DeviceError: unreachable.
    """
    from edgec.devices.probe import probe as _probe

    _probe(url if isinstance(url, DeviceURL) else DeviceURL.parse(url), timeout)


def open_device(url: str | DeviceURL, *, arch: str | None = None, threads: int | None = None) -> Any:
    """The device at ``url``.

    Args:
        url: ``local``, ``qemu-aarch64``, ``qemu-system-arm``, ``rpc://HOST:PORT`` or ``tracker://HOST:PORT/KEY``.
        arch: CPU architecture of the code to run (labels a loopback RPC board as emulated).
        threads: Thread-pool size for a local device (None: one per core).

    Returns:
        A ``LocalDevice``, ``QemuAarch64Device``, ``QemuSystemArmDevice`` or ``RemoteDevice``.

    Raises:
        UsageError: malformed address.
    """
    parsed = url if isinstance(url, DeviceURL) else DeviceURL.parse(url)
    if parsed.kind == "local":
        from edgec.devices.local import LocalDevice

        return LocalDevice(threads)
    if parsed.kind == "qemu-aarch64":
        from edgec.devices.qemu_aarch64 import QemuAarch64Device

        return QemuAarch64Device()
    if parsed.kind == "qemu-system-arm":
        from edgec.devices.qemu_system_arm import QemuSystemArmDevice

        return QemuSystemArmDevice()
    from edgec.devices.rpc import RemoteDevice

    return RemoteDevice(parsed, arch)


#: Verification methods of target data that are devices (``cuda-cubin`` is a backend check).
VERIFY_DEVICES = {"local": "local", "qemu-aarch64": "qemu-aarch64", "qemu-system-arm": "qemu-system-arm"}


def verification_device(method: str) -> Any:
    """The device a target's ``verify`` method runs builds on (``local``, ``qemu-aarch64``, ``qemu-system-arm``).

    Raises:
        UsageError: the method names no device.
    """
    if method not in VERIFY_DEVICES:
        raise UsageError(f"verify method '{method}' names no device", f"use one of {', '.join(VERIFY_DEVICES)}")
    return open_device(VERIFY_DEVICES[method])
