"""``edgec profile``: end-to-end latency, per-kernel latency and memory of an artifact, on any device.

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
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import DeviceError, UsageError
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling import report as reports
from edgec.profiling.devices import DeviceURL, Session, host_environment, open_session
from edgec.profiling.image import read_manifest
from edgec.profiling.timing import LatencyStats, interleaved

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class ProfileOptions:
    """Options of ``edgec profile``.

    Attributes:
        device: ``local``, ``rpc://HOST:PORT`` or ``tracker://HOST:PORT/KEY``.
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


def _device_args(shapes: list[dict[str, Any]], device, rng) -> list:
    import tvm

    out = []
    for a in shapes:
        dt = np.dtype(a["dtype"])
        if np.issubdtype(dt, np.floating):
            arr = rng.standard_normal(a["shape"]).astype(dt) if a["shape"] else np.array(rng.standard_normal(), dt)
        else:
            arr = np.zeros(a["shape"], dt)
        out.append(tvm.runtime.tensor(arr, device))
    return out


def time_kernels(session: Session, library: Path, calls: list[dict[str, Any]], repeats: int,
                 progress: Progress | None = None) -> list[dict[str, Any]]:
    """Time each distinct kernel once on the device; return one row per call (ms).

    Args:
        session: Open device.
        library: ``kernels.so`` of the artifact.
        calls: ``kernels.json`` calls.
        repeats: Timed repeats per kernel (median).

    Raises:
        DeviceError: the device failed or dropped.
    """
    lib = session.load(library)
    rng = np.random.default_rng(0)
    cache: dict[tuple, float] = {}
    rows = []
    remote = session.rpc is not None
    for i, c in enumerate(calls):
        sig = (c["kernel"], json.dumps([a["shape"] for a in c["args"] + c["outputs"]]))
        if sig not in cache:
            if progress and (i % 10 == 0):
                progress(f"timing kernels {i}/{len(calls)}")
            args = _device_args(c["args"] + c["outputs"], session.device, rng)
            f = lib.time_evaluator(c["kernel"], session.device, number=1, repeat=repeats,
                                   min_repeat_ms=0 if remote else 2)
            try:
                cache[sig] = float(np.median(f(*args).results)) * 1e3
            except Exception as exc:
                raise DeviceError(f"timing kernel {c['kernel']} failed on {session.url}: "
                                  f"{str(exc).splitlines()[0][:160]}", "check the device") from exc
        rows.append({"index": c["index"], "kernel": c["kernel"], "time_ms": cache[sig],
                     "onnx_nodes": c.get("onnx_nodes", []), "output_bytes": c["output_bytes"]})
    return rows


def _local_latency(artifact: Path, manifest: dict, inputs: dict[str, np.ndarray], opts: ProfileOptions,
                   threads: int, progress: Progress | None) -> dict[str, Any]:
    from edgec.backends.tvm.runtime import LocalModel

    fns = {"edgec": LocalModel(artifact / manifest["library"], threads=threads).prepare(*inputs.values())}
    if opts.baseline:
        sess = ort_session(str(artifact / "model.onnx"), optimized=True, threads=threads)
        fns["onnxruntime"] = lambda: sess.run(None, inputs)
    samples = interleaved(fns, repeats=opts.repeats, warmup=opts.warmup,
                          progress=(lambda d, n: progress(f"timing end to end {d}/{n}")) if progress else None)
    out = {"edgec": {**LatencyStats.from_samples(samples["edgec"]).to_dict(), "samples_ms": samples["edgec"]}}
    if opts.baseline:
        ort = LatencyStats.from_samples(samples["onnxruntime"])
        out["onnxruntime"] = {**ort.to_dict(), "samples_ms": samples["onnxruntime"],
                              "settings": "CPUExecutionProvider, ORT_ENABLE_ALL, same threads, same inputs"}
        out["ratio_vs_onnxruntime_p50"] = out["edgec"]["latency_ms_p50"] / ort.latency_ms_p50
    return out


def _remote_latency(session: Session, artifact: Path, manifest: dict, inputs: dict[str, np.ndarray],
                    opts: ProfileOptions, progress: Progress | None) -> tuple[dict[str, Any], str | None]:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    samples: list[float] = []
    error = None
    try:
        vm = VirtualMachine(session.load(artifact / manifest["library"]), session.device)
        args = [tvm.runtime.tensor(x, session.device) for x in inputs.values()]
        vm["main"](*args)  # warm-up (and a first check that it runs)
        f = vm.time_evaluator("main", session.device, number=1, repeat=min(5, opts.repeats))
        while len(samples) < opts.repeats:
            samples.extend(float(r) * 1e3 for r in f(*args).results)
            if progress:
                progress(f"timing end to end {min(len(samples), opts.repeats)}/{opts.repeats}")
    except Exception as exc:  # the device dropped: keep what was measured
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    samples = samples[:opts.repeats]
    out = {"edgec": {**LatencyStats.from_samples(samples).to_dict(), "samples_ms": samples}} if samples else {}
    return out, error


