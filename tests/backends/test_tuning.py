"""Tuning: records persist, builds apply them, a torn database is repaired, budgets hold."""

import json
import logging
import subprocess
import sys
import time

import pytest

from conftest import tiny_cnn
from edgec.flows.build import BuildOptions, build
from edgec.errors import DeviceError, UsageError


def test_tvm_ffi_is_the_version_that_does_not_segfault():
    """apache-tvm-ffi 0.1.15.post2 segfaults in save_json on TIR objects (kills MetaSchedule)."""
    from importlib.metadata import version

    assert version("apache-tvm-ffi") == "0.1.14.post1"
    code = "import tvm, tvm.tirx; print(len(tvm.ir.save_json(tvm.tirx.IntImm('int32', 3))))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-500:]


@pytest.mark.slow  # two tuning runs and two builds
def test_tune_then_build_applies_records(tmp_path):
    from edgec.backends.tvm.tuning import record_count
    from edgec.flows.tune import tune

    model = tiny_cnn(tmp_path / "tiny.onnx")
    db = tmp_path / "db"
    opts = BuildOptions(model=str(model), target="host", out_dir=tmp_path / "out")
    seen = []
    users_handler = logging.NullHandler()  # unnamed, like a user's or pytest's: MetaSchedule's dictConfig chokes
    logging.getLogger("tvm.s_tir.meta_schedule").addHandler(users_handler)
    result = tune(opts, trials=6, db=db, per_iter=3, on_trials=seen.append)
    assert users_handler in logging.getLogger("tvm.s_tir.meta_schedule").handlers
    assert result.trials >= 6 and record_count(db) == result.records_after > 0
    assert seen and seen[-1].trials_done == result.trials
    assert result.measured["edgec_ms_p50"] > 0 and result.measured["total_kernels"] >= 1  # measured end to end
    opts.seed = 1
    again = tune(opts, trials=3, db=db, per_iter=3)
    assert again.records_before == result.records_after and again.records_after > again.records_before
    built = build(BuildOptions(model=str(model), target="host", out_dir=tmp_path / "out", tune_db=db))
    b = built.report["build"]
    assert b["tuned_tasks"] >= 1 and b["total_tasks"] >= b["tuned_tasks"] and b["tuning_database"] == f"user database {db}"
    assert built.report["verification"]["passed"]
    untuned = build(BuildOptions(model=str(model), target="host", out_dir=tmp_path / "out2", tune_db=db,
                                 use_tune_db=False))
    assert untuned.report["build"]["tuning_database"] is None


@pytest.fixture(scope="module")
def shipped_tiny(tmp_path_factory):
    """A tiny model tuned for a few trials, its records exported in the shipped format (no workloads).
    Tuning costs one to two minutes even at 4 trials: the tests using it are marked slow."""
    from edgec.backends.tvm import api, tuning
    from edgec.flows.lower import lower
    from edgec.flows.request import check_request
    from edgec.devices import open_device

    tmp = tmp_path_factory.mktemp("shipped")
    model = tiny_cnn(tmp / "tiny.onnx", channels=6)
    opts = BuildOptions(model=str(model), target="host", out_dir=tmp / "out")
    spec = check_request(opts)
    low = lower(opts)
    db = tmp / "db"
    api.tune(low.final, spec, open_device("local"), trials=4, db=db, per_iter=2, seed=0)
    shipped = tmp / "shipped" / "records.jsonl"
    assert tuning.export_shipped(db, api.extract_tasks(low.final, spec), shipped, spec, ["tiny"]) >= 1
    return model, shipped


def _serve_shipped(monkeypatch, tmp_path, files: dict, own_class: str):
    """Shipped records by class from ``files``; this machine's class forced to ``own_class``."""
    import edgec.targets
    from edgec.backends.tvm import tuning

    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(tuning, "shipped_records_file", lambda cls: files.get(cls))
    monkeypatch.setattr(edgec.targets, "target_class", lambda _spec: own_class)


