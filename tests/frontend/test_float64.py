"""Comparisons that neither pass a wrong result nor refuse a correct one: non-finite values, and the
float64 truth that tells float32 noise from a wrong artifact (edgec.frontend.float64)."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgec.frontend import float64, reference

CASES = Path(__file__).parents[1] / "import_cases" / "shared"


def noisy_model(seed: int = 0, c: int = 16, size: int = 8) -> onnx.ModelProto:
    """Large intermediates, moderate outputs: a 3x3 convolution of inputs near 1000 reaches ~3e5, and a
    1x1 convolution takes differences of channel pairs whose kernels are permutations of each other
    (outputs near 60). float32 rounds the intermediates by ~0.03, far above 1e-4 of the outputs."""
    rng = np.random.default_rng(seed)
    w1 = rng.uniform(5, 15, (c, 3, 3, 3)).astype(np.float32)
    for k in range(1, c, 2):
        w1[k] = rng.permutation(w1[k - 1].ravel()).reshape(3, 3, 3)
    w2 = np.zeros((c // 2, c, 1, 1), np.float32)
    for k in range(c // 2):
        w2[k, 2 * k, 0, 0], w2[k, 2 * k + 1, 0, 0] = 1.0, -1.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Conv", ["a", "w2"], ["b"]),
         helper.make_node("Relu", ["b"], ["y"])],
        "noisy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c // 2, size - 2, size - 2])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def one_op(op: str, shape=(4, 50), **attrs) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# -- non-finite values ----------------------------------------------------------------------------------

def test_one_nan_fails_and_hides_no_finite_mismatch():
    ref = np.ones((2, 5), np.float32)
    out = ref.copy()
    out[0, 0] = np.nan
    cmp = reference.compare([out], [ref])
    assert cmp.passed is False and cmp.max_abs_error == float("inf") and "1 NaN" in cmp.reason
    all_nan = reference.compare([np.full_like(ref, np.nan)], [ref])
    assert all_nan.passed is False and all_nan.top1_match is None


def test_an_inf_output_fails_where_the_reference_is_finite():
    ref = np.zeros((1, 4), np.float32)
    out = ref.copy()
    out[0, 2] = np.inf
    cmp = reference.compare([out], [ref])
    assert cmp.passed is False and "1 inf" in cmp.reason


def test_a_nonfinite_reference_never_widens_the_tolerance():
    ref = np.array([[1.0, np.inf, 2.0]], np.float32)
    out = np.array([[5.0, np.inf, 2.0]], np.float32)  # off by 4 where the reference is finite
    cmp = reference.compare([out], [ref])
    assert cmp.passed is False and "1 inf" in cmp.note
    assert np.isfinite(cmp.tolerance) and cmp.max_abs_error == 4.0 and cmp.max_abs_ref == 2.0
    assert reference.compare([ref.copy()], [ref]).passed is True  # the same pattern, the same finite values
    finite_there = np.array([[1.0, 7.0, 2.0]], np.float32)
    cmp = reference.compare([finite_there], [ref])
    assert cmp.passed is False and "finite where the reference is NaN or inf" in cmp.reason
    nowhere = np.full((1, 3), np.nan, np.float32)
    cmp = reference.compare([nowhere], [nowhere])
    assert cmp.passed is None and "not finite" in cmp.reason


def test_an_output_with_no_finite_reference_leaves_the_others_checked():
    good, nan = np.ones((1, 4), np.float32), np.full((1, 4), np.nan, np.float32)
    assert reference.compare([good, nan], [good, nan]).passed is True
    assert reference.compare([good + 1, nan], [good, nan]).passed is False


def test_each_output_is_held_to_its_own_tolerance():
    """A large output (1e4) must not widen a small one's tolerance: 0.5 off on an output of 1 fails."""
    big, small = np.full((1, 4), 1e4, np.float32), np.ones((1, 4), np.float32)
    cmp = reference.compare([big, small + 0.5], [big, small])
    assert cmp.passed is False and cmp.output == 1 and cmp.max_abs_error == 0.5 and cmp.tolerance == 1e-4


def test_shapes_that_differ_are_named():
    cmp = reference.compare([np.zeros((1, 3))], [np.zeros((1, 4))])
    assert cmp.passed is False and "(1, 3)" in cmp.reason and "(1, 4)" in cmp.reason


def test_a_finite_match_still_passes():
    ref = np.random.default_rng(0).standard_normal((2, 10)).astype(np.float32)
    cmp = reference.compare([ref + 1e-6], [ref])
    assert cmp.passed is True and cmp.reason is None and cmp.top1_match is True


# -- the float64 engine ---------------------------------------------------------------------------------

def test_float64_engine_matches_onnxruntime_and_is_double():
    model = noisy_model()
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)}
    truth = float64.Float64Model(model).run(x)
    ort = reference.run_ort(model, x)
    assert truth[0].dtype == np.float64
    assert np.abs(truth[0] - ort[0]).max() <= 1e-5 * max(1.0, np.abs(truth[0]).max())
    from onnx.reference import ReferenceEvaluator  # the weights handed over as arrays = the converted model

    whole = ReferenceEvaluator(float64.to_float64(model), new_ops=float64._exact_ops())
    assert np.array_equal(whole.run(None, {"x": x["x"].astype(np.float64)})[0], truth[0])


