"""The ``edgec`` command line: thin adapters over the Python API.

Each subcommand parses its flags, calls one library function, and prints a
summary. :func:`main` maps :class:`edgec.errors.EdgecError` subclasses to one
line on stderr and a distinct exit code; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgec.errors import DeviceError, EdgecError, UsageError, clear_interrupt, on_interrupt, raise_if_interrupted

EXIT_CODES = ("Exit codes: 0 ok, 2 usage (a wrong flag, name or value), 3 model file, 4 unsupported operator, "
              "5 missing toolchain, 6 verification failed, 7 device, 8 compiler failure on a kernel (a TVM/LLVM "
              "bug), 70 a bug of edgec (please report it), 130 interrupted. --debug (anywhere) shows tracebacks.")
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="edgec: compile vision models for edge devices with TVM, verified against onnxruntime.",
                  epilog=EXIT_CODES)
zoo_app = typer.Typer(no_args_is_help=True, help="The model zoo.")
targets_app = typer.Typer(no_args_is_help=True, help="Deployment targets.")
app.add_typer(zoo_app, name="zoo")
passes_app = typer.Typer(no_args_is_help=True, help="Graph passes.")
report_app = typer.Typer(no_args_is_help=True, help="Reports.")
device_app = typer.Typer(no_args_is_help=True, help="Devices: an emulated board and a tracker for fleets.")
app.add_typer(report_app, name="report")
app.add_typer(device_app, name="device")
app.add_typer(targets_app, name="targets")
app.add_typer(passes_app, name="passes")

# Not a terminal (pipes, CI logs): wide enough that tables do not wrap names.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_STATE = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", metavar="", help="Show tracebacks and TVM's output.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                                help="Log progress details.")] = False) -> None:
    _STATE["debug"] = debug
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


class _StepPrinter:
    """Shows the running step in a spinner and prints each finished step."""

    def __init__(self) -> None:
        self.status = err_console.status("starting")
        self.current: str | None = None

    def __enter__(self):
        self.status.__enter__()
        return self

    def __exit__(self, *exc):
        self.status.__exit__(*exc)
        if self.current and exc[0] is None:
            err_console.print(f"  [dim]·[/] {escape(self.current)}")

    def __call__(self, step: str) -> None:
        self.status.update(f"[bold]{escape(step)}[/]…")
        if self.current:
            err_console.print(f"  [dim]·[/] {escape(self.current)}")
        self.current = step


PASSES_HELP = ("Pass pipeline: default, none, 'a,b(key=value,...)' (options: `edgec passes list`), "
               "or a pipeline file (.toml/.json).")


class _TuneDisplay:
    """A spinner while the model is prepared, then a progress bar over the trials (one live display at a time)."""

    def __init__(self, trials: int | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.printer = _StepPrinter()
        self.bar = Progress(TextColumn("[bold]tuning[/]"), BarColumn(),
                            TextColumn("{task.completed}/{task.total} trials"), TextColumn("{task.fields[est]}"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console)
        self.trials = trials
        self.job = None

    def __enter__(self):
        self.printer.__enter__()
        return self

    def step(self, name: str) -> None:
        self.printer(name)

    def update(self, p) -> None:
        if self.job is None:
            self.printer.__exit__(None, None, None)
            self.bar.start()
            self.job = self.bar.add_task("tune", total=self.trials or 1000, est="")
        if p.trials_total:
            done, tot = p.trials_done, p.trials_total
        else:  # time budget: show progress in elapsed time
            tot = 1000
            done = int(min(1.0, p.elapsed_s / p.deadline_s) * tot) if p.deadline_s else 0
        if p.deadline_s and p.trials_total:
            done = max(done, int(min(1.0, p.elapsed_s / p.deadline_s) * tot))
        est = f"est. {p.est_latency_ms:.2f} ms ({p.tasks_measured}/{p.tasks_total} kernels)" \
            if p.est_latency_ms is not None else ""
        self.bar.update(self.job, completed=done, total=tot, est=est)

    def __exit__(self, *exc):
        if self.job is None:
            self.printer.__exit__(*exc)
        else:
            if exc[0] is None:
                self.bar.update(self.job, completed=self.bar.tasks[0].total)
            self.bar.stop()


def _shape_opt():
    return typer.Option("--input-shape", metavar="NAME=1,3,H,W",
                        help="Fix an input's shape: NAME=1,3,224,224 (repeat per input).")


@app.command()
def build(
    model: Annotated[str, typer.Argument(metavar="MODEL",
                                         help="Zoo name (`edgec zoo list`) or path of an .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET",
                                        help="Target (`edgec targets list`).")] = "host",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR",
                                      help="Parent folder of the artifact.")] = Path("out"),
    name: Annotated[Optional[str], typer.Option(metavar="NAME",
                                                help="Artifact folder name (default MODEL-TARGET).")] = None,
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    weights: Annotated[Optional[Path], typer.Option(metavar="FILE", help="PyTorch state dict for a zoo model.")] = None,
    pretrained: Annotated[bool, typer.Option(metavar="",
                                             help="Use timm's pretrained weights (cache or online).")] = False,
    width_mult: Annotated[Optional[float], typer.Option(metavar="X", help="Width multiplier (MCUNetV2).")] = None,
    seed: Annotated[int, typer.Option(metavar="N", min=0, max=2**32 - 1, help="Seed of random weights and of the verification inputs.")] = 0,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", metavar="",
                                         help="Check the artifact against onnxruntime.")] = True,
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
) -> None:
    """Compile MODEL for TARGET and verify it; writes out/MODEL-TARGET/."""
    from edgec.build import BuildOptions
    from edgec.build import build as run_build

    kwargs = {"width_mult": width_mult} if width_mult is not None else {}
    opts = BuildOptions(model=model, target=target, out_dir=out, name=name, input_shapes=input_shape,
                        weights=weights, pretrained=pretrained, seed=seed, verify=verify, passes=passes,
                        dump_ir=dump_ir, tune_db=db, use_tune_db=tune_db, model_kwargs=kwargs,
                        verify_inputs=list(verify_inputs or []))
    with _StepPrinter() as printer:
        result = run_build(opts, progress=printer)
    print_build_summary(result.report, result.artifact)


def print_build_summary(report: dict, artifact: Path) -> None:
    """One screen: model, target, size, compile time, passes, verification, function change, artifact path."""
    from edgec.profiling.memory import memory_line
    from edgec.profiling.report import (function_change_line, human_bytes, human_count, pass_error,
                                        schedules_line, verification_line, weights_note)

    m, t, b = report["model"], report["target"], report["build"]
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", f"{escape(m['name'])} ({m['source']}), params {human_count(m['params'])}, "
                           f"MACs {human_count(m['macs'])}, {m['nodes']} ONNX nodes")
    if m.get("weights") == "random":
        table.add_row("weights", f"[yellow]{weights_note('random')}[/]")
    table.add_row("target", f"{escape(t['name'])}: {escape(t['description'][:110])}")
    table.add_row("artifact", f"{human_bytes(b['artifact_bytes'])} (library {human_bytes(b['library_bytes'])})")
    table.add_row("compile", f"{b['compile_seconds']:.1f} s (build {b['total_seconds']:.1f} s)")
    for f in b.get("fallbacks") or []:
        table.add_row("fallback", f"[yellow]{escape(f['kernel'])}: {escape(f['fallback'])} (the code generator "
                                  f"failed for this CPU: {escape(f['reason'][:80])})[/]")
    if b.get("total_tasks") or t.get("kind") == "cpu":
        sched = b.get("schedules") or {}
        table.add_row("tuning", escape(schedules_line(b)))
        if sched.get("transferred") or sched.get("default") or sched.get("untuned") or not b.get("total_tasks"):
            device = "" if t["name"] == "host" else " --device rpc://BOARD:9090"
            table.add_row("", f"[dim]measure on the device for its own schedules: edgec tune {m['name']} "
                              f"--target {t['name']}{device} --minutes 30[/]")
    mem = report.get("memory")
    if mem:
        table.add_row("memory", escape(memory_line(mem)))
    q = b.get("quick_latency")
    if q:
        table.add_row("speed", f"edgec {q['edgec_ms_p50']:.2f} ms, onnxruntime {q['onnxruntime_ms_p50']:.2f} ms "
                               f"(p50 of {q['runs']} interleaved runs, {q['threads']} threads; ratio "
                               f"{q['ratio_vs_onnxruntime_p50']:.2f}; `edgec profile` for the full picture)")
    v = report.get("verification", {})
    style = "green" if v.get("passed") else ("yellow" if v.get("skipped") else "red")
    if v.get("cubin_archs") and v.get("passed"):
        style = "yellow"
    fc = report.get("function_change")
    against = f" (vs the model after {', '.join(fc['passes'])})" if fc else ""
    table.add_row("verify", f"[{style}]{escape(verification_line(v))}[/]{escape(against)}")
    if fc:
        table.add_row("function", f"[yellow]{escape(function_change_line(fc))}[/]")
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


@app.command()
def memory(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    width_mult: Annotated[Optional[float], typer.Option(metavar="X", help="Width multiplier (MCUNetV2).")] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    max_mac_overhead: Annotated[float, typer.Option(
        min=0.0, metavar="FRACTION", help="Largest MAC increase the patch search accepts (0.15 = +15%).")] = 0.15,
    max_grid: Annotated[int, typer.Option(min=2, max=32, metavar="N", help="Largest n x n grid tried.")] = 8,
    top: Annotated[int, typer.Option(min=1, metavar="K", help="Patch plans shown.")] = 8,
) -> None:
    """Peak activation memory of MODEL (fp32 and int8 analytic) and the best patch-based inference plans."""
    from edgec.build import BuildOptions, Steps, check_request, lower
    from edgec.frontend.memory import KIB, activation_memory
    from edgec.passes.patch import search_patch

    kwargs = {"width_mult": width_mult} if width_mult is not None else {}
    opts = BuildOptions(model=model, input_shapes=input_shape, passes=passes, verify=False, model_kwargs=kwargs)
    check_request(opts)
    with _StepPrinter() as printer:
        final = lower(opts, Steps(printer)).final
        try:
            fp32, int8 = activation_memory(final), activation_memory(final, element_bytes=1)
            with_input = activation_memory(final, count_inputs=True)
            printer("search patch plans")
            best, tried = search_patch(final, max_mac_overhead=max_mac_overhead, max_grid=max_grid)
        except ValueError as e:
            raise UsageError(f"memory analysis needs static shapes: {e}",
                             "fix the input shapes (--input-shape), or analyse a model without such operators") from None
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


@app.command("depth-compress")
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
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="DIR", help="Output folder (default "
                                                "out/<model>-depth-compressed).")] = None,
) -> None:
    """Remove activations, merge convolutions and fine-tune MODEL to a latency budget (changes the function;
    Kim et al., ICML 2023). Writes the compressed ONNX and a report; build it with `edgec build`."""
    from edgec.artifact import check_writable_folder
    from edgec.build import BuildOptions
    from edgec.compress import CompressOptions, depth_compress, write_result

    copts = CompressOptions(speedup=speedup if speedup is not None or budget_ms is not None else 1.25,
                            budget_ms=budget_ms, epochs=epochs, lr=lr, max_kernel=max_kernel,
                            importance_steps=importance_steps, plan_rounds=plan_rounds)
    opts = BuildOptions(model=model, target=target, input_shapes=input_shape, verify=False)
    out = out or Path("out") / f"{Path(model).stem}-depth-compressed"
    check_writable_folder(out.resolve().parent, "--out")
    from edgec.artifact import check_replaceable

    check_replaceable(out)
    with _StepPrinter() as printer:
        compressed, report = depth_compress(opts, data, copts, progress=printer)
        path = write_result(out, compressed, report, report.get("preprocessing"))
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
    lost = acc["model"] - acc["compressed"]
    if lost > 0.01:
        err_console.print(f"[yellow]warning:[/] the compressed model lost {100 * lost:.1f} points of top-1 after "
                          f"{epochs} epochs; try more --epochs, a lower --lr, or a smaller --speedup")
    console.print(f"[bold green]compressed:[/] {escape(str(path))} (report depth-compress.md); build it with "
                  f"`edgec build {escape(str(path))} --target {escape(target)}`")


@app.command("merge-table")
def merge_table_cmd(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET", help="Target (host only for now).")]
    = "host",
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    max_kernel: Annotated[int, typer.Option(min=1, max=31, metavar="K", help="Largest merged kernel side.")] = 7,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE",
                                                help="Where to write the table (JSON).")] = None,
) -> None:
    """Time every mergeable Conv pair of MODEL separate and merged (the latency table of depth_merge)."""
    from edgec.build import BuildOptions
    from edgec.depth import merge_table, write_table

    opts = BuildOptions(model=model, target=target, input_shapes=input_shape, passes=passes, verify=False)
    out = out or Path(f"merge-table-{Path(model).stem}-{target}.json")
    from edgec.artifact import check_writable_folder

    check_writable_folder(out.resolve().parent, "--out")  # before minutes of timing, not after
    with _StepPrinter() as printer:
        table = merge_table(opts, max_kernel=max_kernel, progress=printer)
    write_table(table, out)
    t = Table(title=f"{len(table['pairs'])} mergeable pairs on {escape(target)} (p50 ms, this machine)",
              title_justify="left")
    for col in ("first", "second", "kernel", "separate ms", "merged ms", "MACs separate", "MACs merged", "merge"):
        t.add_column(col, justify="left" if col in ("first", "second") else "right")
    for p in table["pairs"]:
        t.add_row(escape(p["first"]), escape(p["second"]), "x".join(map(str, p["kernel"])),
                  f"{p['separate_ms']:.4f}", f"{p['merged_ms']:.4f}", str(p["separate_macs"]), str(p["merged_macs"]),
                  "[green]faster[/]" if p["faster"] else "slower")
    console.print(t)
    refused = len(table["refused"])
    console.print(f"{sum(p['faster'] for p in table['pairs'])} of {len(table['pairs'])} merges measured faster; "
                  f"{refused} Conv->Conv pairs not mergeable exactly (reasons in the JSON)")
    console.print(f"[bold green]table:[/] {escape(str(out))}; apply with --passes "
                  f"'{escape(passes)},depth_merge(mode=latency,table={escape(str(out))})'")


@app.command()
def serve(
    artifact: Annotated[str, typer.Argument(metavar="ARTIFACT:tail", help="The tail of a split artifact.")],
    port: Annotated[int, typer.Option(min=1, max=65535, metavar="PORT", help="TCP port to listen on.")] = 50051,
    host: Annotated[str, typer.Option("--bind", "--host", metavar="ADDR",
                                      help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    tls_cert: Annotated[Optional[Path], typer.Option(metavar="PEM", help="TLS certificate (with --tls-key).")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(metavar="PEM", help="TLS private key.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, max=1024, metavar="N", help="Threads of the tail.")] = None,
) -> None:
    """Serve the tail of a split artifact over gRPC: heads send their cut tensor, get the outputs back."""
    from edgec.serve import serve as start

    server, service = start(artifact, port, host, tls_cert=tls_cert, tls_key=tls_key, threads=threads)
    console.print(f"serving {escape(str(service.part.folder))} (cut {escape(service.tensor)} {service.shape} "
                  f"{service.wire_dtype}, {service.encoding.kind}) on {escape(host)}:{port}"
                  f"{' with TLS' if tls_cert else ''}; Ctrl-C stops")
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(0)
        console.print(f"stopped after {service.served} requests")
    finally:
        service.close()


@app.command()
def split(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    list_cuts: Annotated[bool, typer.Option("--list", metavar="", help="List every valid cut with its costs.")]
    = False,
    at: Annotated[Optional[str], typer.Option(metavar="TENSOR", help="Cut at this tensor (from --list).")] = None,
    head_target: Annotated[str, typer.Option(metavar="TARGET", help="Target of the head (the device).")] = "host",
    tail_target: Annotated[str, typer.Option(metavar="TARGET", help="Target of the tail (the server).")] = "host",
    out: Annotated[Path, typer.Option("--out", "-o", metavar="DIR", help="Parent folder of the artifact.")]
    = Path("out"),
    name: Annotated[Optional[str], typer.Option(metavar="NAME", help="Artifact folder name.")] = None,
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help=PASSES_HELP)] = "default",
    verify: Annotated[bool, typer.Option("--verify/--no-verify", metavar="",
                                         help="Verify each part and their composition.")] = True,
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
    from edgec.build import BuildOptions, Steps, check_request, lower
    from edgec.multipart import build_split
    from edgec.profiling.report import human_bytes, human_count

    opts = BuildOptions(model=model, input_shapes=input_shape, passes=passes, out_dir=out, name=name, verify=verify,
                        verify_inputs=list(verify_inputs or []))
    if list_cuts == (at is not None):
        raise UsageError("give either --list or --at TENSOR", f"e.g. edgec split {model} --list")
    choice = None
    if at == "auto" and encoding == "bottleneck":
        raise UsageError("--at auto sizes the cuts as sent raw; a learned bottleneck is trained at one cut",
                         f"choose the cut with --at auto --encoding int8, then edgec split {model} --at TENSOR "
                         "--encoding bottleneck --data DIR")
    if at == "auto":
        choice = _choose_cut(opts, model, head_target, tail_target, encoding, bandwidth, rtt_ms,
                             {"head": (head_ms, head_profile), "tail": (tail_ms, tail_profile)})
        if choice is None:
            return
        at = choice["best"]["cut"]
    elif any(v is not None for v in (bandwidth, head_ms, tail_ms, head_profile, tail_profile)):
        raise UsageError("--bandwidth, --head-ms/--tail-ms and --head-profile/--tail-profile go with --at auto",
                         f"e.g. edgec split {model} --at auto --bandwidth 20 --head-ms 40")
    if encoding != "bottleneck" and (bottleneck_channels is not None or epochs != 30):
        raise UsageError("--bottleneck-channels and --epochs go with --encoding bottleneck",
                         f"e.g. edgec split {model} --at TENSOR --encoding bottleneck --data DIR --epochs 30")
    if list_cuts:
        from edgec.split import cut_table

        check_request(opts)
        with _StepPrinter() as printer:
            table = cut_table(lower(opts, Steps(printer)).final)
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
        return
    with _StepPrinter() as printer:
        result = build_split(opts, at, head_target, tail_target, encoding=encoding, progress=printer, data=data,
                             bottleneck_channels=bottleneck_channels, epochs=epochs,
                             attachments=None if choice is None else lambda folder: _write_choice(choice, model,
                                                                                                   folder))
    from edgec.profiling.report import function_change_line, verification_line

    for p in result.report["parts"]:
        console.print(f"{p['name']:5} {escape(p['target']['name'])}: {escape(verification_line(p['verification']))}")
    console.print(f"composition: {escape(verification_line(result.report['verification']))}")
    change = result.report.get("function_change")
    if change:
        cut = result.report["connections"][0]
        sent = next(t for t in result.report["parts"][0]["outputs"] if t["name"] == cut["from"]["tensor"])
        elems = 1
        for d in sent["shape"]:
            elems *= d
        console.print(f"cut {escape(sent['name'])} sent as {cut['encoding']['kind']}: {human_bytes(elems)} "
                      f"(fp32 {human_bytes(4 * elems)}), SNR {change['cut_snr_db']:.1f} dB; "
                      f"{escape(function_change_line(change))}")
        if change.get("task"):
            from edgec.profiling.report import task_line

            console.print(escape(task_line(change["task"])))
            lost = change["task"]["accuracy_whole"] - change["task"]["accuracy_split"]
            if lost > 0.05:
                console.print(f"[yellow]warning:[/] the split loses {100 * lost:.1f} points of top-1 accuracy; "
                              "try more --epochs or --bottleneck-channels, more --data, or a later cut")
    console.print(f"[bold green]artifact:[/] {escape(str(result.artifact))} (ARTIFACT:head, ARTIFACT:tail)")


def _write_choice(choice: dict, model: str, folder: Path) -> None:
    """``split-choice.json`` and its plots inside the artifact (before its files are hashed)."""
    from edgec.artifact import write_json
    from edgec.split.choose import plot_ranking, plot_sweep

    write_json(folder / "split-choice.json", choice)
    plot_ranking(choice["ranking"], folder / "split-choice.png",
                 f"{model}: {choice['link']['bandwidth_mbps']:g} Mbit/s, rtt {choice['link']['rtt_ms']:g} ms")
    if len(choice.get("sweep", [])) > 1:
        plot_sweep(choice["sweep"], folder / "split-sweep.png", f"{model}: best cut per bandwidth")


def _bandwidths(text: str | None, model: str) -> list[float]:
    if text is None:
        raise UsageError("--at auto needs --bandwidth MBIT/S (the device's uplink)",
                         f"e.g. edgec split {model} --at auto --bandwidth 20 --rtt-ms 10")
    try:
        values = list(dict.fromkeys(float(v) for v in text.split(",")))
    except ValueError:
        raise UsageError(f"--bandwidth '{text}' is not a number or a comma-separated list of numbers",
                         "e.g. --bandwidth 20 or --bandwidth 1,10,100") from None
    return values


def _read_profile(path: Path, flag: str) -> dict:
    import json

    if not Path(path).is_file():
        raise UsageError(f"{flag} {path} does not exist", "give the report.json written by `edgec profile ... --out DIR`")
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{flag} {path} cannot be read as JSON ({type(e).__name__})",
                         "give the report.json written by `edgec profile ... --out DIR`") from None


def _choose_cut(opts, model, head_target, tail_target, encoding, bandwidth, rtt_ms, sides):
    """``--at auto``: rank every cut by estimated latency on the link (the first of the bandwidths); None
    when no split is best there."""
    from edgec.build import Steps, check_request, lower
    from edgec.profiling.report import human_bytes
    from edgec.split import cut_table
    from edgec.split.choose import Link, onnxruntime_ms, per_cut_ms, profile_latency_ms, rank_cuts, sweep

    bandwidths = _bandwidths(bandwidth, model)
    try:
        links = [Link(b, rtt_ms) for b in bandwidths]
    except ValueError as e:
        raise UsageError(f"--bandwidth/--rtt-ms: {e}", "e.g. --bandwidth 20 --rtt-ms 10") from None
    link, bandwidth = links[0], bandwidths[0]
    check_request(opts)
    with _StepPrinter() as printer:
        final = lower(opts, Steps(printer)).final
        table = cut_table(final)
        measured, per_cut = {}, {}
        for side, target in (("head", head_target), ("tail", tail_target)):
            given, report_path = sides[side]
            if given is not None and report_path is not None:
                raise UsageError(f"give --{side}-ms or --{side}-profile, not both", f"e.g. --{side}-profile report.json")
            if report_path is not None:
                report = _read_profile(report_path, f"--{side}-profile")
                try:
                    total = profile_latency_ms(report)
                    cuts_ms = per_cut_ms(final, [c["tensor"] for c in table["cuts"]], report)
                except UsageError as e:
                    raise UsageError(f"--{side}-profile {report_path}: {e.message}", e.hint) from None
                per_cut["head_ms_at" if side == "head" else "tail_head_ms_at"] = cuts_ms
                measured[side] = (total, f"profiled ({report_path.name}, per kernel)")
            elif given is not None:
                if not (given > 0 and math.isfinite(given)):
                    raise UsageError(f"--{side}-ms {given} must be a positive number of ms", f"e.g. --{side}-ms 25")
                measured[side] = (given, "given")
            elif target == "host":
                printer(f"time the whole model here for the {side} (onnxruntime)")
                measured[side] = (onnxruntime_ms(final), "onnxruntime on this machine")
            else:
                raise UsageError(f"--at auto needs the latency on {target}: --{side}-profile REPORT or --{side}-ms",
                                 f"measure it: edgec profile {model} --target {target} --device rpc://BOARD:9090 "
                                 f"--out DIR, then --{side}-profile DIR/report.json")
    out_bytes = sum(4 * math.prod(d.dim_value for d in o.type.tensor_type.shape.dim) for o in final.graph.output)
    key = "bytes_int8" if encoding.startswith("int8") else "bytes_fp32"
    rows = rank_cuts(table, link, measured["head"][0], measured["tail"][0], key, out_bytes, **per_cut)
    spread = "per-kernel sums" if len(per_cut) == 2 else ("per-kernel sums and MACs" if per_cut else "spread by MACs")
    t = Table(title=f"fastest candidates on {bandwidth:g} Mbit/s, rtt {rtt_ms:g} ms (estimated ms; head "
                    f"{measured['head'][0]:.2f} ms {measured['head'][1]}, tail {measured['tail'][0]:.2f} ms "
                    f"{measured['tail'][1]}; {spread})", title_justify="left")
    for col in ("cut", "sent", "head", "transfer", "tail", "total"):
        t.add_column(col, justify="left" if col == "cut" else "right")
    for r in rows[:10]:
        name = r["cut"] if r["kind"] == "cut" else f"({r['kind']})"
        t.add_row(escape(name), human_bytes(r["bytes"]), f"{r['head_ms']:.2f}", f"{r['transfer_ms']:.2f}",
                  f"{r['tail_ms']:.2f}", f"{r['total_ms']:.2f}")
    console.print(t)
    swept = sweep(table, links, measured["head"][0], measured["tail"][0], key, out_bytes, **per_cut)
    if len(links) > 1:
        t = Table(title="best cut per bandwidth (estimated ms)", title_justify="left")
        for col in ("Mbit/s", "best", "sent", "total", "device only", "server only (JPEG)", "speed-up"):
            t.add_column(col, justify="left" if col == "best" else "right")
        for r in swept:
            b = r["best"]
            t.add_row(f"{r['bandwidth_mbps']:g}", escape(b["cut"] if b["kind"] == "cut" else f"({b['kind']})"),
                      human_bytes(b["bytes"]), f"{b['total_ms']:.2f}", f"{r['device_only_ms']:.2f}",
                      f"{r['server_only_ms']:.2f}", f"{r['speedup_vs_best_end']:.2f}x")
        console.print(t)
    best = rows[0]
    if best["kind"] != "cut":
        where = "on the server (the device sends the JPEG)" if best["kind"] == "server only" else "on the device"
        console.print(f"[bold]no split is fastest on this link: run everything {where}[/] "
                      f"({best['total_ms']:.2f} ms); no artifact built")
        return None
    console.print(f"[bold green]best cut:[/] {escape(best['cut'])} ({best['total_ms']:.2f} ms estimated)")
    return {"link": {"bandwidth_mbps": bandwidth, "rtt_ms": rtt_ms},
            "head_ms": measured["head"][0], "head_ms_source": measured["head"][1],
            "tail_ms": measured["tail"][0], "tail_ms_source": measured["tail"][1],
            "encoding": encoding, "best": best, "ranking": rows, "sweep": swept}


@app.command()
def tune(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET",
                                        help="Target (`edgec targets list`).")] = "host",
    trials: Annotated[Optional[int], typer.Option(metavar="N", min=1,
                                                  help="Budget: new measured candidates, over all kernels.")] = None,
    minutes: Annotated[Optional[float], typer.Option(metavar="MINUTES", min=0.01,
                                                     help="Budget: wall-clock minutes.")] = None,
    db: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                               help="Database folder (default: the user cache, per target).")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE",
                                        help="Where to measure: local, rpc://HOST:PORT, tracker://HOST:PORT/KEY.")]
    = "local",
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE",
                                        help="Pass pipeline (must match the builds that use the records).")]
    = "default",
    weights: Annotated[Optional[Path], typer.Option(metavar="FILE", help="PyTorch state dict for a zoo model.")] = None,
    seed: Annotated[int, typer.Option(metavar="N", min=0, max=2**32 - 1, help="Seed of random weights and of the search.")] = 0,
) -> None:
    """Auto-tune MODEL's kernels for TARGET with MetaSchedule; records persist and later builds apply them."""
    from edgec.build import BuildOptions
    from edgec.tune import tune as run_tune

    opts = BuildOptions(model=model, target=target, input_shapes=input_shape, passes=passes, weights=weights,
                        seed=seed)
    with _TuneDisplay(trials) as display:
        result = run_tune(opts, trials=trials, minutes=minutes, db=db, device=device, progress=display.step,
                          on_trials=display.update)
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("database", f"{result.database} ({result.records_before} → {result.records_after} records)")
    table.add_row("trials", f"{result.trials} measured on {result.device} in {result.seconds / 60:.1f} min, "
                             f"{result.tasks} kernels")
    measured = getattr(result, "measured", None)
    if measured:
        table.add_row("measured", f"edgec {measured['edgec_ms_p50']:.2f} ms, onnxruntime "
                                  f"{measured['onnxruntime_ms_p50']:.2f} ms end to end (p50, {measured['threads']} "
                                  f"threads; {measured['tuned_kernels']}/{measured['total_kernels']} kernels with "
                                  "tuned schedules, the rest at their default schedules' cost)")
    elif result.est_latency_ms is not None:
        label = " [yellow](emulated device: not device speed)[/]" if result.emulated else ""
        untuned = sum(1 for t in result.per_task if t.get("best_ms") is None)
        note = f"; {untuned} kernels never measured are not counted" if untuned else ""
        table.add_row("estimate", f"{result.est_latency_ms:.2f} ms per inference (sum of the best kernel times "
                                  f"measured{note}){label}")
    table.add_row("next", f"edgec build {model} --target {target}" + (f" --db {db}" if db else "")
                  + " applies these records")
    console.print(table)


