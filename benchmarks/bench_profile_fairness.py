"""Fair profiling: `edgec profile`'s edgec/onnxruntime p50 ratio against bench_vs_ort's, same machine.

Builds one host artifact (shipped tuning records), then runs ``edgec profile ARTIFACT --device
local`` ``--runs`` times, each a fresh process as a user would, and measures the same artifact
against onnxruntime the way ``benchmarks/bench_vs_ort.py`` does (interleaved in blocks, in this
process), and each engine alone in a process of its own (nothing else in it to disturb it). Prints
every ratio and its distance from the benchmark's; the profile is fair when each stays within 10%.
A benchmark, not a test.

    python benchmarks/bench_profile_fairness.py [--model mobilenetv4] [--threads 2] [--runs 3] [--repeats 100]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.flows.build import BuildOptions, build
from edgec.devices.local import LocalDevice
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved


def bench_ratio(artifact: Path, report: dict, threads: int, repeats: int) -> float:
    """edgec p50 / onnxruntime p50 as bench_vs_ort.py measures it."""
    inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in report["model"]["inputs"]})
    sess = ort_session(str(artifact / "model.onnx"), optimized=True, threads=threads)
    fns = {"edgec": LocalDevice(threads).prepare(artifact / "model.so", list(inputs.values())),
           "ort": lambda: sess.run(None, inputs)}
    p50 = {k: LatencyStats.from_samples(v).latency_ms_p50
           for k, v in interleaved(fns, repeats=repeats, warmup=10).items()}
    return p50["edgec"] / p50["ort"]


def alone_ms(artifact: Path, report: dict, threads: int, repeats: int, engine: str) -> float:
    """p50 ms of one engine ("edgec" or "ort") timed back to back, with nothing else in the process."""
    inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in report["model"]["inputs"]})
    if engine == "edgec":
        fn = LocalDevice(threads).prepare(artifact / "model.so", list(inputs.values()))
    else:
        sess = ort_session(str(artifact / "model.onnx"), optimized=True, threads=threads)
        fn = lambda: sess.run(None, inputs)  # noqa: E731
    samples = interleaved({engine: fn}, repeats=repeats, warmup=10, quiet_timeout_s=0)
    return LatencyStats.from_samples(samples[engine]).latency_ms_p50


def alone_ratio(artifact: Path, threads: int, repeats: int) -> float:
    """edgec p50 / onnxruntime p50, each engine timed in a fresh process of its own."""
    ms = {}
    for engine in ("edgec", "ort"):
        out = subprocess.run([sys.executable, __file__, "--alone", engine, "--artifact", str(artifact),
                              "--threads", str(threads), "--repeats", str(repeats)],
                             check=True, capture_output=True, text=True).stdout
        ms[engine] = float(out.strip().splitlines()[-1])
    return ms["edgec"] / ms["ort"]


def profile_ratio(artifact: Path, threads: int, repeats: int, out: Path) -> float:
    """edgec p50 / onnxruntime p50 from one ``edgec profile`` process."""
    subprocess.run([str(Path(sys.executable).parent / "edgec"), "profile", str(artifact), "--device", "local", "--threads",
                    str(threads), "--repeats", str(repeats), "--out", str(out)], check=True, capture_output=True)
    return json.loads((out / "report.json").read_text())["profile"]["latency"]["ratio_vs_onnxruntime_p50"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenetv4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--alone", choices=["edgec", "ort"], help=argparse.SUPPRESS)
    ap.add_argument("--artifact", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.alone:  # a child process: one engine, nothing else
        report = json.loads((args.artifact / "report.json").read_text())
        print(alone_ms(args.artifact, report, args.threads, args.repeats, args.alone))
        return
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        console.print(f"building {args.model} (host, shipped records)")
        built = build(BuildOptions(model=args.model, out_dir=Path(tmp), verify=False))
        rows = []
        for run in range(args.runs):
            console.print(f"edgec profile, run {run + 1}/{args.runs}")
            rows.append(profile_ratio(built.artifact, args.threads, args.repeats, Path(tmp) / f"profile{run}"))
        console.print("bench_vs_ort measurement")
        reference = bench_ratio(built.artifact, built.report, args.threads, args.repeats)
        console.print("each engine alone in its own process")
        alone = alone_ratio(built.artifact, args.threads, args.repeats)
    table = Table(title=f"{args.model}, {args.threads} threads: edgec p50 / onnxruntime p50")
    for col in ("measurement", "ratio", "vs bench", "within 10%"):
        table.add_column(col, justify="right")
    table.add_row("bench_vs_ort (in process)", f"{reference:.3f}", "", "")
    off = alone / reference - 1
    table.add_row("each engine alone (own process)", f"{alone:.3f}", f"{off:+.1%}", "yes" if abs(off) <= 0.10 else "NO")
    for i, r in enumerate(rows):
        off = r / reference - 1
        table.add_row(f"edgec profile #{i + 1}", f"{r:.3f}", f"{off:+.1%}", "yes" if abs(off) <= 0.10 else "NO")
    console.print(table)


if __name__ == "__main__":
    main()