def peak_rss_bytes(artifact: Path, manifest: dict, inputs: dict[str, np.ndarray], runs: int = 10) -> int | None:
    """Peak resident memory (bytes) of a fresh process running the artifact ``runs`` times with the plain runtime."""
    with tempfile.TemporaryDirectory(prefix="edgec-rss-") as tmp, \
            resources.as_file(resources.files("edgec.backends.tvm").joinpath("device_runner.py")) as runner:
        np.savez(Path(tmp) / "in.npz", **{f"arg{i}": x for i, x in enumerate(inputs.values())})
        cmd = [sys.executable, str(runner), str(artifact / manifest["library"]), str(Path(tmp) / "in.npz"),
               str(Path(tmp) / "out.npz"), "--repeat", str(runs)]
        env = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        if proc.returncode != 0:
            log.warning("peak RSS run failed: %s", proc.stderr[-500:])
            return None
        return int(json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_bytes"])


def profile_artifact(artifact: str | Path, opts: ProfileOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Profile a built artifact on a device and return the report (``kind: profile``).

    The report extends the artifact's build report (same schema) with a
    ``profile`` section. It is returned even when the device dropped mid-run:
    then ``complete`` is false and ``profile.error`` says what happened.

    Raises:
        UsageError: not an artifact, or an artifact the device cannot run.
        DeviceError: the device is unreachable or fails before any sample.
    """
    from edgec.backends.tvm.tuning import is_emulated
    from edgec.targets import get_target

    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    build_report = json.loads((artifact / "report.json").read_text())
    kernels = json.loads((artifact / "kernels.json").read_text()) if (artifact / "kernels.json").exists() else None
    url = DeviceURL.parse(opts.device)
    spec = get_target(manifest["target"]["name"])
    if url.kind == "local" and manifest["target"].get("verify") != "local":
        raise UsageError(f"{artifact} is built for '{spec.name}', which cannot run here",
                         "profile it on the device: --device rpc://HOST:PORT or tracker://HOST:PORT/KEY")
    if spec.kind != "cpu":
        raise UsageError(f"profiling '{spec.name}' (CUDA) is not supported yet", "profile a CPU target")
    inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in manifest["inputs"]},
                         {t["name"]: np.dtype(t["dtype"]) for t in manifest["inputs"]}, seed=opts.seed)
    threads = opts.threads or int(spec.cpu_target.get("num-cores") or 1)
    start = time.perf_counter()
    if url.kind == "local":
        from edgec.backends.tvm.runtime import set_threads

        set_threads(threads)
    prof: dict[str, Any] = {"device": {"url": str(url)}, "threads": threads if url.kind == "local" else None,
                            "repeats": opts.repeats, "warmup": opts.warmup,
                            "emulated": is_emulated(url, spec),
                            "environment": host_environment() if url.kind == "local" else None}
    error = None
    with open_session(url, opts.timeout_s) as session:
        prof["device"].update(session.info)
        if url.kind == "local":
            if progress:
                progress("timing end to end")
            prof["latency"] = _local_latency(artifact, manifest, inputs, opts, threads, progress)
        else:
            prof["latency"], error = _remote_latency(session, artifact, manifest, inputs, opts, progress)
            if not prof["latency"]:
                raise DeviceError(f"{url} failed before any measurement: {error}",
                                  "check the device and that its TVM runtime matches the artifact's")
        if error is None and kernels and kernels.get("library") and (artifact / kernels["library"]).exists():
            try:
                rows = time_kernels(session, artifact / kernels["library"], kernels["calls"],
                                    opts.kernel_repeats if url.kind == "local" else 1, progress)
                total = sum(r["time_ms"] for r in rows)
                for r in rows:
                    r["share"] = r["time_ms"] / total if total else 0.0
                prof["kernels"] = rows
                prof["kernels_total_ms"] = total
            except DeviceError as exc:
                error = exc.one_line()
    memory = dict(kernels["memory"]) if kernels else {}
    memory.update(weight_bytes=build_report["model"].get("param_bytes"),
                  artifact_bytes=sum(p.stat().st_size for p in artifact.iterdir() if p.is_file()),
                  library_bytes=(artifact / manifest["library"]).stat().st_size)
    if kernels:
        memory["live_activation_bytes"] = kernels["live_activation_bytes"]
    if url.kind == "local" and error is None:
        if progress:
            progress("peak resident memory")
        memory["peak_rss_bytes"] = peak_rss_bytes(artifact, manifest, inputs)
    prof["memory"] = memory
    prof["seconds"] = round(time.perf_counter() - start, 3)
    if error:
        prof["error"] = error
    from edgec.artifact import sha256_file

    report = dict(build_report)
    report.update(kind="profile", created=reports.now_iso(), complete=error is None, profile=prof)
    report["artifact"] = {"path": str(artifact), "library_sha256": sha256_file(artifact / manifest["library"])}
    reports.validate(report)
    return report
