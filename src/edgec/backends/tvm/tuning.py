"""Auto-tuning with MetaSchedule and a persistent, resumable tuning database.

What MetaSchedule needs on this stack (``docs/tvm-0.27.md``):

* tasks are extracted from the module after edgec's own legalization and fusion
  (:func:`edgec.backends.tvm.pipeline.fused_module`), so that the database
  applied by ``edgec build`` (``MetaScheduleApplyDatabase`` right after FuseTIR)
  matches the same structural hashes;
* candidates are built in-process (:class:`InProcessBuilder`): MetaSchedule's
  ``LocalBuilder`` workers spend 35-47 s importing tensor intrinsics, past its
  30 s timeout, so every build would time out; device candidates are linked with
  the target's cross compiler into a shared library the device's plain runtime loads;
* measurement is the device's: the caller passes a device (:mod:`edgec.devices`, duck-typed:
  this package does not import it), which refuses what it cannot measure (``check_tuning``) and
  makes MetaSchedule's runner (``tuning_runner``): ``LocalRunner`` on this machine, ``RPCRunner``
  for ``rpc://HOST:PORT`` (direct) and ``tracker://HOST:PORT/KEY`` (measurements spread over
  every board registered under ``KEY``), the RPC sessions opened by the device;
* the cost model is XGBoost (``xgb``), the task scheduler gradient-based.

The database is a MetaSchedule ``JSONDatabase`` folder (``database_workload.json``,
``database_tuning_record.json``), one per target (keyed by the target's triple,
mcpu and features, and the TVM version) under ``<cache>/tuning/``. Records are
appended to the files as they are measured; after ``kill -9`` a rerun first drops
a torn last line (:func:`repair_database`) and continues from the records kept --
evolutionary search seeds from the best ones, so no work restarts from zero.

Sources: Shao et al., "Tensor Program Optimization with Probabilistic Programs"
(MetaSchedule), NeurIPS 2022; apache/tvm ``python/tvm/s_tir/meta_schedule``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import Any

from edgec.backends.tvm.default_schedule import DEFAULT
from edgec.backends.tvm.pace import BatchPace
from edgec.backends.tvm.default_schedule import SOURCE as DEFAULT_SOURCE
from edgec.cache import cache_dir
from edgec.errors import UsageError
from edgec.targets import TargetSpec

log = logging.getLogger(__name__)

DB_FILES = ("database_workload.json", "database_tuning_record.json")
CHUNK_TASKS = 3  # tasks per tune_tasks call: results are committed when a call returns
SHIPPED_DIR = "tuning_db"


# --------------------------------------------------------------------------- database

def target_key(spec: TargetSpec) -> str:
    """A stable string naming what code generation depends on (triple, mcpu, features; ``native`` resolved)."""
    from edgec.backends.tvm.compile import resolve_native

    parts = []
    for t in (spec.tvm, spec.host or {}):
        t = resolve_native(t)
        for k in ("kind", "mtriple", "mcpu", "arch"):
            if k in t:
                parts.append(str(t[k]))
        parts.extend(t.get("mattr", []))
    return "-".join(p.replace("+", "") for p in parts)


def default_database_dir(spec: TargetSpec) -> Path:
    """The user-cache database folder of ``spec``: ``<cache>/tuning/<target key>-tvm<version>``."""
    return cache_dir("tuning") / f"{target_key(spec)}-tvm{version('apache-tvm')}"


SHIPPED_FILE = "records.jsonl"

#: For each target class, the classes whose records are replayed when its own have none for a
#: kernel, nearest first (vector width, then ISA family). A replayed trace keeps its loop
#: structure and tile sizes; LLVM legalizes the vector widths for the target.
TRANSFER_FROM: dict[str, list[str]] = {
    "x86_64-avx512": ["x86_64-avx2"],
    "x86_64-avx2": ["x86_64-avx512"],
    "x86_64": ["x86_64-avx2", "x86_64-avx512"],
    "aarch64-neon": ["x86_64-avx2", "x86_64-avx512"],
}

#: Provenance kinds of a kernel's schedule (``kernels.json``, report, summary).
TUNED, TRANSFERRED, UNTUNED = "tuned", "transferred", "untuned"  # and DEFAULT (default_schedule)


def shipped_records_file(target_class: str) -> Path | None:
    """The records edgec ships for ``target_class`` (``tuning_db/<class>/records.jsonl``), if any.

    Each holds the best measured record per kernel of the default zoo models on a machine of
    that class; ``metadata.json`` beside it says which machine and models.
    """
    path = Path(str(resources.files("edgec.backends.tvm").joinpath(SHIPPED_DIR, target_class, SHIPPED_FILE)))
    return path if path.is_file() else None


#: Beside ``records.jsonl``: structural hashes of kernels whose default schedule
#: (:mod:`edgec.backends.tvm.default_schedule`) was measured faster on this class than any shipped
#: record, so no record is applied or transferred for them (``scripts/filter_shipped_records.py``).
DEFAULT_PREFERRED_FILE = "default_preferred.json"


def default_preferred(target_class: str) -> set[str]:
    """Structural hashes for which ``target_class`` keeps the default schedule (see :data:`DEFAULT_PREFERRED_FILE`)."""
    path = Path(str(resources.files("edgec.backends.tvm").joinpath(SHIPPED_DIR, target_class,
                                                                    DEFAULT_PREFERRED_FILE)))
    if not path.is_file():
        return set()
    return set(json.loads(path.read_text()).get("shash", []))


def _read_shipped(target_class: str) -> dict[str, list]:
    path = shipped_records_file(target_class)
    records: dict[str, list] = {}
    if path is None:
        return records
    with open(path) as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                records.setdefault(row["shash"], []).append(row)
    return records


@dataclass
class Schedules:
    """The tuned schedules a build applies, and where each kernel's came from.

    Attributes:
        database: A MetaSchedule database holding every applicable record, or None.
        label: Where the records came from, in words (None when there are none).
        provenance: Task (kernel) name -> ``{"kind": tuned|transferred|untuned, "source": ...}``.
    """

    database: Any
    label: str | None
    provenance: dict[str, dict[str, str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {TUNED: 0, TRANSFERRED: 0, DEFAULT: 0, UNTUNED: 0}
        for p in self.provenance.values():
            out[p["kind"]] += 1
        return out

    def mark_default(self, kernels: list[str]) -> None:
        """Record that ``kernels`` (untuned) got edgec's default schedule."""
        for name in kernels:
            if self.provenance.get(name, {}).get("kind", UNTUNED) == UNTUNED:
                self.provenance[name] = {"kind": DEFAULT, "source": DEFAULT_SOURCE}


