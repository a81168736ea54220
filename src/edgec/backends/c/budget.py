"""The microcontroller's memory budget: flash for code and weights, SRAM for data, arena, workspace and stack.

The figures are the real chip's (the target's ``mcu.flash_bytes`` / ``mcu.sram_bytes``, from its
datasheet), not the emulated board's, whose memories are larger. The check runs twice: on an
estimate before anything is compiled (weights alone against flash; arena, workspace and input
buffers against SRAM), and on ``arm-none-eabi-size``'s figures after linking.
"""

from __future__ import annotations

import math

import numpy as np
import onnx

from edgec.errors import BudgetError
from edgec.targets import TargetSpec

#: How to fit, by the memory that overflows: weights live in flash, activations in SRAM.
HINTS = {
    "flash": ("quantize the weights to int8 (--quantize int8: a quarter of the bytes), pick a smaller model or a "
              "smaller --width-mult where the zoo model has one (mcunetv2), or a target with more flash"),
    "flash-int8": ("the weights are int8 already: pick a smaller model, or a smaller --width-mult where the zoo "
                   "model has one (mcunetv2), or a target with more flash"),
    "SRAM": ("shrink the activations: a smaller --input-shape, the first stage in spatial patches "
             "(--passes 'default,patch_inference'; `edgec memory MODEL` shows the plans), or a smaller "
             "--width-mult where the zoo model has one"),
}


def _kb(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def largest_weight(model: onnx.ModelProto) -> tuple[str, int]:
    """The ONNX initializer with the most bytes: ``(name, bytes)`` (``("-", 0)`` when there is none)."""
    best = ("-", 0)
    for init in model.graph.initializer:
        n = math.prod(init.dims) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
        if n > best[1]:
            best = (init.name, int(n))
    return best


def largest_activation(model: onnx.ModelProto) -> tuple[str, int]:
    """The graph tensor (input, intermediate or output, not a weight) with the most bytes: ``(name, bytes)``.

    Shapes come from ONNX shape inference where the model does not carry them.
    """
    inferred = model if model.graph.value_info else onnx.shape_inference.infer_shapes(model)
    inits = {i.name for i in model.graph.initializer}
    best = ("-", 0)
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        tt = vi.type.tensor_type
        if vi.name in inits or not tt.HasField("shape") or not tt.elem_type:
            continue
        dims = [d.dim_value for d in tt.shape.dim]
        if any(d <= 0 for d in dims):
            continue
        n = math.prod(dims) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        if n > best[1]:
            best = (vi.name, int(n))
    return best


def _int8(model) -> bool:
    """Whether ``model`` is a quantized (QDQ) ONNX model."""
    return isinstance(model, onnx.ModelProto) and any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def check(spec: TargetSpec, model: onnx.ModelProto, flash: dict[str, int], sram: dict[str, int], when: str) -> None:
    """Raise when the model does not fit the chip.

    Args:
        spec: The MCU target (``mcu.flash_bytes``, ``mcu.sram_bytes``, ``mcu.chip``).
        model: The ONNX model (names the largest weight or activation).
        flash: What needs flash, by part (bytes): weights, or the ELF's text and data.
        sram: What needs SRAM, by part (bytes): arena, workspace, inputs, or the ELF's data and bss.
        when: ``"estimated before compiling"`` or ``"linked"`` (from ``arm-none-eabi-size``).

    Raises:
        BudgetError: flash or SRAM over budget: one line with the budget, the need and the largest
            tensor (name and bytes), and the hint.
    """
    m = spec.extra["mcu"]
    chip = m.get("chip", spec.name)
    for memory, parts, budget, region, largest, what in (
            ("flash", flash, m["flash_bytes"], "flash", largest_weight, "weight"),
            ("SRAM", sram, m["sram_bytes"], m.get("sram_region", "SRAM"), largest_activation, "activation")):
        need = sum(parts.values())
        if need > budget:
            detail = ", ".join(f"{k} {_kb(v)}" for k, v in parts.items())
            if isinstance(model, onnx.ModelProto):  # a TFLite file's tensors are not named here
                name, nbytes = largest(model)
                detail += f"; largest {what} '{name}' {nbytes} bytes"
            raise BudgetError(f"the model needs {need} bytes ({_kb(need)}, {when}) of {memory}, over the {budget} "
                              f"bytes ({_kb(budget)}) of {chip} {region} ('{spec.name}'): {detail}",
                              HINTS["flash-int8" if memory == "flash" and _int8(model) else memory])
