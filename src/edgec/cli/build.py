"""``edgec build``: flags, the build flow (:func:`edgec.flows.build.build`), the one-screen summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgec.cli.console import (PASSES_HELP, StepPrinter, calibrate_option, calibration_method_option, console,
                               model_kwargs, quantize_data_option, samples_option, shape_option, value_option,
                               verify_timeout_option)


def build(
    model: Annotated[str, typer.Argument(metavar="MODEL",
                                         help="Zoo name (`edgec zoo list`) or path of an .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET",
                                        help="Target (`edgec targets list`).")] = "host",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Parent folder of the artifact.")] = Path("out"),
    name: Annotated[Optional[str], typer.Option(metavar="NAME",
                                                help="Artifact folder name (default MODEL-TARGET).")] = None,
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    input_value: Annotated[Optional[list[str]], value_option()] = None,
    weights: Annotated[Optional[Path], typer.Option(metavar="FILE", help="PyTorch state dict for a zoo model.")] = None,
    pretrained: Annotated[bool, typer.Option(metavar="",
                                             help="Use timm's pretrained weights (cache or online).")] = False,
    width_mult: Annotated[Optional[float], typer.Option(metavar="X", help="Width multiplier (MCUNetV2).")] = None,
    seed: Annotated[int, typer.Option(metavar="N", min=0, max=2**32 - 1, help="Seed of random weights and of the verification inputs.")] = 0,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", metavar="",
                                         help="Check the artifact against onnxruntime.")] = True,
    verify_timeout: Annotated[Optional[float], verify_timeout_option()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    dump_ir: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                                    help="Write the ONNX after every pass to this folder.")] = None,
    db: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                               help="Tuning database folder (default: the user cache).")] = None,
    tune_db: Annotated[bool, typer.Option("--tune-db/--no-tune-db", metavar="",
                                          help="Apply the tuning database.")] = True,
    verify_inputs: Annotated[Optional[list[Path]], typer.Option(
        "--verify-inputs", metavar="FILE",
        help="Your own verification samples: .npz (arrays named as the inputs), .npy or images (repeat).")] = None,
    quantize: Annotated[Optional[str], typer.Option(
        "--quantize", metavar="int8",
        help="Quantize after the passes (post-training static int8) and compile integer kernels.")] = None,
    calibrate: Annotated[Optional[Path], calibrate_option()] = None,
    samples: Annotated[Optional[int], samples_option()] = None,
    calibration: Annotated[Optional[str], calibration_method_option()] = None,
    data: Annotated[Optional[Path], quantize_data_option()] = None,
) -> None:
    """Compile MODEL for TARGET and verify it; writes out/MODEL-TARGET/."""
    from edgec.flows.build import BuildOptions
    from edgec.flows.build import build as run_build

    from edgec.errors import UsageError

    if quantize is None and (samples is not None or calibration is not None):
        flag = "--samples" if samples is not None else "--calibration"
        raise UsageError(f"{flag} is given without --quantize", f"add --quantize int8, or drop {flag}")
    calibration = calibration or "minmax"
    kwargs = model_kwargs(width_mult)
    opts = BuildOptions(model=model, target=target, out_dir=out, name=name, input_shapes=input_shape, input_values=input_value,
                        weights=weights, pretrained=pretrained, seed=seed, verify=verify, passes=passes,
                        dump_ir=dump_ir, tune_db=db, use_tune_db=tune_db, model_kwargs=kwargs,
                        verify_inputs=list(verify_inputs or []), verify_timeout=verify_timeout, quantize=quantize,
                        calibrate=calibrate, calibration_samples=samples, calibration_method=calibration, data=data)
    with StepPrinter() as printer:
        result = run_build(opts, progress=printer)
    print_build_summary(result.report, result.artifact)


def _tune_args(model: dict) -> str:
    """How ``edgec tune`` names the model built: the zoo name, or the ONNX file with its input shapes."""
    if model.get("source") == "tflite":
        return model["path"]
    if model.get("source") != "onnx" or not model.get("path"):
        return model["name"]
    shapes = " ".join(f"--input-shape {i['name']}={','.join(map(str, i['shape']))}" for i in model.get("inputs", []))
    values = " ".join(f"--input-value {k}={','.join(_flat(v))}" for k, v in (model.get("input_values") or {}).items())
    return f"{model['path']} {shapes} {values}".strip()


def _flat(values) -> list[str]:
    """A folded input's values as ``--input-value`` takes them (nested lists flattened, 1.0 as 1)."""
    if isinstance(values, list):
        return [x for v in values for x in _flat(v)]
    return [f"{values:g}" if isinstance(values, float) else str(values)]


def int8_rows(report: dict) -> list[tuple[str, str]]:
    """The summary's ``int8`` rows: the quantization step (calibration, in yellow when no images were given) and
    the integer kernels with the operators left in float."""
    rows = []
    step = next((p for p in report.get("passes", []) if p.get("name") == "quantize_int8"), None)
    if step:
        cal = step["calibration"]
        text = f"{escape(step['label'])}: {escape(cal['description'])}"
        rows.append(("int8", f"[yellow]{text}[/]" if cal["source"] == "generated" else text))
    integer = (report.get("kernels") or {}).get("integer")
    if integer:
        ops = ", ".join(f"{k} {v}" for k, v in integer["integer_ops"].items()) or "none"
        islands = ", ".join(f"{k} {v}" for k, v in integer["float_islands"].items())
        rows.append(("" if step else "int8", escape(f"integer kernels: {ops}" + (
            f"; dequantize -> float -> quantize: {islands}" if islands else ""))))
    return rows


