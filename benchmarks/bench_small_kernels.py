"""Serial small kernels: whole-model latency for each threshold of :mod:`edgec.backends.tvm.small_kernels`.

For each model, builds one host artifact per ``--thresholds`` value (kernels whose work is below it run on
one thread; 0 leaves every schedule's parallel loops), then times them and onnxruntime round-robin in one
process on identical inputs and prints p50 ms and the ratios to onnxruntime. A benchmark, not a test.

    python benchmarks/bench_small_kernels.py [--models efficientvit,mobilenetv4,ghostnet,mcunetv2]
                                             [--thresholds 0,4096,16384,65536] [--threads 2] [--repeats 200]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.backends.tvm import small_kernels
from edgec.flows.build import BuildOptions, build
from edgec.devices.local import LocalDevice
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="efficientvit,mobilenetv4,ghostnet,mcunetv2")
    ap.add_argument("--thresholds", default="0,4096,16384,65536")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=200)
    args = ap.parse_args()
    thresholds = [int(t) for t in args.thresholds.split(",")]
    console = Console(width=160)
    table = Table(title=f"p50 ms by small-kernel threshold, host, {args.threads} threads (interleaved with onnxruntime)")
    for col in ["model", *(f"{t}" for t in thresholds), "onnxruntime", *(f"{t}/ORT" for t in thresholds)]:
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            built = {}
            for t in thresholds:
                small_kernels.SMALL_KERNEL_WORK = t
                console.print(f"building {name} (threshold {t})")
                built[t] = build(BuildOptions(model=name, target="host", out_dir=Path(tmp), name=f"{name}-{t}",
                                              verify=False))
            report = built[thresholds[0]].report
            inputs = make_inputs({i["name"]: tuple(i["shape"]) for i in report["model"]["inputs"]})
            fns = {t: LocalDevice(args.threads).prepare(res.artifact / "model.so", list(inputs.values()))
                   for t, res in built.items()}
            sess = ort_session(str(built[thresholds[0]].artifact / "model.onnx"), optimized=True, threads=args.threads)
            fns["ort"] = lambda s=sess: s.run(None, inputs)
            samples = interleaved(fns, repeats=args.repeats, warmup=10)
            p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
            table.add_row(name, *(f"{p50[t]:.3f}" for t in thresholds), f"{p50['ort']:.3f}",
                          *(f"{p50[t] / p50['ort']:.2f}" for t in thresholds))
    console.print(table)


if __name__ == "__main__":
    main()
