"""The fidelity figure of a function-changing pass: how far the new function is from the old one.

Measured in onnxruntime (``ORT_DISABLE_ALL``) on N fixed input sets: the max abs
error and its ratio to max|ref|, and -- for classifier-shaped outputs (rank 2,
``[N, classes]``) -- the fraction of rows whose top-1 class agrees.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from edgec.frontend import reference


def input_sets(first: dict[str, np.ndarray], n: int, seed: int = 1000) -> list[dict[str, np.ndarray]]:
    """``first`` and ``n - 1`` more seeded random sets of the same shapes and dtypes."""
    shapes = {k: v.shape for k, v in first.items()}
    dtypes = {k: v.dtype for k, v in first.items()}
    return [first] + [reference.make_inputs(shapes, dtypes, seed=seed + i) for i in range(1, n)]


def compare_functions(before: onnx.ModelProto, after: onnx.ModelProto,
                      sets: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Default fidelity of ``after`` against ``before``.

    Returns:
        ``{"inputs": N, "max_abs_error", "max_abs_ref", "relative_error"
        (max_abs_error / max_abs_ref), "top1_agreement" (fraction in [0, 1], or None
        when the first output is not ``[N, classes]``)}``.
    """
    ref_sess, new_sess = reference.ort_session(before), reference.ort_session(after)
    err, ref_max, agree, rows = 0.0, 0.0, 0, 0
    for inputs in sets:
        ref = ref_sess.run(None, inputs)
        new = new_sess.run(None, inputs)
        for r, o in zip(ref, new):
            r64, o64 = np.asarray(r, np.float64), np.asarray(o, np.float64)
            if r64.shape != o64.shape:
                return {"inputs": len(sets), "max_abs_error": float("inf"), "max_abs_ref": ref_max,
                        "relative_error": float("inf"), "top1_agreement": None}
            if r64.size:
                err = max(err, float(np.abs(o64 - r64).max()))
                ref_max = max(ref_max, float(np.abs(r64).max()))
        first = np.asarray(ref[0])
        if first.ndim == 2 and first.shape[1] > 1:
            agree += int((np.argmax(new[0], axis=1) == np.argmax(first, axis=1)).sum())
            rows += first.shape[0]
    return {"inputs": len(sets), "max_abs_error": err, "max_abs_ref": ref_max,
            "relative_error": err / ref_max if ref_max > 0 else (0.0 if err == 0 else float("inf")),
            "top1_agreement": agree / rows if rows else None}
