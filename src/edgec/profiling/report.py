"""The report: one JSON schema for every target (``report.schema.json``), rendered as Markdown.

Numeric keys carry their unit (``_ms``, ``_bytes``, ``_seconds``); ``macs`` and
``params`` are counts.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from importlib import resources
from typing import Any

SCHEMA_ID = "edgec.report/1"


def schema() -> dict[str, Any]:
    """The report JSON schema."""
    return json.loads(resources.files("edgec.profiling").joinpath("report.schema.json").read_text())


def validate(report: dict[str, Any]) -> None:
    """Validate a report against the schema.

    Raises:
        jsonschema.ValidationError: the report does not follow the schema.
    """
    import jsonschema

    jsonschema.validate(report, schema())


def now_iso() -> str:
    """Current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def human_bytes(n: float | None) -> str:
    """``12.3 MB``-style size (powers of 1000)."""
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def human_count(n: float | None) -> str:
    """``1.81 M``-style count."""
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:.0f}"


def verification_line(v: dict[str, Any] | None, float64: bool = True) -> str:
    """One-line summary of a verification record (with the worst set's float64 verdict unless ``float64``
    is False: :func:`float64_line` gives it alone)."""
    if not v:
        return "not run"
    if v.get("skipped"):
        return f"skipped ({v.get('reason', '--no-verify')})"
    if v.get("cubin_archs"):  # a GPU library checked without a GPU: say what was checked, not "PASS"
        archs = ",".join(f"sm_{a}" for a in v["cubin_archs"])
        same = "matches" if v.get("passed") else "DIFFERS"
        line = (f"CHECKED, GPU code not run (no GPU here): cubin arch {archs} as the target needs; the same graph "
                f"compiled for the host CPU {same} onnxruntime")
        if v.get("max_abs_error") is not None:
            line += f" (max abs err {v['max_abs_error']:.2e}, tol {v['tolerance']:.2e})"
        return line
    status = "PASS" if v.get("passed") else "FAIL"
    parts = [status, v.get("method", "")]
    if v.get("sets"):
        parts.append(f"{len(v['sets'])} input sets")
    if v.get("max_abs_error") is not None:
        worst = f" on '{v['worst_set']}'" if v.get("worst_set") and len(v.get("sets", [])) > 1 else ""
        parts.append(f"worst max abs err {v['max_abs_error']:.2e}{worst} (tol {v['tolerance']:.2e})" if worst
                     else f"max abs err {v['max_abs_error']:.2e} (tol {v['tolerance']:.2e})")
    if v.get("max_steps") is not None:
        exact = v.get("exact_fraction")
        engine = ("the TFLite interpreter's kernels" if "TFLite" in str(v.get("reference_engine", ""))
                  else "onnxruntime's integer kernels")
        if v["max_steps"] == 0:
            parts.append(f"int8: every element equal to {engine} on the judged sets")
        else:
            parts.append(f"int8: at most {v['max_steps']:g} quantization step{'' if v['max_steps'] == 1 else 's'} "
                         f"from {engine}" + (f", {100 * exact:.1f}% of elements exact" if exact is not None else ""))
    if v.get("top1_match") is not None:
        ties = f" ({v['top1_near_ties']} near-ties)" if v.get("top1_near_ties") else ""
        parts.append(("same top-1" + ties) if v["top1_match"] else "top-1 differs")
    if float64 and float64_line(v):
        parts.append(f"float64 check {float64_line(v)}")
    elif v.get("reason"):
        parts.append(v["reason"])
    skipped = [r["name"] for r in v.get("sets", []) if r.get("passed") is None]
    if skipped:
        parts.append(f"not judged: {', '.join(skipped)} (see report.md)")
    return ", ".join(p for p in parts if p)


def float64_line(v: dict[str, Any] | None) -> str:
    """The float64 verdicts of a verification's sets, in one line ("" when no float64 check ran)."""
    runs = [r for r in (v or {}).get("sets", []) if (r.get("float64") or {}).get("reason")]
    return "; ".join(f"on '{r['name']}': {r['float64']['reason']} ({r['float64'].get('seconds', 0):.1f} s)"
                     for r in runs)


