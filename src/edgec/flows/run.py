"""``edgec run``: run an artifact (or one of its parts) on this machine on a real image.

A one-part artifact, or a part fed by the model's inputs, takes the image as its
manifest's preprocessing says. A multi-part artifact without a part named runs
its parts in order, each fed as the manifest's connections say, when every part
was built for this machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgec.artifact import Artifact, Part, open_part
from edgec.errors import UsageError
from edgec.split.encoding import CutEncoding
from edgec.frontend.image import imagenet_labels, preprocess


def require_local(part: Part, artifact: Artifact, hint: str | None = None) -> None:
    """Refuse a part that was not built for this machine.

    Args:
        hint: How to run it instead (default: build for the host, or run it on the device).

    Raises:
        UsageError: the part's target verifies on another device than ``local``.
    """
    if part.target.get("verify") != "local":
        where = f"{artifact.folder}:{part.name}" if artifact.multi_part else str(artifact.folder)
        raise UsageError(f"{where} was built for '{part.target['name']}', which cannot run on this machine",
                         hint or "build with --target host, or run it on the device")


def device_hint(part: Part, ref: str | Path, image: str | Path) -> str:
    """How ``edgec run`` runs a part built for another machine: its emulated device (the target's verification
    device, when it is an emulator) or the board over TVM RPC (CPU targets); a CUDA part only on its board."""
    target = part.target
    ways = []
    if target.get("verify") in EMULATORS:
        ways.append(f"on the emulated device: edgec run {ref} --image {image} --device {target['verify']} "
                    "(slow)")
    if target.get("kind") == "cpu":
        ways.append("on the board through TVM's RPC server: --device rpc://BOARD:9090")
    if not ways:
        return "run it on the device (README: Running an artifact on the device), or build with --target host"
    return "run it " + ", or ".join(ways)


#: Device kinds that emulate a target's board here (a target's ``verify`` field), which ``edgec run --device`` takes.
EMULATORS = ("qemu-aarch64", "qemu-system-arm")


def _top(logits: np.ndarray, top: int) -> list[tuple[int, float]]:
    x = logits.reshape(-1).astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    idx = np.argsort(-p)[:top]
    return [(int(i), float(p[i])) for i in idx]


@dataclass
class RunResult:
    """Top classes of one image: ``[(class index, softmax score, label or None)]``, and the weights' origin."""

    top: list[tuple[int, float, str | None]]
    weights: str | None
    preprocessing: dict


