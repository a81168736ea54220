"""``edgec split``: flags, the split-computing flows (:mod:`edgec.flows.split`: list the cuts, choose one for a
link, build a head/tail artifact), and their tables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import PASSES_HELP, StepPrinter, console, shape_option, value_option, verify_timeout_option
from edgec.errors import UsageError


def split(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    list_cuts: Annotated[bool, typer.Option("--list", metavar="", help="List every valid cut with its costs.")]
    = False,
    at: Annotated[Optional[str], typer.Option(metavar="TENSOR", help="Cut at this tensor (from --list).")] = None,
    head_target: Annotated[str, typer.Option(metavar="TARGET", help="Target of the head (the device).")] = "host",
    tail_target: Annotated[str, typer.Option(metavar="TARGET", help="Target of the tail (the server).")] = "host",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Parent folder of the artifact.")]
    = Path("out"),
    name: Annotated[Optional[str], typer.Option(metavar="NAME", help="Artifact folder name (default "
                                                "MODEL-split-CUT-ENCODING-HEAD-TAIL).")] = None,
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    input_value: Annotated[Optional[list[str]], value_option()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", metavar="",
                                         help="Verify each part and their composition.")] = True,
    verify_timeout: Annotated[Optional[float], verify_timeout_option()] = None,
    encoding: Annotated[str, typer.Option(metavar="ENCODING",
                                          help="How the cut tensor travels: fp32, int8 or int8-per-channel (affine, "
                                               "calibrated on --data, --verify-inputs samples or the model's input "
                                               "range), or bottleneck (a learned encoder/decoder trained on --data, "
                                               "its int8 codes sent).")]
    = "fp32",
    data: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Labelled images (DIR/<class>/*.png, or "
                                                 "DIR/train and DIR/val): int8 calibration, bottleneck training, and "
                                                 "the accuracy split vs unsplit.")] = None,
    bottleneck_channels: Annotated[Optional[int], typer.Option(min=1, metavar="C", help="--encoding bottleneck: "
                                                               "channels sent (default: a quarter of the cut's).")]
    = None,
    epochs: Annotated[int, typer.Option(min=1, max=10000, metavar="N", help="--encoding bottleneck: training "
                                                                             "epochs.")] = 30,
    verify_inputs: Annotated[Optional[list[Path]], typer.Option(
        "--verify-inputs", metavar="FILE", help="Your own samples (.npz/.npy/images): verification and int8 "
                                                "calibration.")] = None,
    bandwidth: Annotated[Optional[str], typer.Option(metavar="MBIT/S[,MBIT/S...]", help="--at auto: uplink "
                                                     "bandwidth; several (1,10,100) print the best cut at each and "
                                                     "build the first's.")] = None,
    rtt_ms: Annotated[float, typer.Option(min=0.0, metavar="MS", help="--at auto: round-trip time.")] = 0.0,
    head_ms: Annotated[Optional[float], typer.Option(metavar="MS", help="--at auto: whole-model latency on the "
                                                                        "device (e.g. from edgec profile).")] = None,
    tail_ms: Annotated[Optional[float], typer.Option(metavar="MS", help="--at auto: whole-model latency on the "
                                                                        "server.")] = None,
    head_profile: Annotated[Optional[Path], typer.Option(metavar="REPORT", help="--at auto: `edgec profile` "
                                                         "report.json of the whole model on the device (per-kernel "
                                                         "times summed per cut).")] = None,
    tail_profile: Annotated[Optional[Path], typer.Option(metavar="REPORT", help="--at auto: the same, on the "
                                                         "server.")] = None,
) -> None:
    """Split computing: list where MODEL can be cut, or build a head/tail artifact cut at a tensor (or --at auto)."""
    from edgec.flows.request import BuildOptions
    from edgec.flows.split import build_split, choose_cut, write_choice
    from edgec.flows.split import list_cuts as cut_list

    opts = BuildOptions(model=model, input_shapes=input_shape, input_values=input_value, passes=passes, out_dir=out, name=name, verify=verify,
                        verify_inputs=list(verify_inputs or []), verify_timeout=verify_timeout)
    if list_cuts == (at is not None):
        raise UsageError("give either --list or --at TENSOR", f"e.g. edgec split {model} --list")
    choice = None
    if at == "auto" and encoding == "bottleneck":
        raise UsageError("--at auto sizes the cuts as sent raw; a learned bottleneck is trained at one cut",
                         f"choose the cut with --at auto --encoding int8, then edgec split {model} --at TENSOR "
                         "--encoding bottleneck --data DIR")
    if at == "auto":
        links = _links(bandwidth, rtt_ms, model)
        with StepPrinter() as printer:
            choice = choose_cut(opts, head_target, tail_target, encoding, links,
                                {"head": (head_ms, head_profile), "tail": (tail_ms, tail_profile)}, progress=printer)
        print_choice(choice, len(links))
        if choice["best"]["kind"] != "cut":
            return
        at = choice["best"]["cut"]
    elif any(v is not None for v in (bandwidth, head_ms, tail_ms, head_profile, tail_profile)):
        raise UsageError("--bandwidth, --head-ms/--tail-ms and --head-profile/--tail-profile go with --at auto",
                         f"e.g. edgec split {model} --at auto --bandwidth 20 --head-ms 40")
    if encoding != "bottleneck" and (bottleneck_channels is not None or epochs != 30):
        raise UsageError("--bottleneck-channels and --epochs go with --encoding bottleneck",
                         f"e.g. edgec split {model} --at TENSOR --encoding bottleneck --data DIR --epochs 30")
    if list_cuts:
        with StepPrinter() as printer:
            table = cut_list(opts, progress=printer)
        print_cuts(table)
        return
    with StepPrinter() as printer:
        result = build_split(opts, at, head_target, tail_target, encoding=encoding, progress=printer, data=data,
                             bottleneck_channels=bottleneck_channels, epochs=epochs,
                             attachments=None if choice is None else lambda folder: write_choice(choice, model,
                                                                                                  folder))
    print_split_summary(result.report, result.artifact)


def _links(text: str | None, rtt_ms: float, model: str) -> list[Any]:
    """``--bandwidth`` (one or several Mbit/s) and ``--rtt-ms`` as links.

    Raises:
        UsageError: no bandwidth, a value that is not a number, or a non-positive one.
    """
    from edgec.split.choose import Link

    if text is None:
        raise UsageError("--at auto needs --bandwidth MBIT/S (the device's uplink)",
                         f"e.g. edgec split {model} --at auto --bandwidth 20 --rtt-ms 10")
    try:
        values = list(dict.fromkeys(float(v) for v in text.split(",")))
    except ValueError:
        raise UsageError(f"--bandwidth '{text}' is not a number or a comma-separated list of numbers",
                         "e.g. --bandwidth 20 or --bandwidth 1,10,100") from None
    try:
        return [Link(b, rtt_ms) for b in values]
    except ValueError as e:
        raise UsageError(f"--bandwidth/--rtt-ms: {e}", "e.g. --bandwidth 20 --rtt-ms 10") from None


def print_cuts(table: dict[str, Any]) -> None:
    """The input's sizes and one row per valid cut: shape, bytes sent, MACs and params on each side."""
    from edgec.profiling.report import human_bytes, human_count

    i = table["input"]
    jpeg = f", JPEG q90 of a real image {human_bytes(i['jpeg_q90_bytes'])}" if "jpeg_q90_bytes" in i else ""
    console.print(f"input {escape(i['name'])} {i['shape']}: {human_bytes(i['bytes_fp32'])} fp32, "
                  f"{human_bytes(i['bytes_uint8'])} as 8-bit pixels{jpeg}; model {human_count(table['macs'])} "
                  f"MACs, {human_count(table['params'])} params")
    t = Table(title=f"{len(table['cuts'])} valid cuts (a single tensor crosses)", title_justify="left")
    for col in ("tensor", "shape", "fp32", "int8", "head MACs", "tail MACs", "head params", "tail params"):
        t.add_column(col, justify="left" if col in ("tensor", "shape") else "right")
    for c in table["cuts"]:
        t.add_row(escape(c["tensor"]), "x".join(map(str, c["shape"])), human_bytes(c["bytes_fp32"]),
                  human_bytes(c["bytes_int8"]), human_count(c["head_macs"]), human_count(c["tail_macs"]),
                  human_count(c["head_params"]), human_count(c["tail_params"]))
    console.print(t)