@app.command()
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
    repeats: Annotated[int, typer.Option(metavar="N", min=1, help="Timed end-to-end runs.")] = 50,
    warmup: Annotated[int, typer.Option(metavar="N", min=0, help="Untimed runs first.")] = 5,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", min=1,
                                           help="Seconds before giving up on a remote device (session limit); partial "
                                           "results are kept.")] = 600.0,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", metavar="",
                                           help="Also time onnxruntime (local).")]
    = True,
    input_shape: Annotated[Optional[list[str]], _shape_opt()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE", help="Pass pipeline when building first.")] = "default",
    db: Annotated[Optional[Path], typer.Option(metavar="DIR", help="Tuning database when building first.")] = None,
    tune_db: Annotated[bool, typer.Option("--tune-db/--no-tune-db", metavar="",
                                          help="Apply the tuning database.")] = True,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", metavar="",
                                         help="Verify when building first.")] = True,
) -> None:
    """Latency (end to end and per kernel) and memory of MODEL on DEVICE; writes report.json/.md/.html."""
    from edgec.build import BuildOptions
    from edgec.profile import profile as run_profile
    from edgec.profiling.profiler import ProfileOptions

    bopts = BuildOptions(model=model, target=target, input_shapes=input_shape, passes=passes, tune_db=db,
                         use_tune_db=tune_db, verify=verify)
    popts = ProfileOptions(device=device, threads=threads, repeats=repeats, warmup=warmup, baseline=baseline,
                           timeout_s=timeout)
    with _StepPrinter() as printer:
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
    from edgec.profiling.report import human_bytes, top_kernels

    p = report["profile"]
    lat = p["latency"].get("edgec", {})
    if p.get("emulated"):
        console.print("[bold yellow]EMULATED device (qemu): timings are not device speed[/]")
    head = (f"[bold]{report['model']['name']}[/] on [bold]{report['target']['name']}[/] via {p['device']['url']}, "
            f"threads {p.get('threads') or p['device'].get('threads')}")
    console.print(head)
    if lat:
        line = (f"latency p50 [bold]{lat['latency_ms_p50']:.3f} ms[/], p90 {lat['latency_ms_p90']:.3f} ms, "
                f"min {lat['latency_ms_min']:.3f}, max {lat['latency_ms_max']:.3f} ({lat['runs']} runs)")
        console.print(line)
    if "ratio_vs_onnxruntime_p50" in p["latency"]:
        ort = p["latency"]["onnxruntime"]
        console.print(f"onnxruntime p50 {ort['latency_ms_p50']:.3f} ms → edgec/ORT = "
                      f"[bold]{p['latency']['ratio_vs_onnxruntime_p50']:.2f}[/]")
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


