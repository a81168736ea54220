"""Split encodings judged on a labelled task trained here (scikit-learn's digits): the int8 cut
keeps top-1, the learned bottleneck sends far fewer bytes than a JPEG at (about) the same accuracy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgec.frontend import reference

pytestmark = pytest.mark.slow


def _report(path):
    return json.loads((path / "report.json").read_text())


def test_the_digits_model_learns_and_exports(digits):
    assert digits.accuracy > 0.85
    from edgec.frontend.data import load_image_folder

    val = load_image_folder(digits.val_dir, (1, 3, 64, 64), None)
    assert len(val) == 360 and val.classes == tuple(str(d) for d in range(10))
    session = reference.ort_session(str(digits.onnx_path))
    scores = np.concatenate([session.run(None, {"input": val.x[i:i + 1]})[0] for i in range(len(val))])
    assert abs(float(np.mean(scores.argmax(-1) == val.labels)) - digits.accuracy) < 0.01  # ONNX == PyTorch


def test_int8_cut_keeps_top1_on_the_task(digits, run_cli, tmp_path):
    code, out, err = run_cli("split", str(digits.onnx_path), "--at", "add_3", "--encoding", "int8", "--data",
                             str(digits.onnx_path.parent), "--out", str(tmp_path), "--name", "s")
    assert code == 0, err
    change = _report(tmp_path / "s")["function_change"]
    task = change["task"]
    assert change["inputs"] == 8  # the function-change figure rests on 8 held-out images
    assert task["images"] == 360 and task["top1_agreement"] >= 0.99
    assert abs(task["accuracy_split"] - task["accuracy_whole"]) <= 0.01
    assert task["bytes_sent"] == 24 * 4 * 4 and "labelled images" in out
    from edgec.artifact import read_artifact

    assert read_artifact(tmp_path / "s").manifest["preprocessing"]["mean"] == [0, 0, 0]  # recorded in the file


def test_learned_bottleneck_sends_under_a_quarter_of_a_jpeg_within_a_point(digits, run_cli, tmp_path):
    from edgec.artifact import read_artifact

    code, out, err = run_cli("split", str(digits.onnx_path), "--at", "add_3", "--encoding", "bottleneck",
                             "--bottleneck-channels", "16", "--epochs", "60", "--data", str(digits.onnx_path.parent),
                             "--out", str(tmp_path), "--name", "b")
    assert code == 0 and "composition: PASS" in out, err
    report = _report(tmp_path / "b")
    change = report["function_change"]
    assert change["passes"] == ["learned_bottleneck(channels=16)+encode_cut(int8)"]
    task = change["task"]
    assert task["bytes_sent"] == 16 * 4 * 4 and task["bytes_saved_vs_jpeg"] >= 0.75
    assert task["accuracy_split"] >= task["accuracy_whole"] - 0.01
    assert change["bottleneck"]["channels"] == 16 and change["bottleneck"]["epochs"] == 60
    assert read_artifact(tmp_path / "b").connections[0]["from"]["tensor"] == "bottleneck"
    head = onnx.load(tmp_path / "b" / "head" / "model.onnx")
    assert [d.dim_value for d in head.graph.output[0].type.tensor_type.shape.dim] == [1, 16, 4, 4]
