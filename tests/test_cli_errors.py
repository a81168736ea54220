"""Every user-reachable mistake: the right exit code, one line, no traceback, nothing left behind, before any work."""

import os

import onnx
import pytest
import torch

from conftest import tiny_cnn


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    tiny = tiny_cnn(d / "tiny.onnx")
    m = onnx.load(str(tiny))
    (d / "ext").mkdir()
    onnx.save(m, str(d / "ext" / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    os.remove(d / "ext" / "w.bin")
    (d / "esc").mkdir()
    onnx.save(m, str(d / "esc" / "model.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0)
    esc = onnx.load(str(d / "esc" / "model.onnx"), load_external_data=False)
    for t in esc.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../../w.bin"
    onnx.save(esc, str(d / "esc" / "model.onnx"))
    (d / "model.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(64))
    torch.save({"a": torch.zeros(2)}, d / "model.pt")
    torch.save({"features.0.0.weight": torch.zeros(1)}, d / "bad_weights.pt")
    dyn = onnx.load(str(tiny))
    dyn.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(dyn, str(d / "dynamic.onnx"))
    (d / "a_file").write_text("x")
    (d / "empty.npz").write_bytes(b"")
    import onnx.helper as hh

    huge = hh.make_graph([hh.make_node("Relu", ["x"], ["y"])], "huge",
                         [hh.make_tensor_value_info("x", 1, [1, 3, 100000, 100000])],
                         [hh.make_tensor_value_info("y", 1, [1, 3, 100000, 100000])])
    onnx.save(hh.make_model(huge, opset_imports=[hh.make_opsetid("", 17)]), str(d / "huge.onnx"))
    (d / "victim").mkdir()
    (d / "victim" / "important.txt").write_text("keep")
    import onnx.helper as h

    g = h.make_graph([h.make_node("Identity", ["x"], ["y"])], "s", [h.make_tensor_value_info("x", 8, [1])],
                     [h.make_tensor_value_info("y", 8, [1])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(d / "string.onnx"))
    import json

    from edgec.targets import get_target

    bad = get_target("rpi4").to_dict()
    bad.update(name="bad-cpu")
    bad["tvm"]["mcpu"] = "cortex-z99"
    (d / "bad-cpu.json").write_text(json.dumps(bad))
    odd = get_target("host").to_dict()
    odd.update(name="odd-board", verify="qemu-riscv")
    (d / "odd-verify.json").write_text(json.dumps(odd))
    (d / "full").mkdir()
    (d / "full" / "x.txt").write_text("x")
    return d


CASES = [
    (["build", "mcunetv2", "--taget", "host"], 2, "No such option: --taget"),
    (["buidl", "mcunetv2"], 2, "Did you mean 'build'"),
    (["build"], 2, "Missing argument 'MODEL'"),
    (["build", "mcunetv2", "--out", "{d}/a_file"], 2, "is a file, not a folder"),
    (["build", "mcunetv2", "--out", "{d}/a_file/sub"], 2, "cannot be created"),
    (["build", "mcunetv2", "--input-shape", "1,3,100000,100000"], 2, "over the"),
    (["build", "ghostnet", "--width-mult", "0.5"], 2, "--width-mult does not apply to 'ghostnet'"),
    (["build", "mcunetv2", "--width-mult", "-1"], 2, "is outside"),
    (["build", "mcunetv2", "--name", "../../x"], 2, "not a plain folder name"),
    (["build", "{d}/tiny.onnx", "--weights", "{d}/model.pt"], 2, "--weights applies to zoo models"),
    (["build", "mcunetv2", "--input-shape", "x=1,3,64,64"], 2, "zoo models have one input, 'input'"),
    (["build", "{d}/dynamic.onnx", "--input-shape", "x=N,3,16,16"], 2, "replace N with sizes"),
    (["build", "{d}/dynamic.onnx"], 2, "pass --input-shape x=1,3,16,16"),
    (["build", "{d}/ext/model.onnx"], 3, "needs external data file 'w.bin', which is missing"),
    (["build", "{d}/esc/model.onnx"], 3, "outside the model's folder"),
    (["build", "{d}/model.tflite"], 3, "has no subgraph: a TFLite file with no model in it"),
    (["build", "{d}/model.pt"], 3, "PyTorch file (torch.save), not ONNX"),
    (["build", "mcunetv2", "--verify-inputs", "{d}/empty.npz"], 2, "empty.npz is empty"),
    (["tune", "mcunetv2", "--minutes", "inf"], 2, "--minutes inf is not a number of minutes below 100000"),
    (["tune", "mcunetv2", "--minutes", "0.1"], 2, "greater than or equal to 0.25"),
    (["build", "mcunetv2", "--weights", "{d}/bad_weights.pt", "--width-mult", "0.5"], 3, "do not match the model"),
    (["build", "mcunetv2", "--passes", "fold_batchnorm(x=1)"], 2, "has no option 'x'"),
    (["profile", "out/nothing", "--repeats", "0"], 2, "'--repeats'"),
    (["profile", "out/nothing", "--threads", "-2"], 2, "'--threads'"),
    (["profile", "out/nothing", "--device", "ssh://x"], 2, "bad --device"),
    (["run", "out/nothing", "--image", "x.png"], 2, "out/nothing does not exist"),
    (["run", "{d}/victim", "--image", "x.png"], 2, "not an edgec artifact"),
    (["build", "mcunetv2", "--seed", "99999999999999999999999"], 2, "'--seed'"),
    (["build", "{d}/tiny.onnx", "--name", "x" * 250], 2, "--name is 250 bytes long"),
    (["build", "{d}/tiny.onnx", "--out", "/proc/edgec"], 2, "--out /proc/edgec cannot be written"),
    (["build", "{d}/tiny.onnx", "--dump-ir", "{d}/a_file"], 2, "--dump-ir"),
    (["build", "{d}/huge.onnx"], 2, "the model's inputs take 120.0 GB"),
    (["build", "{d}/dynamic.onnx", "--input-shape", "x=1,3,16,16", "--input-shape", "x=2,3,16,16"], 2,
     "given twice"),
    (["tune", "{d}/tiny.onnx", "--trials", "2", "--db", "{d}/a_file"], 2, "--db"),
    (["profile", "out/nothing", "--out", "{d}/a_file"], 2, "--out"),
    (["build", "{d}/tiny.onnx", "--out", "{d}", "--name", "victim"], 2, "not an edgec artifact; edgec will not replace"),
    (["build", "{d}/tiny.onnx", "--name", "."], 2, "not a plain folder name"),
    (["build", "[/]x.onnx"], 3, "ONNX file not found: [/]x.onnx"),
    (["build", "mcunetv2", "--target", "[/]"], 2, "unknown target '[/]'"),
    (["build", "mcunetv2", "--target", "{d}/bad-cpu.json"], 2, "LLVM knows no CPU 'cortex-z99'"),
    (["build", "mcunetv2", "--target", "{d}/none.json"], 2, "target file"),
    (["build", "{d}/string.onnx"], 4, "is a string tensor"),
    (["build", "mcunetv2", "--passes", ""], 2, "--passes is empty"),
    (["build", "mcunetv2", "--passes", "none,fold_batchnorm"], 2, "cannot be combined"),
    (["build", "mcunetv2", "--seed", "-1"], 2, "'--seed'"),
    (["profile", "out/nothing", "--device", ""], 2, "bad --device"),
    (["profile", "out/nothing", "--device", "rpc://h:99999"], 2, "not in 1..65535"),
    (["build", "{d}/tiny.onnx", "--target", "{d}/odd-verify.json"], 2,
     "odd-verify.json': verify 'qemu-riscv' names no registered verification device"),
    (["merge-table", "{d}/tiny.onnx", "--out", "{d}"], 2, "is a folder"),
    (["zoo", "digits", "{d}/full"], 2, "is not empty"),
]


@pytest.mark.parametrize("args, code, text", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_mistakes_are_one_line_with_the_right_code(run_cli, files, tmp_path, args, code, text):
    out = tmp_path / "out"
    argv = [a.format(d=files) for a in args]
    if argv[0] == "build" and "--out" not in argv and len(argv) > 1:
        argv += ["--out", str(out)]
    got, _, err = run_cli(*argv)
    assert got == code, err
    assert text in err, err
    lines = [ln for ln in err.strip().splitlines() if not ln.strip().startswith("·")]  # steps done before
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    assert not out.exists() or not any(out.iterdir())
    assert (files / "victim" / "important.txt").read_text() == "keep"


def test_a_malformed_input_limit_is_a_usage_error(run_cli, files, monkeypatch):
    monkeypatch.setenv("EDGEC_MAX_INPUT_BYTES", "abc")
    code, out, err = run_cli("build", str(files / "tiny.onnx"), "--out", str(files / "never"))
    assert code == 2 and "EDGEC_MAX_INPUT_BYTES 'abc' is not a whole number" in err and "Traceback" not in err, err
    assert not (files / "never").exists()


def test_zoo_digits_refusal_prints_nothing_but_the_error(run_cli, files):
    code, out, err = run_cli("zoo", "digits", str(files / "full"))
    assert code == 2 and out.strip() == "" and err.strip().startswith("error:"), (out, err)


def test_a_damaged_artifact_is_a_model_error(run_cli, files, tmp_path):
    import json

    code, _, err = run_cli("build", str(files / "tiny.onnx"), "--out", str(tmp_path), "--name", "a", "--no-verify")
    assert code == 0, err
    art = tmp_path / "a"
    from PIL import Image

    img = tmp_path / "i.png"
    Image.new("RGB", (20, 20)).save(img)
    manifest = json.loads((art / "manifest.json").read_text())
    manifest["preprocessing"] = {"resize": [16, 16], "mean": "oops", "std": [1, 1, 1]}
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("run", str(art), "--image", str(img))
    assert code == 3 and "preprocessing is malformed" in err, (code, err)
    manifest["preprocessing"]["mean"] = [0, 0, 0]
    (art / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli("run", str(art), "--image", str(tmp_path))
    assert code == 2 and "is a directory" in err
    (art / "model.so").write_bytes((art / "model.so").read_bytes()[:1000])
    for args in (["run", str(art), "--image", str(img)], ["profile", str(art), "--repeats", "2"]):
        code, _, err = run_cli(*args)
        assert code == 3 and "is damaged" in err and "Traceback" not in err, err
    (art / "model.so").unlink()
    code, _, err = run_cli("run", str(art), "--image", str(img))
    assert code == 3 and "model.so is missing" in err


def test_an_interrupt_inside_a_tvm_callback_is_an_interrupt(run_cli, tmp_path, monkeypatch):
    """Ctrl-C while TVM's C++ runs: TVM notices the signal and raises its own error, which the
    schedule rule's or the compiler fallback's ``except Exception`` used to swallow (the build went
    on to exit 0, or to exit 8). It must stop with 130 and leave nothing behind."""
    from edgec import errors
    from edgec.backends.tvm import default_schedule

    def interrupted(func, target):
        try:
            errors.on_interrupt(2, None)  # what the SIGINT handler does...
        except KeyboardInterrupt:
            raise RuntimeError("KeyboardInterrupt") from None  # ...and what reaches Python from TVM's C++

    monkeypatch.setattr(default_schedule, "parallel_vectorize", interrupted)
    model = tiny_cnn(tmp_path / "t.onnx")
    code, _, err = run_cli("build", str(model), "--out", str(tmp_path / "out"), "--no-verify", "--no-tune-db")
    assert code == 130 and "interrupted" in err, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    errors.clear_interrupt()


@pytest.fixture(scope="module")
def tiny_artifact(tmp_path_factory):
    from edgec.flows.build import BuildOptions, build

    d = tmp_path_factory.mktemp("art")
    art = build(BuildOptions(model=str(tiny_cnn(d / "tiny.onnx")), out_dir=d, verify=False)).artifact
    from PIL import Image
    import numpy as np

    Image.fromarray((np.random.default_rng(0).random((20, 20, 3)) * 255).astype("uint8")).save(d / "img.png")
    return art, d / "img.png"


RUN_CASES = [
    (["--size", "8,8"], "--size 8,8 does not fit 'main', which takes [1, 3, 16, 16] (NCHW)"),
    (["--layout", "NHWC"], "the image becomes a [1, 16, 16, 3] tensor"),
    (["--std", "0,0,0"], "--std 0.0,0.0,0.0 divides by zero"),
    (["--size", "0,0"], "needs whole numbers H,W from 1 to 8192"),
    (["--size", "100000,100000"], "needs whole numbers H,W from 1 to 8192"),
    (["--size", "nan,1"], "needs 2 finite numbers"),
    (["--mean", "1e38,1e38,1e38", "--std", "1e-38,1e-38,1e-38"], "pixels into infinite values"),
    (["--size", "2.5,3"], "needs whole numbers"),
]


@pytest.mark.parametrize("extra, text", RUN_CASES, ids=[" ".join(c[0]) for c in RUN_CASES])
def test_run_flag_mistakes_are_usage_errors(run_cli, tiny_artifact, extra, text):
    art, img = tiny_artifact
    code, _, err = run_cli("run", str(art), "--image", str(img), "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5",
                           *extra)
    assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err


def test_run_refuses_a_model_without_an_image_input(run_cli, tmp_path):
    import onnx.helper as h

    from edgec.flows.build import BuildOptions, build

    g = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "mlp", [h.make_tensor_value_info("x", 1, [1, 16])],
                     [h.make_tensor_value_info("y", 1, [1, 16])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), str(tmp_path / "mlp.onnx"))
    art = build(BuildOptions(model=str(tmp_path / "mlp.onnx"), out_dir=tmp_path, verify=False)).artifact
    (tmp_path / "img.png").write_bytes(b"")
    code, _, err = run_cli("run", str(art), "--image", str(tmp_path / "img.png"), "--mean", "0.5,0.5,0.5",
                           "--std", "0.5,0.5,0.5")
    assert code == 2 and "not an image batch" in err, err


def test_the_host_entry_of_targets_list_json_is_a_target_file(run_cli, tmp_path):
    import json

    from edgec.targets import get_target

    code, out, _ = run_cli("targets", "list", "--json")
    assert code == 0
    data = json.loads(out)
    host = next(t for t in (data if isinstance(data, list) else data["targets"]) if t["name"] == "host")
    host["name"] = "my-host"
    (tmp_path / "my-host.json").write_text(json.dumps(host))
    spec = get_target(str(tmp_path / "my-host.json"))
    assert spec.name == "my-host" and spec.extra["isa"] == host["isa"]


def test_debug_keeps_the_whole_error_chain_in_a_log_and_says_where(run_cli, tmp_path, monkeypatch):
    import re
    import tempfile
    from pathlib import Path

    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the log goes to the temp folder: not the machine's /tmp
    monkeypatch.setattr(tempfile, "tempdir", None)
    code, _, err = run_cli("build", str(tmp_path / "missing.onnx"), "--debug")
    assert code == 3
    m = re.search(r"the whole log \(every cause, untruncated\): (\S+)", err)
    assert m and "ModelError" in Path(m.group(1)).read_text() and Path(m.group(1)).parent == tmp_path
