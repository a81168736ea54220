"""ONNX -> ONNX graph passes, each verified numerically.

``run_pipeline(model, "default")`` runs the default pipeline with per-pass checks
(:mod:`edgec.passes.manager`); ``all_passes()`` lists the registered passes and
their declarations (:mod:`edgec.passes.registry`).
"""

from edgec.passes.manager import apply_pass, run_pipeline, verify_pass
from edgec.passes.registry import DEFAULT_PIPELINE, all_passes, get_pass, resolve_pipeline

__all__ = ["DEFAULT_PIPELINE", "all_passes", "apply_pass", "get_pass", "resolve_pipeline", "run_pipeline", "verify_pass"]
