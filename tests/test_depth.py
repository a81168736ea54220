"""The depth-merging latency table: measured pairs, cached, and applied by depth_merge(mode=latency)."""

import json

import numpy as np
import pytest

from edgec.flows.build import BuildOptions
from edgec.passes import run_pipeline
from passes.helpers import model, ops, rand


def _two_pairs(path):
    """Two mergeable pairs: 1x1 -> 1x1 (merging removes MACs) and depthwise 3x3 -> 1x1 (adds MACs)."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,16,24,24] x) => (float[1,16,24,24] y) {
        a = Conv <kernel_shape=[1,1]> (x, w1, b1)
        b = Conv <kernel_shape=[1,1]> (a, w2, b2)
        r = Relu (b)
        d = Conv <kernel_shape=[3,3], pads=[1,1,1,1], group=16> (r, w3, b3)
        y = Conv <kernel_shape=[1,1]> (d, w4, b4)
    }"""
    m = model(text, w1=rand(64, 16, 1, 1), b1=rand(64), w2=rand(16, 64, 1, 1), b2=rand(16),
              w3=rand(16, 1, 3, 3), b3=rand(16), w4=rand(16, 16, 1, 1), b4=rand(16))
    import onnx

    onnx.save(m, str(path))
    return m


def test_merge_table_times_each_pair_and_latency_mode_applies_it(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    m = _two_pairs(tmp_path / "m.onnx")
    out = tmp_path / "table.json"
    code, stdout, err = run_cli("merge-table", str(tmp_path / "m.onnx"), "--out", str(out))
    assert code == 0, err
    table = json.loads(out.read_text())
    assert len(table["pairs"]) == 2 and table["target"] == "host"
    for p in table["pairs"]:
        assert p["separate_ms"] > 0 and p["merged_ms"] > 0 and p["spread_ms"] >= 0
        assert p["faster"] == (p["separate_ms"] - p["merged_ms"] > p["spread_ms"])
    macs = sorted((p["separate_macs"], p["merged_macs"]) for p in table["pairs"])
    assert any(mm < ms for ms, mm in macs) and any(mm > ms for ms, mm in macs)
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 2  # cached per pair
    result = run_pipeline(m, f"depth_merge(mode=latency,table={out})")
    faster = sum(p["faster"] for p in table["pairs"])
    assert ops(result.model)["Conv"] == 4 - faster
    x = {"x": np.random.default_rng(0).standard_normal((1, 16, 24, 24)).astype(np.float32)}
    from edgec.frontend.reference import run_ort

    ref, got = run_ort(m, x)[0], run_ort(result.model, x)[0]
    assert np.abs(ref - got).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_merge_table_refuses_a_remote_target(tmp_path):
    import pytest

    from edgec.flows.merge_table import merge_table
    from edgec.errors import UsageError

    _two_pairs(tmp_path / "m.onnx")
    with pytest.raises(UsageError, match="this machine only"):
        merge_table(BuildOptions(model=str(tmp_path / "m.onnx"), target="rpi4", verify=False))


def test_a_depth_merge_is_credited_speed_only_beyond_the_spread_of_its_rounds():
    from edgec.flows.depth_compress import merge_win

    steady = merge_win([0.10, 0.10, 0.10], [0.20, 0.20, 0.20])
    assert steady["gain"] == pytest.approx(0.1) and "within_spread" not in steady
    loaded = merge_win([0.10, 0.30, 0.18], [0.20, 0.20, 0.20])  # one round at a loaded moment
    assert loaded["within_spread"] and loaded["ratio"] == pytest.approx(0.20)
    slower = merge_win([0.30, 0.30, 0.30], [0.20, 0.20, 0.20])
    assert slower["within_spread"] and slower["ratio"] == pytest.approx(0.30)
