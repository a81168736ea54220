"""The ``edgec depth-compress`` report as Markdown, and its before/after latency plot per chain."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def render_markdown(r: dict[str, Any]) -> str:
    """A readable page: the change, accuracy, latency (predicted vs measured) and one row per chain."""
    lat, acc = r["latency_ms"], r["accuracy"]
    lines = [
        f"# Depth compression of {r['model']} for {r['target']}",
        "",
        f"**Changes the function on purpose**: {r['function_change']}. Source: {r['source']}.",
        "",
        "| | model | compressed |",
        "|---|---|---|",
        (f"| top-1 on {r['data']['held_out']} held-out images | {100 * acc['model']:.2f}% | "
        f"{100 * acc['compressed']:.2f}% |"),
        f"| latency (ms, back-to-back runs, fastest of the rounds, {r['threads']} threads, this machine) | "
        f"{lat['model']:.4f} | {lat['compressed']:.4f} |",
        f"| latency (ms, median round) | {lat.get('model_median', float('nan')):.4f} | "
        f"{lat.get('compressed_median', float('nan')):.4f} |",
        f"| kernels | {r['kernels']['model']} | {r['kernels']['compressed']} |",
        f"| MACs | {r['macs']['model']:,} | {r['macs']['compressed']:,} |",
        "",
        (f"- measured speed-up **{lat['speedup']:.2f}x** (median rounds {lat.get('speedup_median', float('nan')):.2f}x); "
         "top-1 agreement with the model "
        f"{100 * acc['top1_agreement']:.2f}%"),
        f"- predicted by the DP: {lat['predicted']:.4f} ms ({100 * lat['prediction_error']:+.1f}% vs measured)",
        *(f"- plan {k + 1}: {p['removed']} activations removed, {p['merged']} groups merged; predicted "
          f"{p['predicted']:.4f} ms, measured {p['measured']:.4f} ms (original weights) -> budget corrected by "
          f"{100 * (p['predicted'] / p['measured'] - 1):+.1f}%" for k, p in enumerate(r.get("plan_rounds", []))),
        (f"- merging the fine-tuned groups is exact: max abs error {r['merge_check']['max_abs_error']:.3g} "
        f"(tolerance {r['merge_check']['tolerance']:.3g})"),
        "",
        "| chain | layers | activations removed | groups merged | before ms | after ms | MACs before | MACs after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, c in enumerate(r["chains"]):
        merged = [f"{g['group'][0]}..{g['group'][1]} ({'x'.join(map(str, g['kernel']))})"
                  for g in c["groups"] if g["merged"]]
        lines.append(f"| {i} | {c['layers'][0]} … {c['layers'][-1]} ({len(c['layers'])}) | "
                     f"{len(c['removed_activations'])} | {', '.join(merged) or '–'} | {c['before_ms']:.4f} | "
                     f"{c['after_ms']:.4f} | {c['before_macs']:,} | {c['after_macs']:,} |")
    lines += ["", ("Chain times are the latency table's: kernel time plus the per-kernel dispatch overhead "
              f"({1000 * lat['dispatch_overhead_per_kernel']:.1f} µs) measured on the model."), ""]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """Bar chart of each chain's table latency before and after (ms)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    chains = r["chains"]
    x = np.arange(len(chains))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(chains)), 3.6))
    ax.bar(x - 0.2, [c["before_ms"] for c in chains], 0.4, label="before")
    ax.bar(x + 0.2, [c["after_ms"] for c in chains], 0.4, label="after")
    ax.set_xticks(x)
    ax.set_xlabel("chain (block)")
    ax.set_ylabel("predicted ms")
    lat = r["latency_ms"]
    ax.set_title(f"{Path(r['model']).stem}: {lat['model']:.3f} → {lat['compressed']:.3f} ms measured "
                 f"({lat['speedup']:.2f}x)", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
