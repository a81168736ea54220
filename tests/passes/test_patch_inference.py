"""patch_inference: exact against the unpatched model in onnxruntime, and the peaks it promises."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from edgec.errors import UsageError
from edgec.frontend.memory import activation_memory
from edgec.passes import run_pipeline
from edgec.passes.patch import (PatchError, graph_macs, patch_graph, plan_patches, search_patch, stage_of,
                                stop_candidates)
from passes.helpers import bn_params, fires, model, rand

KIB = 1024


def _window_model(op: str, k: int, s: int, pads: list[int], dil: int = 1, group: int = 1, extra: str = "") -> onnx.ModelProto:
    """in (1,4,H,W) -> Conv 4->8 -> op(k, s, pads) -> Relu -> Conv 1x1 -> out (the stop is the Relu output)."""
    size = 23
    cin = 8
    if op == "Conv":
        cout = 8 if group == 1 else cin
        w = rand(cout, cin // group, k, k)
        window = (f'y = Conv <kernel_shape=[{k},{k}], strides=[{s},{s}], pads=[{",".join(map(str, pads))}], '
                  f'dilations=[{dil},{dil}], group={group}> (a, w2)')
        weights = {"w2": w}
    else:
        window = (f'y = {op} <kernel_shape=[{k},{k}], strides=[{s},{s}], pads=[{",".join(map(str, pads))}]{extra}> (a)')
        weights = {}
    text = f"""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,4,{size},{size}] x) => (float[1,8,?,?] out) {{
        a0 = Conv <kernel_shape=[3,3], pads=[1,1,1,1]> (x, w1)
        a = Relu (a0)
        {window}
        r = Relu (y)
        out = Conv <kernel_shape=[1,1]> (r, w3, b3)
    }}"""
    return model(text, w1=rand(8, 4, 3, 3), w3=rand(8, 8, 1, 1), b3=rand(8), **weights)


WINDOWS = [("Conv", k, s, [k // 2] * 4, 1, g) for k in (1, 3, 5) for s in (1, 2) for g in (1, 8)] + [
    ("Conv", 3, 1, [2, 2, 2, 2], 2, 1),        # dilation
    ("Conv", 3, 2, [0, 1, 1, 0], 1, 1),        # asymmetric padding
    ("Conv", 4, 2, [1, 1, 2, 2], 1, 8),        # even kernel
    ("MaxPool", 3, 2, [1, 1, 1, 1], 1, 1),
    ("AveragePool", 3, 2, [1, 1, 1, 1], 1, 1),
]


def _exact(m: onnx.ModelProto, stop: str, grid: int) -> None:
    """The rewrite itself (whether or not it pays in memory) keeps every output within the exact tolerance."""
    from edgec.frontend.reference import compare, run_ort
    from edgec.passes.manager import default_inputs

    patched, _ = patch_graph(m, plan_patches(m, stop, grid))
    onnx.checker.check_model(patched, full_check=True)
    x = default_inputs(m, 0)
    cmp = compare(run_ort(patched, x), run_ort(m, x), rtol=1e-5, check_top1=False)
    assert cmp.max_abs_error <= cmp.tolerance, cmp


@pytest.mark.parametrize("op,k,s,pads,dil,group", WINDOWS)
@pytest.mark.parametrize("grid", [2, 3])
def test_window_operators_are_exact_on_every_grid(op, k, s, pads, dil, group, grid):
    _exact(_window_model(op, k, s, pads, dil, group), "r", grid)


@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool_padding_counts_are_kept(include_pad):
    _exact(_window_model("AveragePool", 3, 1, [1, 1, 1, 1], extra=f", count_include_pad={include_pad}"), "r", 4)


def test_a_plan_that_does_not_lower_the_peak_is_refused_with_the_figures():
    with pytest.raises(UsageError, match="does not lower the peak"):
        run_pipeline(_window_model("Conv", 3, 1, [1, 1, 1, 1]), "patch_inference(stop=r,grid=2)")
    with pytest.raises(UsageError, match="large enough for a 50x50 grid"):
        run_pipeline(_block_model(), "patch_inference(grid=50)")
    with pytest.raises(UsageError, match="at least 2"):
        run_pipeline(_block_model(), "patch_inference(grid=1)")


def _block_model() -> onnx.ModelProto:
    """An inverted residual (expand, BN, depthwise, project, Add) and a Ghost-style channel Concat."""
    p = bn_params(16)
    text = """
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,32,32] x) => (float[1,10] out) {
        s0 = Conv <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]> (x, w0)
        s = Clip (s0, lo, hi)
        e0 = Conv <kernel_shape=[1,1]> (s, we)
        e1 = BatchNormalization (e0, gamma, beta, mean, var)
        e = HardSwish (e1)
        d = Conv <kernel_shape=[3,3], pads=[1,1,1,1], group=16> (e, wd)
        p = Conv <kernel_shape=[1,1]> (d, wp)
        res = Add (p, s)
        c = Conv <kernel_shape=[3,3], pads=[1,1,1,1], group=8> (res, wc)
        cat = Concat <axis=1> (res, c)
        sc = Mul (cat, k)
        h = Conv <kernel_shape=[3,3], strides=[2,2], pads=[1,1,1,1]> (sc, wh)
        gp = GlobalAveragePool (h)
        f = Flatten (gp)
        out = Gemm (f, wf)
    }"""
    return model(text, w0=rand(8, 3, 3, 3), we=rand(16, 8, 1, 1), wd=rand(16, 1, 3, 3), wp=rand(8, 16, 1, 1),
                 wc=rand(8, 1, 3, 3), k=rand(1, 16, 1, 1), lo=np.float32(0), hi=np.float32(6), wh=rand(12, 16, 3, 3), wf=rand(12, 10), **p)


@pytest.mark.parametrize("grid", [2, 3, 4, 5])
def test_residual_and_concat_stage_is_exact(grid):
    m = _block_model()
    new = fires(f"patch_inference(stop=h,grid={grid})", m)
    meta = {p.key: p.value for p in new.metadata_props}
    assert json.loads(meta["edgec.patch_inference"])["grid"] == grid
    assert sum(n.op_type == "Conv" for n in new.graph.node) == 6 * grid * grid


def test_patched_graph_has_a_lower_peak_and_more_macs():
    m = _block_model()
    plan = plan_patches(m, "h", 4)
    patched, shapes = patch_graph(m, plan)
    before, after = activation_memory(m), activation_memory(patched, shapes=shapes)
    assert after.peak_activation_bytes < before.peak_activation_bytes
    from edgec.frontend.analysis import static_shapes
    assert graph_macs(patched, shapes) > graph_macs(m, static_shapes(m))


def test_interior_borders_read_real_values_not_padding():
    """The rewrite must clip padding to image borders: padding every patch like the original is wrong."""
    m = _window_model("Conv", 3, 1, [1, 1, 1, 1])
    plan = plan_patches(m, "r", 2)
    for windows in plan.windows:
        for pads in windows.values():
            assert min(pads) == 0  # each 2x2 patch touches the image border on two sides only
    for windows in plan.windows:
        for i in windows:
            windows[i] = [1, 1, 1, 1]
    with pytest.raises(Exception):  # wrong pads give wrong shapes or wrong values
        broken, _ = patch_graph(m, plan)
        from edgec.frontend.reference import compare, run_ort
        x = {"x": rand(1, 4, 23, 23)}
        cmp = compare(run_ort(broken, x), run_ort(m, x), rtol=1e-5, check_top1=False)
        assert cmp.max_abs_error <= cmp.tolerance, "unreachable"
        raise AssertionError("mis-padded patches matched")


def test_global_operators_end_the_stage():
    m = _block_model()
    with pytest.raises(PatchError, match="not spatially local"):
        stage_of(m, "gp")
    assert "h" in stop_candidates(m)
    assert "gp" not in stop_candidates(m)


def test_a_tensor_used_after_the_stop_is_refused():
    m = _block_model()
    with pytest.raises(PatchError, match="used after the stop"):
        stage_of(m, "c")  # res is also used by the Concat after c


def test_bad_stop_is_one_line_with_the_valid_ones():
    with pytest.raises(UsageError) as e:
        run_pipeline(_block_model(), "patch_inference(stop=nope)")
    assert "valid stop tensors" in e.value.hint and "h" in e.value.hint


def test_already_patched_model_is_left_alone():
    new = fires("patch_inference(stop=h,grid=2)", _block_model())
    result = run_pipeline(new, "patch_inference(stop=h,grid=2)")
    assert result.records[0]["applied"] == 0


@pytest.fixture(scope="module")
def mobilenetv2_035():
    from edgec.frontend.export import export_torch
    from edgec.frontend.load import prepare_onnx
    from edgec.zoo import create_model

    m, _ = prepare_onnx(export_torch(create_model("mobilenetv2_035"), (1, 3, 144, 144)), {})
    return run_pipeline(m, "default").model


def test_mobilenetv2_035_peak_matches_the_paper_and_patching_cuts_it(mobilenetv2_035):
    """MCUNetV2 (NeurIPS 2021) Table/Fig.: MobileNetV2-0.35 at 144x144, int8 peak 283.5 kB -> <= 71 kB."""
    m = mobilenetv2_035
    assert activation_memory(m, element_bytes=1).peak_activation_bytes == pytest.approx(283.5 * KIB, rel=0.02)
    best, tried = search_patch(m, max_mac_overhead=0.15)
    assert best is not None and best.mac_overhead <= 0.15
    patched, shapes = patch_graph(m, plan_patches(m, best.stop, best.grid))
    int8_after = activation_memory(patched, element_bytes=1, shapes=shapes).peak_activation_bytes
    assert int8_after <= 71 * KIB
    from edgec.frontend.reference import compare, run_ort
    x = {"input": np.random.default_rng(0).standard_normal((1, 3, 144, 144)).astype(np.float32)}
    cmp = compare(run_ort(patched, x), run_ort(m, x), rtol=1e-5, check_top1=False)
    assert cmp.max_abs_error <= cmp.tolerance


@pytest.mark.slow
def test_mobilenetv2_100_reproduces_1372_kb_and_patching_cuts_it_below_230_kb():
    from edgec.frontend.export import export_torch
    from edgec.frontend.load import prepare_onnx
    from edgec.zoo import create_model

    m, _ = prepare_onnx(export_torch(create_model("mobilenetv2_100"), (1, 3, 224, 224)), {})
    m = run_pipeline(m, "default").model
    assert activation_memory(m, element_bytes=1).peak_activation_bytes == pytest.approx(1372 * KIB, rel=0.02)
    result = run_pipeline(m, "patch_inference(max_mac_overhead=0.15)")
    rec = result.records[0]
    assert rec["applied"] == 1 and rec["passed"]
    assert rec["macs_after"] <= 1.15 * rec["macs_before"]
    assert activation_memory(result.model, element_bytes=1).peak_activation_bytes <= 230 * KIB
