"""Measure params and MACs of every zoo entry on its exported ONNX graph.

``python -m edgec.zoo.figures [--write]`` prints the figures and, with
``--write``, stores them in ``figures.json`` beside this module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def measure(name: str) -> dict[str, int]:
    """Export zoo entry ``name`` at its default shape and count params and MACs."""
    from edgec.frontend.analysis import graph_stats
    from edgec.frontend.export import export_torch
    from edgec.frontend.load import prepare_onnx
    from edgec.zoo import create_model, get

    entry = get(name)
    model = export_torch(create_model(name), entry.input_shape)
    simplified, _ = prepare_onnx(model, {})
    stats = graph_stats(simplified)
    return {"params": stats.params, "macs": stats.macs}


def main(argv: list[str]) -> int:
    from edgec.zoo import list_models

    out = {}
    for entry in list_models():
        if entry.alias_of:
            continue
        out[entry.name] = measure(entry.name)
        print(entry.name, out[entry.name], flush=True)
    if "--write" in argv:
        (Path(__file__).parent / "figures.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
