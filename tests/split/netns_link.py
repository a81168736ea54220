"""An emulated device-server link on one Linux machine, for split computing over a real network.

Two network namespaces joined by a veth pair; the device side sends through ``tc qdisc tbf`` at a chosen
rate (netem is not in every kernel: the round trip is measured, not added). The device is a slower CPU:
its processes run on core 0 with one thread, in a cgroup whose ``cpu.shares`` are a third of those of a
busy loop pinned beside it, so it gets a quarter of the core; the server runs on core 1 with one thread.
(A CFS quota instead of shares was not a steady slower device: a head that starts after waiting for the
network ran on saved-up quota, so short heads took 0.36-0.9 of their profiled time.)

Needs root, two cores, the cgroup-v1 cpu controller at ``/sys/fs/cgroup/cpu`` and ``ip``/``tc``;
:func:`open_link` says which is missing. Everything it creates (namespaces, veth, cgroups, the busy
loop) is removed by :meth:`Link.down`. Used by ``tests/split/test_link.py`` and by
``benchmarks/bench_split_link.py``, which imports it by path (it lives here so that no test imports from
``benchmarks/``).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

EDGEC = str(Path(sys.executable).parent / "edgec")
DEV_IP, SRV_IP = "10.231.7.1", "10.231.7.2"
SHARES = (256, 768)  # cpu.shares of the device and of a busy loop beside it on core 0: a quarter of the core


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=60)


class Link:
    """The two namespaces, the veth pair, the rate limit, the device's cgroup and the load beside it."""

    def __init__(self, tag: str) -> None:
        self.dev, self.srv, self.veth = f"{tag}d", f"{tag}s", (f"{tag}a", f"{tag}b")
        self.cgroup = Path(f"/sys/fs/cgroup/cpu/edgec-{tag}")
        self.hog_cgroup = Path(f"/sys/fs/cgroup/cpu/edgec-{tag}-load")
        self.hog: subprocess.Popen | None = None

    def up(self) -> None:
        a, b = self.veth
        for cmd in (("ip", "netns", "add", self.dev), ("ip", "netns", "add", self.srv),
                    ("ip", "link", "add", a, "type", "veth", "peer", "name", b),
                    ("ip", "link", "set", a, "netns", self.dev), ("ip", "link", "set", b, "netns", self.srv),
                    ("ip", "-n", self.dev, "addr", "add", f"{DEV_IP}/24", "dev", a),
                    ("ip", "-n", self.srv, "addr", "add", f"{SRV_IP}/24", "dev", b),
                    ("ip", "-n", self.dev, "link", "set", a, "up"), ("ip", "-n", self.srv, "link", "set", b, "up"),
                    ("ip", "-n", self.dev, "link", "set", "lo", "up"), ("ip", "-n", self.srv, "link", "set", "lo", "up")):
            _sh(*cmd)
        for group, shares in ((self.cgroup, SHARES[0]), (self.hog_cgroup, SHARES[1])):
            group.mkdir()
            (group / "cpu.shares").write_text(str(shares))
        self.hog = subprocess.Popen(["sh", "-c", f"echo $$ > {self.hog_cgroup}/cgroup.procs && exec taskset -c 0 "
                                     f"{shlex.quote(sys.executable)} -c 'while True: pass'"])

    def down(self) -> None:
        if self.hog is not None:
            self.hog.kill()
            self.hog.wait(10)
        for ns in (self.dev, self.srv):  # the veth pair goes with its namespaces
            _sh("ip", "netns", "del", ns, check=False)
        for group in (self.cgroup, self.hog_cgroup):
            for _ in range(50):
                try:
                    if group.exists():
                        group.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)

    def rate(self, mbit: float) -> None:
        """Limit the device's uplink to ``mbit`` Mbit/s (token bucket of about 1 ms, at least one packet)."""
        burst = max(1600, int(mbit * 1e6 / 8 / 1000))
        _sh("ip", "netns", "exec", self.dev, "tc", "qdisc", "replace", "dev", self.veth[0], "root", "tbf",
            "rate", f"{mbit}mbit", "burst", str(burst), "limit", "2000000")

    def on_device(self, *args: str) -> list[str]:
        """A command run as the device: in its namespace and cgroup, one TVM thread, on core 0."""
        inner = shlex.join(["ip", "netns", "exec", self.dev, "env", "TVM_NUM_THREADS=1", "taskset", "-c", "0", *args])
        return ["sh", "-c", f"echo $$ > {self.cgroup}/cgroup.procs && exec {inner}"]

    def on_server(self, *args: str) -> list[str]:
        """A command run as the server: in its namespace, one TVM thread, on core 1."""
        return ["ip", "netns", "exec", self.srv, "env", "TVM_NUM_THREADS=1", "taskset", "-c", "1", *args]


