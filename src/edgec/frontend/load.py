"""Third-party ONNX import: load, check, fix input shapes, simplify.

The steps, in order, for any ONNX model (exported by edgec or not):

1. ``onnx.checker.check_model(full_check=True)`` (structure, opset, type and shape checks);
2. fix every dynamic input dim to the shape the user gives (``--input-shape``);
3. shape inference and simplification at that fixed shape with onnxslim, which
   constant-folds shape subgraphs (``Shape -> Gather -> Concat -> Reshape``) into
   constants -- the class of graph TVM's Relax importer rejects with "Reshape
   requires the input new shape to be Shape";
4. a final check that no shape computation is left and every value has a static shape.

Graph fusions of onnxslim are disabled here: rewrites that change weights are
edgec passes (:mod:`edgec.passes`), each verified and reported on its own.
"""

from __future__ import annotations

import contextlib
import io
import re
import logging
from pathlib import Path

import onnx
from onnx import shape_inference

from edgec.errors import ModelError, UsageError
from edgec.frontend.specs import parse_input_shapes  # noqa: F401  (re-exported; parsed without onnx)

log = logging.getLogger(__name__)

ShapeDict = dict[str, tuple[int, ...]]


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Read and check an ONNX file.

    Args:
        path: ``.onnx`` file (external data next to it is loaded too).

    Returns:
        The model.

    Raises:
        ModelError: the file is missing, unreadable, truncated or not valid ONNX.
    """
    path = Path(path)
    if not path.exists():
        raise ModelError(f"ONNX file not found: {path}", "check the path, or give a zoo name (`edgec zoo list`)")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not an ONNX file", "give the path of a .onnx file")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from exc
    if path.stat().st_size == 0:
        raise ModelError(f"{path} is empty", "re-export or re-download the model")
    _refuse_other_formats(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX file (truncated or not protobuf): "
                         f"{type(exc).__name__}", "re-export or re-download the model") from exc
    _load_external_data(model, path)
    check_model(model, str(path))
    return model


#: File signatures of model formats that are not ONNX, with what to do instead.
_OTHER_FORMATS = [
    (lambda head: head[:2] == b"PK" or head[:2] == b"\x80\x02", "a PyTorch file (torch.save)",
     "export it to ONNX with torch.onnx.export, or pass it as --weights of a zoo model"),
    (lambda head: head[:8] == b"\x89HDF\r\n\x1a\n", "a Keras/HDF5 model", "convert it to ONNX first (tf2onnx)"),
]


def _refuse_other_formats(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(16)
    if path.suffix.lower() == ".tflite" or head[4:8] == b"TFL3":
        _refuse_tflite(path)
    for test, what, hint in _OTHER_FORMATS:
        if test(head):
            raise ModelError(f"{path} is {what}, not ONNX", hint)


def _refuse_tflite(path: Path) -> None:
    """A TFLite file where an ONNX model is needed (the commands that rewrite or cut the graph): what no
    command can take is refused as such (a damaged file, a custom op, several subgraphs, dynamic shapes:
    :func:`edgec.frontend.tflite.inspect_tflite`); a sound one with what it is and how to convert it."""
    from edgec.frontend.tflite import inspect_tflite

    info = inspect_tflite(path)
    raise ModelError(f"{path} is a TensorFlow Lite model ({info.kind}, {len(info.ops)} operators); this command "
                     "works on ONNX graphs (edgec build and edgec tune take TFLite files as they are)",
                     "convert it to ONNX first, e.g. python -m tf2onnx.convert --tflite FILE --output model.onnx")


def _tensors(graph: onnx.GraphProto):
    """Every tensor of a graph and its subgraphs: initializers and tensor attributes."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _tensors(a.g)
            for g in a.graphs:
                yield from _tensors(g)


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    """Load tensors stored beside the model (``external_data``), refusing paths outside its folder."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    folder = path.resolve().parent
    for tensor in _tensors(model.graph):
        if not uses_external_data(tensor):
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if folder not in target.parents:
            raise ModelError(f"{path}: tensor '{tensor.name}' points to external data '{location}', outside the "
                             "model's folder (refused: a model file may only read files beside it)",
                             "move the data file next to the model and fix its location")
        if not target.is_file():
            raise ModelError(f"{path}: tensor '{tensor.name}' needs external data file '{location}', "
                             f"which is missing beside the model", f"put {location} next to {path.name}")
    try:
        load_external_data_for_model(model, str(folder))
    except Exception as exc:  # noqa: BLE001  truncated data file and kin
        raise ModelError(f"{path}: its external data cannot be read: {' '.join(str(exc).split())[:200]}",
                         "re-export or re-download the model with its data files") from exc


def check_model(model: onnx.ModelProto, label: str = "model") -> None:
    """Run ``onnx.checker`` with the full check.

    Raises:
        ModelError: the model is malformed.
    """
    if not model.graph.node or not model.graph.output:
        raise ModelError(f"{label} has an empty graph (no nodes or no outputs); the file is "
                         "likely truncated or not ONNX", "re-export or re-download the model")
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{label} is not valid ONNX: {first[:200]}",
                         "re-export the model, or repair it (e.g. with onnxslim)") from exc


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value.type.tensor_type.shape.dim]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The real inputs of the graph (initializers listed as inputs excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def resolve_input_shapes(model: onnx.ModelProto, given: dict[str | None, tuple[int, ...]]) -> ShapeDict:
    """Decide the static shape of every graph input.

    Args:
        model: The ONNX model.
        given: Parsed ``--input-shape`` values (``None`` key: the only input).

    Returns:
        ``{input name: shape}`` with every dim fixed.

    Raises:
        UsageError: unknown input name, wrong rank, a conflict with a static dim,
            or a dynamic dim left without a given shape.
    """
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    if None in given:
        if len(inputs) != 1:
            raise UsageError(f"the model has {len(inputs)} inputs ({', '.join(names)}); "
                             "--input-shape needs a name", "write NAME=1,3,224,224 for each input")
        given = {names[0]: given[None]}
    for name in given:
        if name not in names:
            raise UsageError(f"--input-shape names '{name}', which is not an input of the model",
                             f"inputs are: {', '.join(names)}")
    shapes: ShapeDict = {}
    for inp in inputs:
        dims = _dims(inp)
        want = given.get(inp.name)
        if want is None:
            if not all(isinstance(d, int) and d > 0 for d in dims):
                shown = ",".join(str(d) for d in dims)
                raise UsageError(f"input '{inp.name}' has dynamic dims [{shown}]", _shape_hint(inp.name, dims))
            shapes[inp.name] = tuple(int(d) for d in dims)
            continue
        if len(want) != len(dims):
            raise UsageError(f"--input-shape for '{inp.name}' has rank {len(want)}, the model's input "
                             f"has rank {len(dims)} [{','.join(map(str, dims))}]",
                             "give one dim per axis")
        for axis, (d, w) in enumerate(zip(dims, want)):
            if isinstance(d, int) and d > 0 and d != w:
                raise UsageError(f"--input-shape for '{inp.name}' sets axis {axis} to {w}, but the model "
                                 f"fixes it to {d}", f"use {','.join(str(x) for x in dims)} with only "
                                 "dynamic axes changed")
        shapes[inp.name] = tuple(want)
    return shapes


def _shape_hint(name: str, dims: list[int | str]) -> str:
    """A ``--input-shape`` the user can paste: batch 1, known dims kept, other dynamic dims named."""
    letters = iter(["H", "W", "D", "E", "F", "G"] if len(dims) == 4 else ["D1", "D2", "D3", "D4", "D5"])
    shown, todo = [], []
    for axis, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            shown.append(str(d))
        elif axis == 0:
            shown.append("1")
        else:
            named = isinstance(d, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,15}", d) and d not in todo
            todo.append(d if named else next(letters))
            shown.append(todo[-1])
    hint = f"pass --input-shape {name}={','.join(shown)}"
    return hint + (f", replacing {', '.join(todo)} with sizes" if todo else "")


def fix_input_shapes(model: onnx.ModelProto, shapes: ShapeDict) -> onnx.ModelProto:
    """Return a copy of ``model`` whose inputs have the static ``shapes``.

    Intermediate ``value_info`` is dropped (it may carry stale symbolic dims) and
    re-inferred by :func:`simplify`.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for inp in fixed.graph.input:
        if inp.name in shapes:
            dims = inp.type.tensor_type.shape.dim
            del dims[:]
            for d in shapes[inp.name]:
                dims.add().dim_value = d
    del fixed.graph.value_info[:]
    for out in fixed.graph.output:  # output dims are re-inferred
        for d in out.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
    return fixed


