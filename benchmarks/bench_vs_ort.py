"""edgec (untuned and tuned) against onnxruntime, interleaved in one process on identical inputs.

For each model and thread count, builds two host artifacts -- one ignoring the
tuning records (``--no-tune-db``: every kernel at edgec's default schedule), one applying
them (the default) -- then times
both and onnxruntime (all graph optimisations, same thread count) round-robin,
and prints p50 latencies and the ratios edgec/ORT. A benchmark, not a test.

    python benchmarks/bench_vs_ort.py [--models mobilenetv4,ghostnet,efficientvit,mcunetv2]
                                      [--threads 1,2] [--repeats 100] [--db DIR] [--json out.json]
                                      [--hide-class x86_64-avx2]

``--hide-class`` hides the shipped records of a target class, e.g. this machine's own, to
measure what a machine of that class gets from another class's records alone (transferred).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.devices.local import LocalDevice
from edgec.flows.build import BuildOptions, build
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved

DEFAULT_MODELS = "mobilenetv4,ghostnet,efficientvit,mcunetv2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=100)
    ap.add_argument("--db", type=Path, default=None, help="tuning database (default: the user cache + shipped)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--hide-class", default=None, help="hide the shipped records of this target class")
    args = ap.parse_args()
    if args.hide_class:
        from edgec.backends.tvm import tuning

        shown = tuning.shipped_records_file
        tuning.shipped_records_file = lambda cls: None if cls == args.hide_class else shown(cls)
    console = Console(width=180)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            built = {}
            for tuned in (False, True):
                label = "tuned" if tuned else "untuned"
                console.print(f"building {name} ({label})")
                built[label] = build(BuildOptions(model=name, target="host", out_dir=Path(tmp),
                                                  name=f"{name}-{label}", verify=False, use_tune_db=tuned,
                                                  tune_db=args.db))
            report = built["tuned"].report
            inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in report["model"]["inputs"]})
            for threads in (int(t) for t in args.threads.split(",")):
                fns = {label: LocalDevice(threads).prepare(res.artifact / "model.so", list(inputs.values()))
                       for label, res in built.items()}
                sess = ort_session(str(built["tuned"].artifact / "model.onnx"), optimized=True, threads=threads)
                fns["ort"] = lambda s=sess: s.run(None, inputs)
                samples = interleaved(fns, repeats=args.repeats, warmup=10)
                p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
                sched = report["build"].get("schedules") or {}
                rows.append({"model": name, "threads": threads, "p50_ms": p50,
                             "tuned_kernels": f"{report['build']['tuned_tasks']}/{report['build']['total_tasks']}",
                             "provenance": f"{sched.get('tuned', 0)} tuned, {sched.get('transferred', 0)} transferred, "
                                           f"{sched.get('default', 0)} default, {sched.get('untuned', 0)} untuned",
                             "untuned_vs_ort": p50["untuned"] / p50["ort"], "tuned_vs_ort": p50["tuned"] / p50["ort"]})
    hidden = f", {args.hide_class} records hidden" if args.hide_class else ""
    table = Table(title=f"edgec vs onnxruntime, host, p50 ms (interleaved, same inputs{hidden})")
    for col in ("model", "threads", "schedules", "no records", "tuned", "onnxruntime", "no records/ORT", "tuned/ORT"):
        table.add_column(col, justify="right")
    for r in rows:
        p = r["p50_ms"]
        table.add_row(r["model"], str(r["threads"]), r["provenance"], f"{p['untuned']:.2f}", f"{p['tuned']:.2f}",
                      f"{p['ort']:.2f}", f"{r['untuned_vs_ort']:.2f}", f"{r['tuned_vs_ort']:.2f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
