"""Measure params and MACs of every zoo entry on its exported ONNX graph, and record timm's configs.

``python -m edgec.zoo.figures [--write]`` prints each entry's data and, with
``--write``, stores it in ``figures.json`` beside this module (read at run time
instead of importing torch and timm).
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
    from edgec.zoo.models import timm_config

    out = {}
    for entry in list_models():
        if entry.alias_of:
            continue
        config = timm_config(entry.name) if entry.family != "MCUNetV2" else {}
        out[entry.name] = {**config, **measure(entry.name)}
        print(entry.name, out[entry.name], flush=True)
    if "--write" in argv:
        (Path(__file__).parent / "figures.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
