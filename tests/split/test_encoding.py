"""The cut tensor sent as int8: the codec's arithmetic, and a head/tail artifact whose parts verify
exactly while the encoding's own change of function is reported as fidelity."""

import json

import numpy as np
import pytest

from conftest import tiny_cnn
from edgec.errors import UsageError
from edgec.split.encoding import CutEncoding, calibrate, snr_db


def test_int8_roundtrip_is_within_half_a_step_and_keeps_zero():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 4, 5, 5)) * np.array([0.1, 1, 10, 3]).reshape(1, 4, 1, 1)).astype(np.float32)
    enc = calibrate("int8", [x])
    q = enc.encode(x)
    assert q.dtype == np.int8 and q.min() >= -128 and q.max() <= 127
    assert np.abs(enc.decode(q) - x).max() <= float(enc.scale) / 2 + 1e-6
    assert enc.roundtrip(np.zeros_like(x)).max() == 0.0  # 0 is exactly representable
    again = CutEncoding.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(again.encode(x), q)


def test_per_channel_beats_per_tensor_on_channels_of_different_ranges():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 3, 8, 8)) * np.array([0.01, 1, 100]).reshape(1, 3, 1, 1)).astype(np.float32)
    tensor, channel = calibrate("int8", [x]), calibrate("int8-per-channel", [x])
    assert channel.scale.shape == (3,) and channel.axis == 1
    small = x[:, 0]
    assert np.abs(channel.roundtrip(x)[:, 0] - small).max() < np.abs(tensor.roundtrip(x)[:, 0] - small).max() / 100
    assert snr_db(x, channel.roundtrip(x)) > snr_db(x, tensor.roundtrip(x))


def test_unknown_or_impossible_encodings_are_usage_errors():
    with pytest.raises(UsageError, match="unknown --encoding 'int4'"):
        calibrate("int4", [np.zeros((1, 2), np.float32)])
    with pytest.raises(UsageError, match="needs a cut tensor with a channel axis"):
        calibrate("int8-per-channel", [np.zeros((5,), np.float32)])


@pytest.mark.parametrize("kind", ["int8", "int8-per-channel"])
def test_int8_split_builds_verifies_and_reports_fidelity(run_cli, tmp_path, kind):
    from edgec.artifact import read_artifact

    model = tiny_cnn(tmp_path / "m.onnx", size=16)
    code, out, err = run_cli("split", str(model), "--at", "r1", "--encoding", kind, "--out", str(tmp_path / "o"),
                             "--name", "s")
    assert code == 0 and "composition: PASS" in out and f"sent as {kind}" in out, err
    art = read_artifact(tmp_path / "o" / "s")
    (link,) = art.connections
    enc = link["encoding"]
    assert enc["kind"] == kind and enc["dtype"] == "int8" and len(np.atleast_1d(enc["scale"])) == (
        8 if kind.endswith("channel") else 1)
    report = json.loads((tmp_path / "o" / "s" / "report.json").read_text())
    change = report["function_change"]
    assert change["passes"] == [f"encode_cut({kind})"] and 15 < change["cut_snr_db"] < 80
    assert 0 < change["max_abs_error"] < change["max_abs_ref"]
    assert change["inputs"] == 8 and len(enc["calibrated_on"]) == 8  # calibrated on, and resting on, 8 sets
    assert "over 8 input sets" in " ".join(out.split())
    # the parts themselves are exact: each verified against onnxruntime at the build tolerance
    assert all(p["verification"]["passed"] for p in report["parts"])
    md = (tmp_path / "o" / "s" / "report.md").read_text()
    assert "sent as affine int8" in md and "cut SNR" in md and f"encode_cut({kind})" in md
    code, _, err = run_cli("split", str(model), "--at", "r1", "--encoding", "int4", "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown --encoding 'int4'" in err


def test_edgec_run_decodes_the_int8_cut(run_cli, tmp_path):
    """Running the whole split artifact goes head -> int8 -> tail; its scores follow the encoded chain."""
    from PIL import Image

    model = tiny_cnn(tmp_path / "m.onnx", size=16)
    code, _, err = run_cli("split", str(model), "--at", "r1", "--encoding", "int8", "--out", str(tmp_path / "o"),
                           "--name", "s")
    assert code == 0, err
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype("uint8")).save(tmp_path / "i.png")
    from edgec.flows.run import run_image

    from edgec.artifact import read_artifact
    from edgec.frontend.image import preprocess
    from edgec.frontend.reference import run_ort

    pre = {"mean": [0.5] * 3, "std": [0.5] * 3}
    got = run_image(tmp_path / "o" / "s", tmp_path / "i.png", top=3, preprocessing=pre)
    art = read_artifact(tmp_path / "o" / "s")
    x = preprocess(tmp_path / "i.png", {**got.preprocessing})
    import onnx

    (cut,) = run_ort(onnx.load(str(art.parts["head"].folder / "model.onnx")), {"x": x})
    enc = CutEncoding.from_dict(art.connections[0]["encoding"])
    (logits,) = run_ort(onnx.load(str(art.parts["tail"].folder / "model.onnx")), {"r1": enc.roundtrip(cut)})
    p = np.exp(logits[0] - logits[0].max())
    p /= p.sum()
    want = np.argsort(-p)[:3]
    assert [c for c, _, _ in got.top] == list(want)
    np.testing.assert_allclose([s for _, s, _ in got.top], p[want], rtol=1e-3, atol=1e-5)


