"""Parameter inputs: graph inputs that carry a shape, a scale, axes or bounds rather than data.

Exported detectors and segmenters (and the ONNX backend test suite's node cases) feed Resize's
``scales``/``sizes``, Slice's ``starts``/``ends``, Reshape's ``shape``, Pad's ``pads``, Clip's
``min``/``max``... as graph inputs. Random values, like image data, are meaningless there (onnxruntime
refuses a negative scale; TVM needs the axes constant), so edgec never invents them: the user gives
each one (``--input-value NAME=1,1,2,2``, or an array of that name in a ``--verify-inputs`` ``.npz``), and
it is folded into the model as a constant before simplification (:func:`bind_parameters`), recorded in
the report and the manifest.

An input is a parameter input when its values reach one of :data:`PARAMETER_OPERANDS`, directly or
through shape arithmetic (:data:`PASS_THROUGH`: casts, concatenation, element-wise integer maths).
``Shape`` ends the search: a shape computed from an image's shape is not the image's values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgec.errors import UsageError
from edgec.frontend.specs import parse_input_values  # noqa: F401  (re-exported; parsed without onnx)

#: ``{op: {input index: operand name}}``: operands that are parameters, not data.
PARAMETER_OPERANDS: dict[str, dict[int, str]] = {
    "Resize": {1: "roi", 2: "scales", 3: "sizes"},
    "Upsample": {1: "scales"},
    "Slice": {1: "starts", 2: "ends", 3: "axes", 4: "steps"},
    "Reshape": {1: "shape"},
    "Squeeze": {1: "axes"},
    "Unsqueeze": {1: "axes"},
    "Split": {1: "split"},
    "Pad": {1: "pads", 2: "constant_value", 3: "axes"},
    "Clip": {1: "min", 2: "max"},
    "Expand": {1: "shape"},
    "Tile": {1: "repeats"},
    "ConstantOfShape": {0: "input"},
    "TopK": {1: "k"},
    "Range": {0: "start", 1: "limit", 2: "delta"},
    "OneHot": {1: "depth"},
    **{op: {1: "axes"} for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                                  "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")},
}

#: Operators a parameter's value flows through unchanged in kind (shape arithmetic).
PASS_THROUGH = frozenset({"Cast", "Identity", "Concat", "Unsqueeze", "Squeeze", "Reshape", "Gather", "Slice",
                          "Mul", "Add", "Sub", "Div", "Floor", "Ceil", "Round", "Neg", "Abs", "Max", "Min"})


def parameter_inputs(model: onnx.ModelProto) -> dict[str, str]:
    """The graph inputs that are parameters, each with what it feeds (``"Resize 'scales' (node up)"``).

    Args:
        model: The model as loaded (initializers listed as inputs are not inputs).
    """
    from edgec.frontend.load import graph_inputs

    inputs = {i.name for i in graph_inputs(model)}
    producers = {o: n for n in model.graph.node for o in n.output}
    found: dict[str, str] = {}
    for node in model.graph.node:
        for index, operand in PARAMETER_OPERANDS.get(node.op_type, {}).items():
            if index >= len(node.input) or not node.input[index]:
                continue
            what = f"{node.op_type} '{operand}' (node {node.name or node.output[0]})"
            for name in _sources(node.input[index], producers, inputs):
                found.setdefault(name, what)
    return found


def _sources(value: str, producers: dict[str, onnx.NodeProto], inputs: set[str]) -> set[str]:
    """Graph inputs whose values reach ``value`` through :data:`PASS_THROUGH` operators."""
    out, todo, seen = set(), [value], set()
    while todo:
        v = todo.pop()
        if v in seen:
            continue
        seen.add(v)
        if v in inputs:
            out.add(v)
            continue
        node = producers.get(v)
        if node is not None and node.op_type in PASS_THROUGH:
            todo.extend(i for i in node.input if i)
    return out


def sample_values(paths, wanted: set[str]) -> dict[str, np.ndarray]:
    """Arrays named as ``wanted`` inputs in the ``--verify-inputs`` ``.npz`` files (the first file that has
    one gives it; other files and other arrays are the verification samples' business)."""
    from pathlib import Path

    out: dict[str, np.ndarray] = {}
    for p in map(Path, paths or []):
        if p.suffix != ".npz" or not p.is_file():
            continue
        try:
            with np.load(p) as data:
                out.update({n: np.asarray(data[n]) for n in wanted if n in data.files and n not in out})
        except (ValueError, OSError):
            continue  # unreadable: load_samples says so with the file's name
    return out


def bind_parameters(model: onnx.ModelProto, given: dict[str, list[float]], samples: dict[str, np.ndarray],
                    notes: list[str] | None = None) -> tuple[onnx.ModelProto, dict[str, list]]:
    """The model with its parameter inputs, and every input given by ``--input-value``, folded into
    constants of their values.

    Args:
        model: The model as loaded.
        given: ``--input-value`` lists by input name.
        samples: Arrays by input name from the ``--verify-inputs`` ``.npz`` files (used for parameter
            inputs without an ``--input-value``).
        notes: Receives one line per folded input, as the report shows it.

    Returns:
        ``(model, {input name: the values folded, as a list})`` (the model unchanged when nothing is folded).

    Raises:
        UsageError: a parameter input without a value (named, with the operand it feeds), a value whose
            count does not fit the input's declared shape, or ``--input-value`` naming no input.
    """
    from edgec.frontend.load import _dims, graph_inputs
    from edgec.frontend.reference import input_dtypes

    params = parameter_inputs(model)
    declared = {i.name: i for i in graph_inputs(model)}
    for name in given:
        if name not in declared:
            raise UsageError(f"--input-value names '{name}', which is not an input of the model",
                             f"inputs are: {', '.join(declared)}")
    missing = [n for n in params if n not in given and n not in samples]
    if missing:
        n = missing[0]
        raise UsageError(f"input '{n}' feeds {params[n]}: a parameter, not data, and edgec will not invent it",
                         f"give its value with --input-value {n}=V1,V2,... (or an array '{n}' in the "
                         "--verify-inputs .npz)")
    fold = [n for n in declared if n in params or n in given]
    if not fold:
        return model, {}
    dtypes = input_dtypes(model)
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    folded: dict[str, list] = {}
    for name in fold:
        dims = _dims(declared[name])
        array = np.asarray(given[name] if name in given else samples[name]).astype(dtypes[name])
        if all(isinstance(d, int) and d > 0 for d in dims):
            shape = tuple(int(d) for d in dims)
            if array.size != int(np.prod(shape, dtype=np.int64)):
                raise UsageError(f"--input-value {name} has {array.size} values; the input's shape "
                                 f"[{','.join(map(str, dims))}] holds {int(np.prod(shape, dtype=np.int64))}",
                                 "give one value per element")
            array = array.reshape(shape)
        elif len(dims) == 1 and name in given:
            array = array.reshape(-1)
        elif name in given:
            raise UsageError(f"input '{name}' has dynamic dims [{','.join(map(str, dims))}] and rank "
                             f"{len(dims)}: a list of values cannot say its shape",
                             f"give it as an array '{name}' in a --verify-inputs .npz")
        bound.graph.initializer.append(numpy_helper.from_array(array, name))
        kept = [i for i in bound.graph.input if i.name != name]
        del bound.graph.input[:]
        bound.graph.input.extend(kept)
        folded[name] = array.tolist()
        if notes is not None:
            feeds = f"it feeds {params[name]}" if name in params else "--input-value"
            notes.append(f"input '{name}' fixed to {array.tolist()} ({feeds})")
    return bound, folded