def run_image(ref: str | Path, image: str | Path, top: int = 5, preprocessing: dict | None = None,
              device: str | None = None) -> RunResult:
    """Run ``ARTIFACT[:PART]`` on an image; return the top-``top`` classes.

    Args:
        ref: ``ARTIFACT`` or ``ARTIFACT:PART``.
        image: An image file.
        top: How many classes.
        preprocessing: Overrides of the recorded preprocessing (``resize`` [H, W], ``mean``,
            ``std``, ``scale``, ``layout`` NCHW/NHWC); needed for artifacts built from ONNX files.
        device: Where the parts built for another machine run (``qemu-aarch64``, ``rpc://HOST:PORT``...:
            :func:`edgec.devices.open_device`); parts built for this machine run here. None: every part here.

    Raises:
        UsageError: not an artifact, no such part, a part built for another machine (and no ``device``),
            a part the emulator ``device`` cannot run, a part that does not take the image, no preprocessing
            known, a bad image.
        DeviceError, ToolchainError: the device failed, or its emulator is not installed.
    """
    from edgec.devices import open_device, parse_url

    artifact, part = open_part(ref)
    parts = [part] if part is not None else list(artifact.parts.values())
    url = parse_url(device) if device is not None else None
    elsewhere = url is not None and url.kind != "local"
    for p in parts:
        if not elsewhere or p.target.get("verify") == "local":
            require_local(p, artifact, device_hint(p, ref, image))
        elif url.kind in EMULATORS and p.target.get("verify") != url.kind:
            raise UsageError(f"'{p.name}' was built for '{p.target['name']}', which {url.kind} does not emulate",
                             device_hint(p, ref, image))
        p.check_library()
    first = parts[0]
    model_inputs = {t["name"] for t in artifact.manifest.get("inputs", first.inputs)}
    if not {t["name"] for t in first.inputs} <= model_inputs:
        raise UsageError(f"part '{first.name}' takes {', '.join(t['name'] for t in first.inputs)} from an "
                         "earlier part, not an image", f"run the whole artifact: edgec run {artifact.folder}")
    x, pre = image_tensor(artifact, first, image, preprocessing)
    here = open_device("local")
    there = open_device(url, arch=next((p.target.get("arch") for p in parts if p.target.get("verify") != "local"),
                                       None)) if elsewhere else None
    values: dict[tuple[str, str], np.ndarray] = {}
    outs: list[np.ndarray] = []
    for p in parts:
        feeds = []
        for t in p.inputs:
            link = next((c for c in artifact.connections
                         if c["to"]["part"] == p.name and c["to"]["tensor"] == t["name"]), None)
            if link is None:
                feeds.append(x)
            else:  # the cut travels as the artifact says (fp32, or int8 codes decoded on arrival)
                sent = values[(link["from"]["part"], link["from"]["tensor"])]
                feeds.append(CutEncoding.from_dict(link.get("encoding") or {}).roundtrip(sent))
        outs = (here if there is None or p.target.get("verify") == "local" else there).run(p.library, feeds)
        values.update({(p.name, o["name"]): arr for o, arr in zip(p.manifest["outputs"], outs)})
    scores = dequantized_output(outs[0], parts[-1].manifest["outputs"][0])
    return RunResult(rank_scores(artifact, parts[-1].name, scores, top), artifact.manifest["model"].get("weights"),
                     pre)


def rank_scores(artifact: Artifact, part_name: str, scores: np.ndarray, top: int) -> list[tuple[int, float, str | None]]:
    """Top-``top`` ``(class, softmax score, label or None)`` of a (1, classes) output.

    Raises:
        UsageError: the output is not class scores.
    """
    if not (scores.ndim == 2 and scores.shape[0] == 1 and scores.shape[1] > 1):
        raise UsageError(f"'{part_name}' outputs a {list(scores.shape)} tensor, not class scores: there is no top-k "
                         "to print", f"run the whole artifact (edgec run {artifact.folder})" if artifact.multi_part
                         else "use the Python API for this model's outputs")
    labels = imagenet_labels() if scores.size == 1000 and artifact.manifest["model"].get("source") == "zoo" else None
    return [(i, p, labels[i] if labels else None) for i, p in _top(scores, top)]


def image_tensor(artifact: Artifact, first: Part, image: str | Path,
                 preprocessing: dict | None = None) -> tuple[np.ndarray, dict]:
    """The image as ``first``'s input tensor (its recorded shape; float32, or quantized to an integer input's
    codes by :func:`quantized_input`), and the preprocessing used.

    Raises:
        UsageError: the part does not take the image, no preprocessing is known, a bad image or size.
    """
    _check_image_input(first, preprocessing or {})  # after: a tail alone is told to run the whole artifact
    pre = dict(first.manifest.get("preprocessing") or artifact.manifest.get("preprocessing") or {})
    built_layout = pre.get("layout", "NCHW")  # the input's own; a --layout override does not change its size
    pre.update({k: v for k, v in (preprocessing or {}).items() if v is not None})
    if pre and "resize" not in pre:
        pre["resize"] = _input_size(first.inputs[0], built_layout)
    pre = _complete(pre) if (preprocessing and any(v is not None for v in preprocessing.values())) else pre
    if not {"mean", "std", "scale"} & set(pre):
        raise UsageError(f"{artifact.folder} records no preprocessing (a build of a model file)",
                         "give the model's own: e.g. --mean 0,0,0 --std 1,1,1 for RGB in [0, 1], or "
                         "--mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 for ImageNet's (and --size H,W, --layout)")
    want = list(first.inputs[0]["shape"])
    fits = _input_size(first.inputs[0], pre.get("layout", built_layout))
    given = (preprocessing or {}).get("resize")
    if given is not None and list(given) != fits:  # refused before resizing: a huge --size fills the memory first
        raise UsageError(f"--size {pre['resize'][0]},{pre['resize'][1]} does not fit '{first.name}', which takes "
                         f"{want} ({pre.get('layout', built_layout)})",
                         f"drop --size (the artifact's own, {fits[0]},{fits[1]}, is used) and --layout")
    x = preprocess(image, pre)
    if list(x.shape) != want:
        raise UsageError(f"the image becomes a {list(x.shape)} tensor ({pre.get('layout', 'NCHW')}, "
                         f"{pre['resize'][0]}x{pre['resize'][1]}), but '{first.name}' takes {want}",
                         "drop --size and --layout (the artifact's own are used), or rebuild with another "
                         "--input-shape")
    return quantized_input(x, first.inputs[0]), pre


