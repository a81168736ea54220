"""Artifacts with several parts: a toy model cut in two, each part compiled and verified, the composition
verified against the whole; ARTIFACT:PART for run and profile; old one-part artifacts still load."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from conftest import tiny_cnn
from edgec.artifact import open_part, read_artifact
from edgec.flows.build import BuildOptions
from edgec.flows.lower import lower
from edgec.flows.assemble import assemble
from edgec.flows.parts import Connection, PartRequest
from edgec.errors import UsageError, VerificationError
from edgec.profiling.report import render_markdown, validate
from edgec.split import split_model, valid_cuts
from edgec.targets import get_target


@pytest.fixture(scope="module")
def lowered(tmp_path_factory):
    path = tiny_cnn(tmp_path_factory.mktemp("m") / "tiny.onnx", size=24)
    return lower(BuildOptions(model=str(path), passes="none"))


def two_parts(low, cut="r1", tail_model=None):
    head, tail = split_model(low.final, cut)
    host = get_target("host")
    return ([PartRequest("head", head, host, {}), PartRequest("tail", tail_model or tail, host, {})],
            [Connection("head", cut, "tail", cut)])


def test_cuts_of_a_chain_and_refusals(lowered):
    m = lowered.final
    assert valid_cuts(m) == ["c1", "r1", "c2", "p"]
    head, tail = split_model(m, "r1")
    assert [o.name for o in head.graph.output] == ["r1"] and [i.name for i in tail.graph.input] == ["r1"]
    with pytest.raises(UsageError, match="not a tensor computed inside"):
        split_model(m, "nope")
    with pytest.raises(UsageError, match="is a model output"):
        split_model(m, "y")


def test_residual_is_not_a_valid_cut():
    from onnx import helper

    w = numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Add", ["b", "x"], ["y"])]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", 1, [1, 4, 4, 4])],
                          [helper.make_tensor_value_info("y", 1, [1, 4, 4, 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert valid_cuts(m) == []
    with pytest.raises(UsageError, match="the tail also needs x"):
        split_model(m, "a")


def test_two_part_artifact_builds_verifies_and_composes(lowered, tmp_path):
    parts, conns = two_parts(lowered)
    result = assemble(lowered.source, lowered.final, parts, conns, tmp_path, "tiny-split")
    art = result.artifact
    report = json.loads((art / "report.json").read_text())
    validate(report)
    assert [p["name"] for p in report["parts"]] == ["head", "tail"]
    assert all(p["verification"]["passed"] for p in report["parts"])
    v = report["verification"]
    assert v["passed"] and "head (local) -> tail (local)" in v["method"] and v["max_abs_error"] < v["tolerance"]
    assert report["connections"] == [{"from": {"part": "head", "tensor": "r1"}, "to": {"part": "tail", "tensor": "r1"}}]
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["parts"][1]["library"] == "tail/model.so" and "head/model.so" in manifest["files"]
    assert "head/manifest.json" in manifest["files"]
    for name in ("head", "tail"):
        sub = json.loads((art / name / "report.json").read_text())
        validate(sub)
        assert sub["part"] == name and sub["verification"]["passed"]
    assert "## Verification of the composition" in render_markdown(report)
    loaded = read_artifact(art)
    assert loaded.multi_part and list(loaded.parts) == ["head", "tail"]
    _, part = open_part(f"{art}:tail")
    assert part.name == "tail" and part.inputs[0]["name"] == "r1"


def test_broken_composition_fails_and_leaves_nothing(lowered, tmp_path):
    """A tail that matches its own ONNX but not the whole model: each part verifies, the composition must not."""
    _, tail = split_model(lowered.final, "r1")
    wrong = onnx.ModelProto()
    wrong.CopyFrom(tail)
    for init in wrong.graph.initializer:
        if init.name == "w2":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.1, "w2"))
    parts, conns = two_parts(lowered, tail_model=wrong)
    with pytest.raises(VerificationError, match="composed parts"):
        assemble(lowered.source, lowered.final, parts, conns, tmp_path / "out", "broken")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow  # CUDA code generation (NVRTC) for the head
def test_a_cuda_head_composes_with_a_host_tail(lowered, tmp_path):
    """The composition runs each part's verification plan again: a CUDA head's stand-in CPU library must
    still exist then (it lives in the assembler's work folder, not in the part's own verification step)."""
    head, tail = split_model(lowered.final, "r1")
    parts = [PartRequest("head", head, get_target("jetson-orin-nano"), {}), PartRequest("tail", tail, get_target("host"), {})]
    result = assemble(lowered.source, lowered.final, parts, [Connection("head", "r1", "tail", "r1")], tmp_path, "cuda-split")
    head_v = result.report["parts"][0]["verification"]
    assert head_v["passed"] and head_v["cubin_archs"] == [87] and "host CPU" in head_v["method"]
    v = result.report["verification"]
    assert v["passed"] and "head (local) -> tail (local)" in v["method"]


def test_parts_must_be_fed(lowered, tmp_path):
    parts, _ = two_parts(lowered)
    with pytest.raises(UsageError, match="input 'r1' is fed by nothing"):
        assemble(lowered.source, lowered.final, parts, [], tmp_path, "x")
    parts, conns = two_parts(lowered)
    with pytest.raises(UsageError, match="no earlier part produces"):
        assemble(lowered.source, lowered.final, parts[::-1], conns, tmp_path, "x")


def test_run_and_profile_address_parts(lowered, tmp_path, run_cli):
    from PIL import Image

    parts, conns = two_parts(lowered)
    lowered.source.preprocessing = {"resize": [24, 24], "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.5] * 3}
    try:
        art = assemble(lowered.source, lowered.final, parts, conns, tmp_path, "split").artifact
    finally:
        lowered.source.preprocessing = None
    img = tmp_path / "img.png"
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(img)
    code, out, err = run_cli("run", str(art), "--image", str(img), "--top", "3")
    assert code == 0, err
    code, _, err = run_cli("run", f"{art}:tail", "--image", str(img))
    assert code == 2 and "takes r1 from an earlier part" in err
    code, _, err = run_cli("profile", str(art), "--repeats", "3")
    assert code == 2 and "has parts head, tail; name one" in err
    code, out, err = run_cli("profile", f"{art}:head", "--repeats", "3", "--no-baseline")
    assert code == 0, err
    report = json.loads((art / "head" / "profile" / "report.json").read_text())
    validate(report)
    assert report["part"] == "head" and report["profile"]["latency"]["edgec"]["runs"] == 3
    code, _, err = run_cli("profile", f"{art}:middle")
    assert code == 2 and "has no part 'middle'" in err and "its parts: head, tail" in err


def test_one_part_artifact_of_the_old_layout_still_loads(tmp_path):
    old = {"edgec_manifest": 1, "target": {"name": "host", "verify": "local"}, "library": "model.so",
           "inputs": [{"name": "x", "shape": [1, 3, 8, 8], "dtype": "float32"}], "outputs": []}
    (tmp_path / "manifest.json").write_text(json.dumps(old))
    art, part = open_part(tmp_path)
    assert not art.multi_part and part.name == "main" and part.library == tmp_path / "model.so"
    with pytest.raises(UsageError, match="has no part 'head'"):
        art.part("head")
    with pytest.raises(UsageError, match="nothing does not exist"):
        read_artifact(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="not an edgec artifact"):
        read_artifact(tmp_path / "empty")


def test_split_cli_lists_cuts_and_builds_a_head_and_tail(run_cli, tmp_path):
    from edgec.flows.build import BuildOptions
    from edgec.flows.lower import lower
    from edgec.split import cut_table

    model = tiny_cnn(tmp_path / "m.onnx", size=16)
    table = cut_table(lower(BuildOptions(model=str(model), passes="none")).final)
    cuts = {c["tensor"]: c for c in table["cuts"]}
    assert set(cuts) == {"c1", "r1", "c2", "p"} and table["input"]["bytes_fp32"] == 4 * 3 * 16 * 16
    assert cuts["r1"]["bytes_fp32"] == 4 * 8 * 16 * 16 and cuts["r1"]["bytes_int8"] == 8 * 16 * 16
    assert cuts["r1"]["head_macs"] + cuts["r1"]["tail_macs"] == table["macs"]
    assert cuts["c1"]["head_params"] == 8 * 3 * 9 + 8 and cuts["p"]["tail_params"] == 0
    assert 0 < table["input"]["jpeg_q90_bytes"] < table["input"]["bytes_uint8"] * 2
    code, out, err = run_cli("split", str(model), "--list")
    assert code == 0 and "4 valid cuts" in out and "r1" in out, err
    code, out, err = run_cli("split", str(model), "--at", "r1", "--out", str(tmp_path / "o"))
    assert code == 0 and "composition: PASS" in out, err
    code, _, err = run_cli("split", str(model), "--at", "y", "--out", str(tmp_path / "o"))
    assert code == 2 and "is a model output" in err
    code, _, err = run_cli("split", str(model), "--at", "auto")
    assert code == 2 and "--at auto needs --bandwidth" in err
