"""The Device protocol and the registry of device kinds: a toy kind plugs in with one registration line."""

import json
import subprocess
import sys
from importlib import resources

import pytest

from conftest import tiny_cnn
from edgec.devices import (Device, DeviceURL, check_verification_kind, device_kinds, open_device, parse_url,
                           register_device, registered_device, unregister_device, verification_device)
from edgec.devices.local import LocalDevice
from edgec.errors import UsageError

BUILT_IN = ["local", "qemu-aarch64", "qemu-system-arm", "rpc", "tracker"]
FORMS = "local, qemu-aarch64, qemu-system-arm, rpc://HOST:PORT or tracker://HOST:PORT/KEY"


class ToyDevice:
    """This machine under another name, recording every library it is asked to run."""

    emulated = False
    description = "toy device (this machine, recorded)"
    runs: list = []

    def __init__(self, url, arch=None, threads=None):
        self.url, self.local = url, LocalDevice(threads)

    def probe(self, timeout=10.0):
        pass

    def run(self, library, inputs, timeout=600, progress=None):
        return self.run_sets(library, [inputs], timeout, progress)[0]

    def run_sets(self, library, sets, timeout=600, progress=None):
        ToyDevice.runs.append((str(library), len(sets)))
        return self.local.run_sets(library, sets)

    def open(self, timeout_s=60.0, progress=None):
        return self.local.open(timeout_s, progress)

    def check_tuning(self, spec):
        raise UsageError("tuning cannot measure on a 'toy' device", "tune with --device local")

    def tuning_runner(self, timeout_s=120, evaluator_config=None):
        self.check_tuning(None)


@pytest.fixture
def toy():
    ToyDevice.runs = []
    with registered_device("toy", ToyDevice, verification=True, description="a test's toy board") as kind:
        yield kind
    assert "toy" not in [k.name for k in device_kinds()]


def _target_file(tmp_path, verify: str):
    """The host target's data under another name, verified on ``verify``."""
    data = json.loads(resources.files("edgec.targets").joinpath("host.json").read_text())
    data.update(name="toyhost", verify=verify)
    path = tmp_path / "toyhost.json"
    path.write_text(json.dumps(data))
    return path


def test_a_registered_toy_kind_verifies_a_build(tmp_path, toy):
    from edgec.flows.build import BuildOptions, build

    model = tiny_cnn(tmp_path / "t.onnx", channels=4, size=8)
    result = build(BuildOptions(model=str(model), target=str(_target_file(tmp_path, "toy")), out_dir=tmp_path / "out",
                                passes="none"))
    v = result.report["verification"]
    assert len(ToyDevice.runs) == 1 and ToyDevice.runs[0][0].endswith("model.so") and ToyDevice.runs[0][1] >= 2
    assert v["passed"] is True and v["method"] == ToyDevice.description and v["emulated"] is False
    assert result.report["target"]["verify"] == "toy"


def test_a_target_naming_an_unregistered_kind_is_refused_before_any_work(tmp_path, monkeypatch):
    import edgec.flows.build
    from edgec.flows.build import BuildOptions, build

    monkeypatch.setattr(edgec.flows.build, "lower", lambda *a, **k: pytest.fail("lowered before the check"))
    path = _target_file(tmp_path, "toy")
    with pytest.raises(UsageError) as exc:
        build(BuildOptions(model=str(tiny_cnn(tmp_path / "t.onnx")), target=str(path), out_dir=tmp_path / "out"))
    line = exc.value.one_line()
    assert line.startswith(f"target '{path}': verify 'toy' names no registered verification device")  # the file
    assert "\n" not in line
    assert "local, qemu-aarch64, qemu-system-arm, cuda-cubin" in line
    with pytest.raises(UsageError, match="verify method 'toy' names no device"):
        verification_device("toy")
    check_verification_kind("qemu-aarch64")
    check_verification_kind("cuda-cubin", checks=("cuda-cubin",))
    with pytest.raises(UsageError, match="'rpc' names no registered verification device"):
        check_verification_kind("rpc")  # a kind, but not one a target may verify on


def test_parse_registered_and_unregistered_forms():
    assert [k.name for k in device_kinds()][:5] == BUILT_IN
    assert parse_url(None) == parse_url("local") == DeviceURL("local")
    assert parse_url("qemu-system-arm") == DeviceURL("qemu-system-arm")
    assert parse_url("rpc://h:9090/") == DeviceURL("rpc", "h", 9090)
    assert parse_url("tracker://10.0.0.2:9190/rpi4") == DeviceURL("tracker", "10.0.0.2", 9190, "rpi4")
    for bad in ("my-toy", "toyrpc://h:1/k", "rpc://h", "rpc", "local://h:1", "tracker://h:1", ""):
        with pytest.raises(UsageError) as exc:
            parse_url(bad)
        assert exc.value.message == f"bad --device '{bad}'" and exc.value.hint == f"use {FORMS}"
    with pytest.raises(UsageError) as exc:
        parse_url("rpc://h:70000")
    assert exc.value.message == "bad --device 'rpc://h:70000': port 70000 is not in 1..65535"

    register_device("my-toy", ToyDevice)
    register_device("toyrpc", ToyDevice, address="host:port/key")
    try:
        assert parse_url("my-toy") == DeviceURL("my-toy") and str(parse_url("my-toy")) == "my-toy"
        url = parse_url("toyrpc://127.0.0.1:9/k")
        assert url == DeviceURL("toyrpc", "127.0.0.1", 9, "k") and url.remote and str(url) == "toyrpc://127.0.0.1:9/k"
        with pytest.raises(UsageError) as exc:
            parse_url("toyrpc://127.0.0.1:9")  # the kind declared a key
        assert exc.value.hint == f"use {FORMS.replace(' or ', ', ')}, my-toy or toyrpc://HOST:PORT/KEY"
        assert isinstance(open_device("toyrpc://127.0.0.1:9/k"), ToyDevice)
        with pytest.raises(ValueError, match="already registered"):
            register_device("my-toy", ToyDevice)
        for name, kw in (("My Toy", {}), ("x", {"address": "host"}),
                         ("y", {"address": "host:port", "verification": True})):
            with pytest.raises(ValueError):
                register_device(name, ToyDevice, **kw)
    finally:
        unregister_device("my-toy")
        unregister_device("toyrpc")
    with pytest.raises(UsageError, match="bad --device 'my-toy'"):
        parse_url("my-toy")
    assert [k.name for k in device_kinds()] == BUILT_IN


