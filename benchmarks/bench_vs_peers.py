"""edgec against onnxruntime (and LiteRT where a .tflite is given), each engine alone in a fresh process.

Interleaving engines in one process (``bench_vs_ort.py``) shares caches, the allocator and the thread
pools' wake-ups between them; a user runs one engine in a process. Here every measurement is a new
Python process that loads one engine, warms it up and times it (``--warmup`` then ``--runs`` calls,
p50 of those), and the engines take turns over ``--rounds`` rounds (the order rotates each round),
so slow drift of a shared machine hits every engine alike. Reported per model and thread count: the
median over the rounds of each process's p50, the spread (max - min of those p50s), and the ratios.
Each process also measures the other work on the machine while it timed (``edgec.profiling.host_load``),
and the table says how busy the machine was: compare figures only within one run of this script.

    python benchmarks/bench_vs_peers.py [--models mobilenetv4,ghostnet,efficientvit,mcunetv2]
        [--threads 1,2] [--rounds 3] [--warmup 20] [--runs 100] [--artifacts DIR]
        [--tflite mobilenetv4=FILE.tflite ...] [--quantize int8] [--json out.json]

The models are built for ``host`` (``--artifacts`` keeps and reuses them); onnxruntime runs the artifact's
own ``model.onnx`` (all graph optimisations, ``intra_op_num_threads`` = threads); LiteRT runs the given
``.tflite`` conversion of that model with its default XNNPACK delegate (``num_threads`` = threads), on an
NHWC copy of the same input. With ``--quantize int8`` the artifacts are int8 builds (``MODEL-host-int8``):
edgec runs its integer kernels, onnxruntime the artifact's QDQ ``model.onnx``, LiteRT the int8 ``.tflite`` given.
``benchmarks/bench_vs_litert.py`` converts the .tflite files and runs this for float32 and int8. A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENGINES = ("edgec", "onnxruntime", "litert")
DEFAULT_MODELS = "mobilenetv4,ghostnet,efficientvit,mcunetv2"


# --------------------------------------------------------------------------- one engine, one process

def _engine_call(engine: str, artifact: Path, tflite: Path | None, threads: int, x: np.ndarray):
    """A no-argument function running one inference of ``engine``."""
    if engine == "edgec":
        from edgec.devices.local import LocalDevice

        return LocalDevice(threads).prepare(artifact / "model.so", [x])
    if engine == "onnxruntime":
        from edgec.frontend.reference import ort_session

        sess = ort_session(str(artifact / "model.onnx"), optimized=True, threads=threads)
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(tflite), num_threads=threads)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if tuple(detail["shape"]) != x.shape else x
    interp.set_tensor(detail["index"], nhwc.astype(detail["dtype"]))
    return interp.invoke


def worker(engine: str, artifact: Path, tflite: Path | None, threads: int, warmup: int, runs: int,
           inputs: Path) -> None:
    """Time ``engine`` in this (fresh) process; print ``{"p50_ms", "others_cores"}`` as JSON."""
    from edgec.profiling.host_load import HostLoad

    x = np.load(inputs)["x"]
    call = _engine_call(engine, artifact, tflite, threads, x)
    for _ in range(warmup):
        call()
    samples = []
    with HostLoad() as load:
        for _ in range(runs):
            t0 = time.perf_counter()
            call()
            samples.append((time.perf_counter() - t0) * 1e3)
    print(json.dumps({"p50_ms": statistics.median(samples), "others_cores": load.others_cores}))


# --------------------------------------------------------------------------- the parent

def _build(name: str, folder: Path, quantize: str | None = None) -> Path:
    """The host artifact of zoo model ``name`` in ``folder`` (built unless there; ``quantize``: ``"int8"``)."""
    from edgec.flows.build import BuildOptions, build

    artifact = folder / (f"{name}-host" + (f"-{quantize}" if quantize else ""))
    if not (artifact / "model.so").exists():
        print(f"building {name} for host" + (f" ({quantize})" if quantize else ""), flush=True)
        build(BuildOptions(model=name, target="host", out_dir=folder, name=artifact.name, verify=False,
                           quantize=quantize))
    return artifact


def _measure(engine: str, artifact: Path, tflite: Path | None, threads: int, args, inputs: Path) -> dict:
    cmd = [sys.executable, __file__, "--worker", engine, str(artifact), str(tflite or ""), str(threads),
           str(args.warmup), str(args.runs), str(inputs)]
    env = {**os.environ, "TVM_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{engine} on {artifact.name} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--artifacts", type=Path, default=None, help="build into / reuse artifacts from this folder")
    ap.add_argument("--tflite", action="append", default=[], metavar="MODEL=FILE",
                    help="a .tflite conversion of MODEL for LiteRT (repeatable)")
    ap.add_argument("--quantize", choices=["int8"], default=None, help="time int8 builds (--tflite: int8 files)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--worker", nargs=7, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        engine, artifact, tflite, threads, warmup, runs, inputs = args.worker
        worker(engine, Path(artifact), Path(tflite) if tflite else None, int(threads), int(warmup), int(runs),
               Path(inputs))
        return
    from rich.console import Console
    from rich.table import Table

    from edgec.targets.host import cpu_model_name, isa_flags

    tflites = dict(t.split("=", 1) for t in args.tflite)
    console = Console(width=200)
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        folder = args.artifacts or Path(tmp)
        for name in args.models.split(","):
            artifact = _build(name, folder, args.quantize)
            manifest = json.loads((artifact / "manifest.json").read_text())
            shape = manifest["inputs"][0]["shape"]
            inputs = Path(tmp) / f"{name}.npz"
            np.savez(inputs, x=np.random.default_rng(0).standard_normal(shape).astype(np.float32))
            engines = [e for e in ENGINES if e != "litert" or name in tflites]
            for threads in (int(t) for t in args.threads.split(",")):
                got: dict[str, list[dict]] = {e: [] for e in engines}
                for r in range(args.rounds):
                    order = engines[r % len(engines):] + engines[:r % len(engines)]
                    for engine in order:
                        got[engine].append(_measure(engine, artifact, tflites.get(name), threads, args, inputs))
                row = {"model": name, "threads": threads}
                for engine, results in got.items():
                    p50s = [g["p50_ms"] for g in results]
                    row[engine] = {"p50_ms": statistics.median(p50s), "spread_ms": max(p50s) - min(p50s),
                                   "others_cores_max": max((g["others_cores"] or 0.0) for g in results)}
                for peer in engines[1:]:
                    row[f"edgec/{peer}"] = row["edgec"]["p50_ms"] / row[peer]["p50_ms"]
                rows.append(row)
                console.print(f"{name} x{threads}: " + ", ".join(
                    f"{e} {row[e]['p50_ms']:.2f} ms" for e in engines), highlight=False)
    isa = "AVX-512" if "avx512f" in isa_flags() else ("AVX2" if "avx2" in isa_flags() else "no AVX2")
    busiest = max(row[e]["others_cores_max"] for row in rows for e in ENGINES if e in row)
    title = ("int8 builds, " if args.quantize else "") + (
             f"p50 ms, each engine alone in a fresh process, {args.rounds} rounds alternated "
             f"({args.warmup} warm-up + {args.runs} timed calls); {cpu_model_name()} ({isa}), "
             f"{os.cpu_count()} cores; load {load_before[0]:.1f} before, others' busiest {busiest:.1f} cores")
    table = Table(title=title, title_justify="left")
    for col in ("model", "threads", "edgec", "onnxruntime", "litert", "edgec/ORT", "edgec/LiteRT"):
        table.add_column(col, justify="right")
    for row in rows:
        cell = {e: (f"{row[e]['p50_ms']:.2f} ±{row[e]['spread_ms']:.2f}" if e in row else "-") for e in ENGINES}
        table.add_row(row["model"], str(row["threads"]), cell["edgec"], cell["onnxruntime"], cell["litert"],
                      f"{row['edgec/onnxruntime']:.2f}",
                      f"{row['edgec/litert']:.2f}" if "edgec/litert" in row else "-")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"machine": title, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
