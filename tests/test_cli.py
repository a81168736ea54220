"""The command line: summaries, bad input (one line, distinct exit code, nothing left behind), edgec run."""

import shutil

import onnx
import pytest

from conftest import parse_model


def no_artifacts(out):
    return not out.exists() or not any(out.iterdir())


def test_zoo_and_targets_list(run_cli):
    code, out, _ = run_cli("zoo", "list")
    assert code == 0 and "mobilenetv4_hybrid_large" in out and "mcunetv2" in out
    code, out, _ = run_cli("targets", "list")
    assert code == 0 and all(t in out for t in ("host", "rpi4", "rpi5", "jetson-orin-nano", "jetson-nano"))


@pytest.mark.parametrize("args, code, text", [
    (["build", "mobilenetv5", "--target", "host"], 2, "did you mean mobilenetv4"),
    (["build", "mcunetv2", "--target", "rpi3"], 2, "did you mean rpi"),
    (["build", "mcunetv2", "--input-shape", "1,3,x,224"], 2, "bad --input-shape"),
    (["build", "mcunetv2", "--input-shape", "1,1,224,224"], 2, "not (N, 3, H, W)"),
    (["build", "missing/model.onnx"], 3, "not found"),
    (["build", "mcunetv2", "--taget", "host"], 2, "No such option: --taget"),
    (["buidl", "mcunetv2"], 2, "Did you mean 'build'"),
    (["build", "--seed", "1"], 2, "Missing argument 'MODEL'"),
])
def test_bad_input_is_one_line(run_cli, tmp_path, args, code, text):
    out_dir = tmp_path / "out"
    got, _, err = run_cli(*args, "--out", str(out_dir))
    assert got == code, err
    assert text in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2
    assert no_artifacts(out_dir)


def test_debug_is_accepted_anywhere(run_cli, tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the debug log goes to the temp folder: not the machine's /tmp
    monkeypatch.setattr(tempfile, "tempdir", None)
    code, _, err = run_cli("build", "mcunetv2", "--debug", "--target", "rpi3", "--out", str(tmp_path))
    assert code == 2 and "did you mean rpi" in err and "Traceback" in err  # --debug shows the trace


def test_malformed_and_truncated_onnx(run_cli, tmp_path, ppocr_cls):
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(ppocr_cls.read_bytes()[:50000])
    unreadable = tmp_path / "unreadable.onnx"
    shutil.copy(ppocr_cls, unreadable)
    unreadable.chmod(0)
    out_dir = tmp_path / "out"
    import os

    for path in (trunc, unreadable):
        if path is unreadable and os.geteuid() == 0:  # root reads mode-000 files
            continue
        code, _, err = run_cli("build", str(path), "--out", str(out_dir))
        assert code == 3 and "error:" in err and "Traceback" not in err
    assert no_artifacts(out_dir)


def test_wrong_input_shape_for_onnx_file(run_cli, tmp_path, ppocr_cls):
    out_dir = tmp_path / "out"
    code, _, err = run_cli("build", str(ppocr_cls), "--input-shape", "x=1,4,48,192", "--out", str(out_dir))
    assert code == 2 and "fixes it to 3" in err
    code, _, err = run_cli("build", str(ppocr_cls), "--out", str(out_dir))
    assert code == 2 and "--input-shape x=" in err
    assert no_artifacts(out_dir)


def test_unsupported_op_names_op_and_node(run_cli, tmp_path):
    model = parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 8] x) => (float[1, 8] y) {
        h = Relu(x)
        y = Celu <alpha = 1.0> (h)
    }
    """)
    model.graph.node[1].name = "my_celu"
    path = tmp_path / "celu.onnx"
    onnx.save(model, str(path))
    out_dir = tmp_path / "out"
    code, _, err = run_cli("build", str(path), "--out", str(out_dir))
    assert code == 4 and "Celu" in err and "my_celu" in err
    assert no_artifacts(out_dir)


def test_missing_cross_toolchain_prints_apt_command(run_cli, tmp_path, monkeypatch):
    import edgec.backends.tvm.compile as compile_mod

    real = compile_mod.shutil.which
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None if "aarch64" in name else real(name))
    out_dir = tmp_path / "out"
    code, _, err = run_cli("build", "mcunetv2", "--target", "rpi4", "--out", str(out_dir))
    assert code == 5 and "apt-get install -y g++-aarch64-linux-gnu" in err
    assert no_artifacts(out_dir)


def test_interrupt_leaves_nothing_behind(run_cli, tmp_path, monkeypatch):
    import edgec.backends.tvm.compile as compile_mod

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(compile_mod, "_export", interrupted)
    out_dir = tmp_path / "out"
    code, _, err = run_cli("build", "mcunetv2", "--out", str(out_dir), "--no-verify")
    assert code == 130 and "interrupted" in err
    assert no_artifacts(out_dir)


def test_build_summary_and_run_on_real_image(run_cli, tmp_path):
    from PIL import Image
    from skimage import data

    out_dir = tmp_path / "out"
    code, out, err = run_cli("build", "mobilenetv4", "--target", "host", "--out", str(out_dir))
    assert code == 0, err
    artifact = out_dir / "mobilenetv4-host"
    assert str(artifact) in out.replace("\n", "") and "PASS" in out
    img = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(img)
    code, out, err = run_cli("run", str(artifact), "--image", str(img))
    assert code == 0, err
    rows = [ln for ln in out.splitlines() if ln.strip()[:1].isdigit() or "│" in ln]
    assert sum(1 for ln in rows if any(ch.isdigit() for ch in ln)) >= 5

    from edgec.artifact import read_artifact
    from edgec.devices.local import LocalDevice
    from edgec.frontend.reference import run_ort
    from edgec.frontend.image import preprocess

    x = preprocess(img, read_artifact(artifact).manifest["preprocessing"])
    ours = LocalDevice().run(artifact / "model.so", [x])[0]
    ref = run_ort(str(artifact / "model.onnx"), {"input": x})[0]
    assert ours.argmax() == ref.argmax()

    code, _, err = run_cli("run", str(artifact), "--image", str(tmp_path / "none.png"))
    assert code == 2 and "image not found" in err
