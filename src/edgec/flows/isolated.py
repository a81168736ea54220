"""Long native work in a child process, which the parent can always stop cleanly.

TVM's MetaSchedule runs thread pools and worker processes inside native calls; a SIGINT that
lands in the middle of one (a Ctrl-C at the terminal) can end the process with a segmentation
fault, and a run that overstays its budget cannot be cut short from the inside. So the work runs
in a child that:

* starts in its own session, so the terminal's Ctrl-C reaches only the parent;
* has ``TMPDIR`` pointed at a folder the parent owns, so every temporary folder it or its workers
  make is removed by the parent, however the child ends;
* reports events (JSON objects, one per line) on a pipe the parent reads.

On Ctrl-C, or when the hard deadline passes, the parent stops the child's whole process group
(SIGTERM, then SIGKILL after :data:`GRACE_S`), removes the folder, and raises
:class:`KeyboardInterrupt` or returns :class:`Stopped`. What the child already wrote elsewhere (a
tuning database, appended record by record) stays.

The child is ``python -m edgec.flows.isolated JOB``: JOB is a pickle of the function's dotted name
and its keyword arguments; the function is also given ``emit`` (an event sink).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec import errors
from edgec.scratch import mkdtemp

#: Seconds a stopped child gets between SIGTERM and SIGKILL.
GRACE_S = 5.0
EVENT_FD_ENV = "EDGEC_EVENT_FD"


@dataclass
class Stopped:
    """What :func:`run_isolated` returns when the hard deadline stopped the child.

    Attributes:
        seconds: Wall time of the child (s).
        last_event: The last event the child reported, or None.
    """

    seconds: float
    last_event: dict[str, Any] | None


def run_isolated(func: str, kwargs: dict[str, Any], *, on_event: Callable[[dict[str, Any]], None],
                 hard_deadline: Callable[[], float | None] = lambda: None, label: str = "worker") -> Any:
    """Run ``func(**kwargs, emit=...)`` in a child process and return its result.

    Args:
        func: ``"package.module:function"``; the function takes ``emit`` (call it with a JSON-able
            dict to send an event) besides ``kwargs``.
        kwargs: Picklable keyword arguments.
        on_event: Called in this process with every event, in order.
        hard_deadline: Called about twice a second; a ``time.time()`` value after which the child is
            stopped, or None (none now; it may change with the events, e.g. per phase).
        label: What the work is, for messages (``tuning``).

    Returns:
        The function's return value (unpickled), or :class:`Stopped` when the deadline stopped it.

    Raises:
        EdgecError: the error the function raised (same class, message and hint).
        KeyboardInterrupt: Ctrl-C in this process; the child was stopped and its temporary
            folders removed.
        DeviceError: the child was killed from outside (SIGKILL or SIGTERM: the out-of-memory killer, a user).
        RuntimeError: the child failed otherwise (a bug or a crash; the end of its log is in the message).
    """
    work = mkdtemp("edgec-isolated-")
    child_tmp = work / "tmp"
    child_tmp.mkdir()
    job = work / "job.pkl"
    job.write_bytes(pickle.dumps({"func": func, "kwargs": kwargs}))
    read_fd, write_fd = os.pipe()
    env = {**os.environ, "TMPDIR": str(child_tmp), EVENT_FD_ENV: str(write_fd)}
    started = time.time()
    last: dict[str, Any] | None = None
    proc = None
    try:
        with open(work / "child.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "edgec.flows.isolated", str(job)], env=env,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,),
                                    start_new_session=True)
        os.close(write_fd)
        write_fd = -1
        pending = b""
        open_pipe = True
        while open_pipe or proc.poll() is None:
            if open_pipe:
                ready, _, _ = select.select([read_fd], [], [], 0.5)
                if ready:
                    chunk = os.read(read_fd, 1 << 16)
                    if not chunk:
                        open_pipe = False
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            last = json.loads(line)
                            on_event(last)
            else:
                time.sleep(0.2)
            deadline = hard_deadline()
            if deadline is not None and time.time() > deadline and proc.poll() is None:
                _stop(proc)
                return Stopped(time.time() - started, last)
        return _outcome(work, proc.returncode, label)
    except BaseException:
        if proc is not None and proc.poll() is None:
            _stop(proc)
        raise
    finally:
        os.close(read_fd)
        if write_fd >= 0:
            os.close(write_fd)
        shutil.rmtree(work, ignore_errors=True)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, SIGKILL after :data:`GRACE_S`; waits for the child."""
    for sig, wait_s in ((signal.SIGTERM, GRACE_S), (signal.SIGKILL, GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait_s)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # workers the child left behind in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _outcome(work: Path, returncode: int, label: str) -> Any:
    """The child's result, or its error raised here."""
    result = work / "result.pkl"
    out = pickle.loads(result.read_bytes()) if result.is_file() else {}
    if "value" in out:
        return out["value"]
    if "error" in out:
        cls = getattr(errors, out["error"]["cls"], errors.EdgecError)
        raise cls(out["error"]["message"], out["error"]["hint"])
    if out.get("interrupted"):
        raise KeyboardInterrupt
    if returncode in (-signal.SIGKILL, -signal.SIGTERM) and "bug" not in out:  # killed from outside, not a crash
        raise errors.DeviceError(
            f"the {label} process was killed (signal {-returncode}) by something outside edgec: on Linux usually "
            "the out-of-memory killer, or another user's kill",
            "check the machine's free memory (dmesg | grep -i oom) and run it again; what it saved is kept")
    log = (work / "child.log").read_text(errors="replace").strip().splitlines()
    tail = " | ".join(line.strip() for line in log[-3:]) if log else "no output"
    how = "a Python error" if "bug" in out else f"signal {-returncode}" if returncode < 0 else f"exit {returncode}"
    raise RuntimeError(f"the {label} process failed ({how}): {tail}")


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (a ``kill -9`` of the parent must not leave a search
    writing to the database on its own, in a session of its own); a SIGTERM takes the whole process group
    (the job's workers) with it."""
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call
        os._exit(1)


def _child(job_path: str) -> int:
    """The child's side: run the job, write ``result.pkl`` beside the job."""
    fd = int(os.environ.pop(EVENT_FD_ENV))
    os.set_inheritable(fd, False)
    events = os.fdopen(fd, "w", buffering=1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it stops us with SIGTERM
    _die_with_parent()

    def emit(event: dict[str, Any]) -> None:
        events.write(json.dumps(event, default=str) + "\n")

    job = pickle.loads(Path(job_path).read_bytes())
    result = Path(job_path).with_name("result.pkl")
    module, name = job["func"].split(":")
    try:
        value = getattr(importlib.import_module(module), name)(**job["kwargs"], emit=emit)
        out: dict[str, Any] = {"value": value}
    except errors.EdgecError as exc:
        out = {"error": {"cls": type(exc).__name__, "message": exc.message, "hint": exc.hint}}
    except KeyboardInterrupt:
        out = {"interrupted": True}
    except Exception:  # a bug: its traceback goes to the log the parent quotes
        traceback.print_exc()
        out = {"bug": traceback.format_exc()}
    tmp = result.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(out))
    tmp.replace(result)
    events.close()
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
