"""ONNX -> ONNX graph passes, each verified numerically (see :mod:`edgec.passes.manager`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx


def run_pipeline(model: onnx.ModelProto, spec: str, inputs: dict[str, np.ndarray] | None = None,
                 dump_dir: Path | None = None) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """Run the pass pipeline named by ``spec`` (``none`` only, for now)."""
    return model, []