def _replay(db, ms, task, rows: list) -> bool:
    """Commit the first of ``rows`` whose trace replays on ``task``'s workload."""
    mod = task.dispatched[0]
    # Structural hashes ignore names: a kernel of another model may share this hash but name
    # its blocks differently, and then its trace does not replay here. Take the first that does.
    for row in rows:
        try:
            record = ms.database.TuningRecord.from_json(row["record"], db.commit_workload(mod))
        except Exception:  # noqa: BLE001  tvm.s_tir.schedule.ScheduleError and kin
            continue
        db.commit_tuning_record(record)
        return True
    return False


def shipped_database(target_class: str, tasks: list, skip: set[str] = frozenset()) -> tuple[Any, dict]:
    """An in-memory database with the shipped records that replay on ``tasks``: the class's own
    first, then those of the classes in :data:`TRANSFER_FROM`.

    The shipped files hold no workloads (each is a whole TIR function, ~75 kB of JSON): a
    record is keyed by its workload's structural hash, and the workload is the task's own
    function, recomputed at build time.

    Args:
        target_class: The class of the target (:func:`edgec.targets.target_class`).
        tasks: The model's tasks.
        skip: Task names that already have a record (the user's database).

    Returns:
        ``(MemoryDatabase or None, {task name: provenance})``.
    """
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.MemoryDatabase()
    provenance: dict[str, dict[str, str]] = {}
    keep_default = default_preferred(target_class)
    for cls in [target_class] + TRANSFER_FROM.get(target_class, []):
        rows = _read_shipped(cls)
        if not rows:
            continue
        for task in tasks:
            if task.task_name in skip or task.task_name in provenance:
                continue
            shash = str(tvm_ffi.structural_hash(task.dispatched[0]))
            if shash in keep_default:
                continue
            if _replay(db, ms, task, rows.get(shash, [])):
                provenance[task.task_name] = (
                    {"kind": TUNED, "source": f"shipped {cls} records"} if cls == target_class else
                    {"kind": TRANSFERRED, "source": f"shipped {cls} records, replayed (not measured on {target_class})"})
    return (db if provenance else None), provenance


