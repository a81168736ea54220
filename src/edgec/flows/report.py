"""``edgec report compare``: the difference between two reports (before/after a pass, rpi4 vs host)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgec.profiling.compare import compare, load_report


def compare_reports(a: Path, b: Path) -> dict[str, Any]:
    """Metric by metric and kernel by kernel (:func:`edgec.profiling.compare.compare`).

    Raises:
        UsageError: a file that is missing or not an edgec report.
    """
    return compare(load_report(a), load_report(b), a, b)
