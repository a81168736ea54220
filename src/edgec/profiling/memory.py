"""The memory section of a build report: analytic peaks (fp32 and int8), the planned arena, the plot.

The analytic figures come from :func:`edgec.frontend.memory.activation_memory` (live tensors
over the ONNX schedule, in-place where legal, the input image in its own buffer); the planned
figure is what the backend's memory plan allocates (``Compiled.memory``). Both are reported
before and after the passes, so a pass such as ``patch_inference`` shows what it saved, and at
what MAC cost.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import onnx

from edgec.frontend.analysis import static_shapes
from edgec.frontend.memory import KIB, value_dtypes, activation_memory

log = logging.getLogger(__name__)

PLOT = "memory.png"
#: Backend figures left out of the section: sums over tensors no plan allocates (every kernel output
#: alive at once), which read as memory needs and are not.
UNPLANNED = ("unplanned_activation_bytes", "peak_live_activation_bytes")
PATCH_METADATA = "edgec.patch_inference"
CONVENTION = ("live activation tensors over the ONNX node order, in-place depthwise/element-wise/concat and "
              "fused residual where legal, weights and the input image not counted (MCUNetV2's convention)")


def _figures(model: onnx.ModelProto) -> dict[str, Any]:
    shapes, dtypes = static_shapes(model), value_dtypes(model)
    fp32 = activation_memory(model, shapes=shapes, dtypes=dtypes)
    int8 = activation_memory(model, element_bytes=1, shapes=shapes, dtypes=dtypes)
    total = activation_memory(model, shapes=shapes, dtypes=dtypes, count_inputs=True)
    return {"fp32": fp32.to_dict(with_curve=False), "int8": int8.to_dict(with_curve=False),
            "fp32_with_inputs_peak_bytes": total.peak_activation_bytes,
            "curve_fp32_bytes": [c["live_bytes"] for c in fp32.curve]}


def planned_figures(planned: dict[str, Any] | None) -> dict[str, Any]:
    """The backend's planned memory figures (bytes) a report keeps: the numbers, less the unplanned ones."""
    return {k: v for k, v in (planned or {}).items() if isinstance(v, (int, float)) and k not in UNPLANNED}