def print_build_summary(report: dict, artifact: Path) -> None:
    """One screen: model, target, size, compile time, passes, verification, function change, artifact path."""
    from edgec.profiling.memory import memory_line
    from edgec.profiling.report import (float64_line, function_change_line, human_bytes, human_count, pass_error,
                                        pass_growth_warnings, quick_peer, schedules_line, verification_line,
                                        weights_note)

    m, t, b = report["model"], report["target"], report["build"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # long rows wrap at the terminal's width, never cut or ellipsized
    table.add_row("model", f"{escape(m['name'])} ({m['source']}), params {human_count(m['params'])}, "
                           f"MACs {human_count(m['macs'])}, {m['nodes']} "
                           f"{'TFLite operators' if m['source'] == 'tflite' else 'ONNX nodes'}")
    if m.get("input_values"):
        table.add_row("inputs", "fixed by --input-value: " + escape("; ".join(
            f"{k}={','.join(_flat(v))}" for k, v in m["input_values"].items())))
    if m.get("weights") == "random":
        table.add_row("weights", f"[yellow]{weights_note('random')}[/]")
    table.add_row("target", f"{escape(t['name'])}: {escape(t['description'])}")
    table.add_row("artifact", f"{human_bytes(b['artifact_bytes'])} (library {human_bytes(b['library_bytes'])})")
    table.add_row("compile", f"{b['compile_seconds']:.1f} s (build {b['total_seconds']:.1f} s)")
    for f in b.get("fallbacks") or []:
        table.add_row("fallback", f"[yellow]{escape(f['kernel'])}: {escape(f['fallback'])} (the code generator "
                                  f"failed for this CPU: {escape(f['reason'])})[/]")
    if b.get("total_tasks") or t.get("kind") == "cpu":
        sched = b.get("schedules") or {}
        table.add_row("tuning", escape(schedules_line(b)))
        quantized_here = any(p.get("name") == "quantize_int8" for p in report.get("passes", []))
        if not quantized_here and (sched.get("transferred") or sched.get("default") or sched.get("untuned")
                                   or not b.get("total_tasks")):
            device = "" if t["name"] == "host" else " --device rpc://BOARD:9090"
            table.add_row("", f"[dim]measure on the device for its own schedules: edgec tune {escape(_tune_args(m))} "
                              f"--target {escape(t['name'])}{device} --minutes 30[/]")
    for row in int8_rows(report):
        table.add_row(*row)
    mem = report.get("memory")
    if mem:
        table.add_row("memory", escape(memory_line(mem)))
    q = b.get("quick_latency")
    if q:
        peer, ms, ratio = quick_peer(q)
        table.add_row("speed", f"edgec {q['edgec_ms_p50']:.2f} ms, {peer} {ms:.2f} ms "
                               f"(p50 of {q['runs']} interleaved runs, {q['threads']} threads; ratio "
                               f"{ratio:.2f}; `edgec profile` for the full picture)")
    notes = (report.get("passes") or [{}])[0].get("normalizations") or []
    for note in notes:
        if note.startswith("onnxruntime cannot run the original model"):
            table.add_row("reference", f"[yellow]{escape(note)}[/]")
    v = report.get("verification", {})
    style = "green" if v.get("passed") else ("yellow" if v.get("skipped") else "red")
    if v.get("cubin_archs") and v.get("passed"):
        style = "yellow"
    fc = report.get("function_change")
    against = f" (vs the model after {', '.join(fc['passes'])})" if fc else ""
    table.add_row("verify", f"[{style}]{escape(verification_line(v, float64=False))}[/]{escape(against)}")
    if float64_line(v):
        table.add_row("float64", escape(float64_line(v)))
    if fc:
        table.add_row("function", f"[yellow]{escape(function_change_line(fc))}[/]")
    for warning in pass_growth_warnings(report.get("passes")):
        table.add_row("warning", f"[yellow]{escape(warning)} (artifact {human_bytes(b['artifact_bytes'])})[/]")
    console.print(table)
    all_passes = [p for p in report.get("passes", []) if "nodes_before" in p]
    passes = [p for p in all_passes if p.get("applied")]
    if all_passes and not passes:
        console.print(f"passes: {len(all_passes)} run, none changed the graph")
    if passes:
        pt = Table(title="passes (each checked against onnxruntime before/after)", title_justify="left")
        for col in ("pass", "nodes", "params", "MACs", "op changes", "max abs err", "s"):
            pt.add_column(col, justify="left" if col in ("pass", "op changes") else "right")
        for p in passes:
            ops = ", ".join(f"{k} {a}→{b}" for k, (a, b) in p.get("op_changes", {}).items()) or "no change"
            pt.add_row(p.get("label", p["name"]), f"{p['nodes_before']} → {p['nodes_after']}",
                       f"{human_count(p['params_before'])} → {human_count(p['params_after'])}",
                       f"{human_count(p['macs_before'])} → {human_count(p['macs_after'])}", ops,
                       pass_error(p), f"{p.get('seconds', 0):.2f}")
        console.print(pt)
        idle = [p.get("label", p["name"]) for p in all_passes if not p.get("applied")]
        if idle:
            console.print(f"[dim]no change: {', '.join(idle)}[/]")
    k = report.get("kernels")
    if k and passes:
        console.print(f"fused kernels {k['before_passes']} → {k['after_passes']}; standalone element-wise/"
                      f"layout kernels {len(k['standalone_before_passes'])} → {len(k['standalone_after_passes'])}; "
                      f"convolutions in {k.get('conv_layout', 'NCHW')}")
    console.print(f"[bold green]artifact:[/] {escape(str(artifact))}")
