"""edgec against onnxruntime and LiteRT (XNNPACK) on the four zoo families, float32 and int8 (issue 27).

    python benchmarks/bench_vs_litert.py [--models mobilenetv4,ghostnet,efficientvit,mcunetv2]
        [--precision fp32,int8] [--threads 1,2] [--rounds 3] [--warmup 20] [--runs 100]
        [--artifacts DIR] [--tflite-dir DIR] [--reconvert] [--venv DIR] [--json out.json]

A benchmark, not a test: it asserts nothing about speed, and its figures hold for the machine and the load of
the run that printed them (compare figures only within one run). Run it on a quiet machine; a full run builds
eight artifacts (about a minute each; ``--artifacts DIR`` keeps and reuses them) and converts four models.

1. Builds each model for ``host``, float32 and ``--quantize int8`` (``bench_vs_peers._build``; artifacts
   ``MODEL-host`` and ``MODEL-host-int8`` in ``--artifacts``, a temporary folder without it).
2. Converts each float32 artifact's ``model.onnx`` with ``scripts/convert_zoo_tflite.py`` (onnx2tf in its own
   scratch venv; TensorFlow never enters edgec's) into ``--tflite-dir`` (default ``ARTIFACTS/tflite``; files
   there are reused unless ``--reconvert``): ``MODEL_fp32.tflite`` and ``MODEL_int8.tflite`` (full-integer int8,
   per-channel weights, calibrated on the samples edgec's own int8 build uses by default). LiteRT gets the best
   form its XNNPACK delegate takes whole: HardSigmoid rewritten as a ReLU6 form (RELU_0_TO_1 would split the
   graph: ghostnet 8 partitions, mcunetv2 14), and in int8 the op types XNNPACK leaves to TFLite kernels
   (efficientvit's BATCH_MATMUL, SOFTMAX, RELU) kept in float. The conversion checks (LiteRT against onnxruntime)
   and the XNNPACK partitions are printed.
3. Times edgec (the artifact's ``model.so``), onnxruntime (the artifact's ``model.onnx``: float32, or QDQ int8
   with onnxruntime's integer kernels) and LiteRT (the .tflite, default XNNPACK delegate) with
   ``benchmarks/bench_vs_peers.py``, once per precision: each engine alone in a fresh process, alternated over
   ``--rounds`` rounds, at each of ``--threads``; per model and thread count the median over the rounds of each
   process's p50, the spread, and the ratios edgec/ORT and edgec/LiteRT, with the CPU class and the load.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE / "bench_vs_peers.py"
CONVERT = HERE.parent / "scripts" / "convert_zoo_tflite.py"
DEFAULT_MODELS = "mobilenetv4,ghostnet,efficientvit,mcunetv2"
PRECISIONS = ("fp32", "int8")


def _peers():
    """``benchmarks/bench_vs_peers.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_vs_peers", PEERS)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _convert(models: list[str], folder: Path, tdir: Path, precisions: list[str], args) -> None:
    """Run scripts/convert_zoo_tflite.py on the float32 artifacts of ``models`` lacking a conversion."""
    need = [m for m in models if args.reconvert or any(not (tdir / f"{m}_{p}.tflite").is_file() for p in precisions)]
    if not need:
        print(f"reusing the conversions in {tdir}", flush=True)
        return
    cmd = [sys.executable, str(CONVERT), *[f"{m}={folder / f'{m}-host' / 'model.onnx'}" for m in need],
           "--out", str(tdir), "--precision", ",".join(precisions)] + (["--venv", str(args.venv)] if args.venv else [])
    if subprocess.run(cmd).returncode != 0:
        raise SystemExit(f"conversion failed or its checks did not pass (see above; logs in {tdir / 'logs'})")


def _conversion_table(report: dict, models: list[str], precisions: list[str], tdir: Path):
    from rich.table import Table

    table = Table(title="LiteRT conversions (onnx2tf; LiteRT on one thread against onnxruntime on the ONNX)",
                  title_justify="left")
    for col in ("model", "file", "form", "check", "XNNPACK partitions", "left to TFLite kernels"):
        table.add_column(col)
    for m in models:
        for c in report["models"].get(m, {}).get("checks", []):
            if c["precision"] not in precisions:
                continue
            if c["precision"] == "fp32":
                check = f"max abs err {c['max_abs_error']:.2g}"
            else:
                check = f"top-1 {c['top1_agreement']:.0%}, SNR {c['snr_db']:.1f} dB"
            used = Path(c["file"]) == tdir / f"{m}_{c['precision']}.tflite"
            form = ("relu6 HardSigmoid" if c["form"] == "relu6" else "as exported") + (
                f", float {'/'.join(c['float_ops'])}" if c.get("float_ops") else "")
            x = c["xnnpack"]
            table.add_row(m, Path(c["file"]).name + (" (timed)" if used else ""), form, check,
                          f"{x['partitions']} ({x['delegated_nodes']}/{x['nodes']} nodes)",
                          ", ".join(f"{k} x{v}" for k, v in sorted(x["left_ops"].items())) or "-")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--precision", default="fp32,int8", help="fp32, int8 or both (default)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--artifacts", type=Path, default=None, help="build into / reuse artifacts from this folder")
    ap.add_argument("--tflite-dir", type=Path, default=None, help="conversions (default: ARTIFACTS/tflite)")
    ap.add_argument("--reconvert", action="store_true", help="convert again even where the .tflite files exist")
    ap.add_argument("--venv", type=Path, default=None, help="onnx2tf's scratch venv (convert_zoo_tflite.py --venv)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    models = [m for m in args.models.split(",") if m]
    precisions = [p for p in args.precision.split(",") if p]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise SystemExit(f"--precision takes {','.join(PRECISIONS)}")
    from rich.console import Console

    peers = _peers()
    console = Console(width=200)
    with tempfile.TemporaryDirectory(prefix="bench-litert-") as tmp:
        folder = (args.artifacts or Path(tmp) / "artifacts").resolve()
        folder.mkdir(parents=True, exist_ok=True)
        tdir = (args.tflite_dir or folder / "tflite").resolve()
        for m in models:  # the float32 artifact always: its model.onnx is what gets converted
            peers._build(m, folder)
            if "int8" in precisions:
                peers._build(m, folder, "int8")
        _convert(models, folder, tdir, precisions, args)
        report = json.loads((tdir / "convert_report.json").read_text())
        console.print(_conversion_table(report, models, precisions, tdir))
        results = {}
        for p in precisions:
            out = Path(tmp) / f"{p}.json"
            cmd = [sys.executable, str(PEERS), "--models", ",".join(models), "--threads", args.threads,
                   "--rounds", str(args.rounds), "--warmup", str(args.warmup), "--runs", str(args.runs),
                   "--artifacts", str(folder), "--json", str(out)]
            for m in models:
                cmd += ["--tflite", f"{m}={tdir / f'{m}_{p}.tflite'}"]
            cmd += ["--quantize", "int8"] if p == "int8" else []
            console.print(f"\n[bold]{'float32' if p == 'fp32' else 'int8'}[/bold]: benchmarks/bench_vs_peers.py",
                          highlight=False)
            if subprocess.run(cmd).returncode != 0:
                raise SystemExit(f"bench_vs_peers.py failed for {p}")
            results[p] = json.loads(out.read_text())
    if args.json:
        conversions = {m: report["models"][m] for m in models if m in report["models"]}
        args.json.write_text(json.dumps({**results, "conversions": conversions, "versions": report.get("versions")},
                                        indent=1))


if __name__ == "__main__":
    main()
