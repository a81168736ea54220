"""Choosing the split point for a link: the end-to-end latency of every cut, Neurosurgeon-style.

Kang et al., "Neurosurgeon: Collaborative Intelligence Between the Cloud and Mobile Edge",
ASPLOS 2017, section 4: for each candidate cut ``k`` the latency of one inference is

    T(k) = head_ms(k) + transfer_ms(k) + tail_ms(k),   transfer_ms(k) = 8 * bytes(k) / bandwidth + rtt

and the best cut minimises it. Besides every valid cut (:func:`edgec.split.cut_table`) two ends are
candidates: everything on the server (the device sends a JPEG, quality 90, of the image) and
everything on the device (it sends a classifier's top-5 result, class indices and scores: not the
logits; :func:`device_only_result`). Per-part latencies come from a
whole-model ``edgec profile`` on each side, its per-kernel table summed over the kernels before
each cut (:func:`per_cut_ms`; Neurosurgeon fits per-layer-type regressions instead, since it cannot
measure on the device); or, given only one whole-model latency per side, that latency spread over
the layers in proportion to their MACs: ``head_ms(k) = head_total_ms * head_macs(k) / macs``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import onnx

from edgec.errors import UsageError
from edgec.split.cuts import head_node_names


@dataclass(frozen=True)
class Link:
    """The network between device and server.

    Attributes:
        bandwidth_mbps: Uplink bandwidth (Mbit/s, 10^6 bits per second).
        rtt_ms: Round-trip time added to every request (ms).
    """

    bandwidth_mbps: float
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        if not (self.bandwidth_mbps > 0 and math.isfinite(self.bandwidth_mbps)):
            raise ValueError("bandwidth must be a positive number of Mbit/s")
        if not (self.rtt_ms >= 0 and math.isfinite(self.rtt_ms)):
            raise ValueError("rtt must be a finite number of ms >= 0")

    def transfer_ms(self, nbytes: int) -> float:
        """Time to send ``nbytes`` (ms)."""
        return 8 * nbytes / (self.bandwidth_mbps * 1e6) * 1e3 + self.rtt_ms


#: Classes a device that answers locally sends back: ``edgec run``'s ``--top`` default.
TOP_K = 5

#: Bytes of one top-k entry: an int32 class index and a float32 score.
TOP_K_ENTRY_BYTES = 4 + 4


def device_only_result(model: onnx.ModelProto, k: int = TOP_K) -> dict[str, Any]:
    """What the device sends when everything runs on it: a classifier's (one output ``[N, classes]`` with
    more than ``k`` classes) top-``k`` result, ``N * k`` (int32 class index, float32 score) pairs -- not its
    logits; any other model's outputs as float32.

    Returns:
        ``{"bytes", "sends"}``: the bytes sent and what they are, in words.
    """
    outs = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    logits = sum(4 * math.prod(shape) for shape in outs)
    if len(outs) == 1 and len(outs[0]) == 2 and outs[0][1] > k:
        n = outs[0][0] or 1
        nbytes = n * k * TOP_K_ENTRY_BYTES
        return {"bytes": nbytes, "sends": f"the top-{k} result: {n * k} x (int32 class index + float32 score) = "
                                          f"{nbytes} bytes, not the {outs[0]} float32 logits ({logits} bytes)"}
    return {"bytes": logits, "sends": f"the model's outputs as float32 ({logits} bytes; not a classifier's "
                                      f"[N, classes], so no top-{k})"}


def profile_latency_ms(report: dict[str, Any]) -> float:
    """The end-to-end p50 (ms) of an ``edgec profile`` report.

    Raises:
        UsageError: not a profile report, or one without a latency.
    """
    try:
        return float(report["profile"]["latency"]["edgec"]["latency_ms_p50"])
    except (KeyError, TypeError, ValueError):
        raise UsageError("not an edgec profile report (no profile.latency.edgec.latency_ms_p50)",
                         "give the report.json that `edgec profile MODEL --target T --device D --out DIR` writes") \
            from None


def per_cut_ms(model: onnx.ModelProto, cuts: list[str], report: dict[str, Any]) -> dict[str, float]:
    """Time (ms) of each cut's head on the device a whole-model profile was taken on.

    The per-kernel table of ``report`` (``profile.kernels``: ``time_ms`` and the ``onnx_nodes`` each
    kernel computes) is summed over the kernels in the cut's head; a kernel fused across the cut
    counts by the share of its nodes in the head, and one with no ONNX node (a layout transform)
    goes with its nearest neighbour that has one. The sums are scaled so that the whole model takes
    the report's end-to-end p50 (the per-kernel sum misses the calls' overhead). The tail's time at
    cut ``k`` is ``p50 - per_cut_ms(...)[k]`` on the server's profile.

    Args:
        model: The whole model after the passes (its node names are the profile's ``onnx_nodes``).
        cuts: Cut tensors.
        report: ``edgec profile``'s ``report.json`` of the whole model, built with the same passes.

    Raises:
        UsageError: no per-kernel table, or one whose nodes are mostly not ``model``'s (another model
            or another pass pipeline).
    """
    total = profile_latency_ms(report)
    if report.get("part") not in (None, "main"):
        raise UsageError(f"the profile is of the part '{report['part']}', not of the whole model",
                         "profile the whole model: edgec profile MODEL --target T --device D --out DIR")
    rows = (report.get("profile") or {}).get("kernels") or []
    if not rows:
        raise UsageError("the profile report has no per-kernel table",
                         "profile the whole model locally or over rpc:// (not an emulator), then pass its report.json")
    names = {n.name for n in model.graph.node}
    listed = [x for r in rows for x in r.get("onnx_nodes", []) if not x.startswith("<")]
    if not listed or sum(x in names for x in listed) < 0.9 * len(listed):
        raise UsageError("the profile's kernels are not this model's nodes (another model or pass pipeline)",
                         "profile the same MODEL with the same --passes and --input-shape")
    kernel_sum = sum(float(r["time_ms"]) for r in rows) or 1.0
    scale = total / kernel_sum
    out = {}
    for cut in cuts:
        head = head_node_names(model, cut)
        shares = [None if not [x for x in r.get("onnx_nodes", []) if x in names] else
                  sum(x in head for x in r["onnx_nodes"] if x in names) / len([x for x in r["onnx_nodes"] if x in names])
                  for r in rows]
        known = [i for i, f in enumerate(shares) if f is not None]
        ms = 0.0
        for i, r in enumerate(rows):
            f = shares[i] if shares[i] is not None else shares[min(known, key=lambda j: (abs(j - i), j > i))]
            ms += f * float(r["time_ms"])
        out[cut] = ms * scale
    return out


def rank_cuts(table: dict[str, Any], link: Link, head_total_ms: float, tail_total_ms: float,
              bytes_key: str = "bytes_fp32", output_bytes: int = 0, *, head_ms_at: dict[str, float] | None = None,
              tail_head_ms_at: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Every candidate with its estimated latencies (ms), fastest first.

    Args:
        table: :func:`edgec.split.cut_table`'s output.
        link: The network.
        head_total_ms: Whole-model latency on the device (ms).
        tail_total_ms: Whole-model latency on the server (ms).
        bytes_key: Which size of the cut is sent (``bytes_fp32`` or ``bytes_int8``).
        output_bytes: Bytes the device sends when everything runs on it (:func:`device_only_result`: a
            classifier's top-k result, not its logits).
        head_ms_at: Per-cut head time on the device (:func:`per_cut_ms` of the device's profile), in
            place of the MAC spread.
        tail_head_ms_at: Per-cut head time on the server (:func:`per_cut_ms` of the server's
            profile): the tail then takes ``tail_total_ms`` minus it.

    Returns:
        ``[{"cut", "kind", "bytes", "head_ms", "transfer_ms", "tail_ms", "total_ms"}]``; ``kind`` is
        ``"server only"``, ``"cut"`` or ``"device only"``.

    Raises:
        ValueError: a non-positive latency.
    """
    if head_total_ms <= 0 or tail_total_ms <= 0:
        raise ValueError("the whole-model latencies must be positive")
    macs = table["macs"] or 1
    inp = table["input"]
    sent_input = inp.get("jpeg_q90_bytes", inp["bytes_uint8"])
    rows = [{"cut": inp["name"], "kind": "server only", "bytes": sent_input, "head_ms": 0.0,
             "tail_ms": tail_total_ms}]
    for c in table["cuts"]:
        k = c["tensor"]
        head = head_ms_at[k] if head_ms_at else head_total_ms * c["head_macs"] / macs
        tail = (max(0.0, tail_total_ms - tail_head_ms_at[k]) if tail_head_ms_at
                else tail_total_ms * c["tail_macs"] / macs)
        rows.append({"cut": k, "kind": "cut", "bytes": c[bytes_key], "head_ms": head, "tail_ms": tail})
    rows.append({"cut": "(outputs)", "kind": "device only", "bytes": output_bytes, "head_ms": head_total_ms,
                 "tail_ms": 0.0})
    for r in rows:
        r["transfer_ms"] = link.transfer_ms(r["bytes"])
        r["total_ms"] = r["head_ms"] + r["transfer_ms"] + r["tail_ms"]
    return sorted(rows, key=lambda r: r["total_ms"])


