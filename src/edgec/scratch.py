"""Scratch folders that a killed run does not leave behind for good.

Every temporary folder edgec makes carries the id of the process that made it
(``edgec-run-<pid>-<random>``, ``.<artifact>.tmp-<pid>-<random>``). A run that ends in any
ordinary way (success, an error, Ctrl-C, SIGTERM) removes its own; a run killed with
``kill -9`` (or by the out-of-memory killer) cannot, so the next run sweeps every such
folder whose process no longer exists (:func:`sweep`). A folder of a live process is never
touched, nor one another user owns.

The command line runs each command inside one ``edgec-run-*`` folder (:func:`run_scratch`)
and points ``TMPDIR`` at it, so the temporary files of the libraries edgec drives (TVM's
build folders, onnxruntime's) are swept with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

#: What follows the prefix, ``<pid>-<random>``: the pid is the run that owns the folder.
_TAG = re.compile(r"^(?P<pid>\d+)-[A-Za-z0-9_]{8}$")


def mkdtemp(prefix: str, dir: str | Path | None = None) -> Path:  # noqa: A002  the tempfile name
    """Make a folder ``<dir>/<prefix><pid>-<random>`` (``dir``: the temp folder by default), sweeping
    the folders with the same prefix that dead processes left there first.

    Raises:
        OSError: ``dir`` is not writable.
    """
    sweep(dir or tempfile.gettempdir(), prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=dir))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep(folder: str | Path, prefix: str) -> list[Path]:
    """Remove the folders ``<folder>/<prefix><pid>-<random>`` whose process ``pid`` is gone and that
    this user owns; returns those removed. Never raises (a folder that cannot be read is left)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    uid = os.getuid()
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        match = _TAG.match(entry.name[len(prefix):])
        if match is None:
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if _alive(int(match["pid"])):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def run_scratch() -> Iterator[Path]:
    """One command's scratch folder: ``edgec-run-<pid>-*`` in the temp folder, made the process's
    (and its children's) ``TMPDIR`` while the command runs, removed afterwards. The folders of
    runs that were killed (and all that those left inside them) go first."""
    base = tempfile.gettempdir()
    folder = mkdtemp("edgec-run-", base)
    before_env, before_mod = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"] = str(folder)
    tempfile.tempdir = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = before_mod
        if before_env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before_env
        shutil.rmtree(folder, ignore_errors=True)


__all__ = ["mkdtemp", "run_scratch", "sweep"]
