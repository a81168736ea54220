"""``edgec memory``: flags, the analysis (:func:`edgec.flows.memory.memory`), the patch plans' table."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import PASSES_HELP, StepPrinter, console, model_kwargs, shape_option, value_option


def memory(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    input_value: Annotated[Optional[list[str]], value_option()] = None,
    width_mult: Annotated[Optional[float], typer.Option(metavar="X", help="Width multiplier (MCUNetV2).")] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    max_mac_overhead: Annotated[float, typer.Option(
        min=0.0, metavar="FRACTION", help="Largest MAC increase the patch search accepts (0.15 = +15%).")] = 0.15,
    max_grid: Annotated[int, typer.Option(min=2, max=32, metavar="N", help="Largest n x n grid tried.")] = 8,
    top: Annotated[int, typer.Option(min=1, metavar="K", help="Patch plans shown.")] = 8,
) -> None:
    """Peak activation memory of MODEL (fp32 and int8 analytic) and the best patch-based inference plans."""
    from edgec.flows.memory import memory as analyse
    from edgec.flows.request import BuildOptions

    opts = BuildOptions(model=model, input_shapes=input_shape, input_values=input_value, passes=passes, verify=False,
                        model_kwargs=model_kwargs(width_mult))
    with StepPrinter() as printer:
        a = analyse(opts, max_mac_overhead=max_mac_overhead, max_grid=max_grid, progress=printer)
    from edgec.frontend.memory import KIB  # after the checks: it imports onnx

    fp32, int8, with_input, best, tried = a.fp32, a.int8, a.with_input, a.best, a.tried
    console.print(f"peak activations: {fp32.peak_activation_bytes / KIB:.1f} kB fp32, "
                  f"{int8.peak_activation_bytes / KIB:.1f} kB int8 analytic (at {escape(fp32.peak_node)}; "
                  f"{with_input.peak_activation_bytes / KIB:.1f} kB fp32 with the input image); largest tensor "
                  f"{escape(fp32.largest_tensor[0])} {fp32.largest_tensor[1] / KIB:.1f} kB fp32. kB = 1024 bytes.")
    if not tried:
        console.print("no patch plan: the model has no spatially local stage (Conv or pooling on a 4-D tensor) "
                      "where a single tensor crosses")
        return
    useful = sorted((c for c in tried if c.mac_overhead <= max_mac_overhead
                     and c.peak_activation_bytes < fp32.peak_activation_bytes),
                    key=lambda c: (c.peak_activation_bytes, c.macs))
    if useful:
        t = Table(title=f"patch plans within +{100 * max_mac_overhead:g}% MACs that lower the peak, lowest first",
                  title_justify="left")
        for col in ("stop tensor", "grid", "peak fp32 kB", "peak int8 kB", "MACs"):
            t.add_column(col, justify="left" if col == "stop tensor" else "right")
        for c in useful[:top]:
            t.add_row(escape(c.stop), f"{c.grid}x{c.grid}", f"{c.peak_activation_bytes / KIB:.1f}",
                      f"{c.peak_activation_bytes / 4 / KIB:.1f}", f"+{100 * c.mac_overhead:.1f}%")
        console.print(t)
    over = sum(c.mac_overhead > max_mac_overhead for c in tried)
    console.print(f"{len(tried)} plans tried; {over} over the MAC limit, "
                  f"{len(tried) - over - len(useful)} that do not lower the peak")
    if best is None:
        console.print(f"no patch plan lowers the peak within +{100 * max_mac_overhead:g}% MACs "
                      "(try --max-mac-overhead)")
    else:
        console.print(f"[bold green]best:[/] --passes '{escape(passes)},patch_inference(stop={escape(best.stop)},"
                      f"grid={best.grid})' -> {best.peak_activation_bytes / 4 / KIB:.1f} kB int8 analytic, "
                      f"MACs +{100 * best.mac_overhead:.1f}%")
