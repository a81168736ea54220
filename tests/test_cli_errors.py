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
    return d


CASES = [
    (["build", "mcunetv2", "--taget", "host"], 2, "No such option: --taget"),
    (["buidl", "mcunetv2"], 2, "Did you mean 'build'"),
    (["build"], 2, "Missing argument 'MODEL'"),
    (["build", "mcunetv2", "--out", "{d}/a_file"], 2, "is a file, not a folder"),
    (["build", "mcunetv2", "--out", "{d}/a_file/sub"], 2, "cannot be written"),
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
    (["build", "{d}/model.tflite"], 3, "TensorFlow Lite model, not ONNX"),
    (["build", "{d}/model.pt"], 3, "PyTorch file (torch.save), not ONNX"),
    (["build", "mcunetv2", "--weights", "{d}/bad_weights.pt", "--width-mult", "0.5"], 3, "do not match the model"),
    (["build", "mcunetv2", "--passes", "fold_batchnorm(x=1)"], 2, "has no option 'x'"),
    (["profile", "out/nothing", "--repeats", "0"], 2, "'--repeats'"),
    (["profile", "out/nothing", "--threads", "-2"], 2, "'--threads'"),
    (["profile", "out/nothing", "--device", "ssh://x"], 2, "bad --device"),
    (["run", "out/nothing", "--image", "x.png"], 2, "not an edgec artifact"),
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
