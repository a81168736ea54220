"""depth-compress on the digits task: measured speed-up, the DP's predicted latency against the measured one,
and the accuracy before and after fine-tuning.

Trains the digits model (``edgec zoo digits``) unless ``--digits DIR`` gives one, runs
``edgec.flows.depth_compress.depth_compress`` for each ``--speedup``, builds both models with ``edgec build``, then
times the model, the compressed model and onnxruntime (on the model) in one process on the same input,
``--runs`` times: back-to-back inferences in loops of at least 100 ms, the two TVM models alternating, then
onnxruntime alone, the median of ``--rounds`` loops kept (single calls after a pause vary by +-20% on a
0.4 ms model). Prints one row per
speed-up target and run. A benchmark, not a test.

    python benchmarks/bench_depth_compress.py [--digits DIR] [--speedup 1.25,1.3] [--epochs 20] [--threads 2]
                                              [--runs 3] [--rounds 9]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from edgec.flows.build import BuildOptions, build
from edgec.flows.depth_compress import CompressOptions, depth_compress, write_result
from edgec.devices.local import LocalDevice
from edgec.frontend.reference import make_inputs, ort_session


def _loop_ms(fn, min_ms: float = 100.0) -> float:
    """Mean ms per call over back-to-back calls lasting at least ``min_ms``."""
    fn()
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) * 1e3 < min_ms or n < 10:
        fn()
        n += 1
    return elapsed * 1e3 / n


def _loops(fns: dict, rounds: int) -> dict[str, float]:
    """Median over ``rounds`` of each callable's loop time, the callables alternating round by round."""
    samples = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            samples[k].append(_loop_ms(fn))
    return {k: float(np.median(v)) for k, v in samples.items()}


def _digits(folder: Path | None, tmp: Path) -> Path:
    if folder is not None:
        return folder
    from edgec.zoo.digits import train_digits_model

    return train_digits_model(tmp / "digits", epochs=10).onnx_path.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--digits", type=Path, default=None, help="folder written by `edgec zoo digits`")
    ap.add_argument("--speedup", default="1.25,1.3")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    console = Console(width=170)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        digits = _digits(args.digits, Path(tmp))
        model = next(digits.glob("*.onnx"))
        for target in (float(s) for s in args.speedup.split(",")):
            console.print(f"depth-compress --speedup {target}")
            compressed, r = depth_compress(BuildOptions(model=str(model), target="host", verify=False), digits,
                                           CompressOptions(speedup=target, epochs=args.epochs),
                                           progress=lambda m: None)
            out = Path(tmp) / f"c{target}"
            path = write_result(out, compressed, r, r.get("preprocessing"))
            built = {label: build(BuildOptions(model=str(m), target="host", out_dir=Path(tmp),
                                               name=f"{label}-{target}"))
                     for label, m in (("model", model), ("compressed", path))}
            inputs = make_inputs({t["name"]: tuple(t["shape"]) for t in built["model"].report["model"]["inputs"]})
            for run in range(args.runs):
                fns = {k: LocalDevice(args.threads).prepare(b.artifact / "model.so", list(inputs.values()))
                       for k, b in built.items()}
                p50 = _loops(fns, args.rounds)
                # onnxruntime alone afterwards: its spinning worker threads would slow TVM's if interleaved
                sess = ort_session(str(built["model"].artifact / "model.onnx"), optimized=True, threads=args.threads)
                p50.update(_loops({"ort": lambda s=sess: s.run(None, inputs)}, args.rounds))
                rows.append((target, run, r, p50))
    t = Table(title=f"depth-compress on digits (mobilenetv2_035, 64x64), this machine, {args.threads} threads, "
                    "ms per inference (back-to-back loops, median)")
    for col in ("target", "run", "removed", "merged", "model", "compressed", "speed-up", "DP predicted",
                "pred. error", "onnxruntime", "compressed/ORT", "top-1 model", "top-1 compressed"):
        t.add_column(col, justify="right")
    for target, run, r, p50 in rows:
        removed = sum(len(c["removed_activations"]) for c in r["chains"])
        merged = sum(g["merged"] for c in r["chains"] for g in c["groups"])
        # the DP predicts a saving in ms: applied to this run's model time
        predicted = p50["model"] - (r["latency_ms"]["model"] - r["latency_ms"]["predicted"])
        t.add_row(f"{target:g}x", str(run), str(removed), str(merged), f"{p50['model']:.4f}",
                  f"{p50['compressed']:.4f}", f"{p50['model'] / p50['compressed']:.2f}x", f"{predicted:.4f}",
                  f"{100 * (predicted / p50['compressed'] - 1):+.1f}%", f"{p50['ort']:.4f}",
                  f"{p50['compressed'] / p50['ort']:.2f}", f"{100 * r['accuracy']['model']:.2f}%",
                  f"{100 * r['accuracy']['compressed']:.2f}%")
    console.print(t)


if __name__ == "__main__":
    main()
