"""No untuned cliff: kernels without any tuning record, TVM's default schedule against edgec's.

Builds a model the shipped records have never seen (default: ghostnetv2_100 at 192x192) with
no tuning records at all, twice: TVM's default (single-threaded, scalar) and edgec's rule-based
default schedule (``edgec.backends.tvm.default_schedule``). Prints, per convolution kernel, the
time of each compiled alone (``time_evaluator``, best of 3), the sum over all convolution
kernels, and the whole model of each beside onnxruntime, interleaved in one process.
A benchmark, not a test.

    python benchmarks/bench_default_schedule.py [--model ghostnetv2_100] [--input-shape 1,3,192,192]
                                                [--threads 2] [--repeats 30] [--top 12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
from rich.console import Console
from rich.table import Table

from edgec.flows.build import BuildOptions, build
from edgec.devices.local import LocalDevice
from edgec.frontend.reference import make_inputs, ort_session
from edgec.profiling.timing import LatencyStats, interleaved


def kernel_ms(func, target, number: int = 5) -> float:
    """Best-of-3 mean time (ms) of one PrimFunc compiled alone, on random inputs."""
    import tvm

    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target).mod
    rng = np.random.default_rng(0)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.ty.shape]).astype(str(p.ty.dtype)))
            for p in func.params]
    return min(lib.time_evaluator("main", tvm.cpu(), number=number, repeat=3)(*args).results) * 1e3


def conv_kernels(model_path: Path, threads: int) -> list[tuple[str, float, float]]:
    """``[(kernel, TVM default ms, edgec default ms)]`` for every convolution kernel of the model."""
    os.environ["TVM_NUM_THREADS"] = str(threads)
    from tvm import tirx

    from edgec.backends.tvm import api
    from edgec.backends.tvm.compile import tvm_target
    from edgec.backends.tvm.default_schedule import default_schedule
    from edgec.backends.tvm.pipeline import fused_module
    from edgec.targets import get_target

    target = tvm_target(get_target("host"))
    fused = fused_module(api.import_model(onnx.load(str(model_path))), target)
    rows = []
    for gv, func in fused.functions_items():
        if isinstance(func, tirx.PrimFunc) and "conv2d" in gv.name_hint:
            scheduled = default_schedule(func, target)
            rows.append((gv.name_hint, kernel_ms(func, target),
                         kernel_ms(scheduled, target) if scheduled is not None else float("nan")))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ghostnetv2_100")
    ap.add_argument("--input-shape", default="1,3,192,192")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        built = {}
        for label, on in (("tvm_default", False), ("edgec_default", True)):
            console.print(f"building {args.model} with no tuning records ({label})")
            built[label] = build(BuildOptions(model=args.model, input_shapes=[args.input_shape], out_dir=Path(tmp),
                                              name=label, verify=False, use_tune_db=False, default_schedule=on))
        onnx_path = built["edgec_default"].artifact / "model.onnx"
        console.print("timing each convolution kernel alone")
        rows = conv_kernels(onnx_path, args.threads)
        report = built["edgec_default"].report
        inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in report["model"]["inputs"]})
        fns = {label: LocalDevice(args.threads).prepare(res.artifact / "model.so", list(inputs.values()))
               for label, res in built.items()}
        sess = ort_session(str(onnx_path), optimized=True, threads=args.threads)
        fns["ort"] = lambda: sess.run(None, inputs)
        console.print("timing the whole model, interleaved with onnxruntime")
        p50 = {k: LatencyStats.from_samples(v).latency_ms_p50
               for k, v in interleaved(fns, repeats=args.repeats, warmup=3).items()}

    table = Table(title=f"{args.model} {args.input_shape}: convolution kernels with no record, "
                        f"{args.threads} threads (ms, compiled alone)")
    for col in ("kernel", "TVM default", "edgec default", "speed-up"):
        table.add_column(col, justify="right")
    for name, base, ours in sorted(rows, key=lambda r: -r[1])[: args.top]:
        table.add_row(name[:48], f"{base:.3f}", f"{ours:.3f}", f"{base / ours:.1f}x")
    base_sum = sum(r[1] for r in rows)
    ours_sum = sum(r[2] for r in rows if r[2] == r[2])
    table.add_row(f"all {len(rows)} conv kernels", f"{base_sum:.2f}", f"{ours_sum:.2f}", f"{base_sum / ours_sum:.1f}x")
    console.print(table)
    whole = Table(title="whole model, p50 ms (interleaved, same inputs)")
    for col in ("TVM default", "edgec default", "onnxruntime", "TVM default/ORT", "edgec default/ORT"):
        whole.add_column(col, justify="right")
    whole.add_row(f"{p50['tvm_default']:.2f}", f"{p50['edgec_default']:.2f}", f"{p50['ort']:.2f}",
                  f"{p50['tvm_default'] / p50['ort']:.1f}", f"{p50['edgec_default'] / p50['ort']:.1f}")
    console.print(whole)


if __name__ == "__main__":
    main()
