import numpy as np

from passes.helpers import bn_params, fires, model, ops, rand, refuses

# GhostNetV3 / MobileOne block: k x k conv branches + 1x1 branch + BN(x) skip, grouped.
BLOCK = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 9, 9] x, float[8, 4, 3, 3] wa, float[8] ba, float[8, 4, 3, 3] wb, float[8] bb,
   float[8, 4, 1, 1] wc, float[8] bc, float[8] gamma, float[8] beta, float[8] mean, float[8] var)
  => (float[1, 8, 9, 9] y) {
    a = Conv <group = 2, pads = [1, 1, 1, 1]> (x, wa, ba)
    b = Conv <group = 2, pads = [1, 1, 1, 1]> (x, wb, bb)
    c = Conv <group = 2> (x, wc, bc)
    s = BatchNormalization (x, gamma, beta, mean, var)
    ab = Add (a, b)
    abc = Add (ab, c)
    y = Add (abc, s)
}
"""


def weights():
    return dict(wa=rand(8, 4, 3, 3), ba=rand(8), wb=rand(8, 4, 3, 3), bb=rand(8), wc=rand(8, 4, 1, 1), bc=rand(8),
                **bn_params(8))


def test_ghostnetv3_block_becomes_one_conv():
    new = fires("reparameterize_branches", model(BLOCK, **weights()))
    assert ops(new) == {"Conv": 1}


def test_repvgg_identity_branch():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 6, 7, 7] x, float[6, 6, 3, 3] w3, float[6, 6, 1, 1] w1) => (float[1, 6, 7, 7] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, w3)
        b = Conv (x, w1)
        ab = Add (a, b)
        y = Add (x, ab)
    }
    """
    new = fires("reparameterize_branches", model(text, w3=rand(6, 6, 3, 3), w1=rand(6, 6, 1, 1)))
    assert ops(new) == {"Conv": 1}


def test_depthwise_conv_plus_residual():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 6, 7, 7] x, float[6, 1, 3, 3] w, float[6] b) => (float[1, 6, 7, 7] y) {
        a = Conv <group = 6, pads = [1, 1, 1, 1]> (x, w, b)
        y = Add (a, x)
    }
    """
    fires("reparameterize_branches", model(text, w=rand(6, 1, 3, 3), b=rand(6)))


def test_other_leaves_are_kept():
    text = BLOCK.replace("float[1, 8, 9, 9] x,", "float[1, 8, 9, 9] x, float[1, 8, 9, 9] z,").replace(
        "y = Add (abc, s)", "t = Add (abc, s)\n    y = Add (t, z)")
    new = fires("reparameterize_branches", model(text, **weights()))
    assert ops(new) == {"Conv": 1, "Add": 1}


def test_misaligned_padding_is_refused():
    text = BLOCK.replace("a = Conv <group = 2, pads = [1, 1, 1, 1]>", "a = Conv <group = 2, pads = [0, 0, 2, 2]>")
    refuses("reparameterize_branches", model(text, **weights()))


def test_different_strides_are_refused():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 8, 8] x, float[4, 4, 1, 1] w1, float[4, 4, 1, 1] w2) => (float[1, 4, 4, 4] y) {
        a = Conv <strides = [2, 2]> (x, w1)
        b = Conv <strides = [2, 2], pads = [0, 0, 0, 0], dilations = [1, 1]> (x, w2)
        c = MaxPool <kernel_shape = [2, 2], strides = [2, 2]> (x)
        ab = Add (a, c)
        y = Add (ab, b)
    }
    """
    # the two stride-2 convs merge; the pool is not a conv branch and stays
    new = fires("reparameterize_branches", model(text, w1=rand(4, 4, 1, 1), w2=rand(4, 4, 1, 1)))
    assert ops(new) == {"Conv": 1, "MaxPool": 1, "Add": 1}
    text2 = text.replace("b = Conv <strides = [2, 2], pads = [0, 0, 0, 0], dilations = [1, 1]> (x, w2)",
                         "b = Conv <strides = [2, 2], dilations = [2, 2]> (x, w2)")
    refuses("reparameterize_branches", model(text2, w1=rand(4, 4, 1, 1), w2=rand(4, 4, 1, 1)))


def test_branch_used_elsewhere_is_refused():
    text = BLOCK.replace("=> (float[1, 8, 9, 9] y)", "=> (float[1, 8, 9, 9] y, float[1, 8, 9, 9] a)")
    w = weights()
    m = model(text, **w)
    new = fires("reparameterize_branches", m)  # b, c and BN(x) still merge; a stays a separate conv
    assert ops(new)["Conv"] == 2


def test_shared_weights_are_refused():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 5, 5] x, float[4, 4, 1, 1] w) => (float[1, 4, 5, 5] y) {
        a = Conv (x, w)
        b = Conv (x, w)
        y = Add (a, b)
    }
    """
    refuses("reparameterize_branches", model(text, w=rand(4, 4, 1, 1)))


def test_identity_with_even_kernel_is_not_merged():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 5, 5] x, float[4, 4, 2, 2] w) => (float[1, 4, 5, 5] y) {
        a = Conv <pads = [0, 0, 1, 1]> (x, w)
        y = Add (a, x)
    }
    """
    refuses("reparameterize_branches", model(text, w=rand(4, 4, 2, 2)))


def test_merged_kernel_is_sum_of_centred_kernels():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 2, 5, 5] x, float[2, 2, 3, 3] w3, float[2, 2, 1, 1] w1) => (float[1, 2, 5, 5] y) {
        a = Conv <pads = [1, 1, 1, 1]> (x, w3)
        b = Conv (x, w1)
        y = Add (a, b)
    }
    """
    w3, w1 = rand(2, 2, 3, 3), rand(2, 2, 1, 1)
    new = fires("reparameterize_branches", model(text, w3=w3, w1=w1))
    from onnx import numpy_helper

    conv = new.graph.node[0]
    inits = {i.name: numpy_helper.to_array(i) for i in new.graph.initializer}
    expect = w3.astype(np.float64).copy()
    expect[:, :, 1, 1] += w1[:, :, 0, 0]
    np.testing.assert_allclose(inits[conv.input[1]], expect, rtol=1e-6)