def verification_sets_markdown(v: dict[str, Any] | None) -> list[str]:
    """A table of the verification, one row per input set."""
    if not v or not v.get("sets"):
        return []
    lines = ["| input set | max abs err | max abs ref | tolerance | top-1 | result | float64 check |",
             "|---|---|---|---|---|---|---|"]
    for r in v["sets"]:
        top1 = "-" if r.get("top1_match") is None else ("same" if r["top1_match"] else "differs")
        f64 = r.get("float64") or {}
        result = "NOT JUDGED" if r["passed"] is None else ("PASS" if r["passed"] else "FAIL")
        if r["passed"] is not None and f64.get("passed") is not None:
            result += " (float64)"
        note = f64.get("reason") or r.get("reason") or "-"
        if f64.get("seconds") is not None:
            note += f" ({f64['seconds']:.2f} s)"
        if r.get("note"):
            note += f"; {r['note']}"
        compared = r["passed"] is not None or f64
        err = f"{r['max_abs_error']:.2e}" if compared else "-"
        ref = f"{r.get('max_abs_ref', 0):.3g}" if compared else "-"
        tol = f"{r['tolerance']:.2e}" if compared else "-"
        lines.append(f"| {r['name']} | {err} | {ref} | {tol} | {top1} | {result} | {note} |")
    lines.append("")
    if any(r.get("float64") for r in v["sets"]):
        from edgec.frontend.float64 import ENGINE, NOISE_MULTIPLE, UNSTABLE

        lines += [f"Where a set's error against onnxruntime exceeded the tolerance or came within half of it, its "
                  f"outputs were computed in float64 ({ENGINE}). The set passes when the artifact is within the "
                  f"tolerance of that truth, or within {NOISE_MULTIPLE:g}× onnxruntime's own float32 error against it "
                  "(graph optimisations off, and on where needed): float32 noise, not a wrong artifact. A set where "
                  f"onnxruntime itself is more than {100 * UNSTABLE:g}% off is not judged: float32 cannot compute "
                  "the model there.", ""]
    return lines


def schedules_line(build: dict[str, Any], target: str | None = None) -> str:
    """Where the kernels' schedules came from, in one line (tuned / transferred / default / untuned)."""
    sched = build.get("schedules") or {}
    total = build.get("total_tasks") or sum(sched.values())
    if not total:
        return "no tuning records apply (see `edgec tune`)"
    parts = []
    if sched.get("tuned"):
        parts.append(f"{sched['tuned']} tuned for {build.get('target_class', 'this class')}")
    if sched.get("transferred"):
        parts.append(f"{sched['transferred']} transferred from another machine class (replayed, not measured here)")
    if sched.get("default"):
        parts.append(f"{sched['default']} with edgec's default schedule (parallel, vectorized; no record)")
    if sched.get("untuned"):
        parts.append(f"{sched['untuned']} untuned (TVM's default schedule)")
    line = f"{build.get('tuned_tasks', 0)}/{total} kernels with tuned schedules: " + ", ".join(parts)
    if build.get("tuning_database"):
        line += f"; from {build['tuning_database']}"
    return line


def int8_markdown(report: dict[str, Any]) -> list[str]:
    """The ``## int8`` part of ``report.md``: the quantization step (changes the function on purpose), its
    calibration and its per-set fidelity, and the integer kernels with the operators left in float."""
    step = next((p for p in report.get("passes") or [] if p.get("name") == "quantize_int8"), None)
    integer = (report.get("kernels") or {}).get("integer")
    if not step and not integer:
        return []
    lines = ["## int8", ""]
    if step:
        q, cal = step["quantization"], step["calibration"]
        lines += [f"`{step['label']}` changes the function on purpose (post-training static quantization, "
                  f"{q['format']}): weights {q['weights']}, activations {q['activations']}, bias {q['bias']}; "
                  f"calibration: {cal['description']}, {cal['method']}.", "",
                  "| inputs | top-1 agreement with float32 | SNR (dB) | max abs err |", "|---|---|---|---|"]
        fid = step.get("fidelity") or {}
        for name, row in [(fid.get("measured_on", "calibration"), fid)] + [(f"'{r['name']}'", r)
                                                                          for r in fid.get("sets", [])]:
            agree = row.get("top1_agreement")
            lines.append(f"| {name} | {'-' if agree is None else f'{100 * agree:.1f}%'} | "
                         f"{row.get('snr_db', float('nan')):.1f} | {row.get('max_abs_error', float('nan')):.3g} |")
        acc = fid.get("accuracy")
        if acc:
            lines += ["", f"Top-1 accuracy on {acc['images']} --data images: int8 {100 * acc['top1_int8']:.2f}%, "
                          f"float32 {100 * acc['top1_fp32']:.2f}%."]
        lines.append("")
    if integer:
        ops = ", ".join(f"{k} {v}" for k, v in integer["integer_ops"].items()) or "none"
        islands = ", ".join(f"{k} {v}" for k, v in integer["float_islands"].items()) or "none"
        lines += [f"Integer kernels: {ops}. Left as dequantize → float → quantize (one kernel, int8 edges): "
                  f"{islands}.", ""]
    return lines


