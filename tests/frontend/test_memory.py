"""Analytic activation memory: hand-computed peaks, the in-place rules, and `edgec memory`."""

import pytest

from conftest import tiny_cnn
from edgec.frontend.memory import activation_memory
from passes.helpers import model, rand


def _chain():
    """x (1,4,8,8) -> Conv 4->16 (1x1) -> Relu -> depthwise 3x3 s2 -> Conv 16->4 (1x1) + x_down residual."""
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4,8,8] x) => (float[1,4,4,4] y) {
        e = Conv <kernel_shape=[1,1]> (x, we)
        r = Relu (e)
        d = Conv <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1], group=16> (r, wd)
        p = Conv <kernel_shape=[1,1]> (d, wp)
        s = MaxPool <kernel_shape=[2,2], strides=[2,2]> (x)
        y = Add (p, s)
    }"""
    return model(text, we=rand(16, 4, 1, 1), wd=rand(16, 1, 3, 3), wp=rand(4, 16, 1, 1))


def test_peak_counts_live_tensors_with_inplace_rules():
    m = _chain()
    x, e, d, p, s = 4 * 64, 16 * 64, 16 * 16, 4 * 16, 4 * 16  # elements
    prof = activation_memory(m, element_bytes=1, count_inputs=True)
    live = [c["live_bytes"] for c in prof.curve]
    assert live[0] == x + e                     # Conv: x (kept for the MaxPool) + e
    assert live[1] == x + e                     # Relu in place over e
    assert live[2] == x + e                     # depthwise in place: max(e, d) = e
    assert live[3] == x + d + p                 # pointwise: d + p, x still live
    assert live[4] == x + p + s                 # MaxPool: x dies here but is not in place
    assert live[5] == p + s                     # Add in place over a dying operand
    assert prof.peak_activation_bytes == x + e
    assert prof.largest_tensor == ("e", e)
    fp32 = activation_memory(m, count_inputs=True)
    assert fp32.peak_activation_bytes == 4 * prof.peak_activation_bytes


def test_without_inplace_and_without_the_input():
    m = _chain()
    x, e, r = 4 * 64, 16 * 64, 16 * 64
    assert activation_memory(m, element_bytes=1, inplace=False, count_inputs=True).peak_activation_bytes == x + e + r
    assert activation_memory(m, element_bytes=1).peak_activation_bytes == 16 * 64  # the input in its own buffer


def test_fused_residual_accumulates_into_the_dying_operand():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,8,8,8] x) => (float[1,8,8,8] y) {
        a = Relu (x)
        e = Conv <kernel_shape=[1,1]> (a, we)
        p = Conv <kernel_shape=[1,1]> (e, wp)
        y = Add (p, a)
    }"""
    m = model(text, we=rand(32, 8, 1, 1), wp=rand(8, 32, 1, 1))
    prof = activation_memory(m, element_bytes=1)
    a, e = 8 * 64, 32 * 64
    assert prof.curve[2]["live_bytes"] == a + e  # p written over a (TinyEngine's fused residual), not a + e + p


def test_unknown_shape_is_a_clear_error():
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4,N,N] x) => (float[1,4,N,N] y) { y = Relu (x) }"""
    import onnx

    m = onnx.parser.parse_model(text)
    with pytest.raises(ValueError, match="not static"):
        activation_memory(m, count_inputs=True)


def test_memory_command_prints_peaks_and_a_patch_plan(tmp_path, run_cli):
    path = tiny_cnn(tmp_path / "t.onnx", channels=16, size=48)
    code, out, err = run_cli("memory", str(path), "--max-mac-overhead", "0.5")
    assert code == 0, err
    assert "peak activations" in out and "kB int8 analytic" in out
    assert "patch plans" in out or "no patch plan" in out
    code, out, err = run_cli("memory", str(path), "--max-grid", "1")
    assert code == 2 and "--max-grid" in (out + err)
