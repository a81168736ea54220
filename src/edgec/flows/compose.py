"""Parts composed into the whole model: which inputs feed each part, the composition run on the devices
against the whole model, and the function change of encoding the tensors between parts.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnx

from edgec.artifact import MAIN_PART
from edgec.errors import UsageError
from edgec.flows.parts import CompiledPart, Connection, InputSets, PartRequest, References, compare_sets, run_on_device
from edgec.flows.steps import Progress
from edgec.frontend import reference
from edgec.frontend.load import graph_inputs
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


def set_part_inputs(parts: list[PartRequest], connections: list[Connection], whole_sets: InputSets,
                    references: References) -> None:
    """Each part's verification input sets: the whole model's inputs, or the earlier parts' onnxruntime
    outputs (carried through their connections' encodings), per set."""
    for part in parts:
        part.input_sets = {}
    for set_name, whole_inputs in whole_sets.items():
        values: Values = {}
        for part in parts:
            xs = {n: feed(part.name, n, whole_inputs, values, connections) for n in input_names(part.model)}
            part.input_sets[set_name] = xs
            outs = references.outputs(part.reference or part.model, {set_name: xs})[set_name]
            values.update({(part.name, o.name): arr for o, arr in zip(part.model.graph.output, outs)})
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
                       say: Progress) -> dict[str, Any]:
    """Chain the parts on their verification devices, per input set, and compare with the whole model."""
    parts = [d.request for d in done]
    values: dict[str, Values] = {k: {} for k in whole_sets}
    same_inputs: dict[str, Values] = {k: {} for k in whole_sets}  # onnxruntime on what each device received
    encoded = any(c.encoding is not None for c in connections)
    emulated = False
    for d in done:
        part = d.request
        args = [[feed(part.name, n, whole_sets[k], values[k], connections) for n in input_names(part.model)]
                for k in whole_sets]
        outs, device = run_on_device(d.plan, args, say)
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
    return {"method": "parts chained on their verification devices: " + " -> ".join(
        f"{d.request.name} ({d.plan.device})" for d in done),
            "reference": label, "emulated": emulated, **compare_sets(finals, expected)}


def cut_fidelity(parts: list[PartRequest], connections: list[Connection], whole: onnx.ModelProto,
                 whole_outputs: dict[str, list[np.ndarray]], references: References) -> dict[str, Any] | None:
    """The function change of encoding the cut (None when every connection is fp32).

    onnxruntime runs the parts chained through the encodings on the input sets the encodings were
    calibrated on (``part.input_sets`` already carry the encoded tensors), compared with the whole model.

    Returns:
        A fidelity record (``edgec.passes.fidelity``'s fields) with ``passes`` naming the
        encoding and ``cut_snr_db``, the lowest SNR (dB) of the decoded cut tensor over the sets.
    """
    encoded = [c for c in connections if c.encoding is not None]
    if not encoded:
        return None
    # measured on the input distributions the encoding was calibrated for (the offset set, say, lies far outside)
    wanted = {n for c in encoded for n in c.encoding.calibrated_on}
    whole_outputs = {k: v for k, v in whole_outputs.items() if k in wanted} or whole_outputs
    err, ref_max, agree, rows, snr = 0.0, 0.0, 0, 0, float("inf")
    for set_name, want in whole_outputs.items():
        values: Values = {}
        for part in parts:
            outs = references.outputs(part.reference or part.model, {set_name: part.input_sets[set_name]})[set_name]
            values.update({(part.name, o.name): a for o, a in zip(part.model.graph.output, outs)})
        got = [whole_output(o.name, parts, values) for o in whole.graph.output]
        for g, w in zip(got, want):
            g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
            err = max(err, float(np.abs(g64 - w64).max(initial=0)))
            ref_max = max(ref_max, float(np.abs(w64).max(initial=0)))
        if reference.is_classifier_output(np.asarray(want[0])):
            agree += int((np.argmax(got[0], axis=-1) == np.argmax(want[0], axis=-1)).sum())
            rows += want[0].shape[0]
        for c in encoded:
            cut = values[(c.src_part, c.src_tensor)]
            snr = min(snr, snr_db(cut, c.encoding.roundtrip(cut)))
    return {"passes": sorted({c.encoding.label for c in encoded}), "inputs": len(whole_outputs), "max_abs_error": err,
            "max_abs_ref": ref_max, "relative_error": err / ref_max if ref_max else 0.0,
            "top1_agreement": agree / rows if rows else None, "cut_snr_db": snr}
