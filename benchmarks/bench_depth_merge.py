"""depth_merge(mode=latency) against the plain build: the merges the latency table chose must not slow a model.

For each model: measure the latency table on this machine (``edgec.flows.merge_table.merge_table``), build a
host artifact with the default passes and one with ``default,depth_merge(mode=latency,...)``, and
time both and onnxruntime interleaved in one process on the same inputs. Prints the mergeable
pairs, the merges chosen, the predicted saving (the table's separate - merged ms summed over the
chosen pairs) and the measured p50s. A benchmark, not a test.

    python benchmarks/bench_depth_merge.py [--models mobilenetv4,ghostnet,mobilenetv2_035] [--threads 2]
                                           [--repeats 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.flows.build import BuildOptions, build
from edgec.flows.merge_table import merge_table, write_table
from edgec.devices.local import LocalDevice
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenetv4,ghostnet,mobilenetv2_035")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    console = Console(width=160)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            console.print(f"{name}: latency table")
            table = merge_table(BuildOptions(model=name, target="host", verify=False))
            path = Path(tmp) / f"{name}.json"
            write_table(table, path)
            chosen = [p for p in table["pairs"] if p["faster"]]
            built = {}
            for label, passes in (("plain", "default"), ("merged", f"default,depth_merge(mode=latency,table={path})")):
                console.print(f"{name}: build {label}")
                built[label] = build(BuildOptions(model=name, target="host", out_dir=Path(tmp), name=f"{name}-{label}",
                                                  passes=passes))
            report = built["plain"].report
            inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in report["model"]["inputs"]})
            fns = {label: LocalDevice(args.threads).prepare(res.artifact / "model.so", list(inputs.values()))
                   for label, res in built.items()}
            sess = ort_session(str(built["plain"].artifact / "model.onnx"), optimized=True, threads=args.threads)
            fns["ort"] = lambda s=sess: s.run(None, inputs)
            samples = interleaved(fns, repeats=args.repeats, warmup=10)
            p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
            rows.append((name, len(table["pairs"]), len(chosen),
                         sum(p["separate_ms"] - p["merged_ms"] for p in chosen), p50))
    out = Table(title=f"depth_merge(mode=latency) on this machine, {args.threads} threads, p50 ms (interleaved)")
    for col in ("model", "mergeable pairs", "merged", "predicted saving ms", "plain", "merged", "onnxruntime",
                "speed-up"):
        out.add_column(col, justify="right")
    for name, pairs, chosen, saving, p50 in rows:
        out.add_row(name, str(pairs), str(chosen), f"{saving:.3f}", f"{p50['plain']:.2f}", f"{p50['merged']:.2f}",
                    f"{p50['ort']:.2f}", f"{p50['plain'] / p50['merged']:.3f}")
    console.print(out)


if __name__ == "__main__":
    main()
