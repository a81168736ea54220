"""Device kinds by URL scheme: what ``--device`` and a target's ``verify`` field may name.

A kind is a name and a factory. Its address form decides how ``--device`` spells it:

* ``address=None`` -- a bare kind: ``local``, ``qemu-aarch64``, ``my-board``;
* ``address="host:port"`` -- ``KIND://HOST:PORT`` (``rpc://HOST:PORT``);
* ``address="host:port/key"`` -- ``KIND://HOST:PORT/KEY`` (``tracker://HOST:PORT/KEY``).

A kind registered with ``verification=True`` (bare kinds only) may be named by a target's
``verify`` field: builds for that target are verified on it. Adding a transport or an emulated
board is one module with a class satisfying :class:`~edgec.devices.base.Device` plus one
:func:`register_device` line (below for the built-in kinds, anywhere for a plugin). Factories given
as ``"module:attribute"`` are imported on first use: TVM is not imported until a device is used.
"""

from __future__ import annotations

import contextlib
import importlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgec.devices.url import DeviceURL
from edgec.errors import UsageError

if TYPE_CHECKING:
    from edgec.devices.base import Device

#: ``factory(url, arch=..., threads=...) -> Device``, or ``"module:attribute"`` naming one.
Factory = Callable[..., "Device"] | str

#: Address forms a kind may take.
ADDRESS_FORMS = {None: "", "host:port": "://HOST:PORT", "host:port/key": "://HOST:PORT/KEY"}

_NAME = re.compile(r"[a-z][a-z0-9_.-]*")
_ADDRESS = {"host:port": re.compile(r"([^:/]+):(\d+)/?"),
            "host:port/key": re.compile(r"([^:/]+):(\d+)/([A-Za-z0-9_.-]+)")}


@dataclass(frozen=True)
class DeviceKind:
    """A registered kind of device.

    Attributes:
        name: The kind (``local``, ``rpc``, ``my-board``): a bare ``--device`` value or a URL scheme.
        factory: ``factory(url, arch=..., threads=...)`` returning the device, or ``"module:attribute"``.
        address: ``None``, ``"host:port"`` or ``"host:port/key"`` (see the module docstring).
        verification: A target's ``verify`` field may name it.
        description: What it is (one line).
    """

    name: str
    factory: Factory
    address: str | None = None
    verification: bool = False
    description: str = ""

    @property
    def form(self) -> str:
        """How ``--device`` spells it: ``local``, ``rpc://HOST:PORT``, ``tracker://HOST:PORT/KEY``."""
        return self.name + ADDRESS_FORMS[self.address]

    def create(self, url: DeviceURL, arch: str | None, threads: int | None) -> Device:
        """The device at ``url`` (the factory imported on first use)."""
        factory = self.factory
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = importlib.import_module(module)
            for part in attr.split("."):
                factory = getattr(factory, part)
        return factory(url, arch=arch, threads=threads)


_KINDS: dict[str, DeviceKind] = {}


def register_device(kind: str, factory: Factory, *, address: str | None = None, verification: bool = False,
                    description: str = "", replace: bool = False) -> DeviceKind:
    """Register a kind of device.

    Args:
        kind: Lower-case name (``[a-z][a-z0-9_.-]*``): the bare ``--device`` value, or the URL scheme.
        factory: Called as ``factory(url, arch=arch, threads=threads)`` with the parsed
            :class:`~edgec.devices.url.DeviceURL`, the CPU architecture of the code to run (or
            None) and a thread count (or None); returns a :class:`~edgec.devices.base.Device`.
            A ``"module:attribute"`` string is imported on first use.
        address: ``None`` (a bare kind), ``"host:port"`` or ``"host:port/key"``.
        verification: A target's ``verify`` field may name it (bare kinds only).
        description: One line for listings.
        replace: Replace a kind of the same name instead of refusing.

    Returns:
        The registered :class:`DeviceKind`.

    Raises:
        ValueError: a malformed name or address form, a verification kind with an address, or
            a name already registered (without ``replace``).
    """
    if not _NAME.fullmatch(kind):
        raise ValueError(f"device kind '{kind}' must match {_NAME.pattern}")
    if address not in ADDRESS_FORMS:
        raise ValueError(f"device kind '{kind}': address must be one of {list(ADDRESS_FORMS)}, not {address!r}")
    if verification and address is not None:
        raise ValueError(f"device kind '{kind}': a verification device takes no address")
    if kind in _KINDS and not replace:
        raise ValueError(f"device kind '{kind}' is already registered")
    entry = DeviceKind(kind, factory, address, verification, description)
    _KINDS[kind] = entry
    return entry