@report_app.command("compare")
def report_compare(
    a: Annotated[Path, typer.Argument(metavar="REPORT.json", help="First report.json.")],
    b: Annotated[Path, typer.Argument(metavar="REPORT.json", help="Second report.json.")],
) -> None:
    """Print the difference between two reports (e.g. before/after a pass, rpi4 vs host)."""
    from edgec.profiling.compare import compare, load_report

    diff = compare(load_report(a), load_report(b), a, b)
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


@device_app.command("emulate")
def device_emulate(
    target: Annotated[str, typer.Argument(metavar="TARGET", help="aarch64 target to emulate (rpi4, rpi5).")] = "rpi4",
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port of the RPC server.")] = 9090,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind (keep loopback).")] = "127.0.0.1",
    tracker: Annotated[Optional[str], typer.Option(metavar="HOST:PORT",
                                                   help="Register with this tracker, HOST:PORT.")] = None,
    key: Annotated[Optional[str], typer.Option(metavar="KEY",
                                               help="Device key at the tracker (default: the target name).")]
    = None,
) -> None:
    """Run TVM's RPC server inside the qemu-aarch64 rootfs until Ctrl-C (timings are emulated)."""
    from edgec.devices import start_emulator, stop_emulator
    from edgec.targets import get_target

    spec = get_target(target)
    if spec.arch != "aarch64" or spec.kind != "cpu":
        raise UsageError(f"only aarch64 CPU targets can be emulated, not '{target}'", "use rpi4 or rpi5")
    proc = None
    try:  # from the moment the server runs: a Ctrl-C while the banner prints must stop it too
        with _StepPrinter() as printer:
            proc = start_emulator(port=port, host=host, tracker=tracker, key=key or target, progress=printer)
        where = f"rpc://{host}:{port}" + (f" (registered at tracker {tracker} as '{key or target}')" if tracker else "")
        console.print(f"[bold]emulated {target}[/] serving at {where}; [yellow]timings are emulated, "
                      f"not device speed[/]; Ctrl-C stops it")
        while proc.poll() is None:
            __import__("time").sleep(1)
    finally:
        if proc is not None:
            stop_emulator(proc)
    if proc.returncode not in (0, -15, -9, None):
        raise DeviceError(f"the emulated RPC server stopped (exit code {proc.returncode})", "rerun with --debug")