@pytest.mark.slow  # shipped_tiny tunes (one to two minutes)
def test_shipped_records_apply_without_user_database(shipped_tiny, tmp_path, monkeypatch):
    """Records of this machine's class are matched to tasks by structural hash and count as tuned."""
    model, shipped = shipped_tiny
    assert shipped.stat().st_size < 50_000
    meta = json.loads((shipped.parent / "metadata.json").read_text())
    assert meta["measured"] and meta["target_class"].startswith("x86_64")
    _serve_shipped(monkeypatch, tmp_path, {"x86_64-avx2": shipped}, "x86_64-avx2")
    built = build(BuildOptions(model=str(model), out_dir=tmp_path / "out"))
    b = built.report["build"]
    assert "shipped x86_64-avx2" in b["tuning_database"] and b["schedules"]["tuned"] >= 1
    assert b["schedules"]["transferred"] == 0 and b["tuned_tasks"] == b["schedules"]["tuned"]
    assert built.report["verification"]["passed"]


@pytest.mark.slow  # shipped_tiny tunes (one to two minutes)
def test_records_of_another_class_are_transferred_and_labelled(shipped_tiny, tmp_path, monkeypatch):
    model, shipped = shipped_tiny
    _serve_shipped(monkeypatch, tmp_path, {"x86_64-avx512": shipped}, "x86_64-avx2")
    built = build(BuildOptions(model=str(model), out_dir=tmp_path / "out"))
    b = built.report["build"]
    assert b["schedules"]["transferred"] >= 1 and b["schedules"]["tuned"] == 0
    assert built.report["verification"]["passed"]  # a transferred schedule still matches onnxruntime
    calls = json.loads((built.artifact / "kernels.json").read_text())["calls"]
    kinds = {c["schedule"]["kind"] for c in calls}
    assert "transferred" in kinds and kinds <= {"transferred", "default", "untuned"}
    assert any("not measured on x86_64-avx2" in c["schedule"]["source"] for c in calls)


@pytest.mark.slow  # shipped_tiny tunes (one to two minutes)
def test_kernels_whose_default_schedule_was_measured_faster_keep_it(shipped_tiny, tmp_path, monkeypatch):
    """default_preferred.json: no record is applied or transferred for those kernels."""
    from edgec.backends.tvm import tuning

    model, shipped = shipped_tiny
    hashes = {json.loads(line)["shash"] for line in shipped.read_text().splitlines() if line.strip()}
    _serve_shipped(monkeypatch, tmp_path, {"x86_64-avx512": shipped}, "x86_64-avx2")
    monkeypatch.setattr(tuning, "default_preferred", lambda cls: hashes if cls == "x86_64-avx2" else set())
    built = build(BuildOptions(model=str(model), out_dir=tmp_path / "out"))
    b = built.report["build"]
    assert b["schedules"].get("transferred", 0) == 0 and b["schedules"].get("tuned", 0) == 0
    assert b["schedules"]["default"] >= 1 and built.report["verification"]["passed"]


@pytest.mark.slow  # shipped_tiny tunes (one to two minutes)
def test_a_trace_that_does_not_replay_falls_back_cleanly(shipped_tiny, tmp_path, monkeypatch):
    """Records whose traces name blocks the kernel does not have are skipped: the kernels get the
    default schedule, still correct."""
    model, shipped = shipped_tiny
    broken = tmp_path / "broken.jsonl"
    broken.write_text(shipped.read_text().replace('"GetSBlock",[],["', '"GetSBlock",[],["renamed_'))
    _serve_shipped(monkeypatch, tmp_path, {"x86_64-avx512": broken}, "x86_64-avx2")
    built = build(BuildOptions(model=str(model), out_dir=tmp_path / "out"))
    b = built.report["build"]
    assert b["schedules"]["transferred"] == 0 and b["schedules"]["default"] == b["total_tasks"] >= 1
    assert built.report["verification"]["passed"]


