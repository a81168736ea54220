"""Images in: preprocessing as an artifact's manifest records it (``edgec run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import UsageError


def imagenet_labels() -> list[str] | None:
    """The 1000 ImageNet-1k class names in index order, from the files timm ships (timm is not imported)."""
    import importlib.util

    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "data" / "_info"
    try:
        synsets = (folder / "imagenet_synsets.txt").read_text().split()
        lemmas = dict(line.split("\t", 1) for line in (folder / "imagenet_synset_to_lemma.txt").read_text()
                      .splitlines() if "\t" in line)
    except OSError:
        return None
    return [lemmas.get(s, s).split(",")[0].strip() for s in synsets] if len(synsets) == 1000 else None


def preprocess(image: str | Path, pre: dict[str, Any]) -> np.ndarray:
    """Load an image and turn it into a ``(1, 3, H, W)`` float32 NCHW tensor (``(1, H, W, 3)`` when
    ``pre["layout"]`` is ``NHWC``).

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
    if pre.get("layout", "NCHW") == "NHWC":
        return np.ascontiguousarray(x[None])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])
