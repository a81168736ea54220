"""depth_merge: the unit grid of the depth-merging issue -- every exact merge matches, every refusal has a reason."""

import itertools

import numpy as np
import pytest

from edgec.frontend.reference import run_ort
from edgec.passes import run_pipeline
from edgec.passes.manager import to_ir
from edgec.passes.merge import merge_candidates, mergeable_chains
from passes.helpers import model, ops, rand

C = 8


def _pair_model(k1, s1, g1, k2, s2, g2, residual=False, pad2=0, dil=1):
    """x (1,C,17,17) -> Conv(k1,s1,g1, same padding) -> Conv(k2,s2,g2, pad2) [-> + x] -> y."""
    p1 = (k1 - 1) // 2
    w1 = rand(C, C // g1, k1, k1)
    w2 = rand(C, C // g2, k2, k2)
    res = "\n        y = Add (z, x)" if residual else "\n        y = Identity (z)"
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,{C},17,17] x) => (float[1,{C},?,?] y) {{
        a = Conv <kernel_shape=[{k1},{k1}], strides=[{s1},{s1}], pads=[{p1},{p1},{p1},{p1}], group={g1},
                  dilations=[{dil},{dil}]> (x, w1, b1)
        z = Conv <kernel_shape=[{k2},{k2}], strides=[{s2},{s2}], pads=[{pad2},{pad2},{pad2},{pad2}], group={g2}> (a, w2, b2){res}
    }}"""
    return model(text, w1=w1, b1=rand(C), w2=w2, b2=rand(C))


def _rel_err(before, after):
    x = {"x": np.random.default_rng(7).standard_normal((1, C, 17, 17)).astype(np.float32)}
    ref, out = run_ort(before, x)[0], run_ort(after, x)[0]
    assert ref.shape == out.shape
    return float(np.abs(ref - out).max() / max(1.0, np.abs(ref).max()))


GRID = list(itertools.product((1, 3, 5), (1, 2), (1, C), (1, 3, 5), (1, 2), (1, C)))
# a spanning residual needs the input's shape back: stride 1 and an (unpadded) 1x1 second conv
RESIDUAL = [g for g in GRID if g[1] == g[4] == 1 and g[3] == 1]


@pytest.mark.parametrize("k1,s1,g1,k2,s2,g2,residual", [(*g, False) for g in GRID] + [(*g, True) for g in RESIDUAL])
def test_unit_grid_merges_exactly_or_says_why(k1, s1, g1, k2, s2, g2, residual):
    m = _pair_model(k1, s1, g1, k2, s2, g2, residual)
    cands = merge_candidates(to_ir(m), max_kernel=99)
    assert len(cands) == 1
    result = run_pipeline(m, "depth_merge(max_kernel=99)")
    if cands[0].reason is None:
        assert result.records[0]["applied"] == 1
        assert ops(result.model)["Conv"] == 1
        assert _rel_err(m, result.model) <= 1e-6
        spans = residual and s1 * s2 == 1
        assert ops(result.model).get("Add", 0) == (0 if spans else int(residual))
    else:
        assert result.records[0]["applied"] == 0 and cands[0].reason


@pytest.mark.parametrize("case,reason", [
    (dict(k1=3, s1=1, g1=1, k2=3, s2=1, g2=1, pad2=1), "pads its input"),
    (dict(k1=3, s1=1, g1=1, k2=3, s2=1, g2=1, dil=2), "dilation"),
])
def test_inexact_pairs_are_refused_with_a_reason(case, reason):
    m = _pair_model(**case)
    cands = merge_candidates(to_ir(m))
    assert cands and reason in cands[0].reason
    assert run_pipeline(m, "depth_merge").records[0]["applied"] == 0


def test_max_kernel_refuses_large_merges():
    m = _pair_model(5, 2, 1, 5, 1, 1)  # K = 5 + 2*4 = 13
    cands = merge_candidates(to_ir(m), max_kernel=7)
    assert "over max_kernel 7" in cands[0].reason


def test_an_activation_between_blocks_the_merge():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,9,9] x) => (float[1,8,9,9] y) {
        a = Conv <kernel_shape=[3,3], pads=[1,1,1,1]> (x, w1)
        r = Relu (a)
        y = Conv <kernel_shape=[1,1]> (r, w2)
    }"""
    m = model(text, w1=rand(8, 8, 3, 3), w2=rand(8, 8, 1, 1))
    assert merge_candidates(to_ir(m)) == []
    assert run_pipeline(m, "depth_merge").records[0]["applied"] == 0