def test_bottleneck_attach_is_encoder_then_decoder_around_the_cut(tmp_path):
    """The attached encoder/decoder compute exactly the trained convolutions (checked in PyTorch)."""
    import onnx
    import torch

    from edgec.frontend import reference
    from edgec.split import split_model
    from edgec.split.bottleneck import SENT, attach, train_bottleneck

    model = onnx.load(tiny_cnn(tmp_path / "m.onnx", size=8))
    head, tail = split_model(model, "r1")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    teacher = np.maximum(rng.standard_normal((32, 8, 8, 8)), 0).astype(np.float32)
    bn = train_bottleneck(teacher, 2, epochs=2)
    h2, t2 = attach(head, tail, "r1", bn)
    assert [o.name for o in h2.graph.output] == [SENT] and t2.graph.input[0].name == SENT
    cut = reference.run_ort(head, {"x": x})[0]
    code = reference.run_ort(h2, {"x": x})[0]

    def convs(layers, v):
        v = torch.from_numpy(v)
        for w, b, relu in layers:
            v = torch.nn.functional.conv2d(v, torch.from_numpy(w), torch.from_numpy(b), padding=w.shape[-1] // 2)
            v = torch.relu(v) if relu else v
        return v.numpy()

    np.testing.assert_allclose(code, convs(bn.encoder, cut), rtol=1e-4, atol=1e-5)
    assert code.shape == (1, 2, 8, 8)
    restored = convs(bn.decoder, code)
    np.testing.assert_allclose(reference.run_ort(t2, {SENT: code})[0], reference.run_ort(tail, {"r1": restored})[0],
                               rtol=1e-4, atol=1e-5)


def test_bottleneck_errors(run_cli, tmp_path):
    from edgec.split.bottleneck import train_bottleneck

    with pytest.raises(UsageError, match="between 1 and"):
        train_bottleneck(np.zeros((4, 8, 2, 2), np.float32), 9, 1)
    with pytest.raises(UsageError, match="cut tensor"):
        train_bottleneck(np.zeros((4, 8), np.float32), 2, 1)
    model = tiny_cnn(tmp_path / "m.onnx", size=8)
    code, _, err = run_cli("split", str(model), "--at", "r1", "--encoding", "bottleneck", "--out", str(tmp_path / "o"))
    assert code == 2 and "--data DIR" in err
    code, _, err = run_cli("split", str(model), "--at", "r1", "--epochs", "3", "--out", str(tmp_path / "o"))
    assert code == 2 and "go with --encoding bottleneck" in err
    code, _, err = run_cli("split", str(model), "--at", "r1", "--encoding", "int8", "--data", str(tmp_path / "none"),
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "is not a folder" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
    from PIL import Image

    for c in ("a", "b", "c"):  # three classes for a model that scores four
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "d" / c / f"{i}.png")
    code, _, err = run_cli("split", str(model), "--at", "r1", "--encoding", "int8", "--data", str(tmp_path / "d"),
                           "--out", str(tmp_path / "o"))
    assert code == 2 and "3 class folders; the model scores 4 classes" in err
    code, _, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "10", "--encoding", "bottleneck",
                           "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"))
    assert code == 2 and "trained at one cut" in err
