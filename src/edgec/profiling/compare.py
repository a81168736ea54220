"""``edgec report compare A.json B.json``: the difference between two reports.

Any two reports of the same schema compare: before/after a pass pipeline, two
targets (rpi4 vs host), two tuning states. Rows whose value is missing on one
side show ``-``; per-kernel rows pair kernels by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgec.errors import UsageError

# (label, path in the report, lower is better)
METRICS: list[tuple[str, tuple[str, ...], bool]] = [
    ("ONNX nodes", ("model", "nodes"), True),
    ("params", ("model", "params"), True),
    ("MACs", ("model", "macs"), True),
    ("fused kernels", ("kernels", "after_passes"), True),
    ("artifact_bytes", ("build", "artifact_bytes"), True),
    ("library_bytes", ("build", "library_bytes"), True),
    ("compile_seconds", ("build", "compile_seconds"), True),
    ("tuned kernels", ("build", "tuned_tasks"), False),
    ("verify max abs error", ("verification", "max_abs_error"), True),
    ("latency_ms_p50", ("profile", "latency", "edgec", "latency_ms_p50"), True),
    ("latency_ms_p90", ("profile", "latency", "edgec", "latency_ms_p90"), True),
    ("onnxruntime latency_ms_p50", ("profile", "latency", "onnxruntime", "latency_ms_p50"), True),
    ("ratio vs onnxruntime (p50)", ("profile", "latency", "ratio_vs_onnxruntime_p50"), True),
    ("kernels_total_ms", ("profile", "kernels_total_ms"), True),
    ("planned_activation_bytes", ("profile", "memory", "planned_activation_bytes"), True),
    ("peak_rss_bytes", ("profile", "memory", "peak_rss_bytes"), True),
]


def load_report(path: str | Path) -> dict[str, Any]:
    """Read and validate a report.

    Raises:
        UsageError: missing file, not JSON, or not an edgec report.
    """
    from edgec.profiling.report import validate

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"report not found: {path}", "give the path of a report.json")
    try:
        data = json.loads(path.read_text())
        validate(data)
    except (json.JSONDecodeError, Exception) as exc:
        raise UsageError(f"{path} is not an edgec report: {str(exc).splitlines()[0][:120]}",
                         "give a report.json written by edgec build or edgec profile") from exc
    return data


def _get(report: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = report
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def label(report: dict[str, Any], path: str | Path | None = None) -> str:
    """What a report is about, where it lies and when it was made (tells two reports apart)."""
    where = report["target"]["name"] if "target" in report else f"{len(report.get('parts', []))} parts"
    part = f" part {report['part']}" if report.get("part") else ""
    text = f"{report['model']['name']}{part} on {where} ({report['kind']})"
    folder = (report.get("artifact") or {}).get("path") or (str(Path(path).parent) if path else None)
    if folder:
        text += f", {folder}"
    return text + f", {report.get('created', '?')}"


def compare(a: dict[str, Any], b: dict[str, Any], a_path: str | Path | None = None,
            b_path: str | Path | None = None) -> dict[str, Any]:
    """Metric-by-metric and kernel-by-kernel differences of two reports.

    Args:
        a, b: Reports.
        a_path, b_path: Where they were read from (labels them).

    Returns:
        ``{"a", "b" (labels), "metrics": [{"metric", "a", "b", "ratio_b_over_a", "better"}],
        "kernels": [{"kernel", "a_ms", "b_ms", "delta_ms"}] (largest changes first)}``.
    """
    rows = []
    for name, path, lower in METRICS:
        va, vb = _get(a, path), _get(b, path)
        if va is None and vb is None:
            continue
        ratio = vb / va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and va else None
        better = None
        if ratio is not None and ratio != 1:
            better = "b" if (ratio < 1) == lower else "a"
        rows.append({"metric": name, "a": va, "b": vb, "ratio_b_over_a": ratio, "better": better})
    ka = _kernel_totals(a)
    kb = _kernel_totals(b)
    kernels = [{"kernel": k, "a_ms": ka.get(k), "b_ms": kb.get(k),
                "delta_ms": (kb.get(k) or 0.0) - (ka.get(k) or 0.0)} for k in set(ka) | set(kb)]
    kernels.sort(key=lambda r: -abs(r["delta_ms"]))
    return {"a": label(a, a_path), "b": label(b, b_path), "metrics": rows, "kernels": kernels[:10] if ka and kb else [],
            "emulated": bool(_get(a, ("profile", "emulated")) or _get(b, ("profile", "emulated")))}


def _kernel_totals(r: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in _get(r, ("profile", "kernels")) or []:
        out[row["kernel"]] = out.get(row["kernel"], 0.0) + row["time_ms"]
    return out