def simplify(model: onnx.ModelProto, shapes: ShapeDict) -> onnx.ModelProto:
    """Infer shapes and constant-fold at the fixed input shapes with onnxslim (no fusions).

    Args:
        model: Model whose inputs already have static shapes.
        shapes: The input shapes (passed to onnxslim too).

    Returns:
        The simplified model, with static shapes on every value and no shape subgraph left.

    Raises:
        ModelError: simplification failed, or a dynamic shape computation remains.
    """
    import onnxslim
    from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink):
            # rank-0 inputs are static already (onnxslim cannot parse an empty shape)
            slim = onnxslim.slim(model, input_shapes=[f"{k}:{','.join(map(str, v))}" for k, v in shapes.items() if v],
                                 skip_fusion_patterns=list(DEFAULT_FUSION_PATTERNS))
    except Exception as exc:
        raise ModelError(f"simplifying the model at input shape {shapes} failed: "
                         f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__}",
                         "check --input-shape; the model may not support that size") from exc
    if slim is None:
        raise ModelError("onnxslim returned no model", "rerun with --debug")
    slim = shape_inference.infer_shapes(slim, strict_mode=False, data_prop=True)
    leftover = [n for n in slim.graph.node if n.op_type in ("Shape", "Size")]
    if leftover:
        n = leftover[0]
        raise ModelError(f"shape computation '{n.name or n.output[0]}' ({n.op_type}) could not be folded "
                         "at the fixed input shape; the output shape depends on data",
                         "models with data-dependent shapes are not supported")
    return slim


def prepare_onnx(model: onnx.ModelProto, given: dict[str | None, tuple[int, ...]],
                 label: str = "model", notes: list[str] | None = None) -> tuple[onnx.ModelProto, ShapeDict]:
    """Check, normalise (:mod:`edgec.frontend.normalize`), fix input shapes and simplify an ONNX model.

    Args:
        model: The model as loaded.
        given: Parsed ``--input-shape`` values.
        label: How to name the model in messages.
        notes: Receives, in words, each import normalisation that fired.

    Returns:
        ``(simplified model, input shapes)``.

    Raises:
        ModelError, UsageError: see :func:`check_model`, :func:`resolve_input_shapes`, :func:`simplify`.
    """
    from edgec.frontend.normalize import normalize

    check_model(model, label)
    model, applied = normalize(model)
    if notes is not None:
        notes.extend(applied)
    shapes = resolve_input_shapes(model, given)
    fixed = fix_input_shapes(model, shapes)
    return simplify(fixed, shapes), shapes