def _rounds_to_float32(model: onnx.ModelProto, ops=None) -> set[str]:
    """Operators whose float64 results all sit on the float32 grid, on double inputs that do not:
    an engine kernel that computes (or rounds) in float32."""
    from onnx.reference import ReferenceEvaluator

    from edgec.frontend.load import graph_inputs

    engine = ReferenceEvaluator(float64.to_float64(model), new_ops=float64._exact_ops() if ops is None else ops)
    rng = np.random.default_rng(0)
    dtypes = reference.input_dtypes(model)
    feeds = {}
    for i in graph_inputs(model):
        shape = [d.dim_value or 1 for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = (rng.standard_normal(shape) if np.issubdtype(dtypes[i.name], np.floating)
                         else rng.integers(0, 4, shape).astype(dtypes[i.name]))
    with np.errstate(all="ignore"):
        values = engine.run(None, feeds, intermediate=True)
    producer = {o: n.op_type for n in model.graph.node for o in n.output if n.op_type != "Constant"}
    bad = set()
    for name, v in values.items():
        v = np.asarray(v)
        if name not in producer or not np.issubdtype(v.dtype, np.floating):
            continue
        nz = v[(v != 0) & np.isfinite(v)]
        if v.dtype != np.float64 or (nz.size > 10 and len(np.unique(nz)) > 10
                                     and np.mean(nz == nz.astype(np.float32).astype(np.float64)) > 0.99):
            bad.add(producer[name])
    return bad


def test_the_exactness_audit_catches_a_float32_kernel():
    """onnx.reference's own Erf rounds to float32: the audit below must see it, and edgec's kernel fixes it."""
    assert _rounds_to_float32(one_op("Erf"), ops=[]) == {"Erf"}
    assert _rounds_to_float32(one_op("Erf")) == set()


def test_mean_variance_normalization_runs_in_float64():
    """The reference expands MVN's ONNX function with float32 constants (it cannot run in double); edgec's
    kernel computes the definition, matching onnxruntime at offset 1000 within float32 noise."""
    model = one_op("MeanVarianceNormalization", shape=(1, 3, 4, 4))
    assert _rounds_to_float32(model) == set()
    x = {"x": (1000 + np.random.default_rng(3).standard_normal((1, 3, 4, 4))).astype(np.float32)}
    truth = float64.Float64Model(model).run(x)
    assert np.abs(truth[0] - reference.run_ort(model, x)[0]).max() < 1e-3


@pytest.mark.parametrize("name", sorted(p.stem for p in CASES.glob("*.onnx")))
def test_float64_is_exact_for_every_op_of_the_shared_cases(name):
    from edgec.frontend.load import load_onnx, prepare_onnx

    prepared, _ = prepare_onnx(load_onnx(CASES / f"{name}.onnx"), {})
    assert _rounds_to_float32(prepared) == set()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv4_hybrid_large", "ghostnetv3_050", "ghostnetv2_100", "ghostnet_050",
                                  "efficientvit_m0", "mobilenetv2_035", "mcunetv2"])
def test_float64_is_exact_for_every_op_of_the_zoo(name):
    """One model of each zoo family (the hybrid MobileNetV4 has GELU's Erf, GhostNetV2 its Resize),
    at 64x64 to keep the engine quick."""
    from edgec.frontend.export import export_torch
    from edgec.frontend.load import prepare_onnx
    from edgec.zoo import create_model

    exported = export_torch(create_model(name), (1, 3, 64, 64))
    prepared, _ = prepare_onnx(exported, {})
    assert _rounds_to_float32(prepared) == set()


def test_an_op_without_a_float64_path_is_said_so():
    model = one_op("Relu")
    model.graph.node[0].domain = "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    f = float64.Float64Model(model)
    assert f.run({"x": np.zeros((4, 50), np.float32)}) is None and f.unavailable
    record = float64.unavailable_record(f.unavailable)
    assert record["passed"] is None and "the check against onnxruntime stands" in record["reason"]


# -- the verdict ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def noisy_evidence():
    model = noisy_model()
    x = {"x": (1000 + np.random.default_rng(2).standard_normal((1, 3, 8, 8))).astype(np.float32)}
    oracle = float64.Oracle(model, lambda _name, xs: reference.run_ort(model, xs))
    truth, noise, _ = oracle.evidence("offset", x, optimized=True)
    return model, x, truth, noise


def test_float32_noise_beyond_the_tolerance_is_accepted(noisy_evidence):
    model, x, truth, noise = noisy_evidence
    optimized = reference.run_ort(model, x, optimized=True)
    assert reference.compare(optimized, reference.run_ort(model, x)).passed is False  # the old check refused it
    verdict = float64.judge(optimized, truth, noise, reference.BUILD_RTOL)
    assert verdict["passed"] and verdict["reason"].startswith(("within float32 noise", "within the tolerance"))
    assert noise.floor > reference.BUILD_RTOL * np.abs(truth[0]).max()  # the set is noisy in float32


def test_a_wrong_result_beyond_the_noise_is_refused(noisy_evidence):
    _, _, truth, noise = noisy_evidence
    wrong = [(truth[0] + 10 * noise.limit).astype(np.float32)]
    verdict = float64.judge(wrong, truth, noise, reference.BUILD_RTOL)
    assert verdict["passed"] is False and verdict["reason"].startswith("beyond float32 noise")
    nan = [truth[0].astype(np.float32)]
    nan[0].flat[3] = np.nan
    assert float64.judge(nan, truth, noise, reference.BUILD_RTOL)["passed"] is False
