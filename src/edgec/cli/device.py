"""``edgec device emulate`` and ``edgec device tracker``: flags over :mod:`edgec.flows.device`, run until Ctrl-C."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from edgec.cli.console import StepPrinter, console
from edgec.errors import DeviceError


def device_emulate(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="aarch64 target to emulate (rpi4, rpi5).")] = "rpi4",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port of the RPC server.")] = 9090,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind (keep loopback).")] = "127.0.0.1",
    tracker: Annotated[Optional[str], typer.Option(metavar="HOST:PORT",
                                                   help="Register with this tracker, HOST:PORT.")] = None,
    key: Annotated[Optional[str], typer.Option(metavar="KEY",
                                               help="Device key at the tracker (default: the target name).")]
    = None,
) -> None:
    """Run TVM's RPC server inside the qemu-aarch64 rootfs until Ctrl-C (timings are emulated)."""
    from edgec.flows.device import emulated_board

    printer = StepPrinter()
    printer.__enter__()
    try:
        with emulated_board(target, port=port, host=host, tracker=tracker, key=key, progress=printer) as proc:
            printer.__exit__(None, None, None)
            printer = None
            where = f"rpc://{host}:{port}" + (f" (registered at tracker {tracker} as '{key or target}')"
                                              if tracker else "")
            console.print(f"[bold]emulated {target}[/] serving at {where}; [yellow]timings are emulated, "
                          f"not device speed[/]; Ctrl-C stops it")
            while proc.poll() is None:
                time.sleep(1)
    finally:
        if printer is not None:
            printer.status.__exit__(None, None, None)
    if proc.returncode not in (0, -15, -9, None):
        raise DeviceError(f"the emulated RPC server stopped (exit code {proc.returncode})", "rerun with --debug")


def device_tracker(
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port of the tracker.")] = 9190,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run a TVM RPC tracker (boards register with it under a key; profile/tune with tracker://HOST:PORT/KEY)."""
    from edgec.flows.device import tracker

    with tracker(host, port) as tr:
        console.print(f"TVM tracker at {host}:{tr.port}; Ctrl-C stops it")
        while True:
            time.sleep(1)
