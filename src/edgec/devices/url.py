"""Device addresses: ``local``, ``qemu-aarch64``, ``qemu-system-arm``, ``rpc://HOST:PORT``, ``tracker://HOST:PORT/KEY``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgec.errors import UsageError

#: Emulated devices edgec starts itself (no address needed).
EMULATORS = ("qemu-aarch64", "qemu-system-arm")

FORMS = "local, qemu-aarch64, qemu-system-arm, rpc://HOST:PORT or tracker://HOST:PORT/KEY"


@dataclass(frozen=True)
class DeviceURL:
    """Where code runs.

    Attributes:
        kind: ``"local"`` (this process / machine), ``"qemu-aarch64"`` (an emulated aarch64
            Linux board edgec starts), ``"qemu-system-arm"`` (an emulated Cortex-M board running an
            ELF), ``"rpc"`` (a TVM RPC server) or ``"tracker"`` (a TVM
            tracker handing out a board registered under ``key``).
        host, port: Address of the RPC server or tracker.
        key: Device key at the tracker.
    """

    kind: str
    host: str = ""
    port: int = 0
    key: str = ""

    @classmethod
    def parse(cls, text: str | None) -> DeviceURL:
        """Parse a ``--device`` value.

        Raises:
            UsageError: malformed value.
        """
        if text is None or text == "local":
            return cls("local")
        if text in EMULATORS:
            return cls(text)
        m = re.fullmatch(r"rpc://([^:/]+):(\d+)/?", text) or re.fullmatch(
            r"tracker://([^:/]+):(\d+)/([A-Za-z0-9_.-]+)", text)
        if m:
            if not 0 < int(m.group(2)) < 65536:
                raise UsageError(f"bad --device '{text}': port {m.group(2)} is not in 1..65535", f"use {FORMS}")
            kind = "rpc" if text.startswith("rpc://") else "tracker"
            return cls(kind, m.group(1), int(m.group(2)), m.group(3) if kind == "tracker" else "")
        raise UsageError(f"bad --device '{text}'", f"use {FORMS}")

    @property
    def remote(self) -> bool:
        """Reached over TVM RPC (``rpc://`` or ``tracker://``)."""
        return self.kind in ("rpc", "tracker")

    @property
    def loopback(self) -> bool:
        """The address is this machine's loopback."""
        return self.host in ("127.0.0.1", "localhost", "::1")

    def __str__(self) -> str:
        if not self.remote:
            return self.kind
        return f"{self.kind}://{self.host}:{self.port}" + (f"/{self.key}" if self.key else "")
