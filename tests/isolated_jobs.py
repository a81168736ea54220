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