def test_target_classes_are_derived_from_target_data():
    from edgec.targets import TargetSpec, get_target, target_class

    assert target_class(get_target("rpi4")) == "aarch64-neon"
    assert target_class(get_target("jetson-orin-nano")) == "cuda-sm_87"
    x86 = {"name": "x", "description": "d", "kind": "cpu", "arch": "x86_64", "datasheet": "-",
           "tvm": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": "skylake-avx512",
                   "mattr": ["+avx512f", "+avx2"]}}
    assert target_class(TargetSpec.from_dict(x86)) == "x86_64-avx512"
    x86["tvm"]["mattr"] = ["+avx2"]
    assert target_class(TargetSpec.from_dict(x86)) == "x86_64-avx2"
    host = get_target("host")
    assert target_class(host) == ("x86_64-avx512" if "avx512f" in host.extra["isa"] else
                                  "x86_64-avx2" if "avx2" in host.extra["isa"] else "x86_64")


def test_torn_database_line_is_repaired(tmp_path):
    from edgec.backends.tvm.tuning import record_count, repair_database

    db = tmp_path / "db"
    db.mkdir()
    (db / "database_tuning_record.json").write_text('[0, [["a"]]]\n[1, [["b"]]]\n[2, [["c"')
    (db / "database_workload.json").write_text('["h", "w"]\n')
    assert repair_database(db) == 1
    assert record_count(db) == 2
    assert all(json.loads(line) for line in (db / "database_tuning_record.json").read_text().splitlines())


def test_empty_db_and_bad_budget_are_usage_errors(tmp_path):
    from edgec.backends.tvm.tuning import open_database
    from edgec.targets import get_target

    with pytest.raises(UsageError, match="holds no tuning records"):
        open_database(get_target("host"), tmp_path, [])


def test_cli_tune_requires_budget(run_cli, tmp_path):
    code, _, err = run_cli("tune", "mcunetv2", "--db", str(tmp_path))
    assert code == 2 and "no tuning budget" in err


