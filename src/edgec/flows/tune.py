"""``edgec tune``: search kernel schedules for a model on a target, measured on a device.

The model goes through the same frontend and passes as ``edgec build`` (so the
tuned kernels are the ones a build compiles); the backend tunes them, measuring
on the device (:mod:`edgec.devices`), and stores the records in its database,
which later builds apply.

The search runs in a child process (:mod:`edgec.flows.isolated`): a Ctrl-C stops it cleanly
(records kept, temporary folders removed, exit 130), and a run still going at
:data:`HARD_LIMIT` x ``--minutes`` is stopped with its records kept.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from edgec.artifact import check_writable_folder
from edgec.backends import get_backend
from edgec.devices import open_device
from edgec.errors import UsageError
from edgec.flows.build import lower  # imports the frontend after the request's checks (onnx is slow to import)
from edgec.flows.isolated import GRACE_S, Stopped, run_isolated
from edgec.flows.request import BuildOptions, check_request
from edgec.flows.steps import Progress, Steps
from edgec.targets import get_target


#: A time-budgeted search is stopped at this multiple of ``--minutes`` (the backend sizes its batches
#: to end within the budget; this is the backstop when one batch overruns on a loaded machine).
HARD_LIMIT = 1.2


def tune(opts: BuildOptions, *, trials: int | None = None, minutes: float | None = None, db: Path | None = None,
         device: str = "local", per_iter: int = 16, progress: Progress | None = None,
         on_trials: Callable[[Any], None] | None = None) -> Any:
    """Tune the kernels of ``opts.model`` (after the passes) for ``opts.target``.

    Every check (target, passes, toolchain, budget, device reachability) runs before any work. The
    budget's clock starts when the search starts (after the model's preparation and the tuner's
    start-up) and covers the search; the end-to-end measurement after it (local CPU targets) is a
    step of its own.

    Args:
        opts: The model, target, input shapes, passes and seed, as for a build.
        trials: Budget of new measured candidates (over all kernels).
        minutes: Budget of wall-clock minutes of search.
        db: Database folder (default: the user cache folder of the target).
        device: ``local``, ``rpc://HOST:PORT``, ``tracker://HOST:PORT/KEY``, or another registered kind
            whose device can measure tuning candidates.
        per_iter: Candidates per kernel per batch.
        progress: Called with the name of each preparation step.
        on_trials: Called after each measured batch with the backend's progress record
            (``trials_done``, ``trials_total``, ``elapsed_s``, ``deadline_s``, ``est_latency_ms``,
            ``batches``...).

    Returns:
        The backend's tuning result (database, trials, records before/after, seconds of search,
        estimate, device, ``measured``), with ``stopped`` True when the hard limit ended the search.

    Raises:
        UsageError: no budget, an unknown model/target/pass, a bad device address, a CUDA target,
            local measurement of code for another ISA, or a device that cannot measure candidates.
        DeviceError: the device is unreachable.
        KeyboardInterrupt: Ctrl-C; the search was stopped, its records kept, its temporary folders removed.
    """
    if minutes is not None and not 0 < minutes < 1e5:  # nan, inf: a budget must end
        raise UsageError(f"--minutes {minutes} is not a number of minutes below 100000", "e.g. --minutes 30")
    if db is not None:
        check_writable_folder(Path(db), "--db")
    spec = get_target(opts.target)
    backend = get_backend(spec)
    where = open_device(device, arch=spec.arch)
    backend.check_tune(spec, trials, minutes, where)  # the device says whether it can measure
    spec = check_request(opts)  # the slower checks (passes, toolchain) once the target is one edgec tunes
    where.probe()
    low = lower(opts, Steps(progress))
    measure = where.url.kind == "local" and spec.verify == "local" and spec.kind == "cpu"
    if progress:
        progress("starting the search")
    state: dict[str, Any] = {"searching": True, "last": None, "started": None}

    def on_event(event: dict[str, Any]) -> None:
        kind = event.pop("kind")
        if kind == "trials":
            if state["started"] is None:  # the search's clock starts with its first event
                state["started"] = time.time() - event["elapsed_s"]
            state["last"] = event
            if on_trials:
                on_trials(SimpleNamespace(**event))
        elif kind == "step":
            state["searching"] = False
            if progress:
                progress(event["name"])

    def hard_deadline() -> float | None:
        if not minutes or not state["searching"] or state["started"] is None:
            return None
        return state["started"] + minutes * 60 * HARD_LIMIT - GRACE_S

    job = {"model": low.final, "inputs": low.inputs, "spec": spec, "device": device, "trials": trials,
           "minutes": minutes, "db": db, "per_iter": per_iter, "seed": opts.seed,
           "measure": measure}
    out = run_isolated("edgec.flows.tune:search", job, on_event=on_event, hard_deadline=hard_deadline,
                       label="tuning")
    if isinstance(out, Stopped):
        return _stopped(time.time() - (state["started"] or time.time()), state["last"], backend)
    out.stopped = False
    return out


def search(*, model, inputs, spec, device: str, trials, minutes, db, per_iter: int, seed,
           measure: bool, emit: Callable[[dict[str, Any]], None]) -> Any:
    """The child's side of :func:`tune` (run by :func:`edgec.flows.isolated.run_isolated`): the search,
    then the end-to-end measurement; progress goes out as ``trials`` and ``step`` events."""
    from dataclasses import asdict

    backend = get_backend(spec)
    where = open_device(device, arch=spec.arch)
    result = backend.tune(model, spec, where, trials=trials, minutes=minutes, db=db, per_iter=per_iter,
                          progress=lambda p: emit({"kind": "trials", **asdict(p)}), seed=seed)
    if measure:
        emit({"kind": "step", "name": "measuring the tuned model end to end"})
        result.measured = _measure(model, inputs, spec, db)
    return result


def _stopped(seconds: float, last: dict[str, Any] | None, backend) -> SimpleNamespace:
    """The result of a search the hard limit stopped after ``seconds`` of search: what its last progress event
    and the database say."""
    last = last or {}
    folder = Path(last.get("database") or ".")
    tasks = last.get("tasks_total", 0)
    after = backend.tuning_records(folder) if last.get("database") else 0
    return SimpleNamespace(database=folder, trials=max(last.get("trials_done", 0), after - last.get("records_before", 0)),
                           records_before=last.get("records_before", 0),
                           records_after=after,
                           seconds=seconds, tasks=tasks, est_latency_ms=last.get("est_latency_ms"),
                           device=last.get("device", ""), emulated=last.get("emulated", False),
                           per_task=[{"best_ms": 0.0}] * last.get("tasks_measured", 0)
                           + [{"best_ms": None}] * (tasks - last.get("tasks_measured", 0)),
                           measured=None, stopped=True)


def _measure(model, inputs, spec, db: Path | None) -> dict[str, Any]:
    """The real latency after tuning: the model compiled with the records (untuned kernels at their
    default schedules' cost), beside onnxruntime's (:func:`edgec.flows.parts.quick_latency`)."""
    import tempfile

    from edgec.backends import TuningOptions
    from edgec.flows.parts import quick_latency

    with tempfile.TemporaryDirectory(prefix="edgec-tuned-") as tmp:
        compiled = get_backend(spec).compile(model, spec, Path(tmp), TuningOptions(True, db))
        out = quick_latency(compiled.library, model, inputs, spec.cores)
        out["tuned_kernels"], out["total_kernels"] = compiled.tuned_kernels, compiled.total_kernels
        return out
