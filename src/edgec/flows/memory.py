"""``edgec memory``: peak activation memory of a model (fp32 and int8 analytic) and the patch-based
inference plans that lower it (MCUNetV2, Lin et al., NeurIPS 2021, section 3; :mod:`edgec.passes.patch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgec.errors import UsageError
from edgec.flows.request import BuildOptions, check_request
from edgec.flows.steps import Progress, Steps


@dataclass
class MemoryAnalysis:
    """What ``edgec memory`` prints.

    Attributes:
        fp32, int8: :class:`edgec.frontend.memory.MemoryProfile` of the model after the passes, 4 and 1
            bytes per element (weights and the input image not counted: MCUNetV2's convention).
        with_input: The fp32 profile counting the input image.
        best: The patch plan with the lowest peak within the MAC limit, or None.
        tried: Every patch plan tried (:class:`edgec.passes.patch.PatchChoice`).
    """

    fp32: Any
    int8: Any
    with_input: Any
    best: Any
    tried: list[Any]


def memory(opts: BuildOptions, *, max_mac_overhead: float = 0.15, max_grid: int = 8,
           progress: Progress | None = None) -> MemoryAnalysis:
    """Peak activation bytes of ``opts.model`` after the frontend and the passes, and the patch search.

    Args:
        opts: The model, input shapes and passes.
        max_mac_overhead: Largest MAC increase the patch search accepts (0.15 = +15%).
        max_grid: Largest n x n grid tried.
        progress: Called with each step as it starts.

    Raises:
        UsageError: the model has no static shapes for the analysis (and what
            :func:`edgec.flows.request.check_request` raises).
    """
    check_request(opts)  # before the imports below (onnx, the passes: seconds): a usage error is immediate
    from edgec.flows.lower import lower
    from edgec.frontend.memory import activation_memory
    from edgec.passes.patch import search_patch

    steps = Steps(progress)
    final = lower(opts, steps).final
    from edgec.frontend.quantize import dequantized, is_qdq

    if is_qdq(final):  # an int8 file: the float graph it encodes (its int8 figures are the file's own)
        final = dequantized(final)
    try:
        fp32, int8 = activation_memory(final), activation_memory(final, element_bytes=1)
        with_input = activation_memory(final, count_inputs=True)
        best, tried = steps.run("search patch plans", lambda: search_patch(final, max_mac_overhead=max_mac_overhead,
                                                                          max_grid=max_grid))
    except ValueError as e:
        raise UsageError(f"memory analysis needs static shapes: {e}",
                         "fix the input shapes (--input-shape), or analyse a model without such operators") from None
    return MemoryAnalysis(fp32, int8, with_input, best, tried)
