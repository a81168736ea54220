"""Conv chains for depth compression: found as expected; linearise changes only what the plan says;
merging every valid grouping of the linearised model is exact in onnxruntime."""

import itertools

import numpy as np
import onnx_ir as ir
import pytest

from edgec.frontend.reference import run_ort
from edgec.passes.depth_chains import find_chains, linearise, merge_groups, moved_pads
from edgec.passes.merge import ConvSpec
from passes.helpers import model, ops

RNG = np.random.default_rng(7)  # its own stream: other modules' random weights stay as they were


def rand(*shape):
    return RNG.uniform(-1.0, 1.0, shape).astype(np.float32)

X = {"x": np.random.default_rng(0).standard_normal((1, 3, 20, 20)).astype(np.float32)}


def mbv2_like():
    """Stem 3x3/2 -> ReLU -> dw 3x3 (pad 1) -> ReLU -> 1x1 | expand 1x1 -> Clip -> dw 3x3 -> Clip -> 1x1 + residual
    | head 1x1 -> ReLU -> mean -> Gemm (MobileNetV2's shape, small)."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,20,20] x) => (float[1,5] y) {
        s = Conv <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]> (x, w0, b0)
        sa = Relu (s)
        d = Conv <kernel_shape=[3,3], pads=[1,1,1,1], group=8> (sa, w1, b1)
        da = Relu (d)
        p = Conv <kernel_shape=[1,1]> (da, w2, b2)
        e = Conv <kernel_shape=[1,1]> (p, w3, b3)
        ea = Clip (e, lo, hi)
        f = Conv <kernel_shape=[3,3], pads=[1,1,1,1], group=24> (ea, w4, b4)
        fa = Clip (f, lo, hi)
        q = Conv <kernel_shape=[1,1]> (fa, w5, b5)
        r = Add (q, p)
        h = Conv <kernel_shape=[1,1]> (r, w6, b6)
        ha = Relu (h)
        m = ReduceMean <axes=[2,3], keepdims=0> (ha)
        y = Gemm <transB=1> (m, wf, bf)
    }"""
    return model(text, w0=rand(8, 3, 3, 3), b0=rand(8), w1=rand(8, 1, 3, 3), b1=rand(8), w2=rand(4, 8, 1, 1),
                 b2=rand(4), w3=rand(24, 4, 1, 1), b3=rand(24), w4=rand(24, 1, 3, 3), b4=rand(24),
                 w5=rand(4, 24, 1, 1), b5=rand(4), w6=rand(16, 4, 1, 1), b6=rand(16), wf=rand(5, 16), bf=rand(5),
                 lo=np.array(0.0, np.float32), hi=np.array(6.0, np.float32))


def _chains(m):
    return find_chains(ir.serde.deserialize_model(m))


def test_chains_of_a_mobilenetv2_like_model():
    chains = _chains(mbv2_like())
    assert [[x.conv for x in c.layers] for c in chains] == [["s", "d", "p"], ["e", "f", "q"]]
    first, block = chains
    assert [x.act for x in first.layers] == ["sa", "da", None]  # p's output also feeds the residual
    assert block.residual == "r" and first.residual is None
    assert [first.removable(p) for p in (1, 2)] == [True, True]
    assert [block.removable(p) for p in (1, 2)] == [True, True] and not block.removable(3)


def _groupings(n):
    """Every partition of 0..n into consecutive groups."""
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        yield list(itertools.pairwise(bounds))


@pytest.mark.parametrize("first", list(_groupings(3)))
@pytest.mark.parametrize("block", list(_groupings(3)))
def test_every_grouping_merges_exactly(first, block):
    m = mbv2_like()
    chains = _chains(m)
    groups = {0: first, 1: block}
    removed = {c: [p for k, l in g for p in range(k + 1, l) if chains[c].removable(p)] for c, g in groups.items()}
    lin = linearise(m, chains, removed, groups)
    merged = merge_groups(lin, chains, groups)
    ref, got = run_ort(lin, X)[0], run_ort(merged, X)[0]
    assert np.abs(ref - got).max() <= 1e-5 * max(1.0, np.abs(ref).max())
    n_convs = sum(len(g) for g in groups.values()) + 1  # + the head conv
    assert ops(merged)["Conv"] == n_convs
    if block == [(0, 3)]:  # the residual spanning the whole block became a centre tap
        assert ops(merged)["Add"] == 0
    removed_count = sum(len(v) for v in removed.values())
    assert ops(merged)["Relu"] + ops(merged)["Clip"] == 5 - removed_count


def test_linearise_changes_only_what_the_plan_says():
    m = mbv2_like()
    chains = _chains(m)
    same = linearise(m, chains, {}, {0: [(0, 1), (1, 2), (2, 3)]})
    assert np.array_equal(run_ort(m, X)[0], run_ort(same, X)[0])
    changed = linearise(m, chains, {1: [1, 2]}, {1: [(0, 3)]})
    assert ops(changed)["Clip"] == 0 and ops(changed)["Relu"] == 3
    assert run_ort(changed, X)[0].shape == (1, 5)  # moved padding keeps every shape
    assert not np.allclose(run_ort(m, X)[0], run_ort(changed, X)[0])


def test_plans_that_do_not_fit_the_chain_are_refused():
    m = mbv2_like()
    chains = _chains(m)
    with pytest.raises(ValueError, match="no activation at position 3"):
        linearise(m, chains, {1: [3]}, {})
    with pytest.raises(ValueError, match="crosses a kept activation"):
        linearise(m, chains, {1: [1]}, {1: [(0, 3)]})
    with pytest.raises(ValueError, match="does not feed"):
        merge_groups(m, chains, {0: [(0, 3)]})  # activations still between
    no_pad_move = linearise(m, chains, {0: [1, 2]}, {})
    with pytest.raises(ValueError, match="still pads"):
        merge_groups(no_pad_move, chains, {0: [(0, 3)]})


def test_moved_pads_scale_with_the_earlier_strides():
    def spec(k, s, p):
        return ConvSpec(np.zeros((1, 1, k, k)), np.zeros(1), (s, s), [p] * 4, 1)

    assert moved_pads([spec(3, 2, 1), spec(3, 1, 1), spec(3, 2, 1)]) == [[5] * 4, [0] * 4, [0] * 4]
    assert moved_pads([spec(1, 1, 0), spec(5, 1, 2)]) == [[2] * 4, [0] * 4]
