"""Regenerate the tuning records edgec ships for the default zoo models, for this machine's class.

    python scripts/ship_tuning_db.py [--minutes 30,15,15,15] [--skip-tuning] [--db DIR] [--target FILE]
                                     [--models a,b] [--merge]

1. tunes each default model (mobilenetv4, ghostnet, efficientvit, mcunetv2) for the
   ``host`` target with the given minutes (MetaSchedule, measured on this machine);
2. writes the best record of every kernel of those models to
   ``src/edgec/backends/tvm/tuning_db/<class>/records.jsonl``, where ``<class>`` is this
   machine's target class (``x86_64-avx2``, ``x86_64-avx512``; :func:`edgec.targets.target_class`):
   one JSON line per kernel, keyed by the kernel's structural hash; no workloads, so the file
   stays small. Builds on other classes replay these records as "transferred".

``--merge`` keeps the shipped file and adds the records of kernels it lacks (``metadata.json`` lists
each addition: models, machine, count); ``--replace-faster 0.05`` also replaces a shipped record where
the search here found one at least 5% faster (measured times: the shipped one's when it was tuned; a different trace). ``--target FILE`` tunes for another class's code on this machine: a target data file whose ``tvm.mcpu``
and ``isa`` name that class (e.g. ``mcpu: znver3`` and AVX2 flags on an AVX-512 host: AVX2 code,
measured here; ``metadata.json`` records the target it was measured for and the machine).

The budget above takes ~75 minutes on 2 cores.
``--skip-tuning`` only re-exports from the existing database.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgec.backends.tvm import api, tuning
from edgec.flows.lower import lower
from edgec.flows.request import BuildOptions, check_request
from edgec.devices import open_device
from edgec.targets import target_class

MODELS = ["mobilenetv4", "ghostnet", "mcunetv2", "efficientvit"]
DB_ROOT = Path(__file__).resolve().parents[1] / "src/edgec/backends/tvm/tuning_db"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="30,15,15,15",
                    help="per model, in the order " + ",".join(MODELS) + " (0: export only)")
    ap.add_argument("--skip-tuning", action="store_true")
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--seed-from", default=None, metavar="CLASS",
                    help="start the search from these classes' shipped records, comma-separated (e.g. "
                         "x86_64-avx512,x86_64-avx2: this class's own first keeps what was shipped)")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="the models to tune and export (--minutes in the same order)")
    ap.add_argument("--merge", action="store_true",
                    help="add the exported records of kernels the shipped file lacks, keep every shipped one")
    ap.add_argument("--replace-faster", type=float, default=None, metavar="FRACTION",
                    help="as --merge, and replace a shipped record where this database's ran at least FRACTION "
                         "faster (e.g. 0.05)")
    ap.add_argument("--target", default="host", metavar="FILE",
                    help="target data file to tune for instead of this machine's own (its class's records)")
    args = ap.parse_args()
    minutes = [float(m) for m in args.minutes.split(",")]
    all_tasks = []
    spec = None
    models = args.models.split(",")
    for name, budget in zip(models, minutes):
        opts = BuildOptions(model=name, target=args.target)
        spec = check_request(opts)
        low = lower(opts)
        for cls in (args.seed_from.split(",") if args.seed_from and not args.skip_tuning else []):
            seeded = tuning.seed_database(args.db or tuning.default_database_dir(spec), spec,
                                          api.extract_tasks(low.final, spec), cls, open_device("local"))
            print(f"{name}: search seeded with {seeded} {cls} records")
        if not args.skip_tuning and budget > 0:
            result = api.tune(low.final, spec, open_device("local"), minutes=budget, db=args.db,
                              progress=lambda p, n=name: print(f"\r{n}: {p.trials_done} trials, "
                                                               f"est {p.est_latency_ms or 0:.2f} ms", end=""))
            print(f"\n{name}: {result.trials} trials in {result.seconds / 60:.1f} min, "
                  f"{result.records_after} records in {result.database}")
        all_tasks += api.extract_tasks(low.final, spec)
    folder = args.db or tuning.default_database_dir(spec)
    out = DB_ROOT / target_class(spec) / tuning.SHIPPED_FILE
    if args.merge or args.replace_faster is not None:
        n, replaced = tuning.merge_shipped(folder, all_tasks, out, spec, models,
                                           seeded_from=args.seed_from.split(",") if args.seed_from else [],
                                           replace_faster=args.replace_faster)
        print(f"added {n} records to {out}, replaced {replaced} ({out.stat().st_size} bytes)")
        return
    n = tuning.export_shipped(folder, all_tasks, out, spec, models)
    print(f"wrote {n} records to {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
