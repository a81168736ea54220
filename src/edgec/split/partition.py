"""Cut an ONNX graph at one tensor into a head (inputs -> cut) and a tail (cut -> outputs).

A cut is valid where that tensor alone crosses: the tail needs nothing computed
by the head but the cut tensor, and no graph input (so a cut never falls inside a
residual or an attention block, whose other branch would cross too). The parts
are extracted with ``onnx.utils.Extractor``; shapes must be static.
"""

from __future__ import annotations

import onnx

from edgec.errors import UsageError


def _producers(model: onnx.ModelProto) -> dict[str, int]:
    return {out: i for i, n in enumerate(model.graph.node) for out in n.output if out}


def _constants(model: onnx.ModelProto) -> set[str]:
    return {i.name for i in model.graph.initializer}


def tail_needs(model: onnx.ModelProto, cut: str) -> set[str]:
    """Tensors the tail (everything the outputs need downstream of ``cut``) takes from outside itself.

    Initializers and ``Constant`` outputs used by the tail are copied into it, so they do not count.
    """
    producers = _producers(model)
    consts = _constants(model)
    nodes = model.graph.node
    needed: set[str] = set()
    seen: set[int] = set()
    stack = [o.name for o in model.graph.output]
    while stack:
        name = stack.pop()
        if name == cut or name in consts or not name:
            if name == cut:
                needed.add(cut)
            continue
        i = producers.get(name)
        if i is None:  # a graph input
            needed.add(name)
            continue
        if i in seen:
            continue
        seen.add(i)
        if nodes[i].op_type == "Constant":
            continue
        stack.extend(nodes[i].input)
    return needed


def valid_cuts(model: onnx.ModelProto) -> list[str]:
    """Tensors at which the model can be cut, in graph order (graph outputs excluded).

    Args:
        model: ONNX with static shapes.
    """
    outputs = {o.name for o in model.graph.output}
    out = []
    for node in model.graph.node:
        if node.op_type == "Constant":
            continue
        for t in node.output:
            if t and t not in outputs and tail_needs(model, t) == {t}:
                out.append(t)
    return out


def split_model(model: onnx.ModelProto, cut: str) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Cut ``model`` at tensor ``cut``.

    Args:
        model: ONNX with static shapes (after the frontend).
        cut: Name of the tensor to cut at.

    Returns:
        ``(head, tail)``: the head maps the model's inputs to ``cut``; the tail maps ``cut``
        to the model's outputs. Both are checked ONNX models with the original opsets.

    Raises:
        UsageError: ``cut`` is not a tensor of the model, is a graph input or output, or is
            not a valid cut (another tensor crosses it too; names it).
    """
    producers = _producers(model)
    if cut not in producers:
        raise UsageError(f"'{cut}' is not a tensor computed inside the model", "pick a tensor from the list of valid cuts")
    if cut in {o.name for o in model.graph.output}:
        raise UsageError(f"'{cut}' is a model output; the tail would be empty", "cut at an earlier tensor")
    needs = tail_needs(model, cut)
    if needs != {cut}:
        others = sorted(needs - {cut})
        raise UsageError(f"'{cut}' is not a valid cut: the tail also needs {', '.join(others[:3])}"
                         + (" (+more)" if len(others) > 3 else ""),
                         "cut where a single tensor crosses (not inside a residual or attention block)")
    inferred = onnx.shape_inference.infer_shapes(model)
    extractor = onnx.utils.Extractor(inferred)
    inputs = [i.name for i in model.graph.input if i.name not in _constants(model)]
    head = extractor.extract_model(inputs, [cut])
    tail = extractor.extract_model([cut], [o.name for o in model.graph.output])
    for part in (head, tail):
        del part.graph.value_info[:]
        onnx.checker.check_model(part, full_check=True)
    return head, tail