def function_change_line(fc: dict[str, Any] | None) -> str:
    """One line on the function change made on purpose by function-changing passes."""
    if not fc:
        return "unchanged (every pass is exact)"
    parts = [f"changed on purpose by {', '.join(fc.get('passes', []))}:",
             f"max abs err {fc['max_abs_error']:.2e}"]
    if fc.get("relative_error") is not None:
        parts[-1] += f" ({100 * fc['relative_error']:.2f}% of the largest output)"
    if fc.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {100 * fc['top1_agreement']:.1f}%")
    if fc.get("snr_db") is not None:
        parts.append(f"SNR {fc['snr_db']:.1f} dB")
    if fc.get("measured_on"):
        acc = fc.get("accuracy")
        tail = (f"; top-1 accuracy {100 * acc['top1_int8']:.2f}% int8 against {100 * acc['top1_fp32']:.2f}% float32 "
                f"on {acc['images']} --data images") if acc else ""
        return " ".join(parts[:2]) + "".join(f", {p}" for p in parts[2:]) + f" on {fc['measured_on']}" + tail
    return " ".join(parts[:2]) + "".join(f", {p}" for p in parts[2:]) + f" over {fc.get('inputs', 1)} input sets"


def pass_error(p: dict[str, Any]) -> str:
    """A pass's figure for tables: the check's max abs error, or a function-changing pass's relative error."""
    fid = p.get("fidelity")
    if fid:
        return f"{100 * fid.get('relative_error', 0):.2f}% (fidelity)"
    err = p.get("max_abs_error")
    noise = [k for k, v in (p.get("float64") or {}).items() if v.get("passed")]
    return "-" if err is None else f"{err:.1e}" + (f" (float32 noise on {', '.join(noise)})" if noise else "")


#: A pass that multiplies the MACs by more than this is named in a warning (summary and report.md).
MAC_GROWTH_WARNING = 2.0


def pass_growth_warnings(passes: list[dict[str, Any]] | None) -> list[str]:
    """One line per pass that multiplied the model's MACs by more than :data:`MAC_GROWTH_WARNING`
    (``depth_merge(mode=exact)`` on MobileNetV4: 5.1x): the pass and its factors for MACs and parameters."""
    out = []
    for p in passes or []:
        mb, ma, pb, pa = (p.get(k) for k in ("macs_before", "macs_after", "params_before", "params_after"))
        if not (p.get("applied") and mb and ma and ma > MAC_GROWTH_WARNING * mb):
            continue
        params = (f", parameters x{pa / pb:.1f} ({human_count(pb)} -> {human_count(pa)})" if pb and pa is not None
                  else "")
        out.append(f"{p.get('label', p.get('name'))} multiplies MACs by {ma / mb:.1f} ({human_count(mb)} -> "
                   f"{human_count(ma)}){params}: a larger, likely slower artifact")
    return out


def _tensor_str(t: dict[str, Any]) -> str:
    return f"`{t['name']}` {t['dtype']}[{','.join(str(d) for d in t['shape'])}]"


