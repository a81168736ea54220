"""Devices: addresses, reachability, local runs; the emulated aarch64 board (slow)."""

import time

import numpy as np
import pytest

from conftest import free_port, tiny_cnn
from edgec.devices import open_device, parse_url, probe, verification_device
from edgec.errors import DeviceError, UsageError


def test_urls():
    assert str(parse_url("tracker://h:9190/rpi4")) == "tracker://h:9190/rpi4"
    assert parse_url("rpc://127.0.0.1:9090").loopback and parse_url("rpc://127.0.0.1:9090").remote
    for bad in ("rpc://host", "ssh://x:1", "tracker://h:1", "qemu"):
        with pytest.raises(UsageError, match="bad --device"):
            parse_url(bad)


def test_open_device_kinds():
    assert type(open_device("local")).__name__ == "LocalDevice"
    assert type(open_device("qemu-aarch64")).__name__ == "QemuAarch64Device"
    remote = open_device("rpc://127.0.0.1:9", arch="aarch64")
    assert type(remote).__name__ == "RemoteDevice" and remote.emulated  # loopback + foreign ISA
    assert not open_device("rpc://10.0.0.2:9", arch="aarch64").emulated
    with pytest.raises(UsageError, match="names no device"):
        verification_device("cuda-cubin")


def test_unreachable_devices_fail_fast():
    start = time.monotonic()
    with pytest.raises(DeviceError, match="unreachable"):
        probe(f"rpc://127.0.0.1:{free_port()}")
    with pytest.raises(DeviceError, match="unreachable"):
        probe(f"tracker://127.0.0.1:{free_port()}/rpi4")
    assert time.monotonic() - start < 15


def test_local_device_runs_and_times(tmp_path):
    from edgec.flows.build import BuildOptions, build
    from edgec.frontend.reference import run_ort

    art = build(BuildOptions(model=str(tiny_cnn(tmp_path / "t.onnx")), out_dir=tmp_path, passes="none")).artifact
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
    device = open_device("local", threads=1)
    (out,) = device.run(art / "model.so", [x])
    np.testing.assert_allclose(out, run_ort(str(art / "model.onnx"), {"x": x})[0], rtol=1e-4, atol=1e-4)
    with device.open() as session:
        samples, error = session.time_model(art / "model.so", [x], repeats=4)
        assert error is None and len(samples) == 4 and min(samples) > 0
        kernels = __import__("json").loads((art / "kernels.json").read_text())
        times = session.time_functions(art / "kernels.so", kernels["calls"], repeats=2)
        assert len(times) == len(kernels["calls"]) and all(t > 0 for t in times)


@pytest.mark.slow
@pytest.mark.qemu
def test_emulated_aarch64_session(tmp_path):
    """open() starts the emulated RPC server, runs, and stops it (nothing left listening)."""
    from edgec.flows.build import BuildOptions, build

    art = build(BuildOptions(model=str(tiny_cnn(tmp_path / "t.onnx", channels=4, size=8)), target="rpi4",
                             out_dir=tmp_path, passes="none", verify=False)).artifact
    x = np.zeros((1, 3, 8, 8), np.float32)
    device = open_device("qemu-aarch64")
    ref = device.run(art / "model.so", [x])
    with device.open() as session:
        assert session.emulated
        (out,) = session.run(art / "model.so", [x])
    np.testing.assert_allclose(out, ref[0], rtol=1e-5, atol=1e-5)