def test_open_device_gives_the_protocol_for_every_built_in_kind_without_importing_tvm():
    code = """
import sys
from edgec.devices import Device, open_device
urls = ["local", "qemu-aarch64", "qemu-system-arm", "rpc://127.0.0.1:9", "tracker://127.0.0.1:9/rpi4"]
devices = [open_device(u, arch="aarch64") for u in urls]
print(([type(d).__name__ for d in devices if isinstance(d, Device)], [str(d.url) for d in devices],
       [m for m in sys.modules if m == "tvm" or m.startswith("tvm.")]))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str((["LocalDevice", "QemuAarch64Device", "QemuSystemArmDevice", "RemoteDevice",
                                         "RemoteDevice"],
                                        ["local", "qemu-aarch64", "qemu-system-arm", "rpc://127.0.0.1:9",
                                         "tracker://127.0.0.1:9/rpi4"], []))
    assert isinstance(ToyDevice(DeviceURL("toy")), Device) and not isinstance(object(), Device)

    class Untunable:  # everything but the tuning members: not a device
        url, emulated, description = DeviceURL("toy"), False, "no tuning members"
        probe, run, run_sets, open = ToyDevice.probe, ToyDevice.run, ToyDevice.run_sets, ToyDevice.open

    assert not isinstance(Untunable(), Device)


@pytest.mark.parametrize("device, what, hint", [
    ("qemu-aarch64", "tuning cannot measure on a 'qemu-aarch64' device", "edgec device emulate"),
    ("qemu-system-arm", "tuning cannot measure on a 'qemu-system-arm' device", "not available for microcontrollers"),
])
def test_a_device_that_cannot_tune_is_refused_before_any_work(tmp_path, monkeypatch, run_cli, device, what, hint):
    import edgec.flows.tune
    from edgec.flows.build import BuildOptions

    monkeypatch.setattr(edgec.flows.tune, "lower", lambda *a, **k: pytest.fail("lowered before the device was checked"))
    model = str(tiny_cnn(tmp_path / "t.onnx"))
    with pytest.raises(UsageError) as exc:
        edgec.flows.tune.tune(BuildOptions(model=model, out_dir=tmp_path), trials=2, device=device)
    assert exc.value.message == what and hint in exc.value.hint and "\n" not in exc.value.one_line()
    with pytest.raises(UsageError, match="tuning cannot measure"):
        open_device(device).tuning_runner()
    code, _, err = run_cli("tune", model, "--trials", "2", "--device", device, "--db", str(tmp_path / "db"))
    assert code == 2 and what in err


def test_local_tuning_of_another_isa_is_refused_by_the_device():
    from edgec.backends.tvm.tuning import check_tune_request
    from edgec.targets import get_target

    rpi4 = get_target("rpi4")
    with pytest.raises(UsageError, match="'rpi4' code cannot run on this machine"):
        check_tune_request(rpi4, 4, None, open_device("local"))
    check_tune_request(rpi4, 4, None, open_device("rpc://10.0.0.2:9090", arch="aarch64"))  # the board decides
    with pytest.raises(UsageError, match="no tuning budget"):  # the tuner's own checks come first
        check_tune_request(rpi4, None, None, open_device("qemu-aarch64"))


def test_the_tuner_gets_its_runner_from_the_device():
    from tvm.s_tir import meta_schedule as ms

    from edgec.backends.tvm.tuning import _make_runner

    class Asked:
        url, emulated, description = DeviceURL("toy"), False, "asked"

        def tuning_runner(self, timeout_s=120, evaluator_config=None):
            self.asked = (timeout_s, evaluator_config)
            return "the device's runner"

    device = Asked()
    assert _make_runner(device, timeout_sec=7) == "the device's runner"
    assert device.asked[0] == 7 and device.asked[1].number == 3 and device.asked[1].repeat == 1

    assert isinstance(_make_runner(open_device("local")), ms.runner.LocalRunner)
    remote = open_device("tracker://127.0.0.1:9/rpi4", arch="aarch64")
    opened = []
    remote.connect = lambda timeout_s: opened.append(timeout_s) or "session"
    runner = _make_runner(remote, timeout_sec=30)
    assert isinstance(runner, ms.runner.RPCRunner) and runner.rpc_config.tracker_key == "rpi4"
    assert runner.f_create_session(runner.rpc_config) == "session" and opened == [30]