def test_device_urls():
    from edgec.devices import DeviceURL, parse_url
    from edgec.devices.probe import probe as check_device

    assert parse_url("local").kind == "local"
    assert parse_url("qemu-aarch64").kind == "qemu-aarch64"
    assert parse_url("rpc://127.0.0.1:9090") == DeviceURL("rpc", "127.0.0.1", 9090)
    assert parse_url("tracker://10.0.0.2:9190/rpi4") == DeviceURL("tracker", "10.0.0.2", 9190, "rpi4")
    for bad in ("rpc://host", "ssh://x:1", "tracker://h:1"):
        with pytest.raises(UsageError):
            parse_url(bad)
    from conftest import free_port

    start = time.monotonic()
    with pytest.raises(DeviceError, match="unreachable"):
        check_device(DeviceURL("rpc", "127.0.0.1", free_port()))
    assert time.monotonic() - start < 15


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path):
    """Records written before kill -9 survive; a rerun adds to them."""
    from edgec.backends.tvm.tuning import record_count

    model = tiny_cnn(tmp_path / "tiny.onnx", channels=16)
    db = tmp_path / "db"
    cmd = [sys.executable, "-m", "edgec.cli", "tune", str(model), "--trials", "400", "--db", str(db)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while record_count(db) == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
    finally:
        proc.kill()
        proc.wait()
    kept = record_count(db)
    assert kept > 0
    code = subprocess.run(cmd[:5] + ["--trials", "3", "--db", str(db)], capture_output=True, text=True,
                          timeout=900)
    assert code.returncode == 0, code.stderr[-800:]
    assert record_count(db) > kept


@pytest.mark.slow
@pytest.mark.qemu
def test_remote_tuning_on_emulated_rpi4(tmp_path):
    """RPC measurement path: candidates are cross-compiled, uploaded and timed on the (emulated) device."""
    from conftest import free_port
    from edgec.backends.tvm.tuning import record_count
    from edgec.devices.qemu_aarch64 import start_rpc_server, stop_rpc_server
    from edgec.flows.tune import tune

    model = tiny_cnn(tmp_path / "tiny.onnx", channels=4, size=8)
    opts = BuildOptions(model=str(model), target="rpi4", out_dir=tmp_path / "out")
    port = free_port()
    proc = start_rpc_server(port=port)
    try:
        result = tune(opts, trials=2, per_iter=2, db=tmp_path / "db", device=f"rpc://127.0.0.1:{port}")
    finally:
        stop_rpc_server(proc)
    assert result.emulated and result.device == f"rpc://127.0.0.1:{port}"
    assert record_count(tmp_path / "db") >= 1


@pytest.mark.slow  # shipped_tiny tunes (one to two minutes)
def test_merging_adds_only_the_kernels_the_shipped_file_lacks(shipped_tiny, tmp_path):
    """``ship_tuning_db.py --merge``: every shipped record stays as it was; missing kernels are added and
    the addition is recorded in metadata.json with the machine that measured it."""
    from edgec.backends.tvm import api, tuning
    from edgec.flows.lower import lower
    from edgec.flows.request import check_request

    model, shipped = shipped_tiny
    rows = [line for line in shipped.read_text().splitlines() if line.strip()]
    assert len(rows) >= 2
    out = tmp_path / "cls" / "records.jsonl"
    out.parent.mkdir()
    kept = rows[1:]
    first = json.loads(kept[0])
    first["run_ms"] = 123.0  # a shipped record is never replaced by one measured here
    kept[0] = json.dumps(first, separators=(",", ":"))
    out.write_text("\n".join(kept) + "\n")
    opts = BuildOptions(model=str(model), target="host", out_dir=tmp_path / "o")
    spec = check_request(opts)
    tasks = api.extract_tasks(lower(opts).final, spec)
    assert tuning.merge_shipped(shipped.parent.parent / "db", tasks, out, spec, ["tiny"]) == (1, 0)
    merged = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["shash"] for r in merged] == [json.loads(r)["shash"] for r in kept] + [json.loads(rows[0])["shash"]]
    assert merged[0]["run_ms"] == 123.0
    meta = json.loads((out.parent / "metadata.json").read_text())
    assert meta["records"] == len(rows) and meta["additions"][0]["records"] == 1
    assert meta["additions"][0]["machine"]["isa"] and meta["additions"][0]["models"] == ["tiny"]
    # --replace-faster: the shipped record that claims 123 ms loses to the one measured here; no other changes
    slow = json.loads(out.read_text().splitlines()[0])
    slow["record"] = [["a different trace"]] + slow["record"][1:]
    out.write_text("\n".join([json.dumps(slow)] + out.read_text().splitlines()[1:]) + "\n")
    assert tuning.merge_shipped(shipped.parent.parent / "db", tasks, out, spec, ["tiny"], replace_faster=0.05) == (0, 1)
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[0]["run_ms"] < 123.0 and again[0]["record"] != slow["record"] and again[1:] == merged[1:]
    assert json.loads((out.parent / "metadata.json").read_text())["additions"][1]["replaced"] == 1


def test_replace_faster_compares_with_the_shipped_trace_timed_here(tmp_path, monkeypatch):
    """A shipped record measured on a faster machine (small ``run_ms``) is still replaced when, timed on this
    machine (seeded into the search), it ran slower than the search's best; it stays when it ran as fast."""
    from edgec.backends.tvm import tuning

    out = tmp_path / "cls" / "records.jsonl"
    out.parent.mkdir()
    shipped = {"shash": "1", "task": "conv", "run_ms": 0.01, "record": [["shipped trace"], "w"]}
    best = {"shash": "1", "task": "conv", "run_ms": 0.5, "record": [["found here"], "w"]}

    def run(shipped_here_ms: float) -> tuple[int, int]:
        out.write_text(json.dumps(shipped) + "\n")

        def rows(folder, tasks, spec, times=None):
            if times is not None:
                times[("1", tuning._trace_key(shipped["record"]))] = shipped_here_ms
                times[("1", tuning._trace_key(best["record"]))] = best["run_ms"]
            return [best]

        monkeypatch.setattr(tuning, "_measured_rows", rows)
        monkeypatch.setattr(tuning, "_provenance", lambda spec: {})
        return tuning.merge_shipped(tmp_path / "db", [], out, None, ["m"], replace_faster=0.05)

    assert run(1.0) == (0, 1)
    assert json.loads(out.read_text())["record"] == best["record"]
    assert run(0.51) == (0, 0)
    assert json.loads(out.read_text())["record"] == shipped["record"]