def memory_section(model: onnx.ModelProto, before_passes: onnx.ModelProto | None = None,
                   planned: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The report's ``memory``: ``{"convention", "after_passes", "before_passes"?, "planned", "patch_inference"?}``.

    ``after_passes``/``before_passes`` hold ``fp32`` and ``int8`` peaks (bytes, with the peak node
    and the largest tensor), ``fp32_with_inputs_peak_bytes`` and the per-node curve (bytes).
    When a shape is not static the section is ``{"convention", "skipped": reason}``.
    """
    from edgec.frontend.quantize import dequantized, is_qdq

    quantized = is_qdq(model)
    if quantized:  # the float graph it encodes; its int8 figure is the build's own
        model = dequantized(model)
    try:
        section: dict[str, Any] = {"convention": CONVENTION, "after_passes": _figures(model)}
        if quantized:
            section["activations"] = "int8"
        if before_passes is not None and before_passes is not model:
            section["before_passes"] = _figures(before_passes)
    except ValueError as e:
        log.info("memory analysis skipped: %s", e)
        return {"convention": CONVENTION, "skipped": str(e)}
    section["planned"] = planned_figures(planned)
    meta = {p.key: p.value for p in model.metadata_props}
    if PATCH_METADATA in meta:
        section["patch_inference"] = json.loads(meta[PATCH_METADATA])
    return section


def write_plot(section: dict[str, Any], path: Path, title: str) -> bool:
    """Plot the live-memory curves (fp32 kB per ONNX node) before and after the passes into ``path``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return False
    fig, ax = plt.subplots(figsize=(9, 3.4))
    for key, label, color in (("before_passes", "before the passes", "#999999"),
                              ("after_passes", "after the passes", "#3b7dd8")):
        if key in section:
            curve = [b / KIB for b in section[key]["curve_fp32_bytes"]]
            ax.plot(range(len(curve)), curve, drawstyle="steps-mid", color=color,
                    label=f"{label} (peak {section[key]['fp32']['peak_kib']:.0f} kB)")
    arena = section.get("planned", {}).get("planned_arena_bytes") or section.get("planned", {}).get(
        "planned_activation_bytes")
    if arena:
        ax.axhline(arena / KIB, color="#e07b39", linestyle="--", label=f"planned arena ({arena / KIB:.0f} kB)")
    was = section.get("planned", {}).get("planned_arena_bytes_before_passes")
    if was:
        ax.axhline(was / KIB, color="#b0b0b0", linestyle="--",
                   label=f"planned arena before the passes ({was / KIB:.0f} kB)")
    ax.set_xlabel("step (ONNX node order)")
    ax.set_ylabel("live activations, fp32 (kB)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True


def _planned_words(planned: dict[str, Any]) -> list[str]:
    words = []
    arena = planned.get("planned_arena_bytes") or planned.get("planned_activation_bytes")
    if arena:
        was = planned.get("planned_arena_bytes_before_passes")
        words.append(f"planned arena {was / KIB:.0f} -> {arena / KIB:.0f} kB" if was else
                     f"planned arena {arena / KIB:.0f} kB")
    if planned.get("sram_bytes_budget"):
        words.append(f"SRAM {planned['sram_bytes_used'] / KIB:.0f}/{planned['sram_bytes_budget'] / KIB:.0f} kB, "
                     f"flash {planned['flash_bytes_used'] / KIB:.0f}/{planned['flash_bytes_budget'] / KIB:.0f} kB")
    return words


def memory_line(section: dict[str, Any]) -> str:
    """One line for the build summary: analytic peaks (before -> after the passes), the planned arena,
    and on a microcontroller the flash and SRAM used against the chip's budget."""
    if "skipped" in section:
        return "; ".join([f"not analysed: {section['skipped']}"] + _planned_words(section.get("planned") or {}))
    after, before = section["after_passes"], section.get("before_passes")

    def kib(key: str) -> str:
        a = after[key]["peak_activation_bytes"] / KIB
        return f"{before[key]['peak_activation_bytes'] / KIB:.0f} -> {a:.0f}" if before else f"{a:.0f}"

    words = [f"peak activations {kib('int8')} kB int8 analytic (fp32 would be {kib('fp32')} kB)"
             if section.get("activations") == "int8" else f"peak activations {kib('fp32')} kB fp32 ({kib('int8')} kB int8 analytic)"]
    words += _planned_words(section.get("planned", {}))
    p = section.get("patch_inference")
    if p:
        words.append(f"patch_inference {p['grid']}x{p['grid']} to `{p['stop']}`, MACs +{100 * p['mac_overhead']:.1f}%")
    return "; ".join(words)


def memory_markdown(section: dict[str, Any] | None, plot: bool = True) -> list[str]:
    """The ``## Memory`` part of ``report.md`` (with a link to ``memory.png`` when ``plot``)."""
    if not section:
        return []
    if "skipped" in section:
        return ["## Memory", "", f"Not analysed: {section['skipped']}.", ""]
    after, before = section["after_passes"], section.get("before_passes")

    def cell(key: str, sub: str) -> str:
        a = after[key][sub] / KIB
        return f"{before[key][sub] / KIB:.1f} → {a:.1f}" if before else f"{a:.1f}"

    lines = ["## Memory", "", f"Analytic figures: {section['convention']}. kB = 1024 bytes.", "",
             "| | kB |", "|---|---|",
             f"| peak activations, fp32 | {cell('fp32', 'peak_activation_bytes')} |",
             f"| peak activations, int8 analytic | {cell('int8', 'peak_activation_bytes')} |",
             f"| peak with the input image, fp32 | {after['fp32_with_inputs_peak_bytes'] / KIB:.1f} |",
             f"| largest tensor, fp32 | `{after['fp32']['largest_tensor']['name']}` "
             f"{after['fp32']['largest_tensor']['bytes'] / KIB:.1f} |"]
    for key, value in section.get("planned", {}).items():
        words = key.replace("_bytes", "").replace("_", " ")
        lines.append(f"| backend: {words} | {value / KIB:.1f} |" if "bytes" in key else f"| backend: {words} | {value} |")
    p = section.get("patch_inference")
    if p:
        lines.append(f"| patch_inference | stop `{p['stop']}`, {p['grid']}x{p['grid']} patches, MACs "
                     f"+{100 * p['mac_overhead']:.1f}% |")
    lines += ["", f"![live activation memory]({PLOT})", ""] if plot else [""]
    return lines