def _parts_markdown(report: dict[str, Any]) -> list[str]:
    lines = ["## Parts", "", "| part | target | library | tuned kernels | verification |", "|---|---|---|---|---|"]
    for p in report["parts"]:
        b = p.get("build", {})
        tuned = f"{b.get('tuned_tasks', 0)}/{b.get('total_tasks', 0)}" if b.get("total_tasks") else "-"
        lines.append(f"| `{p['name']}` | {p['target']['name']} | `{p['library']}` "
                     f"({human_bytes(b.get('library_bytes'))}) | {tuned} | {verification_line(p.get('verification'))} |")
    lines += ["", "Each part has its own folder with `report.md`, `manifest.json` and `model.onnx`.", "",
              "## Connections", ""]
    for c in report.get("connections", []):
        enc = c.get("encoding") or {}
        how = ""
        if enc.get("dtype") == "int8":
            where = "per channel" if enc.get("axis") is not None else "per tensor"
            how = (f", sent as affine int8 {where} (1 byte per element), calibrated on "
                   f"{', '.join(enc.get('calibrated_on') or ['-'])}")
        lines.append(f"- `{c['from']['part']}:{c['from']['tensor']}` → `{c['to']['part']}:{c['to']['tensor']}`{how}")
    lines += ["", "## Verification of the composition", "", verification_line(report.get("verification")), ""]
    fc = report.get("function_change")
    if fc:
        snr = f"; cut SNR {fc['cut_snr_db']:.1f} dB" if fc.get("cut_snr_db") is not None else ""
        lines += ["## Function change (vs the unsplit model)", "", function_change_line(fc) + snr, ""]
        if fc.get("task"):
            lines += [task_line(fc["task"]), ""]
    return lines


def task_line(task: dict[str, Any]) -> str:
    """One line on a split's accuracy on the user's labelled images (``--data``)."""
    line = (f"On {task['images']} labelled images ({task.get('data', '--data')}): top-1 accuracy "
            f"{100 * task['accuracy_whole']:.2f}% unsplit, {100 * task['accuracy_split']:.2f}% split "
            f"({100 * (task['accuracy_split'] - task['accuracy_whole']):+.2f} points), top-1 agreement "
            f"{100 * task['top1_agreement']:.2f}%; {human_bytes(task['bytes_sent'])} sent per image")
    if task.get("jpeg_q90_bytes"):
        line += (f" against {human_bytes(task['jpeg_q90_bytes'])} for a JPEG (q90) of the input "
                 f"({100 * task['bytes_saved_vs_jpeg']:.1f}% fewer bytes)")
    return line


