"""Profiling one artifact part on a device: end-to-end latency, per-kernel latency and memory.

End to end, on ``local``: the artifact and onnxruntime (same ONNX, same thread
count, all ORT optimisations) run interleaved in blocks on identical inputs
(:func:`edgec.profiling.timing.interleaved`); the report gives min/p50/p90/max
and the ratio ``edgec_p50 / ort_p50``. Over RPC: the Relax VM's
``time_evaluator`` on the device, collected in chunks so that a device that
drops mid-run still leaves the samples taken so far (report marked incomplete).

Per kernel: every fused kernel of the artifact (``kernels.json``, in call
order) is timed on the device with ``time_evaluator`` on ``kernels.so`` -- the
same compiled kernels exported without the VM, so each is a top-level
function, locally and over RPC -- with arguments of the recorded shapes. Each
kernel carries the ONNX nodes it came from.

Memory (bytes): planned activation storage (TVM's ``StaticPlanBlockMemory``),
peak live activations of an unplanned runtime, weight bytes, artifact bytes,
and -- locally -- the peak resident memory of a process that loads the artifact
with the plain TVM runtime and runs it.

Devices are reached only through :mod:`edgec.devices`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.artifact import Part, sha256_file
from edgec.devices import open_device, parse_url
from edgec.errors import DeviceError, UsageError
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling import report as reports
from edgec.profiling.host_load import HostLoad
from edgec.profiling.timing import LatencyStats, interleaved
from edgec.targets import TargetSpec

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class ProfileOptions:
    """Options of ``edgec profile``.

    Attributes:
        device: ``local``, ``qemu-aarch64``, ``rpc://HOST:PORT`` or ``tracker://HOST:PORT/KEY``.
        threads: Threads for TVM and onnxruntime (local; default: the target's core count).
        repeats: Timed end-to-end runs.
        warmup: Untimed runs first.
        kernel_repeats: Timed repeats per kernel (median taken).
        baseline: Also time onnxruntime (local only).
        timeout_s: Longest RPC session (s): past it the device is given up and partial results are kept.
        seed: Seed of the inputs.
    """

    device: str = "local"
    threads: int | None = None
    repeats: int = 50
    warmup: int = 5
    kernel_repeats: int = 3
    baseline: bool = True
    timeout_s: float = 600.0
    seed: int = 0


def _local_latency(session, part: Part, inputs: dict[str, np.ndarray], opts: ProfileOptions, threads: int,
                   progress: Progress | None) -> dict[str, Any]:
    fns = {"edgec": session.prepare(part.library, list(inputs.values()))}
    tflite = part.folder / "model.tflite"
    peer, settings = (("litert", "LiteRT interpreter, XNNPACK delegate, same threads, same inputs") if tflite.exists()
                      else ("onnxruntime", "CPUExecutionProvider, ORT_ENABLE_ALL, same threads, same inputs"))
    if opts.baseline and peer == "litert":  # a TFLite file's build: its peer is the TFLite runtime
        from edgec.frontend.litert import litert_call

        fns[peer] = litert_call(tflite, list(inputs.values()), threads)
    elif opts.baseline:
        sess = ort_session(str(part.folder / "model.onnx"), optimized=True, threads=threads)
        fns[peer] = lambda: sess.run(None, inputs)
    samples = interleaved(fns, repeats=opts.repeats, warmup=opts.warmup,
                          progress=(lambda d, n: progress(f"timing end to end {d}/{n}")) if progress else None)
    out = {"edgec": {**LatencyStats.from_samples(samples["edgec"]).to_dict(), "samples_ms": samples["edgec"]}}
    if opts.baseline:
        base = LatencyStats.from_samples(samples[peer])
        out[peer] = {**base.to_dict(), "samples_ms": samples[peer], "settings": settings}
        out[f"ratio_vs_{peer}_p50"] = out["edgec"]["latency_ms_p50"] / base.latency_ms_p50
    return out


def _kernel_rows(session, part: Part, kernels: dict[str, Any], repeats: int,
                 progress: Progress | None) -> list[dict[str, Any]]:
    calls = kernels["calls"]
    times = session.time_functions(part.folder / kernels["library"], calls, repeats, progress)
    total = sum(times)
    return [{"index": c["index"], "kernel": c["kernel"], "time_ms": t, "onnx_nodes": c.get("onnx_nodes", []),
             "output_bytes": c["output_bytes"], "share": t / total if total else 0.0} for c, t in zip(calls, times)]


def profile_part(part: Part, opts: ProfileOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Profile one built part on a device and return the report (``kind: profile``).

    The report extends the part's build report (same schema) with a ``profile``
    section. It is returned even when the device dropped mid-run: then ``complete``
    is false and ``profile.error`` says what happened.

    Raises:
        UsageError: a part the device cannot run.
        DeviceError: the device is unreachable or fails before any sample.
    """
    part.check_library()
    build_report = part.report()
    kernels = part.kernels()
    spec = TargetSpec.from_dict(part.target)
    url = parse_url(opts.device)
    if url.kind == "local" and spec.verify != "local":
        emulate = " (or emulated: --device qemu-aarch64)" if spec.arch == "aarch64" and spec.kind == "cpu" else ""
        raise UsageError(f"{part.folder} is built for '{spec.name}', which cannot run here",
                         f"profile it on the device: --device rpc://HOST:PORT or tracker://HOST:PORT/KEY{emulate}")
    if url.kind == "qemu-aarch64" and spec.arch != "aarch64":
        raise UsageError(f"{part.folder} is built for '{spec.name}' ({spec.arch}), not aarch64",
                         "profile it locally or on its device")
    if spec.kind != "cpu":
        raise UsageError(f"profiling '{spec.name}' ({spec.kind}) is not supported yet", "profile a CPU target")
    inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in part.inputs},
                         {t["name"]: np.dtype(t["dtype"]) for t in part.inputs}, seed=opts.seed)
    threads = opts.threads or spec.cores
    local = url.kind == "local"
    device = open_device(url, arch=spec.arch, threads=threads if local else None)
    start = time.perf_counter()
    prof: dict[str, Any] = {"device": {"url": str(url)}, "threads": threads if local else None,
                            "repeats": opts.repeats, "warmup": opts.warmup, "emulated": bool(device.emulated)}
    if local:
        from edgec.devices.local import environment

        prof["environment"] = environment()
    error = None
    load = HostLoad()  # this machine's other work while it times (local or emulated runs)
    with device.open(opts.timeout_s, progress) as session, load:
        prof["device"].update(session.info)
        if device.emulated and not local:  # the emulator's threads are this machine's cores, not the board's
            prof["board_cores"] = spec.cores
        if local:
            if progress:
                progress("timing end to end")
            prof["latency"] = _local_latency(session, part, inputs, opts, threads, progress)
        else:
            samples, error = session.time_model(part.library, list(inputs.values()), opts.repeats,
                                                progress=progress)
            if not samples:
                raise DeviceError(f"{url} failed before any measurement: {error}",
                                  "check the device and that its TVM runtime matches the artifact's")
            prof["latency"] = {"edgec": {**LatencyStats.from_samples(samples).to_dict(), "samples_ms": samples}}
        if error is None and kernels and kernels.get("library") and (part.folder / kernels["library"]).exists():
            try:
                rows = _kernel_rows(session, part, kernels, opts.kernel_repeats if local else 1, progress)
                prof["kernels"] = rows
                prof["kernels_total_ms"] = sum(r["time_ms"] for r in rows)
            except DeviceError as exc:
                error = exc.one_line()
    memory = dict(kernels["memory"]) if kernels else {}
    memory.update(weight_bytes=build_report["model"].get("param_bytes"),
                  artifact_bytes=sum(p.stat().st_size for p in part.folder.iterdir() if p.is_file()),
                  library_bytes=part.library.stat().st_size)
    if kernels:
        memory["live_activation_bytes"] = kernels["live_activation_bytes"]
    if local and error is None:
        from edgec.devices.local import peak_rss_bytes

        if progress:
            progress("peak resident memory")
        memory["peak_rss_bytes"] = peak_rss_bytes(part.library, list(inputs.values()))
    prof["memory"] = memory
    if local or device.emulated:
        prof["host_load"] = load.to_dict()
    prof["seconds"] = round(time.perf_counter() - start, 3)
    if error:
        prof["error"] = error
    report = dict(build_report)
    report.update(kind="profile", created=reports.now_iso(), complete=error is None, profile=prof)
    report["artifact"] = {"path": str(part.folder), "library_sha256": sha256_file(part.library)}
    reports.validate(report)
    return report
