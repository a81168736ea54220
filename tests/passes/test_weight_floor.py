"""``weight_floor``: the weight bytes a pipeline cannot remove, checked against what the passes leave."""

import numpy as np
from onnx import numpy_helper

from edgec.passes import resolve_pipeline, run_pipeline, weight_floor
from passes.helpers import bn_params, model, rand

BRANCHES = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,4,8,8] y) {
  a = Conv <pads = [1,1,1,1]> (x, w3)
  an = BatchNormalization (a, g1, b1, m1, v1)
  b = Conv (x, w1)
  bn = BatchNormalization (b, g2, b2, m2, v2)
  s = Add (an, bn)
  r = Relu (s)
  y = Conv (r, wp, bp)
}
"""


def _branches():
    p1, p2 = bn_params(4), bn_params(4)
    return model(BRANCHES, w3=rand(4, 4, 3, 3), w1=rand(4, 4, 1, 1), wp=rand(4, 4, 1, 1), bp=rand(4),
                 g1=p1["gamma"], b1=p1["beta"], m1=p1["mean"], v1=p1["var"],
                 g2=p2["gamma"], b2=p2["beta"], m2=p2["mean"], v2=p2["var"])


def _kernel_weight_bytes(m) -> int:
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    seen = {n.input[1] for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits}
    return sum(inits[w].nbytes for w in seen)


def test_summed_branches_count_only_their_largest_and_the_default_pipeline_stays_above_the_floor():
    m = _branches()
    names = [c.name for c in resolve_pipeline("default")]
    floor = weight_floor(m, names)
    assert floor == 4 * (4 * 4 * 9 + 4 * 4)  # the 3x3 branch and the projection; the 1x1 branch is summed away
    after = run_pipeline(m, "default").model
    assert _kernel_weight_bytes(after) >= floor  # the floor is a lower bound of what the passes leave
    assert _kernel_weight_bytes(after) < _kernel_weight_bytes(m)  # and reparameterization did shrink it


def test_a_pipeline_that_can_merge_convolutions_has_no_floor():
    assert weight_floor(_branches(), ["fold_batchnorm", "depth_merge"]) is None


def test_a_weight_shared_by_two_kernels_counts_once():
    text = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1,4,8,8] x) => (float[1,4,8,8] y) {
  a = Conv (x, w)
  y = Conv (a, w)
}
"""
    m = model(text, w=np.ones((4, 4, 1, 1), np.float32))
    assert weight_floor(m, []) == 64
