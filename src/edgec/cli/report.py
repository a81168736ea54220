"""``edgec report compare``: two reports side by side (:func:`edgec.flows.report.compare_reports`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgec.cli.console import console


def report_compare(
    a: Annotated[Path, typer.Argument(metavar="REPORT.json", help="First report.json.")],
    b: Annotated[Path, typer.Argument(metavar="REPORT.json", help="Second report.json.")],
) -> None:
    """Print the difference between two reports (e.g. before/after a pass, rpi4 vs host)."""
    from edgec.flows.report import compare_reports

    diff = compare_reports(a, b)
    t = Table(title=f"A = {diff['a']}\nB = {diff['b']}", title_justify="left")
    for col in ("metric", "A", "B", "B/A", "better"):
        t.add_column(col, justify="left" if col == "metric" else "right")

    def fmt(v):
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4g}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    for r in diff["metrics"]:
        ratio = "-" if r["ratio_b_over_a"] is None else f"{r['ratio_b_over_a']:.3f}"
        t.add_row(r["metric"], fmt(r["a"]), fmt(r["b"]), ratio, r["better"] or "")
    console.print(t)
    if diff["kernels"]:
        k = Table(title="largest per-kernel changes (ms)", title_justify="left")
        for col in ("kernel", "A", "B", "B-A"):
            k.add_column(col, justify="left" if col == "kernel" else "right")
        for r in diff["kernels"]:
            k.add_row(r["kernel"], fmt(r["a_ms"]), fmt(r["b_ms"]), f"{r['delta_ms']:+.3f}")
        console.print(k)
    if diff["emulated"]:
        console.print("[yellow]at least one report is from an emulated device: its timings are not device speed[/]")