def _measured_here(record, mcpu: str) -> bool:
    """Whether a record was measured on a machine with LLVM CPU ``mcpu`` (not seeded from another class)."""
    try:
        return str(record.target.attrs.get("mcpu", "")) == mcpu
    except Exception:  # noqa: BLE001
        return False


def _measured_rows(folder: Path, tasks: list, spec: TargetSpec, times: dict | None = None) -> list[dict]:
    """The best record measured on this machine for ``spec`` of each of ``tasks`` in database ``folder``,
    as shipped rows ``{"shash", "task", "run_ms", "record"}`` (records seeded from another class and never
    measured here are left out).

    Args:
        times: If given, filled with ``{(shash, trace JSON): run ms here}`` for every record measured
            here, not only the best (a shipped trace's own time on this machine, once seeded).
    """
    import tvm_ffi

    from edgec.backends.tvm.compile import resolve_native, tvm_target

    database = _json_database(folder, writable=False)
    target = tvm_target(spec)
    mcpu = resolve_native(spec.cpu_target).get("mcpu", "")
    seen, rows = set(), []
    for task in tasks:
        mod = task.dispatched[0]
        shash = str(tvm_ffi.structural_hash(mod))
        if database.query_tuning_record(mod, target, task.task_name) is None:
            continue
        here = [r for r in database.get_top_k(database.commit_workload(mod), 256) if _measured_here(r, mcpu)]
        if not here:
            continue
        found = [(json.loads(tvm_ffi.dumps_json(r.as_json()) if hasattr(tvm_ffi, "dumps_json")
                             else _to_py_json(r.as_json())), 1e3 * sum(float(x) for x in r.run_secs) / len(r.run_secs))
                 for r in (here if times is not None else here[:1])]
        for record, ms_here in found if times is not None else []:
            times.setdefault((shash, _trace_key(record)), ms_here)
        record, run_ms = found[0]
        key = (shash, _trace_key(record))  # same structure, same trace (block names)
        if key in seen:
            continue
        seen.add(key)
        rows.append({"shash": shash, "task": task.task_name, "run_ms": run_ms, "record": record})
    return rows


def _trace_key(record: list) -> str:
    """A record's trace (its first field) as a comparable string."""
    return json.dumps(record[0], sort_keys=True)


def _write_rows(out: Path, rows: list[dict]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows))
    tmp.replace(out)


def _provenance(spec: TargetSpec) -> dict:
    """The target the records were measured for and the machine that measured them."""
    from edgec.backends.tvm.compile import resolve_native
    from edgec.targets import host

    return {"measured_on": {**spec.to_dict(), "tvm": resolve_native(spec.tvm)},
            "machine": {"cpu_model": host.cpu_model_name(), "llvm_cpu": resolve_native({"mcpu": "native"})["mcpu"],
                        "isa": host.isa_flags()}}


def export_shipped(folder: Path, tasks: list, out: Path, spec: TargetSpec, models: list[str]) -> int:
    """Write the best record measured on this machine of each of ``tasks``, found in database
    ``folder``, to ``out`` (JSON lines), and ``metadata.json`` beside it. Records seeded from another
    class (:func:`seed_database`) and never measured here are left out.

    Returns:
        Number of records written.
    """
    from edgec.targets import target_class

    rows = _measured_rows(folder, tasks, spec)
    _write_rows(out, rows)
    (out.parent / "metadata.json").write_text(json.dumps(
        {"target_class": target_class(spec), "measured": True, "tvm": version("apache-tvm"), "models": models,
         "records": len(rows), **_provenance(spec)}, indent=1, default=str) + "\n")
    return len(rows)