def sweep(table: dict[str, Any], links: list[Link], head_total_ms: float, tail_total_ms: float,
          bytes_key: str = "bytes_fp32", output_bytes: int = 0, **per_cut: Any) -> list[dict[str, Any]]:
    """The best candidate per link, against running everything on the device or on the server.

    Returns:
        ``[{"bandwidth_mbps", "rtt_ms", "best": (a :func:`rank_cuts` row), "device_only_ms",
        "server_only_ms", "speedup_vs_best_end"}]`` in the order of ``links``; the speed-up is the
        faster end's time over the best candidate's (1.0 when an end is best).
    """
    out = []
    for link in links:
        rows = rank_cuts(table, link, head_total_ms, tail_total_ms, bytes_key, output_bytes, **per_cut)
        ends = {r["kind"]: r["total_ms"] for r in rows if r["kind"] != "cut"}
        best = rows[0]
        out.append({"bandwidth_mbps": link.bandwidth_mbps, "rtt_ms": link.rtt_ms, "best": best,
                    "device_only_ms": ends["device only"], "server_only_ms": ends["server only"],
                    "speedup_vs_best_end": min(ends.values()) / best["total_ms"]})
    return out


def plot_sweep(rows: list[dict[str, Any]], path, title: str) -> None:
    """Estimated latency (ms) against bandwidth (log scale): the best cut, device only, server only (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bw = [r["bandwidth_mbps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(bw, [r["best"]["total_ms"] for r in rows], "o-", label="best cut")
    ax.plot(bw, [r["device_only_ms"] for r in rows], "s--", label="device only")
    ax.plot(bw, [r["server_only_ms"] for r in rows], "^--", label="server only (JPEG upload)")
    for r in rows:
        b = r["best"]
        ax.annotate(b["cut"] if b["kind"] == "cut" else b["kind"], (r["bandwidth_mbps"], b["total_ms"]),
                    fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("uplink bandwidth (Mbit/s)")
    ax.set_ylabel("estimated latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_ranking(rows: list[dict[str, Any]], path, title: str) -> None:
    """Stacked bars of head, transfer and tail time per candidate, in graph order, into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {"server only": 0, "cut": 1, "device only": 2}
    ordered = sorted(rows, key=lambda r: order[r["kind"]])  # sort is stable: cuts stay in graph order
    names = [r["cut"] if r["kind"] == "cut" else r["kind"] for r in ordered]
    x = range(len(ordered))
    fig, ax = plt.subplots(figsize=(max(7, 0.28 * len(ordered)), 3.8))
    bottom = [0.0] * len(ordered)
    for key, color in (("head_ms", "#3b7dd8"), ("transfer_ms", "#e07b39"), ("tail_ms", "#59a14f")):
        vals = [r[key] for r in ordered]
        ax.bar(x, vals, bottom=bottom, color=color, label=key.replace("_ms", ""))
        bottom = [b + v for b, v in zip(bottom, vals)]
    best = min(range(len(ordered)), key=lambda i: ordered[i]["total_ms"])
    ax.annotate("best", (best, ordered[best]["total_ms"]), ha="center", va="bottom")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, rotation=90, fontsize=6)
    ax.set_ylabel("estimated latency (ms)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def onnxruntime_ms(model, runs: int = 20) -> float:
    """Median latency (ms) of ``model`` in onnxruntime on this machine (all optimisations, random inputs):
    the whole-model figure of a host side when none is given."""
    import time

    import numpy as np

    from edgec.frontend.reference import make_inputs, ort_session

    inits = {i.name for i in model.graph.initializer}
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim) for v in model.graph.input
              if v.name not in inits}
    inputs = make_inputs(shapes)
    sess = ort_session(model, optimized=True)
    sess.run(None, inputs)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, inputs)
        samples.append((time.perf_counter() - t) * 1e3)
    return float(np.median(samples))


