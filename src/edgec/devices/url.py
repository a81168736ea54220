"""Device addresses: a registered bare kind (``local``, ``qemu-aarch64``...) or ``KIND://HOST:PORT[/KEY]``.

Parsed against the registered kinds by :func:`edgec.devices.parse_url` (:func:`edgec.devices.registry.parse`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceURL:
    """Where code runs.

    Attributes:
        kind: A registered device kind (:mod:`edgec.devices.registry`): ``"local"`` (this process /
            machine), ``"qemu-aarch64"`` (an emulated aarch64 Linux board edgec starts),
            ``"qemu-system-arm"`` (an emulated Cortex-M board running an ELF), ``"rpc"`` (a TVM RPC
            server), ``"tracker"`` (a TVM tracker handing out a board registered under ``key``), or
            a kind a plugin registered.
        host, port: Network address (kinds registered with one: ``rpc``, ``tracker``...).
        key: Device key at the tracker (kinds addressed as ``KIND://HOST:PORT/KEY``).
    """

    kind: str
    host: str = ""
    port: int = 0
    key: str = ""

    @property
    def remote(self) -> bool:
        """Reached over the network (an address: ``rpc://``, ``tracker://``...)."""
        return bool(self.host)

    @property
    def loopback(self) -> bool:
        """The address is this machine's loopback."""
        return self.host in ("127.0.0.1", "localhost", "::1")

    def __str__(self) -> str:
        if not self.remote:
            return self.kind
        return f"{self.kind}://{self.host}:{self.port}" + (f"/{self.key}" if self.key else "")
