"""What every ``edgec`` command shares: the consoles, the step printer, and the common options."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from edgec.errors import UsageError


def _width(stream) -> int | None:
    """The terminal's width (rich's own: ``$COLUMNS`` first, then the terminal's size); not a terminal (pipes,
    CI logs) and no ``$COLUMNS``: 160, wide enough that tables do not wrap names. Long rows wrap at it."""
    import os

    return None if stream.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))

PASSES_HELP = ("Pass pipeline: default, none, 'a,b(key=value,...)' (options: `edgec passes list`), "
               "or a pipeline file (.toml/.json).")


class StepPrinter:
    """Shows the running step in a spinner and prints each finished step (on stderr)."""

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


class CountProgress:
    """Progress of ``total`` units of work (frames, epochs) on stderr: a bar on a terminal; elsewhere (pipes,
    CI logs) a line at each tenth of the work and at least every :attr:`EVERY_S` seconds. Nothing when
    ``total`` is 1. Call it with ``(done, total)`` and an optional note (``"loss 0.31"``)."""

    EVERY_S = 30.0

    def __init__(self, label: str, total: int, unit: str) -> None:
        import time

        self.label, self.total, self.unit = label, total, unit
        self.bar, self.job, self._clock = None, None, time.monotonic
        self.next_line, self.last = max(1, total // 10), time.monotonic()

    def __enter__(self):
        if self.total > 1 and err_console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn(f"[bold]{escape(self.label)}[/]"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=err_console,
                                transient=True)
            self.bar.start()
            self.job = self.bar.add_task(self.label, total=self.total, note="")
        return self

    def __call__(self, done: int, total: int, note: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.job, completed=done, note=note)
        elif total > 1 and (done >= self.next_line or done == total or self._clock() - self.last >= self.EVERY_S):
            err_console.print(f"  {self.label}: {done}/{total} {self.unit}" + (f", {note}" if note else ""),
                              highlight=False, soft_wrap=True)
            while self.next_line <= done:
                self.next_line += max(1, total // 10)
            self.last = self._clock()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def shape_option():
    """``--input-shape NAME=1,3,H,W`` (repeatable)."""
    return typer.Option("--input-shape", metavar="NAME=1,3,H,W",
                        help="Fix an input's shape: NAME=1,3,224,224 (repeat per input).")


def value_option():
    """``--input-value NAME=1,1,2,2`` (repeatable): a parameter input's values, folded into the model."""
    return typer.Option("--input-value", metavar="NAME=V1,V2",
                        help="Fix an input's values: NAME=1,1,2,2. Required for inputs that feed a shape, scale, "
                             "axes, pads or bounds (Resize scales, Slice starts, Clip min...); repeat per input.")


def verify_timeout_option():
    """``--verify-timeout S``: how long the verification device may run (an emulator on a busy machine)."""
    return typer.Option("--verify-timeout", metavar="S", min=1.0,
                        help="Seconds the verification device may take to run the input sets (default: "
                             "$EDGEC_VERIFY_TIMEOUT, else scaled to the model's MACs and this machine's load, at "
                             "least 600).")


def calibrate_option():
    """``--calibrate DIR|FILE.npz``: calibration samples for int8 quantization."""
    return typer.Option("--calibrate", metavar="DIR|FILE.npz",
                        help="Calibration samples for int8 quantization: a folder of images (preprocessed as the model "
                             "expects) or a .npz with one array per input (first axis: samples). Default: "
                             "scikit-image's sample images and generated ones, said so in the summary.")


def quantize_data_option():
    """``--data DIR`` of int8 builds: a labelled image folder for accuracy (and calibration)."""
    return typer.Option("--data", metavar="DIR",
                        help="Labelled images (DIR/<class>/*.png, or DIR/train and DIR/val): top-1 accuracy of int8 "
                             "and float32 on the validation images; calibrates on the training images unless "
                             "--calibrate is given.")


def samples_option():
    """``--samples N``: how many calibration samples."""
    return typer.Option("--samples", metavar="N", help="At most N calibration samples (1-10000).")


def calibration_method_option():
    """``--calibration minmax|entropy|percentile``."""
    return typer.Option("--calibration", metavar="METHOD",
                        help="Calibration method: minmax (default), entropy or percentile (onnxruntime's).")


def model_kwargs(width_mult: float | None) -> dict:
    """Zoo factory arguments given on the command line."""
    return {"width_mult": width_mult} if width_mult is not None else {}


def floats(text: str | None, n: int, flag: str) -> list[float] | None:
    """``n`` comma-separated numbers of a flag (``--mean 0.5,0.5,0.5``), or None when not given.

    Raises:
        UsageError: not ``n`` finite numbers (or, for ``--size``, not whole numbers from 1 to 8192).
    """
    import math

    if text is None:
        return None
    try:
        values = [float(v) for v in text.replace("x", ",").split(",") if v.strip()]
    except ValueError:
        values = []
    example = "224,224" if flag == "--size" else ",".join(["0.5"] * n)
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise UsageError(f"{flag} '{text}' needs {n} finite numbers", f"e.g. {flag} {example}")
    if flag == "--size" and any(v != int(v) or not 1 <= v <= 8192 for v in values):
        raise UsageError(f"--size '{text}' needs whole numbers H,W from 1 to 8192", "e.g. --size 224,224")
    return values
