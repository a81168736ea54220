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
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path} is not a readable ONNX file (truncated or not protobuf): "
                         f"{type(exc).__name__}", "re-export or re-download the model") from exc
    check_model(model, str(path))
    return model


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


def parse_input_shapes(specs: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    """Parse ``--input-shape`` values.

    Args:
        specs: Strings ``NAME=1,3,224,224`` or ``1,3,224,224`` (the only input).

    Returns:
        ``{name or None: shape}``.

    Raises:
        UsageError: a spec is malformed or has a non-positive dim.
    """
    out: dict[str | None, tuple[int, ...]] = {}
    for spec in specs or []:
        name, _, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in re.split(r"[,x]", dims.strip()))
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 for d in shape):
            raise UsageError(f"bad --input-shape '{spec}'",
                             "write NAME=1,3,224,224 with positive integer dims")
        out[name or None] = shape
    return out


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
                raise UsageError(f"input '{inp.name}' has dynamic dims [{shown}]",
                                 f"pass --input-shape {inp.name}=" +
                                 ",".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims))
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
            slim = onnxslim.slim(model, input_shapes=[f"{k}:{','.join(map(str, v))}" for k, v in shapes.items()],
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
                 label: str = "model") -> tuple[onnx.ModelProto, ShapeDict]:
    """Check, fix input shapes and simplify an ONNX model.

    Returns:
        ``(simplified model, input shapes)``.

    Raises:
        ModelError, UsageError: see :func:`check_model`, :func:`resolve_input_shapes`, :func:`simplify`.
    """
    check_model(model, label)
    shapes = resolve_input_shapes(model, given)
    fixed = fix_input_shapes(model, shapes)
    return simplify(fixed, shapes), shapes
