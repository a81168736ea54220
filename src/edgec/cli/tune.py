"""``edgec tune``: flags, the tuning flow (:func:`edgec.flows.tune.tune`) under a progress bar, the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgec.cli.console import StepPrinter, console, err_console, shape_option, value_option


class TuneDisplay:
    """A spinner while the model is prepared, then the search's progress: on a terminal a bar over the
    budget (trials, or seconds under ``--minutes``) that counts the candidates measured; elsewhere one
    line per batch (pipes and CI logs)."""

    def __init__(self, trials: int | None, minutes: float | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.printer = StepPrinter()
        self.live = err_console.is_terminal
        self.bar = Progress(TextColumn("[bold]tuning[/]"), BarColumn(), TextColumn("{task.fields[count]}"),
                            TextColumn("{task.fields[est]}"), TimeElapsedColumn(), console=err_console)
        self.trials, self.minutes = trials, minutes
        self.job = None
        self.batches = 0

    def __enter__(self):
        self.printer.__enter__()
        return self

    def step(self, name: str) -> None:
        if self.job is not None:  # a step after the search (the end-to-end measurement)
            self._close_bar()
            self.printer = StepPrinter().__enter__()
        self.printer(name)

    def update(self, p) -> None:
        est = f"est. {p.est_latency_ms:.2f} ms ({p.tasks_measured}/{p.tasks_total} kernels)" \
            if p.est_latency_ms is not None else ""
        count = f"{p.trials_done}" + (f"/{p.trials_total}" if p.trials_total else "") + " trials measured"
        if self.job is None:
            self.printer.__exit__(None, None, None)
            if self.live:
                self.bar.start()
            self.job = self.bar.add_task("tune", total=1, count="", est="")
        if self.live:  # the bar follows whichever budget is closer to its end
            parts = [p.trials_done / p.trials_total] if p.trials_total else []
            if p.deadline_s:
                parts.append(p.elapsed_s / p.deadline_s)
            self.bar.update(self.job, completed=min(1.0, max(parts, default=0.0)), count=count, est=est)
        elif p.batches > self.batches:
            self.batches = p.batches
            budget = f" of {p.deadline_s / 60:g}" if p.deadline_s else ""
            err_console.print(f"  tuning: batch {p.batches}, {count}, {p.elapsed_s / 60:.1f}{budget} min; {est}",
                              highlight=False)

    def _close_bar(self) -> None:
        if self.job is not None and self.live:
            self.bar.stop()
        self.job = None

    def __exit__(self, *exc):
        if self.job is None:
            self.printer.__exit__(*exc)
        else:
            self._close_bar()


def tune(
    model: Annotated[str, typer.Argument(metavar="MODEL", help="Zoo name or path of an .onnx file.")],
    target: Annotated[str, typer.Option("--target", "-t", metavar="TARGET",
                                        help="Target (`edgec targets list`).")] = "host",
    trials: Annotated[Optional[int], typer.Option(metavar="N", min=1,
                                                  help="Budget: new measured candidates, over all kernels.")] = None,
    minutes: Annotated[Optional[float], typer.Option(metavar="MINUTES", min=0.25,
                                                     help="Budget: wall-clock minutes of search (the model's "
                                                          "preparation before it and the end-to-end measurement "
                                                          "after it are extra); the search is stopped at 1.2x.")]
    = None,
    db: Annotated[Optional[Path], typer.Option(metavar="DIR",
                                               help="Database folder (default: the user cache, per target).")] = None,
    device: Annotated[str, typer.Option(metavar="DEVICE",
                                        help="Where to measure: local, rpc://HOST:PORT, tracker://HOST:PORT/KEY.")]
    = "local",
    input_shape: Annotated[Optional[list[str]], shape_option()] = None,
    input_value: Annotated[Optional[list[str]], value_option()] = None,
    passes: Annotated[str, typer.Option(metavar="PIPELINE",
                                        help="Pass pipeline (must match the builds that use the records).")]
    = "default",
    weights: Annotated[Optional[Path], typer.Option(metavar="FILE", help="PyTorch state dict for a zoo model.")] = None,
    seed: Annotated[int, typer.Option(metavar="N", min=0, max=2**32 - 1, help="Seed of random weights and of the search.")] = 0,
) -> None:
    """Auto-tune MODEL's kernels for TARGET with MetaSchedule; records persist and later builds apply them."""
    from edgec.flows.request import BuildOptions
    from edgec.flows.tune import tune as run_tune
    from edgec.profiling.report import quick_peer

    opts = BuildOptions(model=model, target=target, input_shapes=input_shape, input_values=input_value, passes=passes, weights=weights,
                        seed=seed)
    with TuneDisplay(trials, minutes) as display:
        result = run_tune(opts, trials=trials, minutes=minutes, db=db, device=device, progress=display.step,
                          on_trials=display.update)
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("database", f"{result.database} ({result.records_before} → {result.records_after} records)")
    budget = f" (budget {minutes:g} min)" if minutes else ""
    table.add_row("trials", f"{result.trials} measured on {result.device} in {result.seconds / 60:.1f} min of search"
                             f"{budget}, {result.tasks} kernels")
    if getattr(result, "stopped", False) and not result.trials:
        table.add_row("stopped", "[yellow]nothing was measured: the first batch (it measures what a candidate costs "
                                 "here) did not end within the budget's hard limit (1.2x); give more --minutes[/]")
    elif getattr(result, "stopped", False):
        table.add_row("stopped", "[yellow]the last batch did not fit the budget and was stopped at its hard "
                                 "limit (1.2x, less 5 s to stop it); every record measured is kept[/]")
    measured = getattr(result, "measured", None)
    if measured:
        peer, peer_ms, _ = quick_peer(measured)
        table.add_row("measured", f"edgec {measured['edgec_ms_p50']:.2f} ms, {peer} "
                                  f"{peer_ms:.2f} ms end to end (p50, {measured['threads']} "
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
