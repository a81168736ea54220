"""Jobs for tests/test_isolated.py, imported by the child process (``edgec.flows.isolated``)."""

import os
import tempfile
import time
from pathlib import Path


def count(*, n: int, emit):
    for i in range(n):
        emit({"kind": "tick", "i": i})
    return {"sum": sum(range(n)), "tmp": tempfile.gettempdir()}


def refuse(*, emit):  # noqa: ARG001
    from edgec.errors import BudgetError

    raise BudgetError("the model needs 9 bytes of flash", "pick a smaller model")


def crash(*, emit):  # noqa: ARG001
    raise ValueError("a bug in a job")


def segfault(*, emit):  # noqa: ARG001
    import ctypes

    ctypes.string_at(0)


def sleep_and_record(*, folder: str, emit):
    """Writes a record, makes a temporary folder and a worker process, then sleeps (to be stopped)."""
    import subprocess
    import sys

    Path(folder, "records.txt").write_text("one record\n")
    Path(tempfile.mkdtemp(prefix="edgec-job-")).joinpath("partial").write_text("x")
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    Path(folder, "worker.pid").write_text(str(worker.pid))
    emit({"kind": "ready", "pid": os.getpid()})
    time.sleep(300)


def orphan(folder: str):
    """A parent that runs ``sleep_and_record`` in a child inside a command's scratch folder; the test kills
    this process with SIGKILL (run as ``python -c 'import isolated_jobs; isolated_jobs.orphan(F)'``)."""
    from edgec.flows.isolated import run_isolated
    from edgec.scratch import run_scratch

    def on_event(event):
        Path(folder, "child.pid").write_text(str(event["pid"]))
        Path(folder, "scratch").write_text(tempfile.gettempdir())

    with run_scratch():
        run_isolated("isolated_jobs:sleep_and_record", {"folder": folder}, on_event=on_event)


def killed(*, emit):  # noqa: ARG001
    """What the out-of-memory killer does to a search."""
    import signal

    os.kill(os.getpid(), signal.SIGKILL)
