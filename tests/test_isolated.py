"""Long native work in a child process (``edgec.flows.isolated``): results, errors, events, and a clean stop
on Ctrl-C or a deadline (records kept, temporary folders removed, no process left)."""

import os
import time
from pathlib import Path

import pytest

from edgec.errors import BudgetError
from edgec.flows.isolated import Stopped, run_isolated

TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def jobs_importable(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", str(TESTS) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR


def _left(tmp_path):
    return sorted(p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("edgec-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as fh:  # a zombie is not running
        return fh.read().split()[2] != "Z"


def test_events_arrive_in_order_and_the_result_comes_back(tmp_path):
    seen = []
    out = run_isolated("isolated_jobs:count", {"n": 50}, on_event=seen.append)
    assert out["sum"] == sum(range(50))
    assert [e["i"] for e in seen] == list(range(50))
    assert Path(out["tmp"]).parent.parent == tmp_path / "tmp"  # the child's TMPDIR is the parent's folder
    assert _left(tmp_path) == []


def test_an_edgec_error_keeps_its_class_message_and_hint(tmp_path):
    with pytest.raises(BudgetError) as info:
        run_isolated("isolated_jobs:refuse", {}, on_event=lambda e: None)
    assert info.value.message == "the model needs 9 bytes of flash" and info.value.hint == "pick a smaller model"
    assert _left(tmp_path) == []


@pytest.mark.parametrize("job, said", [("crash", "a bug in a job"), ("segfault", "signal 11")])
def test_a_bug_or_a_crash_is_reported_with_the_child_log(tmp_path, job, said):
    with pytest.raises(RuntimeError, match=said):
        run_isolated(f"isolated_jobs:{job}", {}, on_event=lambda e: None, label="test")
    assert _left(tmp_path) == []


@pytest.mark.parametrize("how", ["interrupt", "deadline"])
def test_a_stop_kills_the_group_keeps_the_records_and_removes_the_temporary_folders(tmp_path, how):
    folder = tmp_path / "db"
    folder.mkdir()
    ready = {}

    def on_event(event):
        ready.update(event)
        if how == "interrupt":
            raise KeyboardInterrupt  # what a Ctrl-C raises in the parent while it waits

    deadline = (lambda: time.time() + (-1 if ready else 60)) if how == "deadline" else (lambda: None)
    start = time.time()
    if how == "interrupt":
        with pytest.raises(KeyboardInterrupt):
            run_isolated("isolated_jobs:sleep_and_record", {"folder": str(folder)}, on_event=on_event)
    else:
        out = run_isolated("isolated_jobs:sleep_and_record", {"folder": str(folder)}, on_event=on_event,
                           hard_deadline=deadline)
        assert isinstance(out, Stopped) and out.last_event["kind"] == "ready"
    assert time.time() - start < 60
    assert (folder / "records.txt").read_text() == "one record\n"
    assert _left(tmp_path) == []
    worker = int((folder / "worker.pid").read_text())
    for _ in range(50):
        if not (_alive(ready["pid"]) or _alive(worker)):
            break
        time.sleep(0.1)
    assert not _alive(ready["pid"]) and not _alive(worker)


def test_a_kill_9_of_the_parent_takes_the_child_and_its_workers_and_the_next_run_sweeps_the_folders(tmp_path):
    import signal
    import subprocess
    import sys

    from edgec.scratch import run_scratch

    folder = tmp_path / "db"
    folder.mkdir()
    parent = subprocess.Popen([sys.executable, "-c", f"import isolated_jobs; isolated_jobs.orphan({str(folder)!r})"])
    try:
        for _ in range(600):
            if (folder / "worker.pid").exists() and (folder / "child.pid").exists():
                break
            assert parent.poll() is None, "the parent ended before its child was ready"
            time.sleep(0.1)
        scratch = Path((folder / "scratch").read_text())
        assert scratch.parent == tmp_path / "tmp" and scratch.name.startswith(f"edgec-run-{parent.pid}-")
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
    finally:
        if parent.poll() is None:
            parent.kill()
    child, worker = (int((folder / f).read_text()) for f in ("child.pid", "worker.pid"))
    for _ in range(100):
        if not (_alive(child) or _alive(worker)):
            break
        time.sleep(0.1)
    assert not _alive(child) and not _alive(worker)
    assert scratch.exists() and _left(tmp_path) == [scratch.name]  # a kill -9 cannot clean up ...
    with run_scratch() as mine:
        assert _left(tmp_path) == [mine.name]  # ... the next run does
    assert _left(tmp_path) == []


def test_a_child_killed_from_outside_is_said_as_such_not_as_a_bug(tmp_path):
    from edgec.errors import DeviceError

    with pytest.raises(DeviceError, match=r"the job process was killed \(signal 9\) by something outside edgec"):
        run_isolated("isolated_jobs:killed", {}, on_event=lambda e: None, label="job")
    assert _left(tmp_path) == []
