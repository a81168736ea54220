"""``edgec run``: flags, an artifact run on an image here (:func:`edgec.flows.run.run_image`) or its head against
a served tail (:func:`edgec.flows.serve.run_remote`), and the top classes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import CountProgress, console, floats
from edgec.errors import UsageError


def run(
    artifact: Annotated[str, typer.Argument(metavar="ARTIFACT[:PART]",
                                            help="Artifact built for this machine (else see --device): ARTIFACT or "
                                                 "ARTIFACT:PART.")],
    image: Annotated[Path, typer.Option("--image", metavar="FILE", help="Image file (PNG, JPEG...).")],
    top: Annotated[int, typer.Option(metavar="N", min=1, help="How many classes to print.")] = 5,
    size: Annotated[Optional[str], typer.Option(metavar="H,W", help="Resize to (default: the model's input).")]
    = None,
    mean: Annotated[Optional[str], typer.Option(metavar="R,G,B", help="Mean on [0, 1] RGB (ONNX-file builds).")]
    = None,
    std: Annotated[Optional[str], typer.Option(metavar="R,G,B", help="Std on [0, 1] RGB (ONNX-file builds).")]
    = None,
    layout: Annotated[Optional[str], typer.Option(metavar="NCHW|NHWC", help="The input tensor's layout.")] = None,
    server: Annotated[Optional[str], typer.Option(metavar="HOST:PORT", help="Run ARTIFACT:head here and send the cut "
                                                                            "to this `edgec serve` tail.")] = None,
    timeout: Annotated[float, typer.Option(min=0.001, max=86400.0, metavar="S",
                                           help="Seconds --server has to answer each request: per frame with "
                                                "--repeat, however long the stream.")]
    = 10.0,
    tls_ca: Annotated[Optional[Path], typer.Option(metavar="PEM", help="Use TLS to --server, trusting this CA.")]
    = None,
    repeat: Annotated[int, typer.Option(min=1, max=100000, metavar="N",
                                        help="With --server: send N frames over one stream, print median times.")]
    = 1,
    device: Annotated[Optional[str], typer.Option(metavar="DEVICE", help="Run the parts built for another machine "
                                                  "there: qemu-aarch64 (an emulated Raspberry Pi), qemu-system-arm, "
                                                  "rpc://HOST:PORT.")] = None,
) -> None:
    """Run an artifact (its parts in order, or one part) on an image; preprocess as the manifest says, print top-k."""
    from edgec.profiling.report import weights_note
    from edgec.flows.run import run_image

    if layout is not None and layout not in ("NCHW", "NHWC"):
        raise UsageError(f"--layout '{layout}' is not NCHW or NHWC", "e.g. --layout NCHW")
    sz = floats(size, 2, "--size")
    over = {"resize": [int(v) for v in sz] if sz else None, "mean": floats(mean, 3, "--mean"),
            "std": floats(std, 3, "--std"), "layout": layout}
    if repeat > 1 and server is None:
        raise UsageError("--repeat needs --server", "e.g. --server HOST:50051 --repeat 20")
    if device is not None and server is not None:
        raise UsageError("--device and --server do not go together: with --server the head runs here",
                         "drop one of them")
    if server is not None:
        from edgec.flows.serve import run_remote

        if ":" not in server or not server.rsplit(":", 1)[1].isdigit() or not 0 < int(server.rsplit(":", 1)[1]) < 65536:
            raise UsageError(f"--server '{server}' is not HOST:PORT", "e.g. --server 192.168.1.10:50051")
        with CountProgress("frames", repeat, "answered") as progress:
            remote = run_remote(artifact, server, image, top=top, timeout_s=timeout, tls_ca=tls_ca,
                                preprocessing=over, repeat=repeat, on_frame=progress)
        for i, (idx, score, label) in enumerate(remote.top, 1):
            console.print(f"{i}. class {idx} {escape(label or '-')} {score:.4f}")
        t = remote.timings_ms
        frames = ""
        if remote.error is not None or remote.interrupted:
            why = "it was interrupted" if remote.interrupted else "the stream failed"
            frames = f"median of the {remote.frames} of {remote.requested} frames answered before {why}: "
        elif remote.frames > 1:
            frames = f"median of {remote.frames} frames over one stream: "
        console.print(f"{frames}head {t['head']:.2f} ms, serialize {t['serialize']:.2f} ms, transfer {t['transfer']:.2f} ms "
                      f"({remote.sent_bytes} bytes), decode {t['decode']:.2f} ms, tail {t['tail']:.2f} ms, "
                      f"total {t['total']:.2f} ms", soft_wrap=True)
        if remote.weights == "random":
            console.print(f"[yellow]weights: {weights_note('random')}; these classes mean nothing[/]")
        if remote.error is not None:
            raise remote.error
        if remote.interrupted:
            raise KeyboardInterrupt
        return
    result = run_image(artifact, image, top=top, preprocessing=over, device=device)
    table = Table(title=f"top-{top} for {image.name}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("class", justify="right")
    table.add_column("label")
    table.add_column("score", justify="right")
    for i, (idx, score, label) in enumerate(result.top, 1):
        table.add_row(str(i), str(idx), label or "-", f"{score:.4f}")
    console.print(table)
    if result.weights == "random":
        console.print(f"[yellow]weights: {weights_note('random')}; these classes mean nothing[/]")
