"""``edgec run``: run an artifact (or one of its parts) on this machine on a real image.

A one-part artifact, or a part fed by the model's inputs, takes the image as its
manifest's preprocessing says. A multi-part artifact without a part named runs
its parts in order, each fed as the manifest's connections say, when every part
was built for this machine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.artifact import Artifact, Part, open_part
from edgec.errors import UsageError
from edgec.profiling.image import preprocess


def _local_part(part: Part, artifact: Artifact) -> None:
    if part.target.get("verify") != "local":
        where = f"{artifact.folder}:{part.name}" if artifact.multi_part else str(artifact.folder)
        raise UsageError(f"{where} was built for '{part.target['name']}', which cannot run on this machine",
                         "build with --target host, or run it on the device")


def _top(logits: np.ndarray, top: int) -> list[tuple[int, float]]:
    x = logits.reshape(-1).astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    idx = np.argsort(-p)[:top]
    return [(int(i), float(p[i])) for i in idx]


def run_image(ref: str | Path, image: str | Path, top: int = 5) -> list[tuple[int, float]]:
    """Run ``ARTIFACT[:PART]`` on an image; return the top-``top`` (class index, softmax score).

    Raises:
        UsageError: not an artifact, no such part, a part built for another machine,
            a part that does not take the image, no preprocessing recorded, a bad image.
    """
    from edgec.devices.local import LocalDevice

    artifact, part = open_part(ref)
    parts = [part] if part is not None else list(artifact.parts.values())
    for p in parts:
        _local_part(p, artifact)
    first = parts[0]
    pre = first.manifest.get("preprocessing") or artifact.manifest.get("preprocessing")
    model_inputs = {t["name"] for t in artifact.manifest.get("inputs", first.inputs)}
    if not {t["name"] for t in first.inputs} <= model_inputs:
        raise UsageError(f"part '{first.name}' takes {', '.join(t['name'] for t in first.inputs)} from an "
                         "earlier part, not an image", f"run the whole artifact: edgec run {artifact.folder}")
    if not pre:
        raise UsageError(f"{artifact.folder} records no preprocessing (an ONNX-file build)",
                         "run it through the Python API with your own preprocessing")
    if len(first.inputs) != 1:
        raise UsageError(f"'{first.name}' takes {len(first.inputs)} inputs, not one image",
                         "run it through the Python API")
    device = LocalDevice()
    x = preprocess(image, pre)
    values: dict[tuple[str, str], np.ndarray] = {}
    outs: list[np.ndarray] = []
    for p in parts:
        feeds = []
        for t in p.inputs:
            src = next((c["from"] for c in artifact.connections
                        if c["to"]["part"] == p.name and c["to"]["tensor"] == t["name"]), None)
            feeds.append(x if src is None else values[(src["part"], src["tensor"])])
        outs = device.run(p.library, feeds)
        values.update({(p.name, o["name"]): arr for o, arr in zip(p.manifest["outputs"], outs)})
    return _top(outs[0], top)