def render_markdown(report: dict[str, Any]) -> str:
    """Render a report as Markdown (a human reading of ``report.json``)."""
    if "parts" in report:
        m = report["model"]
        lines = [f"# edgec {report['kind']} report: {m['name']} in {len(report['parts'])} parts", "",
                 f"*{report['created']}*", "", "## Model", "", "| | |", "|---|---|",
                 f"| source | {m['source']} `{m.get('path') or m['name']}` |",
                 f"| params | {human_count(m['params'])} |", f"| MACs | {human_count(m['macs'])} |",
                 f"| inputs | {', '.join(_tensor_str(x) for x in m['inputs'])} |",
                 f"| outputs | {', '.join(_tensor_str(x) for x in m['outputs'])} |", ""]
        lines += _parts_markdown(report)
        lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()), ""]
        return "\n".join(lines)
    m, t = report["model"], report["target"]
    b = report.get("build", {})
    lines = [f"# edgec {report['kind']} report: {m['name']} -> {t['name']}", "",
             f"*{report['created']}* · target: {t.get('description', t['name'])}", "",
             "## Model", "", "| | |", "|---|---|",
             f"| source | {m['source']} `{m.get('path') or m['name']}` |",
             f"| sha256 | `{m['sha256'][:16]}…` |",
             *([f"| weights | {weights_note(m['weights'])} |"] if m.get("weights") else []),
             f"| params | {human_count(m['params'])} ({human_bytes(m.get('param_bytes'))}) |",
             f"| MACs | {human_count(m['macs'])} |",
             f"| ONNX nodes | {m['nodes']} |",
             f"| inputs | {', '.join(_tensor_str(x) for x in m['inputs'])} |",
             f"| outputs | {', '.join(_tensor_str(x) for x in m['outputs'])} |", ""]
    if b:
        lines += ["## Build", "", "| | |", "|---|---|",
                  f"| artifact | {human_bytes(b.get('artifact_bytes'))} (library {human_bytes(b.get('library_bytes'))}) |",
                  f"| compile time | {b.get('compile_seconds', 0):.1f} s (whole build {b.get('total_seconds', 0):.1f} s) |"]
        if b.get("total_tasks"):
            lines.append(f"| schedules | {schedules_line(b)} |")
        q = b.get("quick_latency")
        if q:
            name, ms, _ = quick_peer(q)
            lines.append(f"| quick latency | edgec {q['edgec_ms_p50']:.2f} ms, {name} {ms:.2f} "
                         f"ms (p50 of {q['runs']}, {q['threads']} threads) |")
        for f in b.get("fallbacks") or []:
            lines.append(f"| fallback | `{f['kernel']}`: {f['fallback']} (the code generator failed: "
                         f"{f['reason'][:100]}) |")
        lines.append("")
    passes = [p for p in report.get("passes") or [] if "nodes_before" in p]
    if passes:
        lines += ["## Passes", "", "| pass | equivalence | nodes | params | MACs | op changes | max abs err | time |",
                  "|---|---|---|---|---|---|---|---|"]
        for p in passes:
            eq = p.get("equivalence", {})
            ops = ", ".join(f"{k} {a}→{b}" for k, (a, b) in p.get("op_changes", {}).items()) or "no change"
            lines.append(f"| {p.get('label', p['name'])} | {eq.get('kind', '')} | {p.get('nodes_before', '-')} → "
                         f"{p.get('nodes_after', '-')} | "
                         f"{human_count(p.get('params_before'))} → {human_count(p.get('params_after'))} | "
                         f"{human_count(p.get('macs_before'))} → {human_count(p.get('macs_after'))} | {ops} | "
                         f"{pass_error(p)} | {p.get('seconds', 0):.2f} s |")
        lines.append("")
        warnings = pass_growth_warnings(passes)
        if warnings:
            lines += [f"> **Warning:** {w}" for w in warnings] + [""]
    lines += int8_markdown(report)
    k = report.get("kernels")
    if k:
        lines += [f"TVM fused kernels: {k.get('before_passes')} before the passes, {k.get('after_passes')} after; "
                  f"standalone element-wise/layout kernels: {len(k.get('standalone_before_passes', []))} → "
                  f"{len(k.get('standalone_after_passes', []))}; convolutions in "
                  f"{k.get('conv_layout', 'NCHW')}.", ""]
    lines += ["## Verification", "", "| check | result |", "|---|---|",
              f"| compiler exactness (artifact vs {_reference_words(report)}) | "
              f"{verification_line(report.get('verification'))} |",
              f"| function change (vs the source model) | {function_change_line(report.get('function_change'))} |", ""]
    lines += verification_sets_markdown(report.get("verification"))
    from edgec.profiling.memory import memory_markdown  # imports onnx: not at import time (`edgec zoo list`)

    lines += memory_markdown(report.get("memory"), plot=report["kind"] == "build")  # the plot is the build's file
    if report.get("profile"):
        lines += profile_markdown(report)
    steps = report.get("steps") or []
    if steps:
        lines += ["## Steps", "", "| step | time |", "|---|---|"]
        lines += [f"| {s['name']} | {s['seconds']:.1f} s |" for s in steps]
        lines.append("")
    lines += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in report.get("versions", {}).items()), ""]
    return "\n".join(lines)


def _reference_words(report: dict[str, Any]) -> str:
    fc = report.get("function_change")
    return f"the model after {', '.join(fc['passes'])}" if fc else "the source model"


def weights_note(weights: str | None, flags: str = "--pretrained or --weights") -> str:
    """How the weights were set, with a warning for random ones naming the command's own ``flags``."""
    if weights == "random":
        return f"random (pass {flags} for a trained model)"
    return weights or "-"


def top_kernels(profile: dict[str, Any], n: int = 5) -> list[dict[str, Any]]:
    """The ``n`` kernels with the largest total time (calls of one kernel summed)."""
    totals: dict[str, dict[str, Any]] = {}
    for row in profile.get("kernels", []):
        t = totals.setdefault(row["kernel"], {"kernel": row["kernel"], "time_ms": 0.0, "calls": 0, "onnx_nodes": []})
        t["time_ms"] += row["time_ms"]
        t["calls"] += 1
        t["onnx_nodes"] += row.get("onnx_nodes", [])
    total = sum(t["time_ms"] for t in totals.values()) or 1.0
    out = sorted(totals.values(), key=lambda t: -t["time_ms"])[:n]
    for t in out:
        t["share"] = t["time_ms"] / total
    return out


def _nodes(names: list[str], limit: int = 3) -> str:
    return ", ".join(names[:limit]) + (f" (+{len(names) - limit})" if len(names) > limit else "") if names else "-"