def unregister_device(kind: str) -> None:
    """Remove a registered kind (a no-op when it is not registered)."""
    _KINDS.pop(kind, None)


@contextlib.contextmanager
def registered_device(kind: str, factory: Factory, **options: Any) -> Iterator[DeviceKind]:
    """Register a kind for the duration of a ``with`` block (tests, scripts); see :func:`register_device`."""
    entry = register_device(kind, factory, **options)
    try:
        yield entry
    finally:
        if _KINDS.get(kind) is entry:
            del _KINDS[kind]


def device_kinds() -> list[DeviceKind]:
    """The registered kinds, in registration order."""
    return list(_KINDS.values())


def get_kind(kind: str) -> DeviceKind | None:
    """The registered kind named ``kind``, or None."""
    return _KINDS.get(kind)


def forms() -> str:
    """Every ``--device`` form, for messages: ``local, qemu-aarch64, ..., rpc://HOST:PORT or tracker://...``."""
    names = [k.form for k in _KINDS.values()]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def verification_kinds() -> list[str]:
    """Kinds a target's ``verify`` field may name."""
    return [k.name for k in _KINDS.values() if k.verification]


def parse(text: str | None) -> DeviceURL:
    """Parse a ``--device`` value against the registered kinds (see :func:`edgec.devices.parse_url`).

    Raises:
        UsageError: malformed value, or a kind nobody registered (lists the registered forms).
    """
    if text is None:
        return DeviceURL("local")
    bare = _KINDS.get(text)
    if bare is not None and bare.address is None:
        return DeviceURL(text)
    scheme, sep, rest = text.partition("://")
    entry = _KINDS.get(scheme) if sep else None
    m = _ADDRESS[entry.address].fullmatch(rest) if entry is not None and entry.address is not None else None
    if m:
        if not 0 < int(m.group(2)) < 65536:
            raise UsageError(f"bad --device '{text}': port {m.group(2)} is not in 1..65535", f"use {forms()}")
        key = m.group(3) if entry.address == "host:port/key" else ""
        return DeviceURL(scheme, m.group(1), int(m.group(2)), key)
    raise UsageError(f"bad --device '{text}'", f"use {forms()}")


def open_url(url: DeviceURL, arch: str | None = None, threads: int | None = None) -> Device:
    """The device at a parsed address.

    Raises:
        UsageError: its kind is not registered (it was removed after parsing).
    """
    entry = _KINDS.get(url.kind)
    if entry is None:
        raise UsageError(f"bad --device '{url}': no device kind '{url.kind}' is registered", f"use {forms()}")
    return entry.create(url, arch, threads)


def check_verification_kind(name: str, *, target: str | None = None, checks: Iterable[str] = ()) -> None:
    """Refuse, before any work, a target whose ``verify`` field names no registered verification device.

    Args:
        name: The ``verify`` value.
        target: The target's name, for the message.
        checks: Verification methods that are not devices (the backend's own, e.g. ``cuda-cubin``):
            accepted as they are.

    Raises:
        UsageError: one line naming the field and the registered kinds.
    """
    checks = list(checks)
    if name in checks or name in verification_kinds():
        return
    where = f"target '{target}': " if target else ""
    raise UsageError(f"{where}verify '{name}' names no registered verification device",
                     f"use one of {', '.join(verification_kinds() + checks)}, or register that device kind "
                     "with edgec.devices.register_device and verification=True")


def verification_url(method: str) -> DeviceURL:
    """The address of the device a target's ``verify`` method names.

    Raises:
        UsageError: the method names no verification device.
    """
    entry = _KINDS.get(method)
    if entry is None or not entry.verification:
        raise UsageError(f"verify method '{method}' names no device", f"use one of {', '.join(verification_kinds())}")
    return DeviceURL(method)


# --------------------------------------------------------------------------- built-in kinds

register_device("local", "edgec.devices.local:LocalDevice.from_url", verification=True,
                description="this machine, in this process")
register_device("qemu-aarch64", "edgec.devices.qemu_aarch64:QemuAarch64Device.from_url", verification=True,
                description="an emulated aarch64 Linux board (qemu-user, plain TVM runtime)")
register_device("qemu-system-arm", "edgec.devices.qemu_system_arm:QemuSystemArmDevice.from_url", verification=True,
                description="an emulated Cortex-M board running a bare-metal ELF (run only, no sessions)")
register_device("rpc", "edgec.devices.rpc:RemoteDevice.from_url", address="host:port",
                description="a board behind a TVM RPC server")
register_device("tracker", "edgec.devices.rpc:RemoteDevice.from_url", address="host:port/key",
                description="a board handed out by a TVM RPC tracker under KEY")