def print_choice(choice: dict[str, Any], n_links: int) -> None:
    """The fastest candidates on the first link, the best cut per bandwidth, and the verdict."""
    from edgec.profiling.report import human_bytes

    link = choice["link"]
    t = Table(title=f"fastest candidates on {link['bandwidth_mbps']:g} Mbit/s, rtt {link['rtt_ms']:g} ms (estimated "
                    f"ms; head {choice['head_ms']:.2f} ms {choice['head_ms_source']}, tail {choice['tail_ms']:.2f} ms "
                    f"{choice['tail_ms_source']}; {choice['spread']})", title_justify="left")
    for col in ("cut", "sent", "head", "transfer", "tail", "total"):
        t.add_column(col, justify="left" if col == "cut" else "right")
    for r in choice["ranking"][:10]:
        name = r["cut"] if r["kind"] == "cut" else f"({r['kind']})"
        t.add_row(escape(name), human_bytes(r["bytes"]), f"{r['head_ms']:.2f}", f"{r['transfer_ms']:.2f}",
                  f"{r['tail_ms']:.2f}", f"{r['total_ms']:.2f}")
    console.print(t)
    if choice.get("device_only"):
        console.print(f"[dim](device only) sends {escape(choice['device_only']['sends'])}[/]")
    if n_links > 1:
        t = Table(title="best cut per bandwidth (estimated ms)", title_justify="left")
        for col in ("Mbit/s", "best", "sent", "total", "device only", "server only (JPEG)", "speed-up"):
            t.add_column(col, justify="left" if col == "best" else "right")
        for r in choice["sweep"]:
            b = r["best"]
            t.add_row(f"{r['bandwidth_mbps']:g}", escape(b["cut"] if b["kind"] == "cut" else f"({b['kind']})"),
                      human_bytes(b["bytes"]), f"{b['total_ms']:.2f}", f"{r['device_only_ms']:.2f}",
                      f"{r['server_only_ms']:.2f}", f"{r['speedup_vs_best_end']:.2f}x")
        console.print(t)
    best = choice["best"]
    if best["kind"] != "cut":
        where = "on the server (the device sends the JPEG)" if best["kind"] == "server only" else "on the device"
        console.print(f"[bold]no split is fastest on this link: run everything {where}[/] "
                      f"({best['total_ms']:.2f} ms); no artifact built")
    else:
        console.print(f"[bold green]best cut:[/] {escape(best['cut'])} ({best['total_ms']:.2f} ms estimated)")


