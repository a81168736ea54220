"""``edgec depth-compress``: flags, the flow (:func:`edgec.flows.depth_compress.depth_compress`), its table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import StepPrinter, console, err_console, shape_option


def missed_target(latency: dict, speedup: float | None, budget_ms: float | None) -> str | None:
    """The warning when the compressed model's measured latency misses what was asked (``--speedup`` by more
    than 3%, or ``--budget-ms``), naming the machine's load, which makes such timings unreliable; else None."""
    import os

    if speedup is not None and latency["speedup"] < speedup * 0.97:
        got = f"the measured speed-up {latency['speedup']:.2f}x misses the --speedup {speedup:g} target"
    elif budget_ms is not None and latency["compressed"] > budget_ms * 1.03:
        got = f"the compressed model measured {latency['compressed']:.4f} ms, over the --budget-ms {budget_ms:g}"
    else:
        return None
    load = os.getloadavg()[0]
    return (f"{got} (load average {load:.1f} on {os.cpu_count()} cores now): the latency table and the timings "
            "are this machine's at the time; on a busy machine rerun when it is quiet, else lower the target")


def depth_compress_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx classifier.")],
    data: Annotated[Path, typer.Option(metavar="DIR", help="Labelled images (DIR/train and DIR/val, or "
                                       "DIR/<class>/*.png): importance, fine-tuning and accuracy.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET", help="Target (host only for now).")]
    = "host",
    speedup: Annotated[Optional[float], typer.Option(metavar="X", help="Target speed-up of the whole model "
                                                     "(default 1.25 unless --budget-ms).")] = None,
    budget_ms: Annotated[Optional[float], typer.Option(metavar="MS", help="Latency budget of the whole model "
                                                       "(ms), instead of --speedup.")] = None,
    epochs: Annotated[int, typer.Option(min=0, metavar="N", help="Fine-tuning epochs (distillation).")] = 20,
    lr: Annotated[float, typer.Option(metavar="LR", help="Peak fine-tuning learning rate (AdamW).")] = 1e-3,
    max_kernel: Annotated[int, typer.Option(min=1, max=31, metavar="K", help="Largest merged kernel side.")] = 7,
    importance_steps: Annotated[int, typer.Option(min=0, max=100000, metavar="N", help="Fine-tuning steps per "
                                                  "segment before scoring it (0: the bare removal's KL).")] = 30,
    plan_rounds: Annotated[int, typer.Option(min=0, max=10, metavar="N", help="Re-plan up to N times from the "
                                             "planned model's measured time (0: the table's plan).")] = 2,
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Output folder (default "
                                                "out/<model>-depth-compressed).")] = None,
) -> None:
    """Remove activations, merge convolutions and fine-tune MODEL to a latency budget (changes the function;
    Kim et al., ICML 2023). Writes the compressed ONNX and a report; build it with `edgec build`."""
    from edgec.flows.depth_compress import COMPRESSED, CompressOptions, depth_compress
    from edgec.flows.request import BuildOptions

    copts = CompressOptions(speedup=speedup if speedup is not None or budget_ms is not None else 1.25,
                            budget_ms=budget_ms, epochs=epochs, lr=lr, max_kernel=max_kernel,
                            importance_steps=importance_steps, plan_rounds=plan_rounds)
    opts = BuildOptions(model=model, target=target, input_shapes=input_shape, verify=False)
    out = out or Path("out") / f"{Path(model).stem}-depth-compressed"
    with StepPrinter() as printer:
        _, report = depth_compress(opts, data, copts, progress=printer, out=out)
    path = out / COMPRESSED
    lat, acc = report["latency_ms"], report["accuracy"]
    t = Table(title=f"depth compression on {escape(target)} (changes the function)", title_justify="left")
    for col in ("", "model", "compressed"):
        t.add_column(col, justify="left" if not col else "right")
    t.add_row("top-1 held out", f"{100 * acc['model']:.2f}%", f"{100 * acc['compressed']:.2f}%")
    t.add_row("latency ms (measured)", f"{lat['model']:.4f}", f"{lat['compressed']:.4f}")
    t.add_row("kernels", str(report["kernels"]["model"]), str(report["kernels"]["compressed"]))
    t.add_row("MACs", f"{report['macs']['model']:,}", f"{report['macs']['compressed']:,}")
    console.print(t)
    removed = sum(len(c["removed_activations"]) for c in report["chains"])
    merged = sum(g["merged"] for c in report["chains"] for g in c["groups"])
    console.print(f"{removed} activations removed, {merged} groups merged; speed-up {lat['speedup']:.2f}x "
                  f"(DP predicted {lat['predicted']:.4f} ms, {100 * lat['prediction_error']:+.1f}%); "
                  f"top-1 agreement {100 * acc['top1_agreement']:.2f}%")
    missed = missed_target(lat, copts.speedup, copts.budget_ms)
    if missed:
        err_console.print(f"[yellow]warning:[/] {escape(missed)}", highlight=False, soft_wrap=True)
    lost = acc["model"] - acc["compressed"]
    if lost > 0.01:
        err_console.print(f"[yellow]warning:[/] the compressed model lost {100 * lost:.1f} points of top-1 after "
                          f"{epochs} epochs; try more --epochs, a lower --lr, or a smaller --speedup")
    console.print(f"[bold green]compressed:[/] {escape(str(path))} (report depth-compress.md); build it with "
                  f"`edgec build {escape(str(path))} --target {escape(target)}`")
