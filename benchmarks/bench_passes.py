"""Latency of edgec builds with and without the default pass pipeline, in one run.

For each model: build for the host with ``--passes none`` and ``--passes default``
(same tuning-database setting for both), then time both artifacts and
onnxruntime (all graph optimisations on) interleaved on identical inputs.
Prints p50s and the ratios with/without and vs onnxruntime.

    python benchmarks/bench_passes.py [--threads 2] [--repeats 50] [--models a,b] [--no-tune-db]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.devices.local import LocalDevice
from edgec.flows.build import BuildOptions, build
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved

MODELS = ["ghostnetv3_100", "efficientvit_m0", "mobilenetv4_hybrid_medium"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--no-tune-db", action="store_true")
    args = ap.parse_args()
    console = Console()
    table = Table(title=f"passes on/off, host, {args.threads} threads, p50 ms (interleaved)")
    for col in ("model", "nodes off→on", "off", "on", "onnxruntime", "on/off", "on/ORT"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            runs = {}
            for passes in ("none", "default"):
                console.print(f"building {name} --passes {passes}")
                res = build(BuildOptions(model=name, target="host", out_dir=Path(tmp), name=f"{name}-{passes}",
                                         passes=passes, verify=False, use_tune_db=not args.no_tune_db))
                runs[passes] = res
            onnx_path = runs["default"].artifact / "model.onnx"
            inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in runs["default"].report["model"]["inputs"]})
            fns = {}
            for passes, res in runs.items():
                fns[passes] = LocalDevice(args.threads).prepare(res.artifact / "model.so", list(inputs.values()))
            sess = ort_session(str(runs["none"].artifact / "model.onnx"), optimized=True, threads=args.threads)
            fns["ort"] = lambda s=sess: s.run(None, inputs)
            samples = interleaved(fns, repeats=args.repeats)
            p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
            nodes = f"{runs['none'].report['model']['nodes']}→{runs['default'].report['model']['nodes']}"
            table.add_row(name, nodes, f"{p50['none']:.2f}", f"{p50['default']:.2f}", f"{p50['ort']:.2f}",
                          f"{p50['default'] / p50['none']:.2f}", f"{p50['default'] / p50['ort']:.2f}")
            del onnx_path
    console.print(table)


if __name__ == "__main__":
    main()