def quantized_input(x: np.ndarray, tensor: dict) -> np.ndarray:
    """``x`` (float32) as the input ``tensor`` takes it: unchanged for a float input; for an integer one
    (a full-integer TFLite file's int8/uint8 input, with its ``scale`` and ``zero_point``),
    ``clip(round(x / scale) + zero_point)`` in its dtype, as TFLite's QUANTIZE rounds (half to even)."""
    dtype = np.dtype(tensor.get("dtype", "float32"))
    if np.issubdtype(dtype, np.floating):
        return x
    info = np.iinfo(dtype)
    q = np.rint(x.astype(np.float64) / float(tensor["scale"])) + int(tensor["zero_point"])
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantized_output(y: np.ndarray, tensor: dict) -> np.ndarray:
    """An integer output with a ``scale`` and ``zero_point`` as the real values it codes (float32);
    anything else unchanged."""
    if np.issubdtype(y.dtype, np.floating) or tensor.get("scale") is None:
        return y
    return ((y.astype(np.float64) - int(tensor["zero_point"])) * float(tensor["scale"])).astype(np.float32)


def _check_image_input(part: Part, given: dict) -> None:
    """The part takes one float (or quantized 8-bit) image tensor ``[1, C, H, W]`` / ``[1, H, W, C]``, and the
    user's overrides are well-formed.

    Raises:
        UsageError: no input, several inputs, a non-image input, a zero ``--std``, a non-positive ``--size``.
    """
    if not part.inputs:
        raise UsageError(f"'{part.name}' takes no input, so there is no image to feed",
                         "run it through the Python API")
    if len(part.inputs) != 1:
        raise UsageError(f"'{part.name}' takes {len(part.inputs)} inputs, not one image", "run it through the Python API")
    t = part.inputs[0]
    quantized = t.get("scale") is not None and str(t.get("dtype")) in ("int8", "uint8")
    if len(t["shape"]) != 4 or not ("float" in str(t.get("dtype", "float32")) or quantized):
        raise UsageError(f"'{part.name}' takes {t['name']} of shape {t['shape']} ({t.get('dtype')}), not an image "
                         "batch [1, C, H, W]", "run it through the Python API")
    if given.get("std") is not None and any(float(v) == 0 for v in given["std"]):
        raise UsageError(f"--std {','.join(str(v) for v in given['std'])} divides by zero", "give non-zero values")
    if given.get("resize") is not None and any(int(v) <= 0 for v in given["resize"]):
        raise UsageError(f"--size {','.join(str(v) for v in given['resize'])} is not a positive size", "e.g. --size 224,224")


def _input_size(tensor: dict, layout: str) -> list[int]:
    shape = tensor["shape"]
    return list(shape[1:3]) if layout == "NHWC" else list(shape[2:4])


def _complete(pre: dict) -> dict:
    """Fill unset preprocessing fields with neutral values (scale to [0, 1], no normalisation)."""
    return {"layout": "NCHW", "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], **pre}
