"""A model whose outputs overflow float32 (Det of 64x64 matrices: +-inf): the compare path judges the finite
values only and says the rest is not finite, without a numpy RuntimeWarning (the unmasked ``o - r`` once
computed inf - inf and leaked "invalid value encountered in subtract", passing with an infinite tolerance)."""

import warnings

import numpy as np
from onnx import helper

from edgec.frontend import reference
from edgec.frontend.float64 import Float64Model, judge, measure_noise


def _det_model(n):
    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", 1, [1, 3, n, n])],
                              [helper.make_tensor_value_info("y", 1, [1, 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_det_overflow_compares_without_runtime_warnings():
    verdicts = {}
    for n in (4, 64):
        model = _det_model(n)
        truth = Float64Model(model)
        for name, xs in reference.verification_sets({"x": (1, 3, n, n)}).items():
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # any RuntimeWarning fails the test
                ref = reference.run_ort(model, xs)
                out = reference.run_ort(model, xs, optimized=True)
                cmp = reference.compare(out, ref)
                exact = truth.run(xs)
                if exact is not None:
                    judge(out, exact, measure_noise(exact, [ref, out]), reference.BUILD_RTOL)
            verdicts[(n, name)] = cmp
            if not np.isfinite(ref[0]).all():
                assert cmp.passed is None and "the reference is not finite" in cmp.reason
                assert np.isfinite(cmp.tolerance)  # never widened by the infinite values
            else:
                assert cmp.passed and np.isfinite(cmp.max_abs_error)
    assert any(v.passed is None for v in verdicts.values()) and any(v.passed for v in verdicts.values())
