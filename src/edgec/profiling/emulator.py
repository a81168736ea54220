"""An emulated aarch64 Linux device: a Debian rootfs run with qemu-user.

Used to verify Raspberry Pi builds without a board, and (later) as an RPC
device in tests. Timings under emulation say nothing about a real device.

Set-up (``shared/notes/tvm-0.27.md``), cached under ``<cache>/rootfs/``:

1. ``debootstrap --foreign --arch=arm64 --variant=minbase --include=python3.11,...``
   bookworm into a temporary folder; every downloaded ``.deb`` is unpacked with
   ``dpkg-deb -x`` (the second stage never runs: no root features, no binfmt);
2. the aarch64 wheels of ``apache-tvm`` (same version as the host's),
   ``apache-tvm-ffi`` and ``numpy`` are installed with the host pip into
   ``/opt/tvmenv``; the 240 MB compiler library is removed (runtime only);
3. the folder is renamed into place, so an interrupted set-up leaves nothing behind.

Programs run as ``qemu-aarch64-static -L ROOTFS ROOTFS/usr/bin/python3.11 ...``.
Host paths that do not exist inside the rootfs resolve to the host's files,
so inputs and outputs are exchanged through a host temporary folder.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from importlib.metadata import version
from pathlib import Path

import numpy as np

from edgec.cache import cache_dir
from edgec.errors import DeviceError, ToolchainError

log = logging.getLogger(__name__)

SUITE = "bookworm"
PYTHON = "/usr/bin/python3.11"
TVMENV = "/opt/tvmenv"
READY = ".edgec-ready"
APT_PACKAGES = "qemu-user-static debootstrap"


def _tvm_versions() -> tuple[str, str]:
    return version("apache-tvm"), version("apache-tvm-ffi")


def rootfs_path() -> Path:
    """Where the rootfs for the installed TVM version lives (may not exist yet)."""
    tvm_v, ffi_v = _tvm_versions()
    return cache_dir("rootfs") / f"{SUITE}-arm64-tvm{tvm_v}-ffi{ffi_v}"


def debian_mirror() -> str:
    """The Debian mirror: ``$EDGEC_DEBIAN_MIRROR``, else the one apt uses here, else deb.debian.org."""
    env = os.environ.get("EDGEC_DEBIAN_MIRROR")
    if env:
        return env
    for src in [Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")]:
        try:
            text = src.read_text()
        except OSError:
            continue
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)\s+", text, re.M)
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def check_tools() -> None:
    """Raise ToolchainError naming the apt command when qemu or debootstrap is missing."""
    missing = [t for t in ("qemu-aarch64-static", "debootstrap", "dpkg-deb") if shutil.which(t) is None]
    if missing:
        raise ToolchainError(f"the aarch64 emulator needs {', '.join(missing)}, which is not installed",
                             f"run: sudo apt-get install -y {APT_PACKAGES} (or pass --no-verify)")


def _run(cmd: list[str], what: str, timeout: float = 1800, **kw) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise DeviceError(f"{what} failed: {' | '.join(tail)[:300]}",
                          "check network access to the Debian mirror and PyPI, then retry")


def ensure_rootfs(progress: Callable[[str], None] | None = None) -> Path:
    """Return the emulated rootfs, creating it on first use (~1 min, ~450 MB).

    Args:
        progress: Called with a short description of each set-up step.

    Raises:
        ToolchainError: qemu-user-static / debootstrap missing.
        DeviceError: a download or install step failed.
    """
    root = rootfs_path()
    if (root / READY).exists():
        return root
    check_tools()
    say = progress or (lambda _msg: None)
    lock_path = root.parent / (root.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / READY).exists():
            return root
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
        try:
            _build_rootfs(tmp, say)
            if root.exists():
                shutil.rmtree(root)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


def _build_rootfs(tmp: Path, say: Callable[[str], None]) -> None:
    start = time.perf_counter()
    say("debootstrap arm64 Debian (download)")
    cmd = ["debootstrap", "--foreign", "--arch=arm64", "--variant=minbase",
           "--include=python3.11,libpython3.11-stdlib", SUITE, str(tmp), debian_mirror()]
    if os.geteuid() != 0:
        if shutil.which("fakeroot") is None:
            raise ToolchainError("debootstrap needs root or fakeroot", "run: sudo apt-get install -y fakeroot")
        cmd = ["fakeroot"] + cmd
    _run(cmd, "debootstrap")
    say("unpacking packages")
    for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"unpacking {deb.name}")
    shutil.rmtree(tmp / "var/cache/apt/archives", ignore_errors=True)
    say("installing the aarch64 TVM runtime wheels")
    tvm_v, ffi_v = _tvm_versions()
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", str(tmp / TVMENV.lstrip("/")),
          "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "--implementation", "cp",
          "--only-binary=:all:", f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}", "numpy"],
         "pip install of the aarch64 TVM wheels")
    for lib in (tmp / TVMENV.lstrip("/") / "tvm" / "lib").glob("libtvm_compiler*"):
        lib.unlink()
    (tmp / READY).write_text(f"built in {time.perf_counter() - start:.0f} s\n")


def emulated_env(root: Path) -> dict[str, str]:
    """Environment for the emulated Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "VIRTUAL_ENV"))}
    env.update({"PYTHONPATH": TVMENV, "TVM_USE_RUNTIME_LIB": "1", "QEMU_LD_PREFIX": str(root),
                "PYTHONDONTWRITEBYTECODE": "1"})
    return env


def python_command(root: Path, *args: str) -> list[str]:
    """Command line running the emulated python3.11 with ``args``."""
    return ["qemu-aarch64-static", "-L", str(root), str(root) + PYTHON, *args]


def run_artifact(library: str | Path, inputs: list[np.ndarray], timeout: float = 600,
                 progress: Callable[[str], None] | None = None) -> list[np.ndarray]:
    """Run an aarch64 library in the emulated device with the plain TVM runtime.

    Args:
        library: aarch64 ``.so`` built by edgec.
        inputs: Input arrays in graph order.
        timeout: Seconds before the emulated run is killed.

    Returns:
        Output arrays in graph order.

    Raises:
        ToolchainError, DeviceError: set-up failed, or the run failed or timed out.
    """
    root = ensure_rootfs(progress)
    if progress:
        progress("running the artifact under qemu-aarch64")
    with tempfile.TemporaryDirectory(prefix="edgec-emu-") as tmp, \
            resources.as_file(resources.files("edgec.backends.tvm").joinpath("device_runner.py")) as runner:
        tmpd = Path(tmp)
        np.savez(tmpd / "inputs.npz", **{f"arg{i}": x for i, x in enumerate(inputs)})
        shutil.copy(library, tmpd / "model.so")
        shutil.copy(runner, tmpd / "device_runner.py")
        cmd = python_command(root, str(tmpd / "device_runner.py"), str(tmpd / "model.so"),
                             str(tmpd / "inputs.npz"), str(tmpd / "outputs.npz"))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=emulated_env(root))
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"the emulated run did not finish within {timeout:.0f} s",
                              "the model may be too large for emulation; pass --no-verify") from exc
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise DeviceError(f"the artifact failed under qemu-aarch64: {tail[0][:240]}",
                              "rerun with --debug; check the target's mcpu/mattr")
        with np.load(tmpd / "outputs.npz") as data:
            return [data[f"out{i}"] for i in range(len(data.files))]