def merge_shipped(folder: Path, tasks: list, out: Path, spec: TargetSpec, models: list[str],
                  seeded_from: list[str] = (), replace_faster: float | None = None) -> tuple[int, int]:
    """Add to the shipped file ``out`` the records measured here (as :func:`export_shipped`) of the kernels
    it has no record for. Every shipped record stays, unless ``replace_faster`` is given: then a kernel's
    shipped record is replaced by the one measured here when that ran at least ``replace_faster`` (a
    fraction, e.g. 0.05) faster than the shipped record: timed on this machine where the database holds it
    (seeded, :func:`seed_database`), else at its own shipped time. ``metadata.json`` gets an
    ``additions`` entry, which names ``seeded_from``: the classes whose traces started the search
    (:func:`seed_database`), so a record may be another class's schedule replayed and measured here
    rather than found by a search here.

    Returns:
        ``(added, replaced)``: numbers of records.
    """
    shipped = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.is_file() else []
    index = {r["shash"]: i for i, r in enumerate(shipped)}
    added, replaced = [], 0
    times: dict = {}
    for row in _measured_rows(folder, tasks, spec, times):
        i = index.get(row["shash"])
        if i is None:
            added.append(row)
            index[row["shash"]] = len(shipped) + len(added) - 1
        elif i < len(shipped) and replace_faster is not None and _trace_key(row["record"]) != _trace_key(shipped[i]["record"]):
            # the shipped record's time on this machine when the search was seeded with it; else its own
            old_ms = times.get((row["shash"], _trace_key(shipped[i]["record"])), shipped[i]["run_ms"])
            if row["run_ms"] < old_ms * (1.0 - replace_faster):
                shipped[i] = row
                replaced += 1
    _write_rows(out, shipped + added)
    meta_path = out.parent / "metadata.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {"measured": True}
    meta["records"] = len(shipped) + len(added)
    meta.setdefault("additions", []).append({"models": models, "records": len(added), "replaced": replaced,
                                             "tvm": version("apache-tvm"), "seeded_from": list(seeded_from),
                                             **_provenance(spec)})
    meta_path.write_text(json.dumps(meta, indent=1, default=str) + "\n")
    return len(added), replaced


def seed_database(folder: Path, spec: TargetSpec, tasks: list, from_class: str, device) -> int:
    """Start a tuning database from another class's shipped records (transfer tuning).

    Every record of ``from_class`` that replays on one of ``tasks`` is built and measured on
    ``device`` for ``spec``, and committed with the times measured here; MetaSchedule's
    evolutionary search then starts from those schedules (Gibson et al., "Transfer-Tuning",
    PACT 2022, reuse tuned schedules across workloads and machines).

    Args:
        folder: The database to seed (created if needed).
        spec: This target.
        tasks: The model's tasks.
        from_class: A class with shipped records (``x86_64-avx512``...).
        device: Where to measure (an :mod:`edgec.devices` device: ``tuning_runner``).

    Returns:
        Number of records measured and committed.
    """
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from edgec.backends.tvm.compile import tvm_target

    database = _json_database(folder, writable=True)
    scratch = ms.database.MemoryDatabase()
    rows = _read_shipped(from_class)
    target = tvm_target(spec)
    builder, runner = _make_builder(spec), _make_runner(device)
    seeded = 0
    for task in tasks:
        if not _replay(scratch, ms, task, rows.get(str(tvm_ffi.structural_hash(task.dispatched[0])), [])):
            continue
        mod = task.dispatched[0]
        foreign = scratch.get_top_k(scratch.commit_workload(mod), 1)[0]
        sch = foreign.as_measure_candidate().sch
        built = builder.build([ms.builder.BuilderInput(sch.mod, target)])[0]
        if built.error_msg:
            continue
        args = ms.arg_info.ArgInfo.from_entry_func(sch.mod, remove_preproc=True)
        result = runner.run([ms.runner.RunnerInput(built.artifact_path, "cpu", args)])[0].result()
        shutil.rmtree(Path(built.artifact_path).parent, ignore_errors=True)
        if result.error_msg or not result.run_secs:
            continue
        record = ms.database.TuningRecord(foreign.trace, database.commit_workload(mod),
                                          [float(x) for x in result.run_secs], target, args)
        try:  # some replayed traces (RFactor, TVM 0.27) do not load back: committed, they break the database
            ms.database.TuningRecord.from_json(record.as_json(), database.commit_workload(mod))
        except Exception:  # noqa: BLE001
            log.info("seed record for %s does not reload; skipped", task.task_name)
            continue
        database.commit_tuning_record(record)
        seeded += 1
    return seeded