def read_profile(path, flag: str) -> dict[str, Any]:
    """A ``report.json`` written by ``edgec profile``, read for ``flag`` (``--head-profile``...).

    Raises:
        UsageError: the file is missing or not JSON.
    """
    import json
    from pathlib import Path

    if not Path(path).is_file():
        raise UsageError(f"{flag} {path} does not exist", "give the report.json written by `edgec profile ... --out DIR`")
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"{flag} {path} cannot be read as JSON ({type(e).__name__})",
                         "give the report.json written by `edgec profile ... --out DIR`") from None


@dataclass
class SideLatency:
    """One side's whole-model latency for ranking cuts.

    Attributes:
        total_ms: Whole-model latency on that side (ms).
        source: Where it comes from (``given``, ``profiled (report.json, per kernel)``, ``onnxruntime on
            this machine``).
        per_cut_ms: ``{cut tensor: ms of the layers before it}`` from a profile's per-kernel table, or None
            (the total is then spread over the layers by MACs).
    """

    total_ms: float
    source: str
    per_cut_ms: dict[str, float] | None = None


def side_latency(side: str, target: str, model: onnx.ModelProto, cuts: list[str], *, given_ms: float | None,
                 profile=None, model_name: str = "MODEL", say=None) -> SideLatency:
    """The latency of ``side`` (``head``: the device, ``tail``: the server) for ``--at auto``: from an
    ``edgec profile`` report (per kernel), a given whole-model figure, or onnxruntime timed here when
    the side is this machine (``target == "host"``). A time measured under an emulator is never taken
    for a device's (the profile says so, and :func:`profile_latency_ms` refuses it).

    Raises:
        UsageError: both or neither given for a device that is not this machine, a non-positive figure,
            an unreadable or unsuitable profile.
    """
    if given_ms is not None and profile is not None:
        raise UsageError(f"give --{side}-ms or --{side}-profile, not both", f"e.g. --{side}-profile report.json")
    if profile is not None:
        report = read_profile(profile, f"--{side}-profile")
        try:
            total = profile_latency_ms(report)
            at = per_cut_ms(model, cuts, report)
        except UsageError as e:
            raise UsageError(f"--{side}-profile {profile}: {e.message}", e.hint) from None
        return SideLatency(total, f"profiled ({getattr(profile, 'name', profile)}, per kernel)", at)
    if given_ms is not None:
        if not (given_ms > 0 and math.isfinite(given_ms)):
            raise UsageError(f"--{side}-ms {given_ms} must be a positive number of ms", f"e.g. --{side}-ms 25")
        return SideLatency(given_ms, "given")
    if target == "host":
        if say:
            say(f"time the whole model here for the {side} (onnxruntime)")
        return SideLatency(onnxruntime_ms(model), "onnxruntime on this machine")
    raise UsageError(f"--at auto needs the latency on {target}: --{side}-profile REPORT or --{side}-ms",
                     f"measure it: edgec profile {model_name} --target {target} --device rpc://BOARD:9090 "
                     f"--out DIR, then --{side}-profile DIR/report.json")
