"""``edgec profile``: flags, the profiling flow (:func:`edgec.flows.profile.profile`), the one-screen summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import StepPrinter, console, err_console, shape_option, value_option
from edgec.errors import DeviceError


def profile(
    model: Annotated[str, typer.Argument(metavar="ARTIFACT[:PART]|MODEL",
                                         help="An artifact (ARTIFACT[:PART]), a zoo name or an .onnx file (built "
                                         "first).")],
    device: Annotated[str, typer.Option(metavar="DEVICE",
                                        help="local, qemu-aarch64, rpc://HOST:PORT or tracker://HOST:PORT/KEY.")]
    = "local",
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET",
                                        help="Target when building first.")] = "host",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR",
                                                help="Report folder (default ARTIFACT/profile).")]
    = None,
    threads: Annotated[Optional[int], typer.Option(metavar="N", min=1,
                                                   help="Threads (default: the target's cores).")] = None,
    repeats: Annotated[int, typer.Option(metavar="N", min=1, max=100000, help="Timed end-to-end runs.")] = 50,
    warmup: Annotated[int, typer.Option(metavar="N", min=0, help="Untimed runs first.")] = 5,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", min=1,
                                           help="Seconds before giving up on a remote device (session limit); partial "
                                           "results are kept.")] = 600.0,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", metavar="",
                                           help="Also time onnxruntime (local; LiteRT for a TFLite file's build).")]
    = True,
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    input_value: Annotated[Optional[list[str]], value_option()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help="Pass pipeline when building first.")] = "default",
    db: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Tuning database when building first.")] = None,
    tune_db: Annotated[bool, typer.Option("--tune-db/--no-tune-db", metavar="",
                                          help="Apply the tuning database.")] = True,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", metavar="",
                                         help="Verify when building first.")] = True,
) -> None:
    """Latency (end to end and per kernel) and memory of MODEL on DEVICE; writes report.json/.md/.html."""
    from edgec.flows.profile import profile as run_profile
    from edgec.flows.request import BuildOptions
    from edgec.profiling.profiler import ProfileOptions

    bopts = BuildOptions(model=model, target=target, input_shapes=input_shape, input_values=input_value, passes=passes, tune_db=db,
                         use_tune_db=tune_db, verify=verify)
    popts = ProfileOptions(device=device, threads=threads, repeats=repeats, warmup=warmup, baseline=baseline,
                           timeout_s=timeout)
    with StepPrinter() as printer:
        result = run_profile(model, popts, build_opts=bopts, out=out, progress=printer)
    if result.reused:
        console.print(f"[dim]reused {escape(str(result.reused))}: built from the same model with the same options[/]")
    elif result.built:
        console.print(f"[dim]built {escape(str(result.built))} ({escape(str(result.rebuilt_because))})[/]")
    print_profile_summary(result.report, result.folder)
    if not result.report.get("complete", True):
        raise DeviceError(f"the profile is incomplete: {result.report['profile'].get('error')}",
                          f"partial results kept in {result.folder / 'report.json'}")


def print_profile_summary(report: dict, folder: Path) -> None:
    """One screen: p50/p90, ratio vs onnxruntime, top 5 kernels, memory."""
    from edgec.profiling.report import busy_text, human_bytes, threads_text, top_kernels

    p = report["profile"]
    lat = p["latency"].get("edgec", {})
    if p.get("emulated"):
        console.print("[bold yellow]EMULATED device (qemu): timings are not device speed[/]")
    if busy := busy_text(p):
        err_console.print(f"[yellow]warning: {escape(busy)}[/]", highlight=False, soft_wrap=True)
    head = (f"[bold]{report['model']['name']}[/] on [bold]{report['target']['name']}[/] via {p['device']['url']}, "
            f"threads {escape(threads_text(p, report['target']['name']))}")
    console.print(head)
    if lat:
        line = (f"latency p50 [bold]{lat['latency_ms_p50']:.3f} ms[/], p90 {lat['latency_ms_p90']:.3f} ms, "
                f"min {lat['latency_ms_min']:.3f}, max {lat['latency_ms_max']:.3f} ({lat['runs']} runs)")
        console.print(line)
    for peer, short in (("onnxruntime", "ORT"), ("litert", "LiteRT")):
        if f"ratio_vs_{peer}_p50" in p["latency"]:
            base = p["latency"][peer]
            trust = " [yellow](unreliable: measured on a busy machine)[/]" if busy_text(p) else ""
            console.print(f"{peer} p50 {base['latency_ms_p50']:.3f} ms → edgec/{short} = "
                          f"[bold]{p['latency'][f'ratio_vs_{peer}_p50']:.2f}[/]{trust}")
    if p.get("kernels"):
        t = Table(title=f"top 5 kernels (sum of kernels {p['kernels_total_ms']:.3f} ms)", title_justify="left")
        for col in ("kernel", "calls", "ms", "share", "ONNX nodes"):
            t.add_column(col, justify="left" if col in ("kernel", "ONNX nodes") else "right")
        for k in top_kernels(p, 5):
            nodes = ", ".join(k["onnx_nodes"][:3]) + (" …" if len(k["onnx_nodes"]) > 3 else "")
            t.add_row(k["kernel"], str(k["calls"]), f"{k['time_ms']:.3f}", f"{100 * k['share']:.1f}%", nodes)
        console.print(t)
    m = p["memory"]
    parts = [f"{label} {human_bytes(m.get(key))}" for label, key in (
        ("planned activations", "planned_activation_bytes"), ("weights", "weight_bytes"),
        ("artifact", "artifact_bytes"), ("peak RSS", "peak_rss_bytes")) if m.get(key) is not None]
    console.print("memory: " + ", ".join(parts))
    console.print(f"[bold green]report:[/] {escape(str(folder / 'report.md'))} (.json, .html)")