def _to_py_json(obj) -> str:
    """JSON text of a TVM ffi JSON value (Array/Map/str/int/float)."""
    def conv(o):
        if isinstance(o, (str, int, float)) or o is None:
            return o
        if hasattr(o, "items"):
            return {str(k): conv(v) for k, v in o.items()}
        return [conv(x) for x in o]

    return json.dumps(conv(obj))


def repair_database(folder: Path) -> int:
    """Drop lines that are not complete JSON (a write torn by ``kill -9``); return how many.

    Only a torn *last* line is expected; any unreadable line is removed so the
    database loads. The file is rewritten atomically.
    """
    dropped = 0
    for name in DB_FILES:
        path = folder / name
        if not path.is_file():
            continue
        lines = path.read_text(errors="replace").splitlines()
        good = []
        for line in lines:
            if not line.strip():
                continue
            try:
                json.loads(line)
                good.append(line)
            except json.JSONDecodeError:
                dropped += 1
        if dropped:
            tmp = path.with_suffix(".repair")
            tmp.write_text("".join(g + "\n" for g in good))
            tmp.replace(path)
    if dropped:
        log.warning("tuning database %s: dropped %d torn line(s)", folder, dropped)
    return dropped


def record_count(folder: Path) -> int:
    """Number of tuning records in a database folder (0 when absent)."""
    path = folder / DB_FILES[1]
    if not path.is_file():
        return 0
    with open(path, errors="replace") as fh:
        return sum(1 for line in fh if line.strip())


def _json_database(folder: Path, writable: bool):
    from tvm.s_tir import meta_schedule as ms

    if writable:
        folder.mkdir(parents=True, exist_ok=True)
        repair_database(folder)
    return ms.database.JSONDatabase(work_dir=str(folder), allow_missing=writable)


def open_user_database(spec: TargetSpec, path: Path | None) -> tuple[Any, str | None]:
    """The user's database (``--db`` or the cache folder of ``spec``), or ``(None, None)`` if it is empty.

    Raises:
        UsageError: ``--db`` names a folder that holds no database.
    """
    user = Path(path) if path is not None else default_database_dir(spec)
    if path is not None and record_count(user) == 0:
        raise UsageError(f"--db {user} holds no tuning records",
                         f"tune first: edgec tune MODEL --target {spec.name} --db {user}")
    if not record_count(user):
        return None, None
    return _json_database(user, writable=False), str(user)


def open_database(spec: TargetSpec, path: Path | None, tasks: list) -> Schedules:
    """The schedules ``edgec build`` applies: the user's database, then (without ``--db``) the shipped
    records of the target's class, then those transferred from the nearest classes.

    Args:
        spec: Target.
        path: ``--db`` folder, or None for the default.
        tasks: The model's tasks (:func:`extract_tasks`).

    Returns:
        A :class:`Schedules` with every kernel's provenance.

    Raises:
        UsageError: ``--db`` names a folder that holds no database.
    """
    from edgec.backends.tvm.compile import tvm_target
    from edgec.targets import target_class

    user, user_label = open_user_database(spec, path)
    provenance: dict[str, dict[str, str]] = {}
    if user is not None:
        target = tvm_target(spec)
        for task in tasks:
            if user.query_tuning_record(task.dispatched[0], target, task.task_name) is not None:
                provenance[task.task_name] = {"kind": TUNED, "source": f"user database {user_label}"}
    shipped, shipped_prov = (None, {}) if path is not None else shipped_database(
        target_class(spec), tasks, skip=set(provenance))
    provenance.update(shipped_prov)
    for task in tasks:
        provenance.setdefault(task.task_name, {"kind": UNTUNED, "source": "TVM's default schedule"})
    sources = sorted({p["source"].split(",")[0] for p in provenance.values() if p["kind"] != UNTUNED})
    label = "; ".join(sources) or None
    if shipped is None or user is None:
        return Schedules(shipped if user is None else user, label, provenance)
    from tvm.s_tir import meta_schedule as ms

    return Schedules(ms.database.UnionDatabase(user, shipped), label, provenance)


# --------------------------------------------------------------------------- tasks

def extract_tasks(mod, spec: TargetSpec, fused=None) -> list:
    """MetaSchedule tasks of ``mod`` (after edgec's legalization and fusion) for ``spec``.

    Args:
        mod: Relax module as imported.
        spec: Target.
        fused: ``fused_module(mod, target)`` when already computed.
    """
    from tvm.s_tir import meta_schedule as ms

    from edgec.backends.tvm.compile import tvm_target
    from edgec.tvm_setup.capture import captured_fds
    from edgec.backends.tvm.pipeline import fused_module

    target = tvm_target(spec)
    with captured_fds():
        return ms.relax_integration.extract_tasks(fused if fused is not None else fused_module(mod, target), target)


