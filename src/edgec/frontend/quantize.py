"""Post-training static int8 quantization of an ONNX model into QDQ form, with onnxruntime's quantizer.

TFLite's conventions (``docs`` of ``tensorflow/lite``'s quantization spec), which onnxruntime's
``quantize_static`` follows with these options:

* weights: int8, per output channel, symmetric (``zero_point`` 0);
* activations: int8, per tensor, asymmetric (a ``scale`` and a ``zero_point`` each);
* biases: int32 with ``scale = scale_x * scale_w`` (``zero_point`` 0);
* the QDQ format: ``QuantizeLinear -> DequantizeLinear`` pairs around the float operators, which
  onnxruntime (optimizations on) and edgec's integer lowering (:mod:`edgec.backends.tvm.integer`) both turn
  into integer kernels.

Calibration ranges come from a :class:`onnxruntime.quantization.CalibrationDataReader` over the user's
samples through the model's preprocessing, or over images shipped in packages (scikit-image's sample
images) and generated ones, said so in the report.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.errors import UsageError
from edgec.frontend.integer_io import shared_input_quantization
from edgec.frontend.specs import CALIBRATION_METHODS, DEFAULT_CALIBRATION_SAMPLES

log = logging.getLogger(__name__)

#: Calibration methods offered (onnxruntime's ``CalibrationMethod`` names).
METHODS = CALIBRATION_METHODS

#: The default calibration method and the number of calibration samples. ``benchmarks/bench_calibration.py``
#: (digits classifier, 360 validation images): minmax 96.67% / 97.22% top-1 with 32 / 128 images, entropy the
#: same, percentile 96.94% / 96.39% (float32 98.06%): no method wins, and minmax is the simplest and fastest.
DEFAULT_METHOD = "minmax"
DEFAULT_SAMPLES = DEFAULT_CALIBRATION_SAMPLES  # frontend/specs.py says why

#: scikit-image sample images bundled in its wheel (no download), RGB or grey.
PACKAGE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry",
                  "colorwheel", "retina", "camera", "coins", "moon", "grass", "gravel", "brick", "clock", "page")


@dataclass
class Calibration:
    """Calibration samples and where they came from.

    Attributes:
        samples: One ``{input name: array}`` per sample, shaped as the model's inputs.
        source: ``"--calibrate DIR"``, ``"--calibrate FILE.npz"``, or ``"generated"``.
        description: One line for the report (``"32 images from data/"``, ``"16 scikit-image sample images
            and 16 generated images (no --calibrate)"``).
    """

    samples: list[dict[str, np.ndarray]]
    source: str
    description: str


def is_qdq(model: onnx.ModelProto) -> bool:
    """Whether ``model`` holds ``QuantizeLinear`` nodes (a QDQ-quantized model)."""
    return any(n.op_type == "QuantizeLinear" for n in model.graph.node)


def output_steps(model: onnx.ModelProto) -> list[float | None]:
    """Per graph output, the quantization step (``scale``) of the ``DequantizeLinear`` that produces it, 1.0 for
    an integer output (its values are the steps: :mod:`edgec.frontend.integer_io`), or None for an output computed
    in float (or with a per-channel scale)."""
    producers = {out: n for n in model.graph.node for out in n.output}
    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}
    steps: list[float | None] = []
    for out in model.graph.output:
        node = producers.get(out.name)
        step = None
        if out.type.tensor_type.elem_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            step = 1.0
        elif node is not None and node.op_type == "DequantizeLinear":
            name = node.input[1]
            if name in inits:
                value = onnx.numpy_helper.to_array(inits[name])
            elif name in consts:
                value = onnx.numpy_helper.to_array(consts[name].attribute[0].t)
            else:
                value = None
            if value is not None and value.size == 1:
                step = float(value.reshape(()))
        steps.append(step)
    return steps


def dequantized(model: onnx.ModelProto) -> onnx.ModelProto:
    """The float graph a QDQ model encodes: each ``QuantizeLinear -> DequantizeLinear`` pair on an activation
    becomes the wire it sits on, and each ``DequantizeLinear`` of a constant becomes that constant in float32
    (for analyses that read the graph's tensors, e.g. the activation memory: between kernels the int8 build
    holds these tensors as int8, one byte each)."""
    out = onnx.ModelProto.FromString(model.SerializeToString())
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    int8_inputs = {v.name: v for v in graph.input if v.type.tensor_type.elem_type == onnx.TensorProto.INT8}
    rename: dict[str, str] = {}
    drop = set()
    for node in list(graph.node):
        if node.op_type != "DequantizeLinear":
            continue
        src = node.input[0]
        if src in inits:
            q = onnx.numpy_helper.to_array(inits[src]).astype(np.float64)
            scale = onnx.numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
            zero = (onnx.numpy_helper.to_array(inits[node.input[2]]).astype(np.float64) if len(node.input) > 2
                    and node.input[2] in inits else np.zeros_like(scale))
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.size > 1:
                shape[axis % q.ndim] = -1
            value = ((q - zero.reshape(shape)) * scale.reshape(shape)).astype(np.float32)
            graph.initializer.append(onnx.numpy_helper.from_array(value, node.output[0]))
            drop.add(id(node))
        elif src in producers and producers[src].op_type == "QuantizeLinear":
            rename[node.output[0]] = producers[src].input[0]
            drop.add(id(node))
        elif src in int8_inputs:  # an int8 graph input (edgec.frontend.integer_io): it becomes the float input
            rename[node.output[0]] = src
            int8_inputs[src].type.tensor_type.elem_type = onnx.TensorProto.FLOAT
            drop.add(id(node))
    for o in graph.output:  # an int8 graph output: the float value its QuantizeLinear read
        node = producers.get(o.name)
        if node is not None and node.op_type == "QuantizeLinear":
            drop.add(id(node))
            graph.node.append(onnx.helper.make_node("Identity", [node.input[0]], [o.name]))
            o.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    used = {i for n in graph.node if id(n) not in drop for i in n.input} | {o.name for o in graph.output}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and not any(o in used for o in node.output):
            drop.add(id(node))
    kept = [n for n in graph.node if id(n) not in drop]
    for node in kept:
        for i, name in enumerate(node.input):
            while name in rename:
                name = rename[name]
            node.input[i] = name
    for o in graph.output:
        if o.name in rename:  # the graph's output was a dequantized value: keep its name on the float wire
            kept.append(onnx.helper.make_node("Identity", [rename[o.name]], [o.name]))
    del graph.node[:]
    graph.node.extend(kept)
    del graph.value_info[:]
    return out


def calibration_samples(calibrate: str | Path | None, shapes: dict[str, tuple[int, ...]],
                        dtypes: dict[str, np.dtype], preprocessing: dict[str, Any] | None, samples: int,
                        seed: int = 0, flag: str = "--calibrate") -> Calibration:
    """The calibration samples of ``--calibrate`` (or the package and generated images without it).

    Args:
        calibrate: A folder of images (searched recursively; an ImageFolder tree works), a ``.npz`` file
            (one array per input, named as the inputs or ``arg0``...; the first axis indexes samples of the
            input's batch), or None.
        shapes, dtypes: The model's inputs.
        preprocessing: The model's preprocessing (``resize``, ``scale``, ``mean``, ``std``, ``layout``), or None
            (images are resized to the input and scaled to [0, 1]).
        samples: At most this many samples (images taken evenly over the sorted files).
        flag: The flag that named ``calibrate``, for messages (``--data`` when its training images calibrate).

    Raises:
        UsageError: a missing path, a folder without images, a ``.npz`` whose arrays do not fit the inputs, or
            a model whose inputs are not one image without ``--calibrate FILE.npz``.
    """
    if calibrate is not None:
        path = Path(calibrate)
        if path.is_dir():
            return _image_folder(path, shapes, preprocessing, samples, flag)
        if path.is_file() and path.suffix == ".npz":
            return _npz(path, shapes, dtypes, samples)
        if path.is_file():
            raise UsageError(f"--calibrate {path} is neither a folder of images nor a .npz file",
                             "give a folder of images or a .npz of input arrays")
        raise UsageError(f"--calibrate {path} not found", "give a folder of images or a .npz of input arrays")
    name, shape = _image_input(shapes, "calibration images")
    pre = _pre(shape, preprocessing)
    images = list(_package_images())
    rng = np.random.default_rng(seed)
    out, shipped = [], 0
    for i in range(samples):
        if i < len(images):
            rgb, shipped = _crop(images[i], rng), shipped + 1
        else:
            rgb = _generated_image(rng, pre["resize"])
        out.append({name: _as_input(rgb, pre, shape)})
    generated = samples - shipped
    parts = ([f"{shipped} scikit-image sample images"] if shipped else []) + (
        [f"{generated} generated images"] if generated else [])
    return Calibration(out, "generated", " and ".join(parts) + _scaling_note(preprocessing)
                       + " (no --calibrate: give your own images for ranges that fit your data)")


def _scaling_note(preprocessing: dict[str, Any] | None) -> str:
    """How calibration images were scaled, where the model records no preprocessing (an ONNX file)."""
    return "" if preprocessing else ", scaled to [0, 1] without mean/std (the model records no preprocessing)"


def quantize_int8(model: onnx.ModelProto, calibration: Calibration, method: str = DEFAULT_METHOD) -> onnx.ModelProto:
    """The QDQ int8 form of ``model`` (module docstring), with onnxruntime's ``quantize_static``.

    Args:
        model: float32 ONNX with static shapes (after edgec's frontend and passes).
        calibration: Its calibration samples.
        method: ``minmax``, ``entropy`` or ``percentile`` (onnxruntime's calibrators).

    Returns:
        The quantized model (QDQ format; opset at least 13), an input sliced before its quantizers given one
        ``scale`` and ``zero_point`` (:func:`edgec.frontend.integer_io.shared_input_quantization`).

    Raises:
        UsageError: an unknown method.
    """
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    if method not in METHODS:
        raise UsageError(f"unknown calibration method '{method}'", f"choose one of {', '.join(METHODS)}")
    calibrate_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                        "percentile": CalibrationMethod.Percentile}[method]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(calibration.samples)

        def get_next(self):
            return next(self._it, None)

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(prefix="edgec-quantize-") as work:
        src, dst = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        onnx.save(_with_opset(model, 13), str(src))
        root.setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" warnings: edgec's frontend did it
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # its entropy and percentile calibrators print
                quantize_static(str(src), str(dst), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=calibrate_method,
                                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True,
                                               "CalibTensorRangeSymmetric": False})
        finally:
            root.setLevel(level)
        quantized = shared_input_quantization(in_original_order(onnx.load(str(dst)), model))
    for prop in model.metadata_props:  # keep edgec's preprocessing record
        quantized.metadata_props.add(key=prop.key, value=prop.value)
    return quantized


def in_original_order(quantized: onnx.ModelProto, original: onnx.ModelProto) -> onnx.ModelProto:
    """``quantized`` with its nodes in ``original``'s order, each inserted ``QuantizeLinear``/
    ``DequantizeLinear`` just before the first node that needs it.

    ``quantize_static`` sorts the graph again, and its order interleaves independent branches: with
    ``patch_inference`` it ran the first convolution of all 16 patches, then the second of all 16, so every
    patch's tensors were live at once (arena 1451 KiB instead of about 215 KiB on ``mcunetv2_large``). The
    order a graph's nodes are written in is the order the backends run them, and so what the memory plan sees.
    A topological sort (Kahn's) that always takes the ready node earliest in ``original`` restores it; nodes are
    matched by name (or by an output's name), and a node ``original`` lacks takes the place of its earliest
    consumer.
    """
    out = onnx.ModelProto.FromString(quantized.SerializeToString())
    nodes = list(out.graph.node)
    place = {n.name: i for i, n in enumerate(original.graph.node) if n.name}
    written = {o: i for i, n in enumerate(original.graph.node) for o in n.output}
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    users: list[list[int]] = [[] for _ in nodes]
    waits = [0] * len(nodes)
    for i, n in enumerate(nodes):
        for j in {producer[name] for name in n.input if name in producer}:
            users[j].append(i)
            waits[i] += 1
    key = [float(place[n.name] if n.name in place else min((written[o] for o in n.output if o in written),
                                                             default=math.inf)) for n in nodes]
    for i in reversed(_topological(nodes, users, waits)):  # an inserted node: just before its first consumer
        if key[i] == math.inf:
            key[i] = min((key[j] - 0.5 for j in users[i]), default=math.inf)
    import heapq

    ready = [(key[i], i) for i in range(len(nodes)) if waits[i] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in users[i]:
            waits[j] -= 1
            if waits[j] == 0:
                heapq.heappush(ready, (key[j], j))
    if len(order) != len(nodes):  # not a DAG (cannot happen for a valid model): keep onnxruntime's order
        return out
    del out.graph.node[:]
    out.graph.node.extend(nodes[i] for i in order)
    return out


def _topological(nodes: list, users: list[list[int]], waits: list[int]) -> list[int]:
    """Indices of ``nodes`` in some topological order (``waits`` is not changed)."""
    left, order = list(waits), [i for i in range(len(nodes)) if waits[i] == 0]
    for i in order:
        for j in users[i]:
            left[j] -= 1
            if left[j] == 0:
                order.append(j)
    return order


def snr_db(got: np.ndarray, want: np.ndarray) -> float:
    """Signal-to-noise ratio of ``got`` against ``want`` in dB: ``10 log10(sum(want^2) / sum((got - want)^2))``
    (inf when they are equal)."""
    want = np.asarray(want, np.float64)
    noise = float(np.sum((np.asarray(got, np.float64) - want) ** 2))
    signal = float(np.sum(want ** 2))
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _with_opset(model: onnx.ModelProto, least: int) -> onnx.ModelProto:
    """``model`` at opset ``least`` or later (per-channel QuantizeLinear needs 13)."""
    version = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=least)
    if version >= least:
        return model
    from onnx import version_converter

    return version_converter.convert_version(model, least)


def _image_input(shapes: dict[str, tuple[int, ...]], what: str) -> tuple[str, tuple[int, ...]]:
    if len(shapes) == 1:
        name, shape = next(iter(shapes.items()))
        if len(shape) == 4 and (shape[1] in (1, 3) or shape[3] in (1, 3)):
            return name, shape
    raise UsageError(f"{what} need a model with one image input; this one takes "
                     + ", ".join(f"{k} {list(v)}" for k, v in shapes.items()),
                     "give --calibrate FILE.npz with one array per input (first axis: samples)")


def _pre(shape: tuple[int, ...], preprocessing: dict[str, Any] | None) -> dict[str, Any]:
    nhwc = shape[3] in (1, 3) and shape[1] not in (1, 3)
    pre = dict(preprocessing or {"scale": 1 / 255, "mean": [0, 0, 0], "std": [1, 1, 1]})
    pre["resize"] = list(shape[1:3] if nhwc else shape[2:4])
    pre["layout"] = "NHWC" if nhwc else "NCHW"
    return pre


def _as_input(rgb: np.ndarray, pre: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image as a model input (grey for a 1-channel input), batch repeated."""
    from edgec.frontend.image import preprocess_rgb

    x = preprocess_rgb(rgb, pre)
    channels = shape[3] if pre["layout"] == "NHWC" else shape[1]
    if channels == 1:
        x = x.mean(axis=3 if pre["layout"] == "NHWC" else 1, keepdims=True)
    return np.ascontiguousarray(np.repeat(x, shape[0], axis=0), dtype=np.float32)


def _package_images():
    """scikit-image's bundled sample images as ``(H, W, 3)`` uint8 (none where scikit-image is not installed)."""
    try:
        import skimage.data
    except ImportError:
        return
    for name in PACKAGE_IMAGES:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001  an image this version does not bundle
            continue
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        yield np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of at least half the shorter side (data augmentation for a few images)."""
    h, w = image.shape[:2]
    side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return image[top:top + side, left:left + side]


def _generated_image(rng: np.random.Generator, size: list[int]) -> np.ndarray:
    """A natural-looking ``(H, W, 3)`` uint8 image: smooth colour gradients, blobs and a little noise."""
    h, w = int(size[0]), int(size[1])
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    image = np.zeros((h, w, 3))
    for c in range(3):
        a, b, phase = rng.uniform(-1, 1, 3)
        image[..., c] = 0.5 + 0.3 * np.sin(2 * np.pi * (a * xx + b * yy) + phase * np.pi)
    for _ in range(int(rng.integers(2, 6))):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        image += blob[..., None] * rng.uniform(-0.5, 0.5, 3)
    image += rng.normal(0, 0.03, image.shape)
    return (np.clip(image, 0, 1) * 255).astype(np.uint8)


def _image_folder(root: Path, shapes: dict[str, tuple[int, ...]], preprocessing: dict[str, Any] | None,
                  samples: int, flag: str = "--calibrate") -> Calibration:
    from edgec.frontend.data import IMAGE_SUFFIXES
    from edgec.frontend.image import preprocess

    name, shape = _image_input(shapes, f"{flag} DIR images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UsageError(f"{flag} {root} holds no images ({', '.join(IMAGE_SUFFIXES)})",
                         "give a folder of images, or a .npz of input arrays" if flag == "--calibrate" else
                         "give a labelled ImageFolder (one subfolder of images per class, optionally under "
                         "train/ and val/)")
    if len(files) > samples:
        files = [files[int(k)] for k in np.linspace(0, len(files) - 1, samples)]
    pre = _pre(shape, preprocessing)
    out = []
    for p in files:
        x = preprocess(p, pre)
        channels = shape[3] if pre["layout"] == "NHWC" else shape[1]
        if channels == 1:
            x = x.mean(axis=3 if pre["layout"] == "NHWC" else 1, keepdims=True)
        out.append({name: np.ascontiguousarray(np.repeat(x, shape[0], axis=0), dtype=np.float32)})
    return Calibration(out, "--calibrate DIR", f"{len(out)} images from {root}" + _scaling_note(preprocessing))


def _npz(path: Path, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, np.dtype], samples: int) -> Calibration:
    names = list(shapes)
    try:
        with np.load(path) as data:
            arrays = {}
            for i, n in enumerate(names):
                key = n if n in data.files else f"arg{i}" if f"arg{i}" in data.files else None
                if key is None:
                    raise UsageError(f"--calibrate {path} has no array '{n}' (nor 'arg{i}'); it holds "
                                     f"{', '.join(data.files) or 'nothing'}",
                                     "name the arrays as the model's inputs: " + ", ".join(names))
                arrays[n] = np.asarray(data[key])
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001  numpy's many ways of failing on a bad file
        raise UsageError(f"--calibrate {path} is not a readable .npz file ({type(exc).__name__})",
                         "write it with numpy.savez") from exc
    counts = set()
    for n, a in arrays.items():
        shape = tuple(shapes[n])
        if a.ndim != len(shape) or tuple(a.shape[1:]) != shape[1:] or a.shape[0] % max(shape[0], 1):
            raise UsageError(f"--calibrate {path}: array '{n}' has shape {list(a.shape)}; the input is {list(shape)}",
                             f"stack samples along the first axis: [S*{shape[0]}, {', '.join(map(str, shape[1:]))}]")
        if not np.isfinite(a).all() if np.issubdtype(a.dtype, np.floating) else False:
            raise UsageError(f"--calibrate {path}: array '{n}' holds NaN or inf", "give finite calibration values")
        counts.add(a.shape[0] // max(shape[0], 1))
    if counts == {0}:
        raise UsageError(f"--calibrate {path} holds no samples (its arrays have 0 rows)",
                         "stack at least one sample along the first axis")
    if len(counts) != 1 or 0 in counts:
        raise UsageError(f"--calibrate {path}: the arrays hold different numbers of samples ({sorted(counts)})",
                         "give every input the same number of samples")
    n = min(counts.pop(), samples)
    out = [{k: np.ascontiguousarray(a[i * shapes[k][0]:(i + 1) * shapes[k][0]], dtype=dtypes.get(k, np.float32))
            for k, a in arrays.items()} for i in range(n)]
    return Calibration(out, "--calibrate FILE.npz", f"{n} samples from {path}")
