"""Parts composed into the whole model: which inputs feed each part, the composition run on the devices
against the whole model, and the function change of encoding the tensors between parts.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx

from edgec.artifact import MAIN_PART
from edgec.errors import UsageError
from edgec.flows.parts import CompiledPart, Connection, InputSets, PartRequest, References, compare_sets, run_on_device
from edgec.flows.steps import Progress
from edgec.frontend import reference
from edgec.frontend.load import graph_inputs
from edgec.passes.fidelity import Tally
from edgec.split.encoding import snr_db

Values = dict[tuple[str, str], np.ndarray]


def input_names(model: onnx.ModelProto) -> list[str]:
    """The model's graph inputs (initializers excluded), in order."""
    return [i.name for i in graph_inputs(model)]


def check_parts(whole: onnx.ModelProto, parts: list[PartRequest], connections: list[Connection]) -> None:
    """The parts have plain, unique names, are listed in execution order, and every input is fed.

    Raises:
        UsageError: duplicate or reserved part names, a part input fed by nothing or by a later part.
    """
    names = [p.name for p in parts]
    if len(set(names)) != len(names) or MAIN_PART in names:
        raise UsageError(f"part names must be unique and not '{MAIN_PART}': {', '.join(names)}",
                         "name the parts e.g. head and tail")
    for p in names:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", p):
            raise UsageError(f"part name '{p}' is not a plain folder name", "use letters, digits, _ and -")
    whole_in = set(input_names(whole))
    produced: set[tuple[str, str]] = set()
    for part in parts:
        for n in input_names(part.model):
            fed = [c for c in connections if c.dst_part == part.name and c.dst_tensor == n]
            if fed and (fed[0].src_part, fed[0].src_tensor) not in produced:
                raise UsageError(f"part '{part.name}' input '{n}' is fed by {fed[0].src_part}:{fed[0].src_tensor}, "
                                 "which no earlier part produces", "list the parts in execution order")
            if not fed and n not in whole_in:
                raise UsageError(f"part '{part.name}' input '{n}' is fed by nothing",
                                 "connect it to an earlier part's output")
        produced |= {(part.name, o.name) for o in part.model.graph.output}


def feed(part: str, tensor: str, whole_inputs: dict[str, np.ndarray], values: Values,
         connections: list[Connection]) -> np.ndarray:
    """What input ``tensor`` of ``part`` receives: an earlier part's output as carried, else the model's input."""
    for c in connections:
        if c.dst_part == part and c.dst_tensor == tensor:
            return c.carry(values[(c.src_part, c.src_tensor)])
    return whole_inputs[tensor]


def chain_reference(parts: list[PartRequest], connections: list[Connection], whole_inputs: dict[str, np.ndarray],
                    references: References, set_name: str) -> tuple[dict[str, dict[str, np.ndarray]], Values]:
    """onnxruntime's run of the parts chained on one input set, each fed the earlier parts' outputs as
    their connections carry them (through the encodings).

    Returns:
        ``({part: its inputs}, {(part, output): value})``.
    """
    values: Values = {}
    fed: dict[str, dict[str, np.ndarray]] = {}
    for part in parts:
        xs = {n: feed(part.name, n, whole_inputs, values, connections) for n in input_names(part.model)}
        fed[part.name] = xs
        outs = references.outputs(part.reference or part.model, {set_name: xs})[set_name]
        values.update({(part.name, o.name): arr for o, arr in zip(part.model.graph.output, outs)})
    return fed, values


def set_part_inputs(parts: list[PartRequest], connections: list[Connection], whole_sets: InputSets,
                    references: References) -> None:
    """Each part's verification input sets: the whole model's inputs, or the earlier parts' onnxruntime
    outputs (carried through their connections' encodings), per set."""
    for part in parts:
        part.input_sets = {}
    for set_name, whole_inputs in whole_sets.items():
        fed, _ = chain_reference(parts, connections, whole_inputs, references, set_name)
        for part in parts:
            part.input_sets[set_name] = fed[part.name]
    for part in parts:
        part.inputs = part.input_sets["normal"]


