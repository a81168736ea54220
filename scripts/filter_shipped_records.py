"""Keep a shipped tuning record only where it beats edgec's default schedule on this machine's class.

    python scripts/filter_shipped_records.py [--models mobilenetv4,ghostnet,efficientvit,mcunetv2]
                                             [--threads 2] [--margin 1.05] [--write]

A short MetaSchedule search can end on a schedule slower than the rule-based default one
(:mod:`edgec.backends.tvm.default_schedule`), and a record measured on another class may be slower
here. For each model this builds two host artifacts -- shipped records applied, and none (every
kernel at the default schedule) -- times every kernel of both (``edgec profile``'s per-kernel
timing, median of repeats), and lists the kernels whose default schedule is faster by more than
``--margin``. With ``--write`` their structural hashes go to
``tuning_db/<class>/default_preferred.json`` (the entries of models not in ``--models`` are kept): builds
on this class then keep the default schedule for them, and no record is applied or transferred. Run it
on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from edgec.backends.tvm import api, tuning
from edgec.flows.build import BuildOptions, build
from edgec.flows.profile import profile
from edgec.profiling.profiler import ProfileOptions
from edgec.targets import get_target, target_class

MODELS = "mobilenetv4,ghostnet,efficientvit,mcunetv2"
DB_ROOT = Path(__file__).resolve().parents[1] / "src/edgec/backends/tvm/tuning_db"


def kernel_times(artifact: Path, threads: int, repeats: int) -> dict[str, float]:
    """Per-kernel time (ms, summed over the kernel's calls) of a host artifact."""
    report = profile(str(artifact), ProfileOptions(device="local", threads=threads, repeats=10,
                                                   kernel_repeats=repeats, baseline=False)).report
    out: dict[str, float] = {}
    for k in report["profile"]["kernels"]:
        out[k["kernel"]] = out.get(k["kernel"], 0.0) + k["time_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=MODELS)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=15, help="timed repeats per kernel (median)")
    ap.add_argument("--margin", type=float, default=1.05, help="default must be this many times faster")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    spec = get_target("host")
    cls = target_class(spec)
    import tvm_ffi

    # judge every record afresh: the "records" builds apply even those the current list keeps at the default
    tuning.default_preferred = lambda _cls: set()
    prefer: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            built = {}
            for label, use in (("records", True), ("default", False)):
                built[label] = build(BuildOptions(model=name, target="host", out_dir=Path(tmp), name=f"{name}-{label}",
                                                  verify=False, use_tune_db=use))
            kmap = json.loads((built["records"].artifact / "kernels.json").read_text())
            kinds = {c["kernel"]: c.get("schedule", {}).get("kind") for c in kmap["calls"]}
            rec, dflt = (kernel_times(built[k].artifact, args.threads, args.repeats) for k in ("records", "default"))
            import onnx

            tasks = {t.task_name: t for t in api.extract_tasks(onnx.load(built["records"].artifact / "model.onnx"),
                                                                 spec)}
            worse = 0
            for kernel, ms in rec.items():
                if kinds.get(kernel) not in (tuning.TUNED, tuning.TRANSFERRED) or kernel not in dflt:
                    continue
                if dflt[kernel] * args.margin < ms and kernel in tasks:
                    worse += 1
                    shash = str(tvm_ffi.structural_hash(tasks[kernel].dispatched[0]))
                    prefer[shash] = {"model": name, "kernel": kernel, "record_ms": round(ms, 4),
                                     "default_ms": round(dflt[kernel], 4)}
            total_rec, total_def = sum(rec.values()), sum(dflt.values())
            print(f"{name}: kernels sum {total_rec:.2f} ms with records, {total_def:.2f} ms default; "
                  f"{worse} records slower than the default schedule", flush=True)
    for shash, row in sorted(prefer.items(), key=lambda kv: kv[1]["record_ms"] - kv[1]["default_ms"], reverse=True):
        print(f"  {row['model']:12} {row['kernel'][:60]:60} record {row['record_ms']:8.3f} ms  default "
              f"{row['default_ms']:8.3f} ms")
    if args.write:
        path = DB_ROOT / cls / tuning.DEFAULT_PREFERRED_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():  # the models not measured in this run keep their entries
            measured = set(args.models.split(","))
            kept = {h: row for h, row in json.loads(path.read_text())["kernels"].items() if row["model"] not in measured}
            prefer = {**kept, **prefer}
        path.write_text(json.dumps({"target_class": cls, "margin": args.margin, "threads": args.threads,
                                    "measured_on": spec.description, "shash": sorted(prefer),
                                    "kernels": prefer}, indent=1) + "\n")
        print(f"wrote {len(prefer)} kernels to {path}")


if __name__ == "__main__":
    main()
