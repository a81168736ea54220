"""``edgec serve``: serve the tail of a split artifact over gRPC (:func:`edgec.flows.serve.serve`) until Ctrl-C."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from edgec.cli.console import console


def serve(
    artifact: Annotated[str, typer.Argument(metavar="ARTIFACT:tail", help="The tail of a split artifact.")],
    port: Annotated[int, typer.Option(min=1, max=65535, metavar="PORT", help="TCP port to listen on.")] = 50051,
    host: Annotated[str, typer.Option("--bind", "--host", metavar="ADDR",
                                      help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    tls_cert: Annotated[Optional[Path], typer.Option(metavar="PEM", help="TLS certificate (with --tls-key).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(metavar="PEM", help="TLS private key.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, max=1024, metavar="N", help="Threads of the tail.")] = None,
) -> None:
    """Serve the tail of a split artifact over gRPC: heads send their cut tensor, get the outputs back. Runs until
    Ctrl-C or SIGTERM (exit 130)."""
    from edgec.flows.serve import serve as start

    server, service = start(artifact, port, host, tls_cert=tls_cert, tls_key=tls_key, threads=threads)
    console.print(f"serving {escape(str(service.part.folder))} (cut {escape(service.tensor)} {service.shape} "
                  f"{service.wire_dtype}, {service.encoding.kind}) on {escape(host)}:{port}"
                  f"{' with TLS' if tls_cert else ''}; Ctrl-C stops")
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)
        if console.is_terminal:  # the terminal echoed ^C without a line end
            console.print()
        console.print(f"stopped after {service.served} requests", highlight=False)
        raise typer.Exit(130) from None  # like every command stopped by Ctrl-C (or SIGTERM)
    finally:
        service.close()
