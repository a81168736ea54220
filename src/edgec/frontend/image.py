"""Images in: preprocessing as an artifact's manifest records it (``edgec run``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import UsageError
from edgec.frontend.reference import finite_kinds


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


def _check_preprocessing(pre: dict[str, Any]) -> None:
    """``resize`` two positive ints, ``mean``/``std`` three numbers (std non-zero), ``scale`` a number.

    Raises:
        ModelError: the recorded or given preprocessing is malformed (e.g. a hand-edited manifest).
    """
    from edgec.errors import ModelError

    def numbers(v, n):
        return isinstance(v, (list, tuple)) and len(v) == n and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v)

    ok = (numbers(pre.get("resize"), 2) and all(int(x) == x and x > 0 for x in pre["resize"])
          and numbers(pre.get("mean", [0, 0, 0]), 3) and numbers(pre.get("std", [1, 1, 1]), 3)
          and all(x != 0 for x in pre.get("std", [1, 1, 1]))
          and isinstance(pre.get("scale", 1 / 255), (int, float)) and pre.get("layout", "NCHW") in ("NCHW", "NHWC"))
    if not ok:
        raise ModelError(f"the preprocessing is malformed: {pre}",
                         "resize: [H, W]; mean, std: three numbers (std non-zero); rebuild the artifact if it was "
                         "edited")


PREPROCESSING_KEY = "edgec.preprocessing"


def recorded_preprocessing(model) -> dict[str, Any] | None:
    """The preprocessing an ONNX file records in its ``metadata_props`` under ``edgec.preprocessing``
    (JSON: ``resize``, ``scale``, ``mean``, ``std``, ``layout``), as ``edgec zoo digits`` writes it;
    None when absent or malformed (the file is then treated as any third-party ONNX)."""
    import json

    for prop in model.metadata_props:
        if prop.key == PREPROCESSING_KEY:
            try:
                pre = json.loads(prop.value)
                _check_preprocessing(pre)
            except Exception:  # noqa: BLE001  a foreign or broken record is ignored, not fatal
                return None
            return pre
    return None


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
    if path.is_dir():
        raise UsageError(f"--image {path} is a directory", "give an image file")
    if not path.is_file():
        raise UsageError(f"image not found: {path}", "check the --image path")
    _check_preprocessing(pre)
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise UsageError(f"{path} is too large to decode safely ({' '.join(str(exc).split())[:120]})",
                         "give a smaller image") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise UsageError(f"{path} is not an image PIL can read", "give a PNG or JPEG file") from exc
    return preprocess_rgb(rgb, pre, str(path))


def preprocess_rgb(rgb: Any, pre: dict[str, Any], what: str = "the image") -> np.ndarray:
    """:func:`preprocess` of an RGB image already in memory (a PIL image, or a ``(H, W, 3)`` uint8 array).

    Raises:
        UsageError: the mean and std make the pixels infinite.
    """
    from PIL import Image

    if isinstance(rgb, np.ndarray):
        rgb = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    h, w = pre["resize"]
    rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(rgb, dtype=np.float32) * float(pre.get("scale", 1 / 255))
    with np.errstate(over="ignore", invalid="ignore"):  # refused below, in words, not as numpy's warning
        x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    if not np.isfinite(x).all():
        raise UsageError(f"the mean {pre['mean']} and std {pre['std']} turn {what}'s pixels into infinite values",
                         "give the model's own --mean and --std (e.g. 0.485,0.456,0.406 and 0.229,0.224,0.225)")
    if pre.get("layout", "NCHW") == "NHWC":
        return np.ascontiguousarray(x[None])
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def load_samples(paths: list[str | Path], shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype],
                 preprocessing: dict[str, Any] | None) -> dict[str, dict[str, np.ndarray]]:
    """The user's own verification inputs (``--verify-inputs``), as named input sets.

    Args:
        paths: ``.npz`` files (arrays named as the inputs, or ``arg0``, ``arg1``... in input
            order), ``.npy`` files (the only input), or images (preprocessed as recorded, else
            resized to the input and scaled to [0, 1]).
        shapes, dtypes: The model's inputs.
        preprocessing: The zoo's preprocessing, if any.

    Returns:
        ``{"user:<file name>": {input name: array}}``.

    Raises:
        UsageError: a missing or unreadable file, or arrays that do not fit the inputs.
    """
    names = list(shapes)
    out = {}
    for p in map(Path, paths):
        if not p.is_file():
            what = "is a folder" if p.is_dir() else "not found"
            raise UsageError(f"--verify-inputs {str(p) if str(p) not in ('', '.') else repr(str(p))} {what}",
                             "give .npz, .npy or image files")
        try:
            if p.suffix == ".npz":
                with np.load(p) as data:
                    arrays = {}
                    for i, n in enumerate(names):
                        key = next((k for k in (n, f"arr_{i}", f"arg{i}") if k in data.files), None)
                        if key is None:
                            raise UsageError(f"--verify-inputs {p}: no array named '{n}' (found: "
                                             f"{', '.join(data.files) or 'none'})",
                                             "name the arrays as the model's inputs, e.g. np.savez(file, "
                                             f"{n}=array), or save them in input order (arr_0, arr_1...)")
                        arrays[n] = data[key]
            elif p.suffix == ".npy":
                if len(names) != 1:
                    raise UsageError(f"--verify-inputs {p}: a .npy holds one array, the model has {len(names)} "
                                     "inputs", "give a .npz with one array per input")
                arrays = {names[0]: np.load(p)}
            else:
                if len(names) != 1 or len(shapes[names[0]]) != 4:
                    raise UsageError(f"--verify-inputs {p}: an image needs a model with one 4-D input",
                                     "give .npz files")
                shape = shapes[names[0]]
                nhwc = shape[3] in (1, 3) and shape[1] not in (1, 3)
                pre = dict(preprocessing or {"scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]})
                pre["resize"] = list(shape[1:3] if nhwc else shape[2:4])
                pre["layout"] = "NHWC" if nhwc else "NCHW"
                arrays = {names[0]: preprocess(p, pre)}
        except (KeyError, ValueError, OSError, EOFError) as exc:  # EOFError: numpy on an empty or cut file
            what = ("empty or cut short" if isinstance(exc, EOFError) else
                    "not a valid .npz file" if p.suffix == ".npz" else str(exc).splitlines()[0][:120])
            raise UsageError(f"--verify-inputs {p} cannot be read: {what}",
                             "give .npz (np.savez), .npy (np.save) or image files") from exc
        for n in names:
            a = np.asarray(arrays[n])
            if a.shape != tuple(shapes[n]):
                raise UsageError(f"--verify-inputs {p}: '{n}' has shape {list(a.shape)}, the model takes "
                                 f"{list(shapes[n])}", "give arrays of the model's input shapes")
            arrays[n] = a.astype(dtypes.get(n, np.float32))
            if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
                raise UsageError(f"--verify-inputs {p}: '{n}' holds {finite_kinds(a)}",
                                 "give finite sample values (a NaN input verifies nothing)")
        out[f"user:{p.name}"] = arrays
    return out
