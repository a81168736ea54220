"""Split computing over an emulated link: the chooser's predicted latency per cut against the measured one.

On one Linux machine (root, two cores, cgroup-v1 cpu controller; see ``tests/split/netns_link.py``): a device
on a quarter of core 0 and a server on core 1, in two network namespaces joined by a rate-limited veth pair.
The chooser (``edgec.split.choose``) predicts each cut's end-to-end latency from whole-model ``edgec
profile`` reports of both sides (per-kernel sums per cut) and the link (rate, measured round trip);
``edgec serve`` runs each tail on the server and ``edgec run --server`` each head on the device, frames
in lock-step. Prints, per rate and cut: bytes sent, predicted and measured ms (median), the link model
(measured head + predicted transfer + measured tail), the ranking of the cuts both ways and the chooser's
best cut. A benchmark, not a test: the times depend on the machine's load (a 2-core CI runner measured
up to 29% off the prediction; a quiet machine within 10%).

    sudo python benchmarks/bench_split_link.py [--model mobilenetv2_100] [--cuts add,add_5,view]
        [--rates 1,100] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

# The link emulation lives with its test (tests/split/test_link.py); imported from there by path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "split"))
from netns_link import EDGEC, open_link, rtt_ms, run, run_head, serve  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mobilenetv2_100", help="a zoo model large enough that each head is many "
                    "scheduler slices of the emulated device")
    ap.add_argument("--cuts", default="add,add_5,view", help="cut tensors (int8: 75.3, 12.5 and 1.3 kB for "
                    "mobilenetv2_100, with 25%%, 50%% and all but the classifier of the MACs in the head)")
    ap.add_argument("--rates", default="1,100", help="uplink rates in Mbit/s")
    ap.add_argument("--frames", type=int, default=0, help="frames per measurement (default: 3 at <= 10 Mbit/s, else 15)")
    ap.add_argument("--json", type=Path, help="also write the rows here")
    args = ap.parse_args()
    import onnx
    from PIL import Image
    from skimage import data

    from edgec.split import cut_table
    from edgec.split.choose import Link as NetLink, per_cut_ms, profile_latency_ms, rank_cuts

    cuts = args.cuts.split(",")
    link, reason = open_link()
    if link is None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    console = Console(width=max(Console().width, 160))
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="edgec-link-") as tmp:
            work = Path(tmp)
            image = work / "astronaut.png"
            Image.fromarray(data.astronaut()).save(image)
            console.print(f"build {args.model} and profile it on both sides")
            run([EDGEC, "build", args.model, "--out", str(work), "--name", "whole"])
            for side, on in (("device", link.on_device), ("server", link.on_server)):
                run(on(EDGEC, "profile", str(work / "whole"), "--device", "local", "--threads", "1",
                       "--no-baseline", "--out", str(work / f"prof-{side}")))
            dev, srv = (json.loads((work / f"prof-{s}" / "report.json").read_text()) for s in ("device", "server"))
            final = onnx.load(work / "whole" / "model.onnx")
            table = cut_table(final)
            all_cuts = [c["tensor"] for c in table["cuts"]]
            per_cut = {"head_ms_at": per_cut_ms(final, all_cuts, dev), "tail_head_ms_at": per_cut_ms(final, all_cuts, srv)}
            head_total, tail_total = profile_latency_ms(dev), profile_latency_ms(srv)
            console.print(f"whole model: {head_total:.1f} ms on the device, {tail_total:.1f} ms on the server")
            for cut in cuts:
                run([EDGEC, "split", args.model, "--at", cut, "--encoding", "int8", "--out", str(work), "--name", cut])
            ports = {cut: free_port() for cut in cuts}
            servers = [serve(link, work / cut, ports[cut]) for cut in cuts]
            try:
                for mbit in (float(r) for r in args.rates.split(",")):
                    link.rate(mbit)
                    rtt = rtt_ms(link, ports[cuts[0]])
                    ranked = rank_cuts(table, NetLink(mbit, rtt), head_total, tail_total, "bytes_int8", 4000, **per_cut)
                    predicted = {r["cut"]: r for r in ranked}
                    best_cut = next(r["cut"] for r in ranked if r["kind"] == "cut")
                    frames = args.frames or (3 if mbit <= 10 else 15)
                    for cut in cuts:
                        console.print(f"{mbit:g} Mbit/s, cut {cut}: {frames} frames")
                        got, _ = run_head(link, work / cut, ports[cut], image, frames)
                        p = predicted[cut]
                        rows.append({"mbit": mbit, "rtt_ms": rtt, "cut": cut, "bytes": p["bytes"],
                                     "predicted_ms": p["total_ms"], "measured_ms": got["total"],
                                     "link_model_ms": got["head"] + p["transfer_ms"] + got["tail"],
                                     "predicted": {k: p[f"{k}_ms"] for k in ("head", "transfer", "tail")},
                                     "measured": got, "best_cut": best_cut, "best": ranked[0]["cut"]})
            finally:
                for proc in servers:
                    proc.terminate()
                    proc.wait(10)
    finally:
        link.down()
    out = Table(title=f"{args.model}: predicted vs measured end-to-end latency per cut")
    for col in ("Mbit/s", "cut", "bytes", "predicted ms", "measured ms", "measured/predicted", "link model ms",
                "head/transfer/tail predicted", "head/transfer/tail measured", "chooser's best cut"):
        out.add_column(col)
    for r in rows:
        p, m = r["predicted"], r["measured"]
        out.add_row(f"{r['mbit']:g}", r["cut"], str(r["bytes"]), f"{r['predicted_ms']:.1f}", f"{r['measured_ms']:.1f}",
                    f"{r['measured_ms'] / r['predicted_ms']:.2f}", f"{r['link_model_ms']:.1f}",
                    f"{p['head']:.1f}/{p['transfer']:.1f}/{p['tail']:.1f}",
                    f"{m['head']:.1f}/{m['transfer']:.1f}/{m['tail']:.1f}", f"{r['best_cut']} (overall {r['best']})")
    console.print(out)
    for mbit in sorted({r["mbit"] for r in rows}):
        at = [r for r in rows if r["mbit"] == mbit]
        by = {k: [r["cut"] for r in sorted(at, key=lambda r: r[k])] for k in ("predicted_ms", "measured_ms")}
        same = "same" if by["predicted_ms"] == by["measured_ms"] else "DIFFERENT"
        console.print(f"{mbit:g} Mbit/s ranking, predicted {by['predicted_ms']} / measured {by['measured_ms']}: {same}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
