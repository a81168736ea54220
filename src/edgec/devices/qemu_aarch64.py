"""An emulated aarch64 Linux device: a Debian rootfs run with qemu-user.

Used to verify Raspberry Pi builds without a board (``--device qemu-aarch64``,
the ``qemu-aarch64`` verification of the rpi4/rpi5 targets), and as an RPC device
(``edgec device emulate``) for trying the remote path. Timings under emulation say
nothing about a real device.

Set-up (``docs/tvm-0.27.md``, "Raspberry Pi"), cached under ``<cache>/rootfs/``:

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

import contextlib
import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import resources
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgec.cache import cache_dir
from edgec.devices.probe import tracker_keys
from edgec.devices.session import Progress, Session, rpc_session
from edgec.devices.url import DeviceURL
from edgec.errors import DeviceError, ToolchainError, UsageError
from edgec.net import tcp_reachable
from edgec.scratch import mkdtemp

if TYPE_CHECKING:
    from edgec.targets import TargetSpec

log = logging.getLogger(__name__)

SUITE = "bookworm"
PYTHON = "/usr/bin/python3.11"
TVMENV = "/opt/tvmenv"
READY = ".edgec-ready"
APT_PACKAGES = "qemu-user-static debootstrap"
EXTRA_PACKAGES = ("cloudpickle",)  # TVM's RPC server forks workers through cloudpickle


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
        _add_missing_packages(root)
        return root
    check_tools()
    say = progress or (lambda _msg: None)
    lock_path = root.parent / (root.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / READY).exists():
            return root
        tmp = mkdtemp(root.name + ".tmp-", root.parent)
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
          "--only-binary=:all:", f"apache-tvm=={tvm_v}", f"apache-tvm-ffi=={ffi_v}", "numpy", *EXTRA_PACKAGES],
         "pip install of the aarch64 TVM wheels")
    for lib in (tmp / TVMENV.lstrip("/") / "tvm" / "lib").glob("libtvm_compiler*"):
        lib.unlink()
    (tmp / READY).write_text(f"built in {time.perf_counter() - start:.0f} s\n")


def _add_missing_packages(root: Path) -> None:
    """Bring a rootfs made by an older edgec up to date (pure-Python extras only)."""
    target = root / TVMENV.lstrip("/")
    missing = [p for p in EXTRA_PACKAGES if not (target / p).exists()]
    if missing:
        _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", str(target),
              "--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "--implementation", "cp",
              "--only-binary=:all:", *missing], "pip install into the emulated rootfs")


def emulated_env(root: Path) -> dict[str, str]:
    """Environment for the emulated Python."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LD_", "VIRTUAL_ENV"))}
    env.update({"PYTHONPATH": TVMENV, "TVM_USE_RUNTIME_LIB": "1", "QEMU_LD_PREFIX": str(root),
                "PYTHONDONTWRITEBYTECODE": "1", "TVM_THREAD_POOL_SPIN_COUNT": "1000000"})
    return env


def python_command(root: Path, *args: str) -> list[str]:
    """Command line running the emulated python3.11 with ``args``."""
    return ["qemu-aarch64-static", "-L", str(root), str(root) + PYTHON, *args]


#: How to give an emulated run longer (the exit-7 message's hint).
TIMEOUT_HINT = ("give it longer: --verify-timeout SECONDS or EDGEC_VERIFY_TIMEOUT=SECONDS; "
                "or skip the check: --no-verify")


