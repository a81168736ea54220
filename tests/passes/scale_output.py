"""A test-only pass that changes the function on purpose: every graph output times ``factor``.

Registered by the ``scale_output_pass`` fixture (``tests/conftest.py``), never shipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from edgec.passes import CHANGES_FUNCTION, PassInfo
from edgec.passes._graph import new_constant


@dataclass(frozen=True)
class ScaleOutputOptions:
    factor: float = field(default=1.01, metadata={"help": "multiply every output by this"})

    def __post_init__(self) -> None:
        if not self.factor > 0:
            raise ValueError(f"factor must be positive, got {self.factor}")


class ScaleOutput(ir.passes.InPlacePass):
    def __init__(self, options: ScaleOutputOptions) -> None:
        super().__init__()
        self.options = options

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        for i, out in enumerate(list(graph.outputs)):
            c = new_constant(graph, np.array(self.options.factor, dtype=np.float32), "scale")
            node = ir.Node("", "Mul", [out, c], num_outputs=1)
            graph.append(node)
            new = node.outputs[0]
            name = out.name
            out.name = f"{name}__unscaled"
            new.name, new.shape, new.type = name, out.shape, out.type
            graph.outputs[i] = new
        return ir.passes.PassResult(model, bool(graph.outputs))


INFO = PassInfo("scale_output", matches="every graph output", preconditions="float outputs",
                equivalence=CHANGES_FUNCTION, source="tests only", factory=ScaleOutput, options=ScaleOutputOptions)