# --------------------------------------------------------------------------- builder / runner

def _make_builder(spec: TargetSpec):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build

    cross = spec.cross_compiler

    @derived_object
    class InProcessBuilder(PyBuilder):
        """Builds candidates in this process (no worker start-up cost, no 30 s timeout)."""

        def build(self, build_inputs):
            import tvm.s_tir.tensor_intrin  # noqa: F401  registered once, here

            results = []
            for bi in build_inputs:
                try:
                    rt_mod = default_build(bi.mod, bi.target, None)
                    folder = tempfile.mkdtemp(prefix="edgec-ms-")
                    if cross:
                        from tvm.support import cc

                        path = os.path.join(folder, "candidate.so")
                        rt_mod.export_library(path, fcompile=cc.cross_compiler(cross))
                    else:
                        from tvm.support.tar import tar

                        path = os.path.join(folder, "candidate." + tar.output_format)
                        rt_mod.export_library(path, fcompile=tar)
                    results.append(BuilderResult(path, None))
                except Exception as exc:  # a failing candidate is data for the search, not an error
                    results.append(BuilderResult(None, f"{type(exc).__name__}: {str(exc)[:2000]}"))
            return results

    return InProcessBuilder()


def _make_runner(device, timeout_sec: int = 120):
    """MetaSchedule's runner for ``device``, which the device makes itself (``device.tuning_runner``:
    ``LocalRunner`` on this machine, ``RPCRunner`` with the device opening the sessions) with the
    tuner's measurement settings.

    Raises:
        UsageError: the device cannot measure tuning candidates.
    """
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=50, enable_cpu_cache_flush=False)
    return device.tuning_runner(timeout_sec, evaluator_config=evaluator)


# --------------------------------------------------------------------------- tuning

@dataclass
class TuneProgress:
    """What the progress callback sees after every measured batch of a task, and at the end of every
    ``tune_tasks`` call (``batches`` counts those: one line per batch where there is no terminal).

    Attributes:
        trials_done: Candidates measured so far in this run.
        trials_total: The ``--trials`` budget, or None.
        elapsed_s: Seconds since the run started.
        deadline_s: The ``--minutes`` budget in seconds, or None.
        est_latency_ms: Sum over the measured kernels of weight x best time (ms), or None.
        tasks_measured, tasks_total: Kernels with a measurement, and all kernels.
        batches: ``tune_tasks`` calls finished.
        database: The database folder.
        records_before: Records in it when the run started.
        device: Where candidates are measured (``local``, ``rpc://...``).
        emulated: True on an emulated device.
    """

    trials_done: int
    trials_total: int | None
    elapsed_s: float
    deadline_s: float | None
    est_latency_ms: float | None
    tasks_measured: int
    tasks_total: int
    batches: int = 0
    database: str = ""
    records_before: int = 0
    device: str = ""
    emulated: bool = False


@dataclass
class TuneResult:
    """Outcome of a tuning run.

    Attributes:
        database: Folder of the database.
        trials: Candidates measured in this run.
        records_before, records_after: Records in the database before/after the run.
        seconds: Wall time of the run (s).
        tasks: Number of tasks (fused kernels) tuned.
        est_latency_ms: Sum over the measured tasks of weight x best kernel time (ms); kernels without
            any measurement are not in it (see ``measured``).
        device: Where candidates were measured (``local``, ``rpc://...``).
        emulated: True when measured on the emulated device (figures are not device speed).
        measured: For local tuning, the model compiled with the records and timed end to end beside
            onnxruntime (:func:`edgec.flows.parts.quick_latency`), else None.
    """

    database: Path
    trials: int
    records_before: int
    records_after: int
    seconds: float
    tasks: int
    est_latency_ms: float | None
    device: str
    emulated: bool = False
    per_task: list[dict[str, Any]] = field(default_factory=list)
    measured: dict[str, Any] | None = None


