"""How fast the CLI answers the questions that need no compiler: help, listings and usage errors.

Each command runs as a fresh process (as a user types it) ``--repeats`` times; the table gives the
median wall seconds, the spread (min-max) and whether the median is under the 1.5 s budget, then
one more run under ``python -X importtime`` names the heavy modules it imported (torch, timm, tvm:
there must be none) and the lighter but slow ones (onnx, numpy...). The CPU and the load average
(before and after the timed runs) are printed too: on a busy machine the figures scale with the load.
A benchmark, not a test (``tests/test_fast_start.py`` checks the imports and exit codes).

    python benchmarks/bench_cli.py [--repeats 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

EDGEC = [str(Path(sys.executable).parent / "edgec")]
#: (arguments, expected exit code)
COMMANDS = [
    (["--help"], 0),
    (["zoo", "list"], 0),
    (["targets", "list"], 0),
    (["passes", "list"], 0),
    (["build", "nosuchmodel"], 2),                           # unknown model: refused before any work
    (["build", "mobilenetv4", "--target", "nosuch"], 2),    # unknown target
    (["build", "mobilenetv4", "--passes", "nosuch"], 2),    # unknown pass
    (["build", "mobilenetv4", "--bogus-flag"], 2),          # click's own usage error
]
BUDGET_S = 1.5
#: Must never be imported by these commands.
HEAVY = ("torch", "timm", "tvm", "tvm_ffi", "torchvision")
#: Slow to import (hundreds of ms), worth knowing about.
NOTABLE = ("onnx", "onnx_ir", "onnxruntime", "onnxslim", "onnxscript", "numpy", "ml_dtypes", "sympy", "scipy",
           "sklearn", "matplotlib", "jsonschema", "psutil", "grpc", "cloudpickle", "xgboost")


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``), and how many this process may use."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {usable} usable of {os.cpu_count()} cores"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def imported_top_level(args: list[str]) -> tuple[set[str], int]:
    """Top-level packages one run imports (``-X importtime``), and its exit code."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgec.cli", *args], capture_output=True,
                          text=True)
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names, proc.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", type=Path, help="Also write the figures to this file.")
    args = ap.parse_args()
    console = Console(width=max(Console().width, 150))  # the table is wide: do not wrap it in a pipe
    before = load()
    console.print(f"CPU: {cpu_name()}; python {platform.python_version()}; load average (1, 5, 15 min) at start: "
                  f"{before}")
    table = Table(title=f"edgec CLI latency (fresh process, {args.repeats} runs each)")
    for col in ("command", "exit", "median s", "min-max s", f"< {BUDGET_S} s", "heavy imports", "also imported",
                "load (1 min)"):
        table.add_column(col, justify="left" if col in ("command", "heavy imports", "also imported") else "right")
    rows = []
    for cmd, expected in COMMANDS:
        subprocess.run(EDGEC + cmd, capture_output=True)  # warm the page cache (and .pyc files) once
        times, codes = [], set()
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            codes.add(subprocess.run(EDGEC + cmd, capture_output=True).returncode)
            times.append(time.perf_counter() - t0)
        mods, _ = imported_top_level(cmd)
        heavy = sorted(mods.intersection(HEAVY))
        notable = sorted(mods.intersection(NOTABLE))
        med = statistics.median(times)
        code = ",".join(map(str, sorted(codes)))
        rows.append({"command": cmd, "exit": sorted(codes), "expected_exit": expected, "times_s": times,
                     "median_s": med, "heavy": heavy, "notable": notable, "load1": os.getloadavg()[0]})
        table.add_row("edgec " + " ".join(cmd), code if codes == {expected} else f"[red]{code} (want {expected})[/]",
                      f"{med:.2f}", f"{min(times):.2f}-{max(times):.2f}",
                      "yes" if med < BUDGET_S else "[red]NO[/]", ", ".join(heavy) or "none",
                      ", ".join(notable) or "-", f"{os.getloadavg()[0]:.2f}")
    console.print(table)
    after = load()
    console.print(f"load average at end: {after}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_name(), "load_start": before, "load_end": after, "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()
