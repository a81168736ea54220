"""An artifact built for a board: `edgec run` says how to run it (the emulated device, --device), runs it there
with --device, and a profile under emulation reports its threads as the emulator's, beside the board's cores."""

import contextlib

import numpy as np
import pytest

from conftest import tiny_cnn


@pytest.fixture(scope="module")
def rpi4_artifact(tmp_path_factory):
    """tiny_cnn built for rpi4 without verification (cross-compiled, no emulator started)."""
    from edgec.flows.build import BuildOptions, build

    tmp = tmp_path_factory.mktemp("rpi4")
    model = tiny_cnn(tmp / "m.onnx", size=16)
    return build(BuildOptions(model=str(model), target="rpi4", out_dir=tmp / "o", verify=False)).artifact


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return path


def test_run_names_the_emulated_device_for_a_board_artifact(run_cli, rpi4_artifact, image):
    code, _, err = run_cli("run", str(rpi4_artifact), "--image", str(image))
    err = " ".join(err.split())
    assert code == 2 and "built for 'rpi4', which cannot run on this machine" in err, err
    assert "--device qemu-aarch64" in err and "emulated device" in err and "rpc://BOARD:9090" in err
    code, _, err = run_cli("run", str(rpi4_artifact), "--image", str(image), "--device", "qemu-system-arm")
    assert code == 2 and "qemu-system-arm does not emulate" in " ".join(err.split())
    code, _, err = run_cli("run", str(rpi4_artifact), "--image", str(image), "--device", "qemu-aarch64",
                           "--server", "127.0.0.1:1")
    assert code == 2 and "do not go together" in err


@pytest.mark.slow
@pytest.mark.qemu
def test_run_on_the_emulated_device(run_cli, rpi4_artifact, image):
    """The rpi4 artifact under qemu-aarch64 gives onnxruntime's classes on the image."""
    from edgec.frontend.image import preprocess
    from edgec.frontend.reference import run_ort

    code, out, err = run_cli("run", str(rpi4_artifact), "--image", str(image), "--device", "qemu-aarch64",
                             "--mean", "0,0,0", "--std", "1,1,1", "--top", "2")
    assert code == 0, err
    pre = {"layout": "NCHW", "scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1], "resize": [16, 16]}
    ref = run_ort(str(rpi4_artifact / "model.onnx"), {"x": preprocess(image, pre)})[0][0]
    rows = [ln.split() for ln in out.splitlines() if ln.strip()[:1] in "│|" and any(c.isdigit() for c in ln)]
    classes = [int(cells[3]) for cells in rows if len(cells) > 3 and cells[3].isdigit()]
    assert classes[:2] == list(np.argsort(-ref)[:2]), out


class _EmulatedSession:
    info = {"device": "cpu (remote)", "threads": 2}

    def time_model(self, library, inputs, repeats, progress=None):
        return [1.0] * repeats, None

    def time_functions(self, library, calls, repeats, progress=None):
        return [0.1] * len(calls)


class _EmulatedDevice:
    emulated = True

    @contextlib.contextmanager
    def open(self, timeout_s=60.0, progress=None):
        yield _EmulatedSession()


def test_an_emulated_profile_reports_the_emulators_threads_and_the_boards_cores(rpi4_artifact, monkeypatch):
    import edgec.profiling.profiler as profiler
    from edgec.artifact import open_part
    from edgec.profiling.report import profile_markdown, threads_text

    monkeypatch.setattr(profiler, "open_device", lambda *_a, **_k: _EmulatedDevice())
    _, part = open_part(rpi4_artifact)
    report = profiler.profile_part(part, profiler.ProfileOptions(device="qemu-aarch64", repeats=3))
    p = report["profile"]
    assert p["emulated"] and p["device"]["threads"] == 2 and p["board_cores"] == 4
    text = threads_text(p, "rpi4")
    assert text.startswith("2 (emulated") and "this machine's 2 cores" in text and "a rpi4 board has 4 cores" in text
    assert "threads 2 (emulated" in "\n".join(profile_markdown(report))
    # a board measured over RPC is not emulated: its own thread count, no note
    assert threads_text({"threads": None, "device": {"threads": 4}, "emulated": False}) == "4"
