import numpy as np
import pytest

from passes.helpers import bn_params, fires, model, ops, rand, refuses

CONV_BN = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 10, 10] x, float[12, 4, 3, 3] w, float[12] b, float[12] gamma, float[12] beta,
   float[12] mean, float[12] var) => (float[1, 12, 10, 10] y) {
    c = Conv <group = 2, pads = [1, 1, 1, 1]> (x, w, b)
    y = BatchNormalization <epsilon = 0.001> (c, gamma, beta, mean, var)
}
"""


def conv_bn(**overrides):
    weights = {"w": rand(12, 4, 3, 3), "b": rand(12), **bn_params(12)}
    weights.update(overrides)
    return model(CONV_BN, **weights)


def test_conv_bn_folds_exactly():
    new = fires("fold_batchnorm", conv_bn())
    assert ops(new) == {"Conv": 1}


def test_conv_without_bias_gets_one():
    text = CONV_BN.replace("float[12] b, ", "").replace("(x, w, b)", "(x, w)")
    new = fires("fold_batchnorm", model(text, w=rand(12, 4, 3, 3), **bn_params(12)))
    assert ops(new) == {"Conv": 1}
    assert len(new.graph.node[0].input) == 3


def test_conv_output_used_twice_is_refused():
    text = CONV_BN.replace("=> (float[1, 12, 10, 10] y)", "=> (float[1, 12, 10, 10] y, float[1, 12, 10, 10] c)")
    refuses("fold_batchnorm", model(text, w=rand(12, 4, 3, 3), b=rand(12), **bn_params(12)))


def test_non_constant_bn_params_are_refused():
    m = model(CONV_BN, w=rand(12, 4, 3, 3), b=rand(12), beta=rand(12), mean=rand(12), var=rand(12, low=0.3))
    refuses("fold_batchnorm", m)  # gamma stays a graph input


def test_shared_conv_weight_is_refused():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 4, 6, 6] x, float[4, 4, 1, 1] w, float[4] gamma, float[4] beta, float[4] mean, float[4] var)
      => (float[1, 4, 6, 6] y, float[1, 4, 6, 6] z) {
        c = Conv (x, w)
        y = BatchNormalization (c, gamma, beta, mean, var)
        z = Conv (x, w)
    }
    """
    refuses("fold_batchnorm", model(text, w=rand(4, 4, 1, 1), **bn_params(4)))


BN_CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 10, 10] x, float[8] gamma, float[8] beta, float[8] mean, float[8] var,
   float[12, 4, K, K] w1, float[6, 8, 1, 1] w2) => (float[1, 12, H, H] y1, float[1, 6, 10, 10] y2) {
    n = BatchNormalization (x, gamma, beta, mean, var)
    y1 = Conv <group = 2, pads = [P, P, P, P]> (n, w1)
    y2 = Conv (n, w2)
}
"""


def bn_conv(k, pad):
    h = 10 - k + 1 + 2 * pad
    text = BN_CONV.replace("K", str(k)).replace("P", str(pad)).replace("H", str(h))
    return model(text, w1=rand(12, 4, k, k), w2=rand(6, 8, 1, 1), **bn_params(8))


def test_bn_before_unpadded_convs_folds_into_each_group_aware():
    new = fires("fold_batchnorm", bn_conv(3, 0))
    assert ops(new) == {"Conv": 2}


def test_bn_before_padded_conv_is_refused():
    refuses("fold_batchnorm", bn_conv(3, 1))


BN_GEMM = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[2, 16] x, float[16] gamma, float[16] beta, float[16] mean, float[16] var, float[10, 16] w, float[10] c)
  => (float[2, 10] y) {
    n = BatchNormalization (x, gamma, beta, mean, var)
    y = Gemm <transB = 1, alpha = 0.7, beta = 1.3> (n, w, c)
}
"""


def test_bn_before_gemm_folds():
    new = fires("fold_batchnorm", model(BN_GEMM, w=rand(10, 16), c=rand(10), **bn_params(16)))
    assert ops(new) == {"Gemm": 1}


def test_bn_before_matmul_becomes_gemm():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 16] x, float[16] gamma, float[16] beta, float[16] mean, float[16] var, float[16, 10] w)
      => (float[2, 10] y) {
        n = BatchNormalization (x, gamma, beta, mean, var)
        y = MatMul (n, w)
    }
    """
    new = fires("fold_batchnorm", model(text, w=rand(16, 10), **bn_params(16)))
    assert ops(new) == {"Gemm": 1}


def test_bn_before_gemm_with_shared_weight_is_refused():
    text = BN_GEMM.replace("=> (float[2, 10] y)", "=> (float[2, 10] y, float[2, 10] z)").replace(
        "(n, w, c)\n", "(n, w, c)\n    z = Gemm <transB = 1> (x, w)\n")
    refuses("fold_batchnorm", model(text, w=rand(10, 16), c=rand(10), **bn_params(16)))


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_fold_is_exact_with_large_weights(eps):
    m = conv_bn(w=rand(12, 4, 3, 3) * 50, var=np.full(12, 1e-3, np.float32))
    m.graph.node[1].attribute[0].f = eps
    fires("fold_batchnorm", m)


def test_batchnorm_to_affine_for_what_cannot_fold():
    new = fires("batchnorm_to_affine", bn_conv(3, 1))
    assert ops(new)["BatchNormalization"] == 0 and ops(new)["Mul"] == 1