def run_artifact(library: str | Path, inputs: list[np.ndarray] | list[list[np.ndarray]], timeout: float = 600,
                 progress: Callable[[str], None] | None = None) -> list:
    """Run an aarch64 library in the emulated device with the plain TVM runtime.

    Args:
        library: aarch64 ``.so`` built by edgec.
        inputs: Input arrays in graph order, or a list of such input sets (one emulator start for all).
        timeout: Seconds before the emulated run is killed.

    Returns:
        Output arrays in graph order (a list of them per set when ``inputs`` is a list of sets).

    Raises:
        ToolchainError, DeviceError: set-up failed, or the run failed or timed out.
    """
    root = ensure_rootfs(progress)
    if progress:
        progress(f"running the artifact under qemu-aarch64 (limit {timeout:.0f} s)")
    with tempfile.TemporaryDirectory(prefix="edgec-emu-") as tmp, \
            resources.as_file(resources.files("edgec.devices").joinpath("runner.py")) as runner:
        tmpd = Path(tmp)
        many = bool(inputs) and isinstance(inputs[0], (list, tuple))
        sets = inputs if many else [inputs]
        np.savez(tmpd / "inputs.npz", **{f"s{j}_arg{i}": x for j, xs in enumerate(sets) for i, x in enumerate(xs)})
        shutil.copy(library, tmpd / "model.so")
        shutil.copy(runner, tmpd / "runner.py")
        cmd = python_command(root, str(tmpd / "runner.py"), str(tmpd / "model.so"),
                             str(tmpd / "inputs.npz"), str(tmpd / "outputs.npz"))
        try:
            # One thread: a numerical check needs no parallelism, and the pool's spinning threads slow the
            # emulator on a loaded machine (4 sets of mobilenetv4 beside two busy loops: 53 s, against 78 s).
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env={**emulated_env(root), "TVM_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired as exc:
            raise DeviceError(f"the emulated run did not finish within {timeout:.0f} s", TIMEOUT_HINT) from exc
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
            raise DeviceError(f"the artifact failed under qemu-aarch64: {tail[0][:240]}",
                              "rerun with --debug; check the target's mcpu/mattr")
        with np.load(tmpd / "outputs.npz") as data:
            outs = [[data[f"s{j}_out{i}"] for i in range(sum(1 for k in data.files if k.startswith(f"s{j}_")))]
                    for j in range(len(sets))]
        return outs if many else outs[0]


# --------------------------------------------------------------------------- RPC server

def _helpers(root: Path) -> Path:
    """Host-side helpers for the emulated Python: a wrapper re-entering qemu, and a sitecustomize.

    TVM's RPC server starts child Pythons through ``sys.executable``; without
    binfmt the kernel cannot execute the aarch64 binary directly, so
    ``sitecustomize`` points ``sys.executable`` (and multiprocessing) at a host
    shell script that runs the emulated interpreter under qemu.
    """
    folder = cache_dir("emulator", root.name)
    wrapper = folder / "python3-aarch64"
    wrapper.write_text(f"#!/bin/sh\nexec qemu-aarch64-static -L '{root}' '{root}{PYTHON}' \"$@\"\n")
    wrapper.chmod(0o755)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        f"sys.executable = {str(wrapper)!r}\n"
        "try:\n    import multiprocessing\n    multiprocessing.set_executable(sys.executable)\n"
        "except Exception:\n    pass\n")
    return folder


def rpc_server_command(root: Path, host: str, port: int, tracker: str | None = None,
                       key: str | None = None) -> tuple[list[str], dict[str, str]]:
    """Command line and environment of TVM's RPC server inside the emulated device."""
    helpers = _helpers(root)
    args = ["-m", "tvm.exec.rpc_server", "--host", host, "--port", str(port), "--port-end", str(port + 1)]
    if tracker:
        args += ["--tracker", tracker, "--key", key or "rpi4"]
    env = emulated_env(root)
    env["PYTHONPATH"] = f"{TVMENV}:{helpers}"
    return python_command(root, *args), env


def port_open(host: str, port: int) -> bool:
    """Whether something accepts TCP connections at ``host:port`` (within a second)."""
    return tcp_reachable(host, port, timeout=1) is None


def _tracker_has(tracker: str, key: str) -> bool:
    host, _, port = tracker.rpartition(":")
    try:
        return key in tracker_keys(host, int(port), timeout=3)
    except DeviceError:
        return False


