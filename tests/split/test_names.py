"""Split artifact names: the default names the cut and the encoding (two splits of one model do not replace
each other), and an artifact of another kind in the way is refused before any work."""

import json

import pytest

from conftest import tiny_cnn


def _fake_one_part(folder):
    """An earlier `edgec build` artifact, as far as its manifest says."""
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"library": "model.so", "target": {"name": "host"}}))


def test_default_name_holds_cut_and_encoding_sanitized():
    from edgec.artifact import MAX_NAME_BYTES
    from edgec.flows.request import BuildOptions
    from edgec.flows.split import split_name

    assert split_name(BuildOptions(model="mobilenetv4"), "add_3", "int8", "host", "host") == \
        "mobilenetv4-split-add_3-int8-host-host"
    name = split_name(BuildOptions(model="dir/my model.onnx"), "/blocks/blocks.0/Add_output_0:0", "fp32", "rpi4",
                      "host")
    assert name == "my_model-split-blocks_blocks.0_Add_output_0_0-fp32-rpi4-host"
    long = split_name(BuildOptions(model="m.onnx"), "/x" * 300, "int8-per-channel", "host", "host")
    other = split_name(BuildOptions(model="m.onnx"), "/x" * 299 + "/y", "int8-per-channel", "host", "host")
    assert len(long.encode()) <= MAX_NAME_BYTES and long != other and long.endswith("-int8-per-channel-host-host")
    assert split_name(BuildOptions(model="m.onnx"), "r1", "bottleneck", "host", "host", 4).endswith(
        "-r1-bottleneck4-host-host")


def test_two_splits_of_one_model_keep_both_artifacts(run_cli, tmp_path):
    model = tiny_cnn(tmp_path / "m.onnx", size=16)
    out = tmp_path / "o"
    (out / "m-host").mkdir(parents=True)
    (out / "m-host" / "notes.txt").write_text("not an artifact")  # the build's default folder is not the split's
    code, stdout, err = run_cli("split", str(model), "--at", "r1", "--out", str(out), "--no-verify")
    assert code == 0, err
    code, stdout2, err = run_cli("split", str(model), "--at", "c2", "--encoding", "int8", "--out", str(out),
                                 "--no-verify")
    assert code == 0, err
    first, second = out / "m-split-r1-fp32-host-host", out / "m-split-c2-int8-host-host"
    assert (first / "manifest.json").is_file() and (second / "manifest.json").is_file()
    assert json.loads((first / "manifest.json").read_text())["connections"][0]["from"]["tensor"] == "r1"
    assert json.loads((second / "manifest.json").read_text())["connections"][0]["from"]["tensor"] == "c2"
    assert second.name in stdout2.replace("\n", "")  # the summary names the folder written


@pytest.mark.parametrize("given_name", [False, True])
def test_another_kind_of_artifact_in_the_way_is_refused_before_any_work(run_cli, tmp_path, monkeypatch,
                                                                         given_name):
    import edgec.flows.split as flow

    def no_work(*_a, **_k):
        raise AssertionError("the model was exported before the output folder was checked")

    monkeypatch.setattr(flow, "lower", no_work)
    model = tiny_cnn(tmp_path / "m.onnx", size=16)
    name = "mine" if given_name else "m-split-r1-fp32-host-host"
    _fake_one_part(tmp_path / "o" / name)
    code, _, err = run_cli("split", str(model), "--at", "r1", "--out", str(tmp_path / "o"),
                           *(["--name", name] if given_name else []))
    err = " ".join(err.split())
    assert code == 2 and "holds a one-part artifact (edgec build)" in err and "--name" in err, err
    assert (tmp_path / "o" / name / "manifest.json").is_file()  # left as it was


def test_a_build_does_not_replace_a_split(run_cli, tmp_path, monkeypatch):
    import edgec.flows.build as flow

    monkeypatch.setattr(flow, "lower", lambda *_a, **_k: pytest.fail("exported before the folder was checked"))
    model = tiny_cnn(tmp_path / "m.onnx", size=16)
    folder = tmp_path / "o" / "s"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"parts": [], "connections": []}))
    code, _, err = run_cli("build", str(model), "--out", str(tmp_path / "o"), "--name", "s")
    err = " ".join(err.split())
    assert code == 2 and "holds a split artifact (edgec split)" in err and "--name" in err, err
