"""``edgec tune``: search kernel schedules for a model on a target, measured on a device.

The model goes through the same frontend and passes as ``edgec build`` (so the
tuned kernels are the ones a build compiles); the backend tunes them, measuring
on the device (:mod:`edgec.devices`), and stores the records in its database,
which later builds apply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgec.artifact import check_writable_folder
from edgec.backends import get_backend
from edgec.devices import open_device
from edgec.flows.lower import lower
from edgec.flows.request import BuildOptions, check_request
from edgec.flows.steps import Progress, Steps


def tune(opts: BuildOptions, *, trials: int | None = None, minutes: float | None = None, db: Path | None = None,
         device: str = "local", per_iter: int = 16, progress: Progress | None = None,
         on_trials: Callable[[Any], None] | None = None) -> Any:
    """Tune the kernels of ``opts.model`` (after the passes) for ``opts.target``.

    Every check (target, passes, toolchain, budget, device reachability) runs before any work.

    Args:
        opts: The model, target, input shapes, passes and seed, as for a build.
        trials: Budget of new measured candidates (over all kernels).
        minutes: Budget of wall-clock minutes.
        db: Database folder (default: the user cache folder of the target).
        device: ``local``, ``rpc://HOST:PORT``, ``tracker://HOST:PORT/KEY``, or another registered kind
            whose device can measure tuning candidates.
        per_iter: Candidates per kernel per round.
        progress: Called with the name of each preparation step.
        on_trials: Called after each measured batch with the backend's progress record
            (``trials_done``, ``trials_total``, ``elapsed_s``, ``deadline_s``, ``est_latency_ms``...).

    Returns:
        The backend's tuning result (database, trials, records before/after, estimate, device).

    Raises:
        UsageError: no budget, an unknown model/target/pass, a bad device address, a CUDA target,
            local measurement of code for another ISA, or a device that cannot measure candidates.
        DeviceError: the device is unreachable.
    """
    spec = check_request(opts)
    if db is not None:
        check_writable_folder(Path(db), "--db")
    backend = get_backend(spec)
    where = open_device(device, arch=spec.arch)
    backend.check_tune(spec, trials, minutes, where)  # the device says whether it can measure
    where.probe()
    low = lower(opts, Steps(progress))
    result = backend.tune(low.final, spec, where, trials=trials, minutes=minutes, db=db, per_iter=per_iter,
                          progress=on_trials, seed=opts.seed)
    if where.url.kind == "local" and spec.verify == "local" and spec.kind == "cpu":
        result.measured = _measure(low, spec, db, progress)
    return result


def _measure(low, spec, db: Path | None, progress: Progress | None) -> dict[str, Any]:
    """The real latency after tuning: the model compiled with the records (untuned kernels at their
    default schedules' cost), beside onnxruntime's (:func:`edgec.flows.parts.quick_latency`)."""
    import tempfile

    from edgec.backends import TuningOptions
    from edgec.flows.parts import quick_latency

    if progress:
        progress("measuring the tuned model end to end")
    with tempfile.TemporaryDirectory(prefix="edgec-tuned-") as tmp:
        compiled = get_backend(spec).compile(low.final, spec, Path(tmp), TuningOptions(True, db))
        out = quick_latency(compiled.library, low.final, low.inputs, spec.cores)
        out["tuned_kernels"], out["total_kernels"] = compiled.tuned_kernels, compiled.total_kernels
        return out
