"""How fast the CLI answers the questions that need no compiler: listing and name checks.

Each command runs as a fresh process (as a user types it) ``--repeats`` times; the table gives
min and median wall seconds and whether the median is under the 1.5 s budget. A benchmark, not a test.

    python benchmarks/bench_cli.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

EDGEC = [str(Path(sys.executable).parent / "edgec")]
COMMANDS = [
    ["zoo", "list"],
    ["targets", "list"],
    ["passes", "list"],
    ["build", "mobilenetv5"],           # unknown model: refused before any work
    ["build", "mobilenetv4", "--target", "rpi3"],  # unknown target
    ["--help"],
]
BUDGET_S = 1.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    table = Table(title=f"edgec CLI latency (fresh process, {args.repeats} runs)")
    for col in ("command", "min s", "median s", f"under {BUDGET_S} s"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for cmd in COMMANDS:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            subprocess.run(EDGEC + cmd, capture_output=True)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        table.add_row("edgec " + " ".join(cmd), f"{min(times):.2f}", f"{med:.2f}", "yes" if med < BUDGET_S else "NO")
    Console().print(table)


if __name__ == "__main__":
    main()