def print_split_summary(report: dict[str, Any], artifact: Path) -> None:
    """Each part's verification, the composition's, the cut's encoding and fidelity, the artifact path."""
    from edgec.profiling.report import function_change_line, human_bytes, task_line, verification_line

    for p in report["parts"]:
        console.print(f"{p['name']:5} {escape(p['target']['name'])}: {escape(verification_line(p['verification']))}")
    console.print(f"composition: {escape(verification_line(report['verification']))}")
    change = report.get("function_change")
    if change:
        cut = report["connections"][0]
        sent = next(t for t in report["parts"][0]["outputs"] if t["name"] == cut["from"]["tensor"])
        elems = 1
        for d in sent["shape"]:
            elems *= d
        console.print(f"cut {escape(sent['name'])} sent as {cut['encoding']['kind']}: {human_bytes(elems)} "
                      f"(fp32 {human_bytes(4 * elems)}), SNR {change['cut_snr_db']:.1f} dB; "
                      f"{escape(function_change_line(change))}")
        if change.get("task"):
            console.print(escape(task_line(change["task"])))
            lost = change["task"]["accuracy_whole"] - change["task"]["accuracy_split"]
            if lost > 0.05:
                console.print(f"[yellow]warning:[/] the split loses {100 * lost:.1f} points of top-1 accuracy; "
                              "try more --epochs or --bottleneck-channels, more --data, or a later cut")
    console.print(f"[bold green]artifact:[/] {escape(str(artifact))} (ARTIFACT:head, ARTIFACT:tail)")