def open_link(mbit: float = 100) -> tuple[Link | None, str]:
    """``(link, "")`` with the link up at ``mbit`` Mbit/s, or ``(None, reason)`` where it cannot be set up here."""
    if os.geteuid() != 0:
        return None, "network namespaces need root"
    if (os.cpu_count() or 1) < 2:
        return None, "the device and the server need a core each"
    if not Path("/sys/fs/cgroup/cpu/cgroup.procs").exists():
        return None, "no cgroup v1 cpu controller at /sys/fs/cgroup/cpu to emulate a slower device"
    net = Link(f"e{os.getpid() % 100000}")
    try:
        net.up()
        net.rate(mbit)
    except (subprocess.CalledProcessError, OSError) as e:
        net.down()
        reason = e.stderr.strip() if isinstance(e, subprocess.CalledProcessError) else str(e)
        return None, f"cannot emulate the link here: {reason[:200]}"
    return net, ""


def run(cmd: list[str], timeout: float = 900) -> str:
    """``cmd``'s stdout; raises ``RuntimeError`` with its output when it fails."""
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def serve(net: Link, artifact: Path, port: int) -> subprocess.Popen:
    """``edgec serve ARTIFACT:tail`` in the server namespace, once it says it is serving."""
    proc = subprocess.Popen(net.on_server(EDGEC, "serve", f"{artifact}:tail", "--bind", SRV_IP, "--port", str(port)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = proc.stdout.readline()
    if "serving" not in line:
        proc.kill()
        raise RuntimeError(line + proc.stdout.read(2000))
    return proc


def rtt_ms(net: Link, port: int) -> float:
    """Median round trip of a request the server refuses at once (a wrong model hash): the link's and
    gRPC's fixed cost per request (ms)."""
    code = ("import grpc, time, statistics\n"
            "from edgec.flows.serve import RUN, MODEL_KEY\n"
            f"ch = grpc.insecure_channel('{SRV_IP}:{port}')\n"
            "call = ch.unary_unary(RUN)\nts = []\n"
            "for _ in range(15):\n"
            "    t = time.perf_counter()\n"
            "    try:\n        call(b'', timeout=10, metadata=((MODEL_KEY, '0'),))\n"
            "    except grpc.RpcError:\n        pass\n"
            "    ts.append((time.perf_counter() - t) * 1e3)\n"
            "print(statistics.median(ts[3:]))\n")
    return float(run(net.on_device(sys.executable, "-c", code)).strip().splitlines()[-1])


def run_head(net: Link, artifact: Path, port: int, image: Path, frames: int, *extra: str
             ) -> tuple[dict[str, float], str]:
    """``edgec run ARTIFACT:head --server`` (and ``extra`` options) on the device for ``frames`` frames in
    lock-step: ``({"head", "transfer", "tail", "total": median ms}, its stdout)``."""
    out = run(net.on_device(EDGEC, "run", f"{artifact}:head", "--server", f"{SRV_IP}:{port}", "--image", str(image),
                            "--repeat", str(frames), "--timeout", "120", *extra))
    text = " ".join(out.split())
    return {k: float(re.search(rf"{k} ([\d.]+) ms", text).group(1)) for k in ("head", "transfer", "tail", "total")}, out
