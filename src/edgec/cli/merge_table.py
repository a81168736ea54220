"""``edgec merge-table``: flags, the flow (:func:`edgec.flows.merge_table.merge_table`), the pairs' table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import PASSES_HELP, StepPrinter, console, shape_option


def merge_table_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET", help="Target (host only for now).")]
    = "host",
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    max_kernel: Annotated[int, typer.Option(min=1, max=31, metavar="K", help="Largest merged kernel side.")] = 7,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE",
                                                help="Where to write the table (JSON).")] = None,
) -> None:
    """Time every mergeable Conv pair of MODEL separate and merged (the latency table of depth_merge)."""
    from edgec.flows.merge_table import merge_table
    from edgec.flows.request import BuildOptions

    opts = BuildOptions(model=model, target=target, input_shapes=input_shape, passes=passes, verify=False)
    out = out or Path(f"merge-table-{Path(model).stem}-{target}.json")
    with StepPrinter() as printer:
        table = merge_table(opts, max_kernel=max_kernel, progress=printer, out=out)
    t = Table(title=f"{len(table['pairs'])} mergeable pairs on {escape(target)} (p50 ms, this machine)",
              title_justify="left")
    for col in ("first", "second", "kernel", "separate ms", "merged ms", "spread ms", "MACs separate", "MACs merged",
                "merge"):
        t.add_column(col, justify="left" if col in ("first", "second") else "right")
    for p in table["pairs"]:
        t.add_row(escape(p["first"]), escape(p["second"]), "x".join(map(str, p["kernel"])),
                  f"{p['separate_ms']:.4f}", f"{p['merged_ms']:.4f}", f"{p['spread_ms']:.4f}", str(p["separate_macs"]),
                  str(p["merged_macs"]), "[green]faster[/]" if p["faster"] else (
                      "within spread" if p["merged_ms"] < p["separate_ms"] else "slower"))
    console.print(t)
    refused = len(table["refused"])
    console.print(f"{sum(p['faster'] for p in table['pairs'])} of {len(table['pairs'])} merges measured faster by more "
                  "than the spread of their interleaved blocks; "
                  f"{refused} Conv->Conv pairs not mergeable exactly (reasons in the JSON)")
    console.print(f"[bold green]table:[/] {escape(str(out))}; apply with --passes "
                  f"'{escape(passes)},depth_merge(mode=latency,table={escape(str(out))})'")
