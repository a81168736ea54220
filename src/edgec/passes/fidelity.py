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


class Tally:
    """A fidelity figure accumulated over input sets, each set compared by
    :func:`edgec.frontend.reference.compare` (NaN or inf where the reference is finite, or a shape that
    differs, makes the error infinite; a set whose reference is not finite is left out and counted)."""

    def __init__(self) -> None:
        self.err, self.ref_max, self.agree, self.rows, self.sets, self.not_finite = 0.0, 0.0, 0, 0, 0, 0
        self.reasons: list[str] = []

    def add(self, got: list[np.ndarray], want: list[np.ndarray]) -> None:
        """One input set: ``got`` (the changed function) against ``want`` (the reference), graph order."""
        cmp = reference.compare(got, want, check_top1=False)
        if cmp.passed is None:
            self.not_finite += 1
            self.reasons.append(cmp.reason or "")
            return
        self.sets += 1
        self.err, self.ref_max = max(self.err, cmp.max_abs_error), max(self.ref_max, cmp.max_abs_ref)
        if cmp.reason:
            self.reasons.append(cmp.reason)
        first = np.asarray(want[0]) if want else np.zeros(0)
        if reference.is_classifier_output(first) and cmp.numeric:
            self.agree += int((np.argmax(got[0], axis=-1) == np.argmax(first, axis=-1)).sum())
            self.rows += first.shape[0]

    def result(self) -> dict[str, Any]:
        """``{"inputs": sets measured, "max_abs_error", "max_abs_ref", "relative_error", "top1_agreement",
        "top1_rows"}``, with ``"not_finite"`` (sets left out) and ``"reason"`` where they apply."""
        rel = self.err / self.ref_max if self.ref_max > 0 else (0.0 if self.err == 0 else float("inf"))
        out = {"inputs": self.sets, "max_abs_error": self.err, "max_abs_ref": self.ref_max, "relative_error": rel,
               "top1_agreement": self.agree / self.rows if self.rows else None, "top1_rows": self.rows}
        if self.not_finite:
            out["not_finite"] = self.not_finite
        if self.reasons:
            out["reason"] = self.reasons[0]
        return out


def compare_functions(before: onnx.ModelProto, after: onnx.ModelProto,
                      sets: list[dict[str, np.ndarray]]) -> dict[str, Any]:
    """Default fidelity of ``after`` against ``before`` (both in onnxruntime, optimisations off).

    Returns:
        :meth:`Tally.result`: ``{"inputs": N, "max_abs_error", "max_abs_ref", "relative_error"
        (max_abs_error / max_abs_ref), "top1_agreement" (fraction in [0, 1], or None when the first
        output is not ``[N, classes]``), "top1_rows"}``.
    """
    ref_sess, new_sess = reference.ort_session(before), reference.ort_session(after)
    tally = Tally()
    for inputs in sets:
        tally.add(reference.run_session(new_sess, inputs), reference.run_session(ref_sess, inputs))
    return tally.result()
