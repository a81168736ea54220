"""Network reachability in one place: a TCP connect with a timeout."""

from __future__ import annotations

import socket


def tcp_reachable(host: str, port: int, timeout: float = 3.0) -> OSError | None:
    """Try a TCP connection to ``host:port``.

    Args:
        host: Name or address.
        port: TCP port.
        timeout: Seconds before giving up.

    Returns:
        None when something accepted the connection, else the ``OSError`` that stopped it.
    """
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return None
    except OSError as exc:
        return exc
