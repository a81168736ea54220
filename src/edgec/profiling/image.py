"""Run a host artifact on a real image (``edgec run ARTIFACT --image photo.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import ModelError, UsageError


def read_manifest(artifact: str | Path) -> dict[str, Any]:
    """Load ``manifest.json`` of an artifact folder.

    Raises:
        UsageError: the folder is not an edgec artifact.
    """
    path = Path(artifact) / "manifest.json"
    if not path.is_file():
        raise UsageError(f"{artifact} is not an edgec artifact (no manifest.json)",
                         "give the folder `edgec build` printed")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON", "rebuild the artifact") from exc


def preprocess(image: str | Path, pre: dict[str, Any]) -> np.ndarray:
    """Load an image and turn it into a ``(1, 3, H, W)`` float32 NCHW tensor.

    Steps: RGB, bilinear resize to ``pre["resize"]`` (H, W), scale by ``pre["scale"]``
    (1/255), subtract ``pre["mean"]`` and divide by ``pre["std"]`` per channel.

    Raises:
        UsageError: the file is missing or not an image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(image)
    if not path.is_file():
        raise UsageError(f"image not found: {path}", "check the --image path")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{path} is not an image PIL can read", "give a PNG or JPEG file") from exc
    h, w = pre["resize"]
    rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32) * float(pre.get("scale", 1 / 255))
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def classify(artifact: str | Path, image: str | Path, top: int = 5) -> list[tuple[int, float]]:
    """Run a host artifact on an image and return the top-``top`` (class index, softmax score).

    Raises:
        UsageError: not a host artifact, no preprocessing recorded, bad image.
    """
    manifest = read_manifest(artifact)
    target = manifest["target"]
    if target.get("verify") != "local":
        raise UsageError(f"{artifact} was built for '{target['name']}', which cannot run on this machine",
                         "build with --target host, or run it on the device")
    pre = manifest.get("preprocessing")
    if not pre:
        raise UsageError(f"{artifact} records no preprocessing (an ONNX-file build)",
                         "run it through the Python API with your own preprocessing")
    from edgec.backends.tvm.runtime import LocalModel

    x = preprocess(image, pre)
    logits = LocalModel(Path(artifact) / manifest["library"])(x)[0].reshape(-1).astype(np.float64)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    idx = np.argsort(-p)[:top]
    return [(int(i), float(p[i])) for i in idx]
