"""edgec profile: local with the onnxruntime baseline, over RPC to the emulated device, through a tracker."""

import json
import threading
import time

import pytest

from conftest import free_port
from edgec.flows.build import BuildOptions, build
from edgec.errors import DeviceError
from edgec.profiling.html import render_html
from edgec.artifact import open_part
from edgec.profiling.profiler import ProfileOptions, profile_part
from edgec.profiling.report import render_markdown, validate

# Per-kernel times (each kernel timed alone) sum to the end-to-end p50 within a factor of 3: a unit or
# aggregation error (seconds for ms, repeats summed) is caught; a loaded CI machine's spread is not a failure
# (the sum has measured 2.2 ms against a p50 of 3.8 ms in CI, 0.93 against 1.15 ms on a quiet machine).
KERNEL_SUM_FACTOR = 3.0


@pytest.fixture(scope="module")
def host_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    return build(BuildOptions(model="mcunetv2", target="host", out_dir=out, input_shapes=["1,3,160,160"])).artifact


@pytest.fixture(scope="module")
def rpi4_artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("art")
    return build(BuildOptions(model="mcunetv2", target="rpi4", out_dir=out, input_shapes=["1,3,64,64"],
                              verify=False, model_kwargs={"width_mult": 0.5})).artifact


def profile_artifact(ref, opts):
    _artifact, part = open_part(ref)
    return profile_part(part, opts)


def test_local_profile(host_artifact, tmp_path):
    report = profile_artifact(host_artifact, ProfileOptions(repeats=20, warmup=3))
    validate(report)
    p = report["profile"]
    assert report["kind"] == "profile" and report["complete"] and not p["emulated"]
    e2e = p["latency"]["edgec"]["latency_ms_p50"]
    assert e2e / KERNEL_SUM_FACTOR <= p["kernels_total_ms"] <= KERNEL_SUM_FACTOR * e2e, (p["kernels_total_ms"], e2e)
    assert p["latency"]["ratio_vs_onnxruntime_p50"] > 0 and p["latency"]["onnxruntime"]["runs"] == 20
    assert all(k["onnx_nodes"] for k in p["kernels"][:10])
    m = p["memory"]
    assert 0 < m["planned_activation_bytes"] <= m["unplanned_activation_bytes"]
    assert m["peak_rss_bytes"] > m["weight_bytes"] > 0
    assert len(m["live_activation_bytes"]) == len(p["kernels"])
    assert len(report["artifact"]["library_sha256"]) == 64
    md = render_markdown(report)
    assert "edgec p50 / onnxruntime p50" in md and "## Top 10 kernels" in md and "planned_activation_bytes" in md
    page = render_html(report)
    assert page.count("<img") == 3 and "data:image/png;base64," in page


def test_cli_profile_writes_three_reports(run_cli, host_artifact, tmp_path):
    code, out, err = run_cli("profile", str(host_artifact), "--repeats", "10", "--out", str(tmp_path / "p"))
    assert code == 0, err
    assert "edgec/ORT" in out and "top 5 kernels" in out and "planned activations" in out
    for name in ("report.json", "report.md", "report.html"):
        assert (tmp_path / "p" / name).stat().st_size > 0
    validate(json.loads((tmp_path / "p" / "report.json").read_text()))


def test_schema_rejects_a_broken_report(host_artifact):
    import jsonschema

    report = json.loads((host_artifact / "report.json").read_text())
    validate(report)
    del report["model"]["macs"]
    with pytest.raises(jsonschema.ValidationError):
        validate(report)


def test_unreachable_device_is_one_line(run_cli, host_artifact):
    start = time.monotonic()
    code, _, err = run_cli("profile", str(host_artifact), "--device", f"rpc://127.0.0.1:{free_port()}")
    assert code == 7 and "unreachable" in err and "Traceback" not in err
    assert time.monotonic() - start < 30


def test_host_artifact_refuses_remote_and_rpi_refuses_local(run_cli, rpi4_artifact):
    code, _, err = run_cli("profile", str(rpi4_artifact))
    assert code == 2 and "cannot run here" in err