def start_rpc_server(port: int = 9090, host: str = "127.0.0.1", tracker: str | None = None, key: str = "rpi4",
                     progress: Callable[[str], None] | None = None, ready_timeout: float = 180,
                     log_file: Path | None = None) -> subprocess.Popen:
    """Start TVM's RPC server in the emulated aarch64 device; return once it accepts sessions.

    The server runs in its own process group (stop it with :func:`stop_rpc_server`).
    Only loopback addresses are meant for tests; emulated timings are not device speed.

    Raises:
        UsageError: the port is taken.
        ToolchainError, DeviceError: set-up failed, or the server did not come up in time.
    """
    if port_open(host, port):
        raise UsageError(f"port {port} on {host} is already in use", "pick another --port")
    if tracker:
        t_host, _, t_port = tracker.rpartition(":")
        if not t_port.isdigit() or not port_open(t_host, int(t_port)):
            raise DeviceError(f"the tracker {tracker} is unreachable", "start it first: edgec device tracker")
    root = ensure_rootfs(progress)
    cmd, env = rpc_server_command(root, host, port, tracker, key)
    log_file = log_file or (cache_dir("emulator") / f"rpc-{port}.log")
    if progress:
        progress(f"starting the emulated RPC server on {host}:{port}")
    with open(log_file, "w") as log_fh:
        proc = subprocess.Popen(cmd, env=env, stdout=log_fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:  # Ctrl-C (or any error) while waiting must not leave the server behind
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = log_file.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
                raise DeviceError(f"the emulated RPC server exited: {tail[0][:200]}", f"see {log_file}")
            if port_open(host, port) and (tracker is None or _tracker_has(tracker, key)):
                return proc
            time.sleep(0.5)
        raise DeviceError(f"the emulated RPC server did not come up within {ready_timeout:.0f} s",
                          f"see {log_file}")
    except BaseException:
        stop_rpc_server(proc)
        raise


def stop_rpc_server(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """Stop the server and every process it started (its whole process group)."""
    import signal
    import time

    def group_alive() -> bool:
        try:
            os.killpg(proc.pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None and not group_alive():
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace  # the leader and every child it forked (the qemu server)
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_alive():
                return
            time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class QemuAarch64Device:
    """An emulated aarch64 Linux board (``--device qemu-aarch64``): the Debian rootfs under qemu-user.

    ``run`` executes an artifact once with the plain TVM runtime (no server);
    ``open`` starts TVM's RPC server inside the emulator on a free loopback port for
    the duration of the block. Its timings are labelled emulated: never device speed.
    """

    emulated = True
    description = "qemu-aarch64 emulated device, plain TVM runtime"

    def __init__(self) -> None:
        self.url = DeviceURL("qemu-aarch64")

    @classmethod
    def from_url(cls, url: DeviceURL, arch: str | None = None,  # noqa: ARG003
                 threads: int | None = None) -> QemuAarch64Device:
        """The registry's factory (``qemu-aarch64``)."""
        return cls()

    def check_tuning(self, spec: TargetSpec | None = None) -> None:  # noqa: ARG002
        """Refuse: each run starts the emulator afresh; tuning measures through its RPC server instead.

        Raises:
            UsageError: always (says to start ``edgec device emulate`` and tune over ``rpc://``).
        """
        raise UsageError("tuning cannot measure on a 'qemu-aarch64' device",
                         "start its RPC server with `edgec device emulate`, then tune with "
                         "--device rpc://127.0.0.1:9090")

    def tuning_runner(self, timeout_s: float = 120, evaluator_config: Any = None):  # noqa: ARG002
        """Not available (see :meth:`check_tuning`).

        Raises:
            UsageError: always.
        """
        self.check_tuning()

    def probe(self, timeout: float = 10.0) -> None:  # noqa: ARG002
        """Check that the emulator's tools are installed.

        Raises:
            ToolchainError: qemu-user-static / debootstrap missing (names the apt command).
        """
        if not (rootfs_path() / READY).exists():
            check_tools()

    def run(self, library: str | Path, inputs: list[np.ndarray], timeout: float = 600,
            progress: Progress | None = None) -> list[np.ndarray]:
        """Run an aarch64 library once under emulation; outputs in graph order."""
        return run_artifact(library, inputs, timeout=timeout, progress=progress)

    def run_sets(self, library: str | Path, sets: list[list[np.ndarray]], timeout: float = 600,
                 progress: Progress | None = None) -> list[list[np.ndarray]]:
        """Run several input sets in one emulator start; outputs per set."""
        return run_artifact(library, sets, timeout=timeout, progress=progress)

    @contextlib.contextmanager
    def open(self, timeout_s: float = 60.0, progress: Progress | None = None) -> Iterator[Session]:
        """Start the emulated RPC server, connect, and stop it after the block."""
        from tvm import rpc

        port = free_port()
        proc = start_rpc_server(port=port, progress=progress)
        try:
            sess = rpc.connect("127.0.0.1", port, session_timeout=int(timeout_s))
            with rpc_session(self.url, sess, emulated=True) as session:
                yield session
        finally:
            stop_rpc_server(proc)
