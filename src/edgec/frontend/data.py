"""Labelled image folders (``--data DIR``) for calibration, fine-tuning and accuracy figures.

The layout is torchvision's ``ImageFolder`` (scanned with torchvision's own ``find_classes`` and
``make_dataset``): one sub-folder per class, named by the class, holding that class's images;
classes are indexed in sorted name order. Images are preprocessed with edgec's own
:func:`edgec.frontend.image.preprocess`, as ``edgec run`` does. A folder that has
``train/`` and ``val/`` sub-folders, each in that layout, gives both splits (``edgec zoo digits``
writes one).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import UsageError
from edgec.frontend.image import preprocess

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp")


@dataclass(frozen=True)
class ImageSet:
    """Preprocessed images with their labels.

    Attributes:
        x: ``(N, C, H, W)`` float32 NCHW (``(N, H, W, C)`` for an NHWC model), preprocessed as the model expects.
        labels: ``(N,)`` int64 class indices into ``classes``.
        classes: Class names, sorted (the sub-folder names).
        paths: The image files, in the order of ``x``.
    """

    x: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    paths: tuple[Path, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def jpeg_q90_bytes(self, limit: int = 200) -> float:
        """Mean bytes of the source images re-encoded as JPEG, quality 90, at their own size (first ``limit``)."""
        from PIL import Image

        sizes = []
        for p in self.paths[:limit]:
            with Image.open(p) as im:
                buf = io.BytesIO()
                im.convert("RGB").save(buf, "JPEG", quality=90)
                sizes.append(buf.tell())
        return float(np.mean(sizes)) if sizes else 0.0


def check_data_folder(root: str | Path) -> None:
    """``--data DIR`` is a folder (checked before any work; its images are read later).

    Raises:
        UsageError: it is not.
    """
    if not Path(root).is_dir():
        raise UsageError(f"--data {root} is not a folder", "give a folder with one sub-folder of images per class")


def load_image_folder(root: str | Path, input_shape: tuple[int, ...], preprocessing: dict[str, Any] | None,
                      limit: int | None = None) -> ImageSet:
    """Read an ImageFolder tree and preprocess every image for a model input.

    Args:
        root: The folder (one sub-folder per class).
        input_shape: The model's image input, ``(1, C, H, W)`` NCHW or ``(1, H, W, C)`` NHWC.
        preprocessing: The model's preprocessing (mean/std on RGB scaled by ``scale``); None: RGB scaled
            to [0, 1].
        limit: Read at most this many images, taken evenly over the sorted file list.

    Raises:
        UsageError: ``root`` is missing, has no class sub-folders, or holds no images.
    """
    from torchvision.datasets.folder import find_classes, make_dataset

    root = Path(root)
    check_data_folder(root)
    try:  # torchvision's own ImageFolder scan: sorted class folders, files filtered by extension
        classes, class_to_idx = find_classes(root)
        files = [(Path(p), i) for p, i in make_dataset(root, class_to_idx, IMAGE_SUFFIXES, allow_empty=True)]
    except FileNotFoundError:
        classes, files = [], []
    if not classes or not files:
        raise UsageError(f"--data {root} holds no class folders of images",
                         "lay it out as DIR/<class>/<image>.png (torchvision ImageFolder)")
    if limit is not None and len(files) > limit:
        files = [files[int(k)] for k in np.linspace(0, len(files) - 1, limit)]
    if len(input_shape) != 4:
        raise UsageError(f"--data needs a model with one image input; this one takes {list(input_shape)}",
                         "use --verify-inputs with .npz files instead")
    nhwc = input_shape[3] in (1, 3) and input_shape[1] not in (1, 3)
    pre = dict(preprocessing or {"scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]})
    pre["resize"] = list(input_shape[1:3] if nhwc else input_shape[2:4])
    pre["layout"] = "NHWC" if nhwc else "NCHW"
    x = np.concatenate([preprocess(p, pre) for p, _ in files], axis=0)
    return ImageSet(x, np.asarray([i for _, i in files], np.int64), tuple(classes), tuple(p for p, _ in files))


def data_splits(root: str | Path) -> tuple[Path, Path | None]:
    """``(train, val)`` folders of ``--data DIR``: its ``train/`` and ``val/`` when both exist, else ``(DIR, None)``."""
    root = Path(root)
    if (root / "train").is_dir() and (root / "val").is_dir():
        return root / "train", root / "val"
    return root, None


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``scores`` ``(N, classes)`` against ``labels`` ``(N,)`` (a fraction in [0, 1])."""
    return float(np.mean(np.argmax(scores, axis=-1) == labels)) if len(labels) else 0.0


def read_task_data(data: Path, model: onnx.ModelProto, preprocessing: dict[str, Any] | None):
    """``(train, val)`` image sets of ``--data`` for ``model`` (every fifth image held out when it has no
    train/val split).

    Raises:
        UsageError: the class folders do not match the model's classes, or too few images to hold some out.
    """
    from edgec.frontend.load import graph_inputs

    first = graph_inputs(model)[0]
    shape = tuple(d.dim_value for d in first.type.tensor_type.shape.dim)
    train_dir, val_dir = data_splits(data)
    train = load_image_folder(train_dir, shape, preprocessing)
    scores = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    if len(scores) == 2 and scores[1] != len(train.classes):
        raise UsageError(f"--data {data} has {len(train.classes)} class folders; the model scores {scores[1]} classes",
                         "one sub-folder per class of the model, named so that sorted names give its class order")
    if val_dir is not None:
        return train, load_image_folder(val_dir, shape, preprocessing)
    held = np.arange(len(train)) % 5 == 4
    if held.sum() == 0:
        raise UsageError(f"--data {data} has {len(train)} images: too few to hold some out",
                         "give at least 5 images, or train/ and val/ folders")

    def pick(mask):
        return ImageSet(train.x[mask], train.labels[mask], train.classes,
                        tuple(p for p, m in zip(train.paths, mask) if m))

    return pick(~held), pick(held)