def test_compare_reports(run_cli, tmp_path):
    from passes.helpers import bn_params, model, rand

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 3, 16, 16] x, float[8, 3, 3, 3] w, float[8] gamma, float[8] beta, float[8] mean, float[8] var)
      => (float[1, 8, 16, 16] y) {
        c = Conv <pads = [1, 1, 1, 1]> (x, w)
        n = BatchNormalization (c, gamma, beta, mean, var)
        y = Relu (n)
    }
    """
    import onnx

    path = tmp_path / "convbn.onnx"
    onnx.save(model(text, w=rand(8, 3, 3, 3), **bn_params(8)), str(path))
    a = build(BuildOptions(model=str(path), target="host", out_dir=tmp_path, name="a", passes="none"))
    b = build(BuildOptions(model=str(path), target="host", out_dir=tmp_path, name="b"))
    from edgec.profiling.compare import compare

    diff = compare(a.report, b.report)
    nodes = next(r for r in diff["metrics"] if r["metric"] == "ONNX nodes")
    assert nodes["b"] < nodes["a"] and nodes["better"] == "b"
    code, out, err = run_cli("report", "compare", str(a.artifact / "report.json"), str(b.artifact / "report.json"))
    assert code == 0 and "ONNX nodes" in out
    code, _, err = run_cli("report", "compare", str(tmp_path / "nope.json"), str(b.artifact / "report.json"))
    assert code == 2 and "report not found" in err


@pytest.fixture(scope="module")
def emulated_server():
    from edgec.devices.qemu_aarch64 import start_rpc_server, stop_rpc_server

    port = free_port()
    proc = start_rpc_server(port=port)
    yield port, proc
    stop_rpc_server(proc)


@pytest.mark.slow
@pytest.mark.qemu
def test_rpc_profile_on_emulated_device(emulated_server, rpi4_artifact, tmp_path):
    port, _ = emulated_server
    report = profile_artifact(rpi4_artifact, ProfileOptions(device=f"rpc://127.0.0.1:{port}", repeats=3))
    validate(report)
    p = report["profile"]
    assert report["complete"] and p["emulated"] and p["kernels"] and "onnxruntime" not in p["latency"]
    assert "Emulated device" in render_markdown(report)


@pytest.mark.slow
@pytest.mark.qemu
def test_tracker_with_one_emulated_board(rpi4_artifact):
    from tvm.rpc.tracker import Tracker

    from edgec.devices.qemu_aarch64 import start_rpc_server, stop_rpc_server

    tport = free_port()
    tracker = Tracker(host="127.0.0.1", port=tport, port_end=tport + 1, silent=True)
    proc = start_rpc_server(port=free_port(), tracker=f"127.0.0.1:{tport}", key="rpi4")
    try:
        report = profile_artifact(rpi4_artifact, ProfileOptions(device=f"tracker://127.0.0.1:{tport}/rpi4",
                                                                repeats=2))
        assert report["complete"] and report["profile"]["emulated"]
        with pytest.raises(DeviceError, match="no device registered as 'jetson'"):
            profile_artifact(rpi4_artifact, ProfileOptions(device=f"tracker://127.0.0.1:{tport}/jetson"))
    finally:
        stop_rpc_server(proc)
        tracker.terminate()


@pytest.mark.slow
@pytest.mark.qemu
def test_device_dropping_mid_run_keeps_partial_results(rpi4_artifact):
    from edgec.devices.qemu_aarch64 import start_rpc_server, stop_rpc_server

    port = free_port()
    proc = start_rpc_server(port=port)
    killer = threading.Timer(12.0, stop_rpc_server, args=(proc,))
    killer.start()
    try:
        # far more runs than 12 s allow on any machine: the server always drops mid-run
        report = profile_artifact(rpi4_artifact, ProfileOptions(device=f"rpc://127.0.0.1:{port}", repeats=100_000))
    finally:
        killer.cancel()
        stop_rpc_server(proc)
    assert report["complete"] is False and report["profile"]["error"]
    assert 1 <= report["profile"]["latency"]["edgec"]["runs"] < 100_000
    validate(report)
    assert proc.poll() is not None


@pytest.mark.slow
@pytest.mark.qemu
def test_ctrl_c_leaves_no_server_running():
    import signal
    import subprocess
    import sys

    from edgec.devices.qemu_aarch64 import port_open

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgec.cli", "device", "emulate", "rpi4", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert port_open("127.0.0.1", port), proc.stdout.read() if proc.poll() is not None else "not up"
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 15  # the emulated server exits on its own signal handling; allow for load
    while port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not port_open("127.0.0.1", port)
    leftovers = subprocess.run(["pgrep", "-f", f"rpc_server.*--port {port}"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == ""


def test_profile_of_a_model_reuses_a_matching_artifact(run_cli, tmp_path, monkeypatch):
    from conftest import tiny_cnn

    monkeypatch.chdir(tmp_path)
    model = tiny_cnn(tmp_path / "t.onnx")
    code, out, err = run_cli("profile", str(model), "--repeats", "3", "--no-baseline")
    assert code == 0 and "built out/t-host (no artifact there yet)" in out, err
    stamp = (tmp_path / "out" / "t-host" / "model.so").stat().st_mtime_ns
    code, out, err = run_cli("profile", str(model), "--repeats", "3", "--no-baseline")
    assert code == 0 and "reused out/t-host" in out, err
    assert (tmp_path / "out" / "t-host" / "model.so").stat().st_mtime_ns == stamp
    code, out, err = run_cli("profile", str(model), "--repeats", "3", "--no-baseline", "--passes", "none")
    assert code == 0 and "options differ: passes" in out, err


def test_html_is_rendered_markdown_and_compare_labels_differ(host_artifact, tmp_path):
    from edgec.profiling.compare import compare

    report = profile_artifact(host_artifact, ProfileOptions(repeats=3, warmup=1, baseline=False))
    page = render_html(report)
    body = page.split("<body>", 1)[1]
    assert "<table>" in body and "<th>" in body and "<code>" in body and "<em>" in body
    assert "`" not in body.split("<img", 1)[0] and "**" not in body
    other = dict(report, created="2020-01-01T00:00:00+00:00")
    diff = compare(report, other, tmp_path / "a" / "report.json", tmp_path / "b" / "report.json")
    assert diff["a"] != diff["b"] and "2020-01-01" in diff["b"]
