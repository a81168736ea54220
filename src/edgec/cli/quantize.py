"""``edgec quantize``: flags, the quantization flow (:func:`edgec.flows.quantize.quantize`), its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import (PASSES_HELP, StepPrinter, calibrate_option, calibration_method_option, console,
                               model_kwargs, quantize_data_option, samples_option, shape_option, value_option)


def quantize(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE.onnx",
                                                help="The int8 QDQ model to write (default MODEL-int8.onnx).")] = None,
    calibrate: Annotated[Optional[Path], calibrate_option()] = None,
    samples: Annotated[Optional[int], samples_option()] = None,
    calibration: Annotated[str, calibration_method_option()] = "minmax",
    data: Annotated[Optional[Path], quantize_data_option()] = None,
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    input_value: Annotated[Optional[list[str]], value_option()] = None,
    weights: Annotated[Optional[Path], typer.Option(metavar="FILE", help="PyTorch state dict for a zoo model.")] = None,
    width_mult: Annotated[Optional[float], typer.Option(metavar="X", help="Width multiplier (MCUNetV2).")] = None,
    seed: Annotated[int, typer.Option(metavar="N", min=0, max=2**32 - 1,
                                      help="Seed of random weights and of the generated images.")] = 0,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
) -> None:
    """Quantize MODEL to int8 (post-training static, QDQ ONNX) and report how far it moved from float32."""
    from edgec.flows.quantize import quantize as run_quantize
    from edgec.flows.request import BuildOptions

    opts = BuildOptions(model=model, input_shapes=input_shape, input_values=input_value, weights=weights, seed=seed,
                        passes=passes, model_kwargs=model_kwargs(width_mult), quantize="int8", calibrate=calibrate,
                        calibration_samples=samples, calibration_method=calibration, data=data, verify=False)
    target = out or Path(f"{Path(model).stem if model.endswith('.onnx') else model}-int8.onnx")
    with StepPrinter() as printer:
        result = run_quantize(opts, target, progress=printer)
    print_quantize_summary(result)


def print_quantize_summary(result) -> None:
    """One screen: calibration, the int8 scheme, the function change per input set, the file."""
    from edgec.flows.int8 import SYNTHETIC_SETS, describe
    from edgec.profiling.report import weights_note

    rec, fc = result.record, result.function_change
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    if result.weights == "random":
        table.add_row("weights", f"[yellow]{weights_note('random', '--weights')}[/]")
    cal = rec["calibration"]
    style = "yellow" if cal["source"] == "generated" else ""
    table.add_row("calibration", f"[{style}]{escape(cal['description'])}[/], {cal['method']}" if style
                  else f"{escape(cal['description'])}, {cal['method']}")
    q = rec["quantization"]
    table.add_row("int8", f"weights {q['weights']}; activations {q['activations']}; bias {q['bias']}; "
                          f"{q['quantized_tensors']} activation tensors quantized")
    table.add_row("function", f"[yellow]{escape(describe(fc))}[/] (against float32)")
    for s in fc.get("sets", []):
        one = {k: v for k, v in s.items() if k != "top1_agreement"}  # one sample: agreement is 0 or 100%
        table.add_row("", escape(f"'{s['name']}' verification inputs: {describe({**one, 'measured_on': '1 sample'})}"))
    synthetic = [s["name"] for s in fc.get("sets", []) if s["name"] in SYNTHETIC_SETS]
    if synthetic:
        table.add_row("", f"[dim]{', '.join(synthetic)}: synthetic inputs, partly outside the calibrated range "
                      "(a low SNR there is expected)[/]")
    console.print(table)
    console.print(f"[bold green]int8 model:[/] {escape(str(result.path))}  (edgec build {escape(str(result.path))} "
                  "compiles it to integer kernels)")