def whole_output(name: str, parts: list[PartRequest], values: Values) -> np.ndarray:
    """The model output ``name``, as the last part producing it computed it."""
    for part in reversed(parts):
        if (part.name, name) in values:
            return values[(part.name, name)]
    raise UsageError(f"no part produces the model output '{name}'", "the last part must end at the model's outputs")


def verify_composition(done: list[CompiledPart], connections: list[Connection], whole: onnx.ModelProto,
                       whole_sets: InputSets, whole_outputs: dict[str, list[np.ndarray]],
                       say: Progress, references: References,
                       step: Callable[[str, Callable[[], Any]], Any] | None = None,
                       timeout: float | None = None) -> dict[str, Any]:
    """Chain the parts on their verification devices, per input set, and compare with the whole model
    (a set failed by the size of its error alone is decided by the whole model's float64 truth)."""
    parts = [d.request for d in done]
    values: dict[str, Values] = {k: {} for k in whole_sets}
    same_inputs: dict[str, Values] = {k: {} for k in whole_sets}  # onnxruntime on what each device received
    encoded = any(c.encoding is not None for c in connections)
    emulated = False
    for d in done:
        part = d.request
        args = [[feed(part.name, n, whole_sets[k], values[k], connections) for n in input_names(part.model)]
                for k in whole_sets]
        outs, device = run_on_device(d.plan, args, say, part.model, timeout)
        emulated = emulated or bool(device.emulated)
        for k, set_outs, set_args in zip(whole_sets, outs, args):
            ort = reference.run_ort(part.reference or part.model, dict(zip(input_names(part.model), set_args))) \
                if encoded else set_outs
            for o, arr, ref in zip(part.model.graph.output, set_outs, ort):
                values[k][(part.name, o.name)] = arr
                same_inputs[k][(part.name, o.name)] = ref
    finals = {k: [whole_output(o.name, parts, values[k]) for o in whole.graph.output] for k in whole_sets}
    if encoded:  # the encoding changes the function on purpose: its fidelity is reported apart
        expected = {k: [whole_output(o.name, parts, same_inputs[k]) for o in whole.graph.output] for k in whole_sets}
        label = "onnxruntime CPU, ORT_DISABLE_ALL, each part on the inputs its device received (cut encoded)"
    else:
        expected, label = whole_outputs, "onnxruntime CPU, ORT_DISABLE_ALL, whole model"
    # the float64 truth decides a set failed by float32 noise alone; an encoded cut's reference is per part
    # (each part's run on what its device received), which the parts' own verification already judged so
    oracle = None if encoded else references.oracle(whole)
    return {"method": "parts chained on their verification devices: " + " -> ".join(
        f"{d.request.name} ({d.plan.device})" for d in done),
            "reference": label, "emulated": emulated,
            **compare_sets(finals, expected, oracle=oracle, inputs=whole_sets, step=step)}


def cut_fidelity(parts: list[PartRequest], connections: list[Connection], whole: onnx.ModelProto,
                 whole_sets: InputSets, references: References) -> dict[str, Any] | None:
    """The function change of encoding the cut (None when every connection is fp32).

    onnxruntime runs the parts chained through the encodings on ``whole_sets`` (the inputs the encodings
    were calibrated for: the large-offset set, say, lies far outside their range), compared with the whole
    model on the same sets.

    Returns:
        A fidelity record (:meth:`edgec.passes.fidelity.Tally.result`: ``inputs`` is the number of sets
        it rests on) with ``passes`` naming the encoding and ``cut_snr_db``, the lowest SNR (dB) of the
        decoded cut tensor over the sets.
    """
    encoded = [c for c in connections if c.encoding is not None]
    if not encoded:
        return None
    tally, snr = Tally(), float("inf")
    named = {f"fidelity:{k}": v for k, v in whole_sets.items()}  # cached apart from same-named verification sets
    wanted = references.outputs(whole, named)
    for set_name, whole_inputs in named.items():
        _, values = chain_reference(parts, connections, whole_inputs, references, set_name)
        tally.add([whole_output(o.name, parts, values) for o in whole.graph.output], wanted[set_name])
        for c in encoded:
            cut = values[(c.src_part, c.src_tensor)]
            snr = min(snr, snr_db(cut, c.encoding.roundtrip(cut)))
    return {"passes": sorted({c.encoding.label for c in encoded}), **tally.result(), "cut_snr_db": snr}
