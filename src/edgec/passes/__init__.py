"""ONNX -> ONNX graph passes, each verified numerically.

``run_pipeline(model, "default")`` runs a pipeline with per-pass checks
(:mod:`edgec.passes.manager`); ``all_passes()`` lists the registered passes and
their declarations (:mod:`edgec.passes.registry`); pipelines with options are
parsed by :mod:`edgec.passes.options`.

The pass modules are imported here, explicitly, and register themselves.
"""

from edgec.passes import cleanup, fold, merge, patch, reparameterize  # noqa: F401  (registration)
from edgec.passes.floor import weight_floor
from edgec.passes.manager import PipelineResult, apply_pass, run_pipeline, verify_pass
from edgec.passes.options import OptionField, PassCall, option_fields
from edgec.passes.registry import (CHANGES_FUNCTION, DEFAULT_PIPELINE, EXACT, Equivalence, PassInfo, all_passes,
                                   get_pass, register, resolve_pipeline)

__all__ = ["CHANGES_FUNCTION", "DEFAULT_PIPELINE", "EXACT", "Equivalence", "OptionField", "PassCall", "PassInfo",
           "PipelineResult", "all_passes", "apply_pass", "get_pass", "option_fields", "register", "resolve_pipeline",
           "run_pipeline", "verify_pass", "weight_floor"]
