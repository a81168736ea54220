"""Streams over gRPC through the CLI (``edgec serve`` and ``edgec run --server --repeat`` in subprocesses):
``--timeout`` is per frame, and a failing stream (a stalled or killed server, an unbindable address) ends
the process with one line of error, never with a native abort (``terminate called``, SIGABRT) or gRPC's
own log lines."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from conftest import free_port
from split.test_serve import split_artifact  # noqa: F401  (the module's small int8 split artifact)

EDGEC = str(Path(sys.executable).with_name("edgec"))
PRE = ("--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")
#: gRPC's native log line prefix: severity letter, MMDD, time (``E1206 22:09:17.484506 16902 add_port.cc:83] ...``).
GRPC_LOG = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d", re.M)
#: A --repeat stream's progress line when stderr is not a terminal.
PROGRESS = re.compile(r"^  frames: \d+/\d+ answered$", re.M)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GRPC_VERBOSITY", None)  # edgec's own default applies
    return env


def _assert_clean_failure(proc: subprocess.CompletedProcess, *expected: str) -> None:
    """Exit 7 (DeviceError), one ``error:`` line, no traceback, no native abort, no gRPC log line."""
    err = proc.stderr
    assert proc.returncode == 7, (proc.returncode, err)
    assert "terminate called" not in err and "Traceback" not in err and not GRPC_LOG.search(err), err
    lines = [line for line in err.splitlines() if line.strip() and not PROGRESS.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert any(e in lines[0] for e in expected), err


def _assert_partial_figures(proc: subprocess.CompletedProcess, requested: int) -> None:
    """The frames answered before the failure are reported, not thrown away."""
    found = re.search(rf"median of the (\d+) of {requested} frames answered before the stream failed: .*"
                      r"total ([0-9.]+) ms", proc.stdout)
    assert found and int(found.group(1)) >= 1 and float(found.group(2)) > 0, proc.stdout
    assert re.search(r"^1\. class \d+", proc.stdout, re.M), proc.stdout


@contextmanager
def _server(art: Path):
    """``edgec serve ART:tail`` in a subprocess, once it accepts connections; yields (process, port)."""
    port = free_port()
    proc = subprocess.Popen([EDGEC, "serve", f"{art}:tail", "--port", str(port)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "edgec serve did not start listening"
                time.sleep(0.2)
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _client(art: Path, image: Path, port: int, repeat: int, timeout_s: float) -> subprocess.Popen:
    return subprocess.Popen([EDGEC, "run", f"{art}:head", "--server", f"127.0.0.1:{port}", "--image", str(image),
                             *PRE, "--repeat", str(repeat), "--timeout", f"{timeout_s:g}"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_streaming(server: subprocess.Popen, port: int, client: subprocess.Popen) -> None:
    """Wait until the client holds a connection to the server (its stream has begun), then a little more."""
    deadline = time.monotonic() + 120
    proc = psutil.Process(server.pid)
    connections = getattr(proc, "net_connections", None) or proc.connections
    while not any(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port for c in connections(kind="tcp")):
        assert client.poll() is None, client.communicate()
        assert time.monotonic() < deadline, "the client never connected"
        time.sleep(0.1)
    time.sleep(1.0)
    assert client.poll() is None, client.communicate()


def _finish(client: subprocess.Popen, within_s: float) -> subprocess.CompletedProcess:
    try:
        out, err = client.communicate(timeout=within_s)
    except subprocess.TimeoutExpired:
        client.kill()
        out, err = client.communicate()
        pytest.fail(f"edgec run did not end within {within_s} s: {err}")
    return subprocess.CompletedProcess(client.args, client.returncode, out, err)


def test_timeout_is_per_frame_so_a_stream_may_outlast_it(split_artifact):  # noqa: F811
    art, image = split_artifact
    with _server(art) as (_, port):
        done = _finish(_client(art, image, port, repeat=6000, timeout_s=1), within_s=300)
    assert done.returncode == 0, done.stderr
    assert "median of 6000 frames over one stream" in done.stdout, done.stdout
    assert [int(n) for n in re.findall(r"^  frames: (\d+)/6000 answered$", done.stderr, re.M)][-1:] == [6000]
    assert "terminate called" not in done.stderr and not GRPC_LOG.search(done.stderr), done.stderr
    total_ms = float(re.search(r"total ([0-9.]+) ms", done.stdout).group(1))
    assert total_ms * 6000 > 1000  # the stream lasted longer than --timeout 1 (a whole-stream deadline failed)


def test_a_stalled_then_a_killed_server_end_the_stream_with_one_line(split_artifact):  # noqa: F811
    art, image = split_artifact
    with _server(art) as (server, port):
        client = _client(art, image, port, repeat=100000, timeout_s=2)
        _wait_streaming(server, port, client)
        server.send_signal(signal.SIGSTOP)  # alive, but answers nothing: the frame's deadline passes
        try:
            stalled = _finish(client, within_s=60)
        finally:
            server.send_signal(signal.SIGCONT)
        _assert_clean_failure(stalled, "did not answer frame")
        assert "within 2 s" in stalled.stderr
        _assert_partial_figures(stalled, 100000)

        client = _client(art, image, port, repeat=100000, timeout_s=30)
        _wait_streaming(server, port, client)
        start = time.monotonic()
        server.kill()  # gone mid-stream: the connection drops, long before --timeout
        killed = _finish(client, within_s=60)
        assert time.monotonic() - start < 30
    _assert_clean_failure(killed, "failed at frame", "cannot be reached")
    _assert_partial_figures(killed, 100000)
    assert killed.returncode > 0  # not a signal (SIGABRT: -6 here, 134 in a shell)


def test_ctrl_c_of_the_client_keeps_the_answered_frames_figures(split_artifact):  # noqa: F811
    art, image = split_artifact
    with _server(art) as (server, port):
        client = _client(art, image, port, repeat=100000, timeout_s=30)
        _wait_streaming(server, port, client)
        client.send_signal(signal.SIGINT)
        done = _finish(client, within_s=60)
    assert done.returncode == 130, done.stderr
    found = re.search(r"median of the (\d+) of 100000 frames answered before it was interrupted: .*total", done.stdout)
    assert found and int(found.group(1)) >= 1, done.stdout
    assert "interrupted; nothing half-written was left behind" in done.stderr and "Traceback" not in done.stderr


def test_an_unbindable_address_prints_only_edgecs_line(split_artifact):  # noqa: F811
    art, _ = split_artifact
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for bind in ("127.0.0.1", "192.0.2.1"):  # in use; TEST-NET-1, never an address of this machine
            proc = subprocess.run([EDGEC, "serve", f"{art}:tail", "--port", str(port), "--bind", bind],
                                  env=_env(), capture_output=True, text=True, timeout=300)
            assert proc.returncode == 2, proc.stderr
            lines = [line for line in proc.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on {bind}:{port}"), proc.stderr
            assert "add_port" not in proc.stderr and not GRPC_LOG.search(proc.stderr)
            assert "terminate called" not in proc.stderr
