"""Reachability checks, before any work: an unreachable device fails in seconds."""

from __future__ import annotations

from edgec.devices.url import DeviceURL
from edgec.errors import DeviceError
from edgec.net import tcp_reachable


def tracker_keys(host: str, port: int, timeout: float = 10.0) -> set[str]:
    """Device keys registered at a TVM tracker.

    Raises:
        DeviceError: nothing listens there, or it is not a TVM tracker.
    """
    err = tcp_reachable(host, port, timeout)
    if err is not None:
        raise DeviceError(f"the tracker {host}:{port} is unreachable: {err.strerror or err}",
                          "start it first (edgec device tracker), or check host and port")
    from tvm import rpc

    try:
        summary = rpc.connect_tracker(host, port).summary()
    except Exception as exc:  # noqa: BLE001  TVM raises plain errors for a wrong peer
        raise DeviceError(f"{host}:{port} is not a TVM tracker: {str(exc).splitlines()[0][:160]}",
                          "check the port") from exc
    keys = set(summary.get("queue_info", {}))
    for server in summary.get("server_info", []):
        key = str(server.get("key", "")) if isinstance(server, dict) else ""
        if key:
            keys.add(key.split(":")[-1])
    return keys


def probe(url: DeviceURL, timeout: float = 10.0) -> None:
    """Fail fast when an RPC server or tracker does not answer (other kinds: nothing to check here).

    Raises:
        DeviceError: nothing listens at the address, or the tracker has no such key.
    """
    if url.kind not in ("rpc", "tracker"):
        return
    if url.kind == "rpc":
        err = tcp_reachable(url.host, url.port, timeout)
        if err is not None:
            raise DeviceError(f"{url} is unreachable: {err.strerror or err}",
                              "start the RPC server, or check host and port")
        return
    try:
        keys = tracker_keys(url.host, url.port, timeout)
    except DeviceError as exc:
        raise DeviceError(f"{url} is unreachable: {exc.message}", exc.hint) from exc
    if url.key not in keys:
        raise DeviceError(f"the tracker at {url.host}:{url.port} has no device registered as '{url.key}'",
                          f"registered keys: {', '.join(sorted(keys)) or 'none'}")
