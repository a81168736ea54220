import pytest

from passes.helpers import fires, model, ops, rand, refuses

LAYERSCALE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 8, 6, 6] x, float[8, 8, 1, 1] w, float[8] b, float[1, 8, 1, 1] gamma) => (float[1, 8, 6, 6] y) {
    c = Conv (x, w, b)
    s = Mul (c, gamma)
    y = Add (s, x)
}
"""


def test_layerscale_mul_folds():
    new = fires("fold_constant_scale", model(LAYERSCALE, w=rand(8, 8, 1, 1), b=rand(8), gamma=rand(1, 8, 1, 1)))
    assert ops(new) == {"Conv": 1, "Add": 1}


def test_constant_first_operand_and_add_shift():
    text = LAYERSCALE.replace("s = Mul (c, gamma)", "s = Add (gamma, c)")
    new = fires("fold_constant_scale", model(text, w=rand(8, 8, 1, 1), b=rand(8), gamma=rand(1, 8, 1, 1)))
    assert ops(new) == {"Conv": 1, "Add": 1}


def test_spatially_varying_constant_is_refused():
    text = LAYERSCALE.replace("float[1, 8, 1, 1] gamma", "float[1, 1, 6, 6] gamma")
    refuses("fold_constant_scale", model(text, w=rand(8, 8, 1, 1), b=rand(8), gamma=rand(1, 1, 6, 6)))


def test_non_constant_scale_is_refused():
    m = model(LAYERSCALE, w=rand(8, 8, 1, 1), b=rand(8))
    refuses("fold_constant_scale", m)


def test_conv_output_used_twice_is_refused():
    text = LAYERSCALE.replace("y = Add (s, x)", "y = Add (s, c)")
    refuses("fold_constant_scale", model(text, w=rand(8, 8, 1, 1), b=rand(8), gamma=rand(1, 8, 1, 1)))


ATTENTION_SCALE = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 16, 4, 4] x, float[16, 16, 1, 1] w, float[3] shape, float[] scale) => (float[2, 16, 8] y) {
    c = Conv (x, w)
    r = Reshape (c, shape)
    t = Transpose <perm = [0, 2, 1]> (r)
    y = Div (t, scale)
}
"""


def test_scalar_scale_through_layout_ops():
    import numpy as np

    text = ATTENTION_SCALE.replace("float[3] shape", "int64[3] shape")
    m = model(text, w=rand(16, 16, 1, 1), shape=np.array([2, 8, 16], np.int64), scale=np.float32(2.828))
    new = fires("fold_constant_scale", m)
    assert "Div" not in ops(new)


def test_vector_scale_through_layout_ops_is_refused():
    import numpy as np

    text = ATTENTION_SCALE.replace("float[3] shape", "int64[3] shape").replace("float[] scale", "float[8] scale")
    m = model(text, w=rand(16, 16, 1, 1), shape=np.array([2, 8, 16], np.int64), scale=rand(8, low=1, high=2))
    refuses("fold_constant_scale", m)


def test_gemm_output_scale():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[2, 5] x, float[7, 5] w, float[7] c, float[7] s) => (float[2, 7] y) {
        h = Gemm <transB = 1> (x, w, c)
        y = Mul (h, s)
    }
    """
    new = fires("fold_constant_scale", model(text, w=rand(7, 5), c=rand(7), s=rand(7)))
    assert ops(new) == {"Gemm": 1}


GATHER = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 4, 9, 9] x, float[4, 5] table, int64[9, 9] idx) => (float[1, 4, 9, 9] y) {
    bias = Gather <axis = 1> (table, idx)
    y = Add (x, bias)
}
"""


def test_constant_gather_folds():
    import numpy as np

    idx = np.random.default_rng(0).integers(0, 5, (9, 9))
    new = fires("fold_constant_gather", model(GATHER, table=rand(4, 5), idx=idx))
    assert "Gather" not in ops(new)


def test_gather_with_runtime_indices_is_refused():
    refuses("fold_constant_gather", model(GATHER, table=rand(4, 5)))


PAD_CONV = """
<ir_version: 8, opset_import: ["" : 17]>
g (float[1, 3, 8, 8] x, int64[8] pads, float[4, 3, 3, 3] w) => (float[1, 4, H, W] y) {
    p = Pad <mode = "MODE"> (x, pads)
    y = Conv <pads = [1, 0, 1, 0], strides = [2, 2]> (p, w)
}
"""


def pad_conv(pads, mode="constant"):
    import numpy as np

    h = (8 + pads[2] + pads[6] + 2 - 3) // 2 + 1
    w = (8 + pads[3] + pads[7] - 3) // 2 + 1
    text = PAD_CONV.replace("MODE", mode).replace("H", str(h)).replace("W", str(w))
    return model(text, pads=np.array(pads, np.int64), w=rand(4, 3, 3, 3))


def test_pad_folds_into_conv():
    new = fires("fold_pad_conv", pad_conv([0, 0, 1, 0, 0, 0, 0, 1]))
    assert ops(new) == {"Conv": 1}


@pytest.mark.parametrize("pads, mode", [([0, 1, 0, 0, 0, 0, 0, 0], "constant"),
                                        ([0, 0, 1, 1, 0, 0, 1, 1], "reflect")])
def test_pad_on_channels_or_reflect_is_refused(pads, mode):
    import numpy as np

    if pads[1]:
        text = PAD_CONV.replace("MODE", mode).replace("float[4, 3, 3, 3] w", "float[4, 4, 3, 3] w").replace(
            "H", "4").replace("W", "3")
        m = model(text, pads=np.array(pads, np.int64), w=rand(4, 4, 3, 3))
    else:
        m = pad_conv(pads, mode)
    refuses("fold_pad_conv", m)


def test_noops_are_removed():
    import numpy as np

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 6, 4, 4] x, int64[2] starts, int64[2] ends, int64[4] shape) => (float[1, 6, 4, 4] y) {
        a = Identity (x)
        b = Slice (a, starts, ends)
        c = Concat <axis = 1> (b)
        d = Reshape (c, shape)
        y = Relu (d)
    }
    """
    m = model(text, starts=np.array([0, 0], np.int64), ends=np.array([1, 6], np.int64),
              shape=np.array([1, 6, 4, 4], np.int64))
    new = fires("remove_noop", m)
    assert ops(new) == {"Relu": 1}


def test_partial_slice_and_input_to_output_identity_are_kept():
    import numpy as np

    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1, 6, 4, 4] x, int64[1] starts, int64[1] ends, int64[1] axes) => (float[1, 4, 4, 4] y, float[1, 6, 4, 4] z) {
        y = Slice (x, starts, ends, axes)
        z = Identity (x)
    }
    """
    m = model(text, starts=np.array([0], np.int64), ends=np.array([4], np.int64), axes=np.array([1], np.int64))
    refuses("remove_noop", m)