def check_tune_request(spec: TargetSpec, trials: int | None, minutes: float | None, device) -> None:
    """Validate a tuning request before any work.

    Args:
        spec: Target.
        trials, minutes: Budgets (at least one).
        device: The measuring device, duck-typed against :class:`edgec.devices.base.Device` (this
            package never imports :mod:`edgec.devices`): its ``check_tuning(spec)`` refuses what it
            cannot measure.

    Raises:
        UsageError: no budget, a CUDA target, a device that cannot measure tuning candidates, or
            host measurement of foreign code.
    """
    if not trials and not minutes:
        raise UsageError("no tuning budget", "pass --trials N and/or --minutes M")
    if (trials is not None and trials <= 0) or (minutes is not None and minutes <= 0):
        raise UsageError("tuning budgets must be positive", "e.g. --trials 64 or --minutes 10")
    if spec.kind != "cpu":
        raise UsageError(f"tuning '{spec.name}' (CUDA) is not supported yet", "tune a CPU target")
    device.check_tuning(spec)


def tune(mod, spec: TargetSpec, device, *, trials: int | None = None, minutes: float | None = None,
         db: Path | None = None, per_iter: int = 16,
         progress: Callable[[TuneProgress], None] | None = None, seed: int | None = None) -> TuneResult:
    """Tune the fused kernels of ``mod`` for ``spec`` and add the records to the database.

    Tuning runs in batches. Each batch is one MetaSchedule ``tune_tasks`` call that gives up to
    ``per_iter`` candidates to each of up to :data:`CHUNK_TASKS` kernels; its records are committed
    as each kernel's candidates are measured. The first round covers every kernel without a
    record, later rounds the third of the kernels that contribute most to the estimated latency
    (weight x best time). The XGBoost cost model is kept across batches.

    Budgets are kept by sizing each batch to what is left: ``trials`` caps the candidates of every
    batch; under ``minutes`` the first batch is small (one kernel, up to 8 candidates) and measures
    the seconds a candidate costs here (search, build and run together, so a loaded machine gives
    fewer candidates per batch, not a late end), and no batch starts that would not fit the time
    left. The caller (:func:`edgec.flows.tune.tune`) also stops the run at 1.2 x ``minutes``.

    Args:
        mod: Relax module (from the same import as ``edgec build``).
        spec: Target.
        device: Where candidates are measured: an :mod:`edgec.devices` device (probed by the caller;
            ``check_tuning`` and ``tuning_runner`` are used).
        trials: Budget of new measured candidates (over all tasks).
        minutes: Budget of wall time (minutes) of the search, counted from the first progress call
            (after the database, the tasks and the tensor intrinsics are loaded).
        db: Database folder (default :func:`default_database_dir`).
        per_iter: Candidates per task per batch.
        progress: Called when the search starts (``trials_done`` 0), after each measured batch of a
            kernel, and after each batch.
        seed: Search seed.

    Returns:
        A :class:`TuneResult`.

    Raises:
        UsageError: no budget given, a CUDA target (not supported yet), or a device that cannot
            measure ``spec``'s candidates.
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    from edgec.backends.tvm.compile import tvm_target

    import tvm.s_tir.tensor_intrin  # noqa: F401  registered before the clock starts (tens of seconds)

    check_tune_request(spec, trials, minutes, device)
    folder = Path(db) if db is not None else default_database_dir(spec)
    database = _json_database(folder, writable=True)
    before = record_count(folder)
    tasks = extract_tasks(mod, spec)
    if not tasks:
        raise UsageError("the model has no kernels to tune", "check the model")
    target = tvm_target(spec)
    cores = int(spec.cpu_target.get("num-cores", 1) or 1)
    weights = [float(t.weight) for t in tasks]
    best: dict[int, float] = {}
    for i, t in enumerate(tasks):
        rec = database.query_tuning_record(t.dispatched[0], target, t.task_name)
        if rec is not None and rec.run_secs:
            best[i] = 1e3 * sum(float(x) for x in rec.run_secs) / len(rec.run_secs)
    state = {"done": 0, "selected": [], "batches": 0}

    def estimate() -> float | None:
        return sum(weights[i] * v for i, v in best.items()) if best else None

    def report() -> None:
        if progress:
            progress(TuneProgress(state["done"], trials, time.perf_counter() - start,
                                  None if deadline is None else deadline - start, estimate(), len(best), len(tasks),
                                  state["batches"], str(folder), before, str(device.url), bool(device.emulated)))

    @derived_object
    class Watch(PyMeasureCallback):
        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            state["done"] += len(runner_results)
            i = state["selected"][task_id]
            for r in runner_results:
                if r.error_msg is None and r.run_secs:
                    v = 1e3 * sum(float(x) for x in r.run_secs) / len(r.run_secs)
                    best[i] = min(best.get(i, v), v)
            report()

    cost_model = ms.cost_model.XGBModel(num_tuning_cores=cores, tree_method="auto")
    builder, runner = _make_builder(spec), _make_runner(device)
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [Watch()]
    start = time.perf_counter()  # the budget's clock: the search itself, from here
    deadline = start + minutes * 60 if minutes else None
    pace = BatchPace(per_iter, deadline)
    rounds = 0
    report()
    while not pace.spent:
        left = None if trials is None else trials - state["done"]
        if left is not None and left <= 0:
            break
        untuned = [i for i in range(len(tasks)) if i not in best]
        if untuned and rounds == 0:
            queue = untuned
        else:
            ranked = sorted(range(len(tasks)), key=lambda i: -weights[i] * best.get(i, float("inf")))
            queue = ranked[:max(1, (len(tasks) + 2) // 3)]
        while queue:
            left = None if trials is None else trials - state["done"]
            if left is not None and left <= 0:
                break
            size = pace.next_batch(min(len(queue), CHUNK_TASKS), left, time.perf_counter())
            if size is None:
                break
            n, per_task = size
            chunk, queue = queue[:n], queue[n:]
            t0 = time.perf_counter()
            _tune_chunk(ms, tasks, chunk, state, per_task, cores, seed, rounds, builder, runner, database,
                        cost_model, callbacks)
            pace.measured(time.perf_counter() - t0, n * per_task)
            state["batches"] += 1
            report()
        rounds += 1
    per_task_rows = [{"task": t.task_name, "weight": weights[i], "best_ms": best.get(i)} for i, t in enumerate(tasks)]
    return TuneResult(folder, state["done"], before, record_count(folder), time.perf_counter() - start,
                      len(tasks), estimate(), str(device.url), emulated=bool(device.emulated), per_task=per_task_rows)


def _tune_chunk(ms, tasks, chunk, state, per_task, cores, seed, rounds, builder, runner, database,
                cost_model, callbacks) -> None:
    """One MetaSchedule ``tune_tasks`` call over a few tasks, ``per_task`` candidates each; its records are
    committed as each task's candidates are measured."""
    from edgec.tvm_setup.capture import captured_fds

    state["selected"] = chunk
    work_dir = Path(tempfile.mkdtemp(prefix="edgec-tune-"))
    try:
        with captured_fds(), _unnamed_handlers_set_aside():  # MetaSchedule announces its log folder
            contexts, ctx_weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                [tasks[i] for i in chunk], str(work_dir), num_threads=cores,
                seed=None if seed is None else seed + rounds)
        _quiet_metaschedule_logs()
        ms.tune_tasks(tasks=contexts, task_weights=ctx_weights, work_dir=str(work_dir),
                      max_trials_global=len(chunk) * per_task, max_trials_per_task=per_task,
                      num_trials_per_iter=per_task, builder=builder, runner=runner, database=database,
                      cost_model=cost_model, measure_callbacks=callbacks, task_scheduler="round-robin")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextlib.contextmanager
def _unnamed_handlers_set_aside():
    """MetaSchedule rebuilds its loggers with ``logging.config.dictConfig``, naming every handler the
    ``tvm.s_tir.meta_schedule`` logger already has; an unnamed one (a user's, or pytest's capture
    handler) makes that fail with ``'NoneType' object has no attribute 'format'``. Detach those
    handlers for the call and attach them again afterwards."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    aside = [h for h in logger.handlers if h.get_name() is None]
    for h in aside:
        logger.removeHandler(h)
    try:
        yield
    finally:
        for h in aside:
            logger.addHandler(h)


def _quiet_metaschedule_logs() -> None:
    """MetaSchedule configures console handlers at INFO; keep only warnings on the console."""
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("tvm.s_tir.meta_schedule"):
            lg = logging.getLogger(name)
            lg.setLevel(logging.WARNING)
            for h in lg.handlers:
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler):
                    h.setLevel(logging.WARNING)