@device_app.command("tracker")
def device_tracker(
    port: Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="Port of the tracker.")] = 9190,
    host: Annotated[str, typer.Option(metavar="ADDRESS", help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Run a TVM RPC tracker (boards register with it under a key; profile/tune with tracker://HOST:PORT/KEY)."""
    from edgec.devices import start_tracker

    tr = start_tracker(host, port)
    console.print(f"TVM tracker at {host}:{tr.port}; Ctrl-C stops it")
    try:
        while True:
            __import__("time").sleep(1)
    finally:
        tr.terminate()


def _floats(text: str | None, n: int, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) != n:
        example = "224,224" if flag == "--size" else ",".join(["0.5"] * n)
        raise UsageError(f"{flag} '{text}' needs {n} numbers", f"e.g. {flag} {example}")
    if flag == "--size" and any(v != int(v) for v in values):
        raise UsageError(f"--size '{text}' needs whole numbers H,W", "e.g. --size 224,224")
    return values


@app.command()
def run(
    artifact: Annotated[str, typer.Argument(metavar="ARTIFACT[:PART]",
                                            help="Artifact built for this machine: ARTIFACT or ARTIFACT:PART.")],
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
    timeout: Annotated[float, typer.Option(min=0.001, metavar="S", help="Deadline of the request to --server.")]
    = 10.0,
    tls_ca: Annotated[Optional[Path], typer.Option(metavar="PEM", help="Use TLS to --server, trusting this CA.")]
    = None,
    repeat: Annotated[int, typer.Option(min=1, max=100000, metavar="N",
                                        help="With --server: send N frames over one stream, print median times.")]
    = 1,
) -> None:
    """Run an artifact (its parts in order, or one part) on an image; preprocess as the manifest says, print top-k."""
    from edgec.profiling.report import weights_note
    from edgec.run import run_image

    if layout is not None and layout not in ("NCHW", "NHWC"):
        raise UsageError(f"--layout '{layout}' is not NCHW or NHWC", "e.g. --layout NCHW")
    sz = _floats(size, 2, "--size")
    over = {"resize": [int(v) for v in sz] if sz else None, "mean": _floats(mean, 3, "--mean"),
            "std": _floats(std, 3, "--std"), "layout": layout}
    if repeat > 1 and server is None:
        raise UsageError("--repeat needs --server", "e.g. --server HOST:50051 --repeat 20")
    if server is not None:
        from edgec.serve import run_remote

        if ":" not in server or not server.rsplit(":", 1)[1].isdigit():
            raise UsageError(f"--server '{server}' is not HOST:PORT", "e.g. --server 192.168.1.10:50051")
        remote = run_remote(artifact, server, image, top=top, timeout_s=timeout, tls_ca=tls_ca, preprocessing=over,
                            repeat=repeat)
        for i, (idx, score, label) in enumerate(remote.top, 1):
            console.print(f"{i}. class {idx} {escape(label or '-')} {score:.4f}")
        t = remote.timings_ms
        frames = f"median of {remote.frames} frames over one stream: " if remote.frames > 1 else ""
        console.print(f"{frames}head {t['head']:.2f} ms, serialize {t['serialize']:.2f} ms, transfer {t['transfer']:.2f} ms "
                      f"({remote.sent_bytes} bytes), decode {t['decode']:.2f} ms, tail {t['tail']:.2f} ms, "
                      f"total {t['total']:.2f} ms")
        return
    result = run_image(artifact, image, top=top, preprocessing=over)
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


@zoo_app.command("list")
def zoo_list() -> None:
    """Table of zoo models: name, params, MACs, input shape, source."""
    from edgec.profiling.report import human_count
    from edgec.zoo import list_models

    table = Table()
    for col in ("name", "family", "params", "MACs", "input", "source"):
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left")
    for e in list_models():
        name = f"{e.name} [dim]= {e.alias_of}[/]" if e.alias_of else e.name
        table.add_row(name, e.family, human_count(e.params), human_count(e.macs),
                      "x".join(str(d) for d in e.input_shape), e.source.split(" ")[0])
    console.print(table)


@zoo_app.command("digits")
def zoo_digits(
    out: Annotated[Path, typer.Argument(metavar="DIR", help="Folder for the images and the trained model.")],
    epochs: Annotated[int, typer.Option(min=1, max=1000, metavar="N", help="Training epochs.")] = 10,
    size: Annotated[int, typer.Option(min=16, max=256, metavar="S", help="Image side in pixels.")] = 64,
    arch: Annotated[str, typer.Option(metavar="NAME", help="timm architecture (random init, 10 classes).")]
    = "mobilenetv2_035",
) -> None:
    """A labelled task trained here in minutes: scikit-learn's digits as DIR/train, DIR/val (ImageFolder) and a
    trained classifier DIR/ARCH-digits.onnx (for --data and accuracy figures)."""
    from rich.progress import Progress as Bar

    from edgec.zoo.digits import train_digits_model

    from dataclasses import replace

    from edgec.artifact import check_writable_folder, staging_dir

    check_writable_folder(out, "DIR")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"DIR {out} is not empty", "give a new or empty folder")
    with Bar(console=console, transient=True) as bar, staging_dir(out) as tmp:
        task = bar.add_task(f"train {arch} on digits", total=epochs)
        model = train_digits_model(tmp, arch=arch, size=size, epochs=epochs,
                                   progress=lambda e, n, loss: bar.update(task, completed=e,
                                                                          description=f"epoch {e}/{n}, loss {loss:.3f}"))
    model = replace(model, onnx_path=out / model.onnx_path.name, train_dir=out / "train", val_dir=out / "val")
    console.print(f"images: {escape(str(model.train_dir))} and {escape(str(model.val_dir))}")
    console.print(f"model: {escape(str(model.onnx_path))} (input 1x3x{size}x{size} RGB in [0, 1]); val top-1 "
                  f"{100 * model.accuracy:.2f}% after {model.epochs} epochs ({model.seconds:.0f} s)")
    console.print(f"e.g. edgec split {escape(str(model.onnx_path))} --list, then --at TENSOR --encoding int8 "
                  f"--data {escape(str(out))}")


@targets_app.command("list")
def targets_list(
    verbose: Annotated[bool, typer.Option("--json", metavar="", help="Print the full target data as JSON.")] = False,
) -> None:
    """Table of targets: name, kind, TVM target, cross compiler, verification."""
    import json

    from edgec.targets import list_targets

    specs = list_targets()
    if verbose:
        console.print_json(json.dumps([s.to_dict() for s in specs]))
        return
    table = Table()
    for col in ("name", "kind", "device", "tvm target", "toolchain", "verify"):
        table.add_column(col)
    for s in specs:
        tvm_desc = ", ".join(f"{k}={v}" for k, v in s.tvm.items() if k in ("arch", "mcpu", "mtriple", "num-cores"))
        if s.host:
            tvm_desc += f"; host mcpu={s.host.get('mcpu')}"
        table.add_row(s.name, s.kind, s.description.split(":")[0], tvm_desc, s.cross_compiler or "g++", s.verify)
    console.print(table)


@passes_app.command("list")
def passes_list() -> None:
    """Describe every pass: what it matches, when it refuses, its options, its equivalence, its source."""
    from dataclasses import MISSING

    from edgec.passes import DEFAULT_PIPELINE, all_passes, option_fields

    table = Table(show_lines=True)
    for col in ("pass", "matches", "refuses unless", "options", "equivalence", "source"):
        table.add_column(col, overflow="fold")
    for p in all_passes():
        opts = "\n".join(f"{f.name}: {f.type_words}" + ("" if f.default is MISSING else f" = {f.default}")
                         + (f" — {f.help}" if f.help else "") for f in option_fields(p.options)) or "-"
        table.add_row(p.name, p.matches, p.preconditions, opts, p.equivalence.describe(), p.source)
    console.print(table)
    console.print(f"default pipeline: {', '.join(DEFAULT_PIPELINE)} (repeated to a fixed point)")
    console.print("with options: --passes 'default,NAME(key=value,...)', or a pipeline file (.toml/.json)")


#: Flags of the root command, accepted anywhere on the command line.
_GLOBAL_FLAGS = ("--debug", "--verbose", "-v")


def _value_options() -> set[str]:
    """Option names (of every subcommand) that take a value: a global flag right after one is its value."""
    cmd = typer.main.get_command(app)
    names: set[str] = set()

    def walk(c) -> None:
        for p in getattr(c, "params", []):
            if getattr(p, "param_type_name", "") == "option" and not p.is_flag and not getattr(p, "count", False):
                names.update(p.opts)
        for sub in getattr(c, "commands", {}).values():
            walk(sub)

    try:
        walk(cmd)
    except Exception:  # noqa: BLE001  a click/typer internals change must not break the CLI
        pass
    return names


def _globals_first(argv: list[str]) -> list[str]:
    """Move ``--debug`` and ``--verbose``/``-v`` given after the subcommand to the front (not when one
    is the value of the option before it, e.g. ``--name --debug``)."""
    if not any(a in _GLOBAL_FLAGS for a in argv[1:]):
        return argv
    takes_value = _value_options()
    front, rest = [], []
    for i, a in enumerate(argv):
        if a in _GLOBAL_FLAGS and "--" not in argv[:i] and not (i and argv[i - 1] in takes_value):
            front.append(a)
        else:
            rest.append(a)
    return front + rest


# typer >= 0.16 vendors click (typer._click): catch both its exceptions and click's.
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)
_USAGE_ERRORS = (click.ClickException, typer.TyperException)


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Returns the exit code (also via ``sys.exit``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _globals_first(argv)
    leading = []
    for a in argv:
        if not a.startswith("-"):
            break
        leading.append(a)
    debug = "--debug" in leading or os.environ.get("EDGEC_DEBUG") == "1"
    clear_interrupt()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_interrupt)
    code = 0
    try:
        # Non-standalone typer returns the exit code of Exit (130 for KeyboardInterrupt).
        rv = app(args=argv, prog_name="edgec", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:
            err_console.print("interrupted; nothing half-written was left behind")
    except _EXITS as exc:
        code = getattr(exc, "exit_code", 0)
    except _ABORTS:
        err_console.print("aborted")
        code = 130
    except _USAGE_ERRORS as exc:  # a flag typo, a missing argument, a bad value: the user's, not ours
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "edgec"
        if where == "edgec":  # name the subcommand when click did not
            words = [a for a in argv if not a.startswith("-")][:2]
            known = set(typer.main.get_command(app).commands) if hasattr(typer.main.get_command(app), "commands") \
                else set()
            if words and words[0] in known:
                where = "edgec " + " ".join(w for w in words if w in known or words.index(w) == 0)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if not message.strip():  # `edgec` alone: the help was printed
            sys.exit(0)
        err_console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))} (see `{escape(where)} --help`)",
                          highlight=False, soft_wrap=True)
        code = getattr(exc, "exit_code", 2) or 2
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing half-written was left behind")
        code = 130
    except EdgecError as exc:
        if debug:
            err_console.print_exception()
        code = _interrupted_code()
        if code is None:
            err_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
            code = exc.exit_code
    except Exception as exc:  # a bug: say so in one line
        if debug:
            err_console.print_exception()
        code = _interrupted_code()
        if code is None:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first[:200])} "
                              "(rerun with --debug and report it)", highlight=False, soft_wrap=True)
            code = 70
    sys.exit(code)


def _interrupted_code() -> int | None:
    """130 if the user interrupted (a library may have turned the Ctrl-C into an error), else None."""
    try:
        raise_if_interrupted()
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing half-written was left behind")
        return 130
    return None


__all__ = ["app", "main", "UsageError"]


if __name__ == "__main__":
    main()
