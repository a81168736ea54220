"""HTML rendering of a report (its Markdown through markdown-it-py), with plots (matplotlib, embedded as PNG).

Plots: per-kernel latency (the slowest kernels, bars), the latency distribution
(edgec and onnxruntime samples), and memory across the network (live
activation bytes at each kernel, with the planned storage as a line).
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from edgec.profiling.report import render_markdown, top_kernels


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(report: dict[str, Any]) -> dict[str, str]:
    """``{title: base64 PNG}`` for the plots the report's data supports."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = report.get("profile") or {}
    out = {}
    if p.get("kernels"):
        ks = top_kernels(p, 25)[::-1]
        fig, ax = plt.subplots(figsize=(9, max(3, 0.28 * len(ks))))
        ax.barh([k["kernel"][:48] for k in ks], [k["time_ms"] for k in ks], color="#3b7dd8")
        ax.set_xlabel("time per inference (ms)")
        ax.set_title("slowest kernels (all calls summed)")
        out["Per-kernel latency"] = _png(fig)
    lat = p.get("latency", {})
    if lat.get("edgec", {}).get("samples_ms"):
        fig, ax = plt.subplots(figsize=(9, 3.2))
        for name, color in (("edgec", "#3b7dd8"), ("onnxruntime", "#e07b39"), ("litert", "#4c9a2a")):
            if lat.get(name, {}).get("samples_ms"):
                ax.hist(lat[name]["samples_ms"], bins=30, alpha=0.6, label=name, color=color)
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("runs")
        ax.legend()
        ax.set_title("latency distribution" + (" (EMULATED, not device speed)" if p.get("emulated") else ""))
        out["Latency distribution"] = _png(fig)
    m = p.get("memory", {})
    if m.get("live_activation_bytes"):
        fig, ax = plt.subplots(figsize=(9, 3.2))
        live = [b / 1e6 for b in m["live_activation_bytes"]]
        ax.fill_between(range(len(live)), live, step="mid", alpha=0.5, color="#3b7dd8",
                        label="live activations, unplanned")
        if m.get("planned_activation_bytes"):
            ax.axhline(m["planned_activation_bytes"] / 1e6, color="#e07b39", label="planned storage (TVM)")
        ax.set_xlabel("kernel (call order)")
        ax.set_ylabel("MB")
        ax.legend()
        ax.set_title("activation memory across the network")
        out["Memory across the network"] = _png(fig)
    return out


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML page: the Markdown report rendered by markdown-it-py (tables on), plus the plots."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(render_markdown(report))
    figs = "".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='data:image/png;base64,{b}'/>"
                   for t, b in plots(report).items())
    where = report["target"]["name"] if "target" in report else f"{len(report.get('parts', []))} parts"
    title = html.escape(f"edgec {report['kind']}: {report['model']['name']} on {where}")
    style = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:.25em .6em}"
             "th{background:#f3f3f3}code{background:#f6f6f6;padding:0 .2em}img{max-width:100%}"
             "blockquote{border-left:4px solid #e0a030;margin:.5em 0;padding:.2em 1em;background:#fff8e8}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body>{body}{figs}</body></html>\n")
