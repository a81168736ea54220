"""Attention models in NCHW or NHWC: which layout runs faster, measured.

EfficientViT-M's attention reshapes and splits its tensors in NCHW terms, so converting its
convolutions to NHWC makes ConvertLayout wrap each of them in transposes; edgec weighs those
against the convolutions (``pipeline.nhwc_pays``). This benchmark forces each layout in turn and
compares the two builds of the same model, interleaved in one process with onnxruntime (same
inputs, same threads):

- with no tuning records (edgec's default schedule for every kernel), and
- with ``--tune-minutes`` of MetaSchedule search per layout, each from an empty database
  (same budget, same seed), so that neither layout profits from the shipped records.

It prints p50 latencies, the ratio to onnxruntime, the fused kernels of each build and how many
of them are element-wise/layout kernels running alone (transposes among them). A benchmark, not a test.

    python benchmarks/bench_attention_layout.py [--model efficientvit] [--threads 2]
                                                [--tune-minutes 5] [--repeats 100]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgec.backends.tvm import pipeline
from edgec.flows.build import BuildOptions, build
from edgec.devices.local import LocalDevice
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved
from edgec.flows.tune import tune

EDGEC_RULE = pipeline.nhwc_pays


def set_layout(layout: str | None) -> None:
    """Make the following lowerings keep NCHW, convert to NHWC whatever it costs, or (None) follow edgec's rule."""
    pipeline.nhwc_pays = EDGEC_RULE if layout is None else (lambda *_a, nhwc=layout == "NHWC": nhwc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="efficientvit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tune-minutes", type=float, default=5.0, help="per layout; 0: no tuned builds")
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    console = Console(width=160)
    with tempfile.TemporaryDirectory() as tmp:
        built, kernels = {}, {}
        for layout in ("NCHW", "NHWC"):
            set_layout(layout)
            variants = [("no records", False, None)]
            if args.tune_minutes > 0:
                db = Path(tmp) / f"db-{layout}"
                console.print(f"tuning {args.model} in {layout} for {args.tune_minutes} min")
                tune(BuildOptions(model=args.model), minutes=args.tune_minutes, db=db)
                variants.append((f"tuned {args.tune_minutes:g} min", True, db))
            for label, use_db, db in variants:
                console.print(f"building {args.model} in {layout} ({label})")
                res = build(BuildOptions(model=args.model, out_dir=Path(tmp), name=f"{layout}-{len(built)}",
                                         verify=False, use_tune_db=use_db, tune_db=db))
                built[(layout, label)] = res
                kernels[(layout, label)] = res.report.get("kernels") or {}
        set_layout(None)
        first = next(iter(built.values()))
        inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in first.report["model"]["inputs"]})
        fns = {key: LocalDevice(args.threads).prepare(res.artifact / "model.so", list(inputs.values()))
               for key, res in built.items()}
        sess = ort_session(str(first.artifact / "model.onnx"), optimized=True, threads=args.threads)
        fns["ort"] = lambda: sess.run(None, inputs)
        samples = interleaved(fns, repeats=args.repeats, warmup=10)
    p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
    table = Table(title=f"{args.model}: convolution layout, p50 ms at {args.threads} threads "
                        f"(interleaved with onnxruntime: {p50['ort']:.2f} ms)")
    for col in ("layout asked", "layout built", "kernels", "standalone layout kernels", "schedules", "p50 ms", "/ORT"):
        table.add_column(col, justify="right")
    for key in built:
        k = kernels[key]
        table.add_row(key[0], k.get("conv_layout", "?"), str(k.get("after_passes", "?")),
                      str(len(k.get("standalone_after_passes", []))), key[1], f"{p50[key]:.2f}",
                      f"{p50[key] / p50['ort']:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
