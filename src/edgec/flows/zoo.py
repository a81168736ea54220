"""``edgec zoo list`` and ``edgec zoo digits``: the model zoo, and a labelled task trained here in minutes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgec.artifact import check_writable_folder, staging_dir
from edgec.errors import UsageError


def zoo() -> list[Any]:
    """Every zoo entry (:class:`edgec.zoo.registry.ZooEntry`: name, family, params, MACs, input, source)."""
    from edgec.zoo import list_models

    return list_models()


def check_digits_folder(out: Path) -> None:
    """``out`` can take the digits task: a new or empty folder edgec can write.

    Raises:
        UsageError: it cannot be written, or is not empty.
    """
    check_writable_folder(out, "DIR")
    if out.is_dir() and any(out.iterdir()):
        raise UsageError(f"DIR {out} is not empty", "give a new or empty folder")


def digits(out: Path, *, epochs: int = 10, size: int = 64, arch: str = "mobilenetv2_035",
           progress: Callable[[int, int, float], None] | None = None) -> Any:
    """scikit-learn's digits as ``out/train`` and ``out/val`` (ImageFolder) and a classifier trained on them,
    ``out/<arch>-digits.onnx`` (:func:`edgec.zoo.digits.train_digits_model`), written atomically.

    Args:
        out: A new or empty folder.
        epochs, size, arch: Training epochs, image side (pixels), timm architecture (random init, 10 classes).
        progress: Called with ``(epoch, epochs, loss)`` after each epoch.

    Returns:
        The trained model's record (paths inside ``out``, val top-1 accuracy, seconds).

    Raises:
        UsageError: ``out`` cannot be written or is not empty.
    """
    from edgec.zoo.digits import train_digits_model

    check_digits_folder(out)
    with staging_dir(out, fix="give a new or empty folder") as tmp:
        model = train_digits_model(tmp, arch=arch, size=size, epochs=epochs, progress=progress)
    return replace(model, onnx_path=out / model.onnx_path.name, train_dir=out / "train", val_dir=out / "val")