def test_a_chain_of_three_merges_to_one_conv():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,16,16] x) => (float[1,8,8,8] y) {
        a = Conv <kernel_shape=[3,3], pads=[1,1,1,1], group=8> (x, w1, b1)
        b = Conv <kernel_shape=[1,1]> (a, w2, b2)
        y = Conv <kernel_shape=[2,2], strides=[2,2]> (b, w3)
    }"""
    m = model(text, w1=rand(8, 1, 3, 3), b1=rand(8), w2=rand(8, 8, 1, 1), b2=rand(8), w3=rand(8, 8, 2, 2))
    assert [len(c) for c in mergeable_chains(to_ir(m))] == [3]
    result = run_pipeline(m, "depth_merge")
    assert ops(result.model)["Conv"] == 1
    x = {"x": np.random.default_rng(1).standard_normal((1, 8, 16, 16)).astype(np.float32)}
    ref, out = run_ort(m, x)[0], run_ort(result.model, x)[0]
    assert np.abs(ref - out).max() <= 1e-5 * max(1.0, np.abs(ref).max())


def test_latency_mode_needs_a_table_and_applies_only_faster_pairs(tmp_path):
    from edgec.errors import UsageError

    m = _pair_model(3, 1, C, 1, 1, 1)
    with pytest.raises(UsageError, match="table"):
        run_pipeline(m, "depth_merge(mode=latency)")
    cand = merge_candidates(to_ir(m))[0]
    table = tmp_path / "t.json"
    import json

    table.write_text(json.dumps({"pairs": [{"first": cand.first, "second": cand.second, "merged_ms": 2.0,
                                            "separate_ms": 1.0}]}))
    assert run_pipeline(m, f"depth_merge(mode=latency,table={table})").records[0]["applied"] == 0
    table.write_text(json.dumps({"pairs": [{"first": cand.first, "second": cand.second, "merged_ms": 0.5,
                                            "separate_ms": 1.0}]}))
    assert run_pipeline(m, f"depth_merge(mode=latency,table={table})").records[0]["applied"] == 1
    table.write_text(json.dumps({"pairs": [{"first": cand.first, "second": cand.second, "merged_ms": 0.5,
                                            "separate_ms": 1.0, "faster": False}]}))  # a win within the spread
    assert run_pipeline(m, f"depth_merge(mode=latency,table={table})").records[0]["applied"] == 0


def test_a_merge_is_faster_only_beyond_the_spread_of_its_measurements():
    from edgec.flows.merge_table import block_spread, faster

    steady = [1.0, 1.0, 1.0, 1.0] * 10
    assert block_spread(steady, 4) == 0.0
    drifting = [1.0] * 8 + [1.5] * 8 + [2.0] * 8 + [2.5] * 8 + [3.0] * 8  # a machine getting busier
    assert block_spread(drifting, 4) == pytest.approx(1.0)
    assert faster({"separate_ms": 1.0, "merged_ms": 0.92, "spread_ms": 0.0})
    assert not faster({"separate_ms": 1.0, "merged_ms": 0.92, "spread_ms": 0.1})  # 8% inside a 10% spread
    assert not faster({"separate_ms": 1.0, "merged_ms": 1.1, "spread_ms": 0.0})
