"""edgec int8 against edgec float32 and onnxruntime int8 (and float32), each alone in a fresh process.

For each zoo model, builds a float32 and an int8 (``--quantize int8``, generated calibration images) host
artifact, then times four engines over ``--rounds`` rounds, the order rotating each round, in fresh processes
(the worker of ``bench_vs_peers.py``): edgec and onnxruntime (all graph optimisations; the int8 artifact's
own QDQ ``model.onnx`` runs its integer kernels) on each artifact. Prints p50 per engine, edgec int8 /
edgec float32 and edgec int8 / onnxruntime int8, the CPU and how busy the machine was. A benchmark, not a test.

    python benchmarks/bench_int8.py [--models mobilenetv4,ghostnet,efficientvit,mcunetv2] [--threads 1,2]
        [--rounds 3] [--warmup 20] [--runs 100] [--artifacts DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_vs_peers as peers  # noqa: E402  (a sibling script)

ENGINES = (("edgec", None), ("edgec", "int8"), ("onnxruntime", None), ("onnxruntime", "int8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=peers.DEFAULT_MODELS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--artifacts", type=Path, default=None, help="build into / reuse artifacts from this folder")
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from edgec.targets.host import cpu_model_name, isa_flags

    console = Console(width=200)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
        folder = args.artifacts or Path(tmp)
        for name in args.models.split(","):
            artifacts = {q: peers._build(name, folder, q) for q in (None, "int8")}
            inputs = Path(tmp) / f"{name}.npz"
            shape = __import__("json").loads((artifacts[None] / "manifest.json").read_text())["inputs"][0]["shape"]
            np.savez(inputs, x=np.random.default_rng(0).standard_normal(shape).astype(np.float32))
            for threads in (int(t) for t in args.threads.split(",")):
                got: dict = {e: [] for e in ENGINES}
                for r in range(args.rounds):
                    for engine in ENGINES[r % 4:] + ENGINES[:r % 4]:
                        got[engine].append(peers._measure(engine[0], artifacts[engine[1]], None, threads, args, inputs))
                p50 = {e: statistics.median(g["p50_ms"] for g in got[e]) for e in ENGINES}
                busy = max((g["others_cores"] or 0.0) for e in ENGINES for g in got[e])
                rows.append((name, threads, p50, busy))
                console.print(f"{name} x{threads}: " + ", ".join(f"{e[0]} {e[1] or 'fp32'} {p50[e]:.2f} ms"
                                                                 for e in ENGINES), highlight=False)
    isa = "AVX-512" if "avx512f" in isa_flags() else ("AVX2" if "avx2" in isa_flags() else "no AVX2")
    busiest = max(r[3] for r in rows)
    table = Table(title=f"p50 ms, each engine alone in a fresh process, {args.rounds} rounds alternated; "
                        f"{cpu_model_name()} ({isa}), {os.cpu_count()} cores; load {load_before[0]:.1f} before, "
                        f"others' busiest {busiest:.1f} cores", title_justify="left")
    for col in ("model", "threads", "edgec fp32", "edgec int8", "ORT fp32", "ORT int8", "edgec int8/fp32",
                "edgec int8/ORT int8"):
        table.add_column(col, justify="right")
    for name, threads, p50, _ in rows:
        ef, ei, of, oi = (p50[e] for e in ENGINES)
        table.add_row(name, str(threads), f"{ef:.2f}", f"{ei:.2f}", f"{of:.2f}", f"{oi:.2f}", f"{ei / ef:.2f}",
                      f"{ei / oi:.2f}")
    console.print(table)


if __name__ == "__main__":
    main()