def quick_peer(q: dict[str, Any]) -> tuple[str, float, float]:
    """``(peer's name, its p50 ms, edgec / peer)`` of a build's ``quick_latency``: onnxruntime, or LiteRT
    (with XNNPACK) for a TFLite file."""
    if "litert_ms_p50" in q:
        return "LiteRT (XNNPACK)", q["litert_ms_p50"], q["ratio_vs_litert_p50"]
    return "onnxruntime", q["onnxruntime_ms_p50"], q["ratio_vs_onnxruntime_p50"]


def threads_text(p: dict[str, Any], target: str | None = None) -> str:
    """The threads a profile ran with (its ``profile`` section): under an emulator, the emulator's (this
    machine's cores) beside the board's core count (``board_cores``), never as if they were the board's."""
    n = p.get("threads") or (p.get("device") or {}).get("threads")
    cores = p.get("board_cores")
    if p.get("emulated") and cores:
        board = f"a {target} board" if target else "the board"
        return (f"{n} (emulated: qemu runs the code on this machine's {n} cores; {board} has {cores} cores, "
                f"all used with TVM_NUM_THREADS={cores})")
    return str(n)


def busy_text(p: dict[str, Any]) -> str | None:
    """The warning for timings taken while other work kept this machine busy (the ``profile`` section's
    ``host_load``), or None on a quiet machine."""
    load = p.get("host_load") or {}
    if not load.get("busy"):
        return None
    return (f"other work kept {load['others_cores']:.1f} of this machine's {load['cores']} cores busy while it timed: "
            "these timings include its interference, and so does the ratio to the peer runtime (edgec's spinning "
            "thread pool loses far more to a busy core than onnxruntime's or LiteRT's); profile again on a quiet "
            "machine")


def profile_markdown(report: dict[str, Any], top: int = 10) -> list[str]:
    """Markdown lines of the ``profile`` section: latency, top layers, memory, environment."""
    p = report["profile"]
    lat = p.get("latency", {})
    lines = ["## Latency", ""]
    if p.get("emulated"):
        lines += ["> **Emulated device (qemu):** these timings are not the speed of a real device.", ""]
    if busy := busy_text(p):
        lines += [f"> **Busy machine:** {busy}.", ""]
    if not report.get("complete", True):
        lines += [f"> **Incomplete:** {p.get('error', 'the run stopped early')}", ""]
    lines += [f"device `{p['device'].get('url')}`, threads {threads_text(p, report.get('target', {}).get('name'))}", "",
              "| runtime | runs | min ms | p50 ms | p90 ms | max ms |", "|---|---|---|---|---|---|"]
    for name in ("edgec", "onnxruntime", "litert"):
        if name in lat:
            s = lat[name]
            lines.append(f"| {name} | {s['runs']} | {s['latency_ms_min']:.3f} | {s['latency_ms_p50']:.3f} | "
                         f"{s['latency_ms_p90']:.3f} | {s['latency_ms_max']:.3f} |")
    for peer in ("onnxruntime", "litert"):
        if f"ratio_vs_{peer}_p50" in lat:
            trust = " -- unreliable: measured on a busy machine" if busy_text(p) else ""
            lines += ["", f"**edgec p50 / {peer} p50 = {lat[f'ratio_vs_{peer}_p50']:.2f}** (interleaved in one run"
                          f"{trust})"]
    lines.append("")
    if p.get("kernels"):
        lines += [f"## Top {top} kernels", "", f"sum of kernel times {p['kernels_total_ms']:.3f} ms "
                  f"over {len(p['kernels'])} calls", "", "| kernel | calls | ms | share | ONNX nodes |",
                  "|---|---|---|---|---|"]
        for k in top_kernels(p, top):
            lines.append(f"| `{k['kernel']}` | {k['calls']} | {k['time_ms']:.3f} | {100 * k['share']:.1f}% | "
                         f"{_nodes(k['onnx_nodes'])} |")
        lines.append("")
    m = p.get("memory", {})
    lines += ["## Memory", "", "| | bytes |", "|---|---|"]
    for key in ("planned_activation_bytes", "peak_live_activation_bytes", "weight_bytes", "library_bytes",
                "artifact_bytes", "peak_rss_bytes"):
        if m.get(key) is not None:
            lines.append(f"| {key} | {m[key]:,} ({human_bytes(m[key])}) |")
    lines.append("")
    env = p.get("environment")
    if env:
        lines += ["## Environment", "", ", ".join(f"{k}: {v}" for k, v in env.items() if v is not None), ""]
    return lines
