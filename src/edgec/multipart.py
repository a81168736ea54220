"""Artifacts with several parts: a split deployment's head and tail, each compiled for its own
target and verified, and the composition of the parts verified against the whole model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.artifact import MAIN_PART, file_hashes, staging_dir, tensor_infos, write_json
from edgec.backends import TuningOptions
from edgec.build import BuildOptions, BuildResult, check_request, lower
from edgec.errors import UsageError
from edgec.frontend import reference
from edgec.frontend.analysis import graph_stats
from edgec.frontend.data import read_task_data
from edgec.frontend.load import graph_inputs
from edgec.part import (
    Connection,
    PartRequest,
    Progress,
    Source,
    Steps,
    compare_sets,
    fail_if_unverified,
    reference_label,
    run_on_device,
    write_part,
)
from edgec.profiling import report as reports
from edgec.split.encoding import ENCODINGS, calibrate, snr_db


def build_parts(source: Source, whole: onnx.ModelProto, parts: list[PartRequest], connections: list[Connection],
                out_dir: Path, name: str, *, tuning: TuningOptions | None = None, verify: bool = True,
                progress: Progress | None = None, seed: int = 0,
                input_sets: dict[str, dict[str, np.ndarray]] | None = None,
                task: dict[str, Any] | None = None,
                attachments: Callable[[Path], None] | None = None) -> BuildResult:
    """Build a multi-part artifact: each part compiled for its own target and verified, and
    the composition of the parts verified against the whole model.

    The parts are listed in execution order; a part's inputs are the whole model's inputs
    of the same name or outputs of earlier parts (``connections``). Each part is verified
    on its own inputs (the whole model's inputs, or onnxruntime's outputs of the earlier
    parts); the composition runs every part on its verification device, each fed by the
    earlier parts' device outputs, and must match onnxruntime's run of ``whole`` within the
    build tolerance.

    Args:
        source: The model as it entered (recorded in manifests and reports).
        whole: The whole model (ONNX, static shapes), the composition's reference.
        parts: The parts, in execution order (``model``, ``target`` set; ``inputs`` may be
            empty: they are computed here).
        connections: Which output feeds which input.
        out_dir: Parent folder of the artifact.
        name: Artifact folder name.
        tuning: Tuning records to apply.
        verify: Run the numerical checks.
        progress: Called with each step as it starts.
        seed: Seed of the verification inputs.
        input_sets: The whole model's verification input sets (default: generated from ``seed``).
        task: Accuracy on labelled images (:func:`edgec.split.task.task_accuracy`), reported in
            ``function_change.task``.
        attachments: Called with the staging folder to write extra files (hashed in the manifest).

    Returns:
        The artifact (``<out_dir>/<name>/<part>/`` per part, ``manifest.json`` and ``report.json``
        at the top).

    Raises:
        UsageError: duplicate or reserved part names, a part input fed by nothing.
        VerificationError: a part, or the composition, differs from onnxruntime.
        (and what :func:`build` raises)
    """
    start = time.perf_counter()
    tuning = tuning or TuningOptions()
    steps = Steps(progress)
    _check_parts(whole, parts, connections)
    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs(whole)}
    whole_sets = input_sets or reference.verification_sets(shapes, reference.input_dtypes(whole), seed,
                                                          source.preprocessing)
    session = reference.ort_session(whole)
    whole_outputs = steps.run("reference (onnxruntime)",
                              lambda: {k: session.run(None, xs) for k, xs in whole_sets.items()})
    # each part's verification inputs: the whole model's inputs, or earlier parts' onnxruntime outputs, per set
    for part in parts:
        part.input_sets = {}
    for set_name, whole_inputs in whole_sets.items():
        values: dict[tuple[str, str], np.ndarray] = {}
        for part in parts:
            xs = {n: _feed(part.name, n, whole_inputs, values, connections) for n in _input_names(part.model)}
            part.input_sets[set_name] = xs
            outs = reference.run_ort(part.reference or part.model, xs)
            for o, arr in zip(part.model.graph.output, outs):
                values[(part.name, o.name)] = arr
    for part in parts:
        part.inputs = part.input_sets["normal"]
    final = Path(out_dir) / name
    records: list[dict[str, Any]] = []
    with staging_dir(final) as tmp:
        plans = {}
        for part in parts:
            steps.progress(f"part {part.name} ({part.target.name})")
            report, manifest, compiled, plan = write_part(
                source, part, tmp / part.name, steps, start, tuning=tuning, verify=verify,
                opts_record={"seed": seed, "first_part": parts[0].name}, reference_label=reference_label(None))
            fail_if_unverified(report["verification"], f"part '{part.name}':")
            plans[part.name] = plan
            records.append({"name": part.name, "path": part.name, "target": compiled.target,
                            "library": f"{part.name}/{compiled.library.name}",
                            "inputs": manifest["inputs"], "outputs": manifest["outputs"],
                            "verification": report["verification"],
                            "build": {k: report["build"][k] for k in ("library_bytes", "tuned_tasks", "total_tasks",
                                                                      "compile_seconds")}})
        composition = (steps.run("verify the composition", lambda: _verify_composition(
            parts, plans, connections, whole, whole_sets, whole_outputs, steps.progress)) if verify
            else {"method": "parts chained on their devices", "skipped": True, "reason": "--no-verify",
                  "passed": None})
        report = _whole_report(source, whole, records, connections, composition, steps, start, tmp,
                               versions=compiled.versions)
        change = cut_fidelity(parts, connections, whole, whole_outputs)
        if change is not None:
            report["function_change"] = change
            if task is not None:
                change["task"] = task
            bottlenecks = [c.encoding.bottleneck for c in connections if c.encoding and c.encoding.bottleneck]
            if bottlenecks:
                change["bottleneck"] = bottlenecks[0]
            reports.validate(report)
        write_json(tmp / "report.json", report)
        (tmp / "report.md").write_text(reports.render_markdown(report))
        if attachments is not None:
            attachments(tmp)
        manifest = {"edgec_manifest": 2, "created": reports.now_iso(), "versions": report["versions"],
                    "model": {"name": source.name, "source": source.kind, "path": source.path,
                              "source_sha256": source.sha256, "weights": source.weights},
                    "inputs": tensor_infos(graph_inputs(whole)), "outputs": tensor_infos(whole.graph.output),
                    "preprocessing": source.preprocessing,
                    "parts": [{k: r[k] for k in ("name", "path", "target", "library", "inputs", "outputs")}
                              for r in records],
                    "connections": [c.to_dict() for c in connections],
                    "files": file_hashes(tmp)}
        write_json(tmp / "manifest.json", manifest)
        fail_if_unverified(composition, "the composed parts'")
    return BuildResult(final, report, manifest)


def build_split(opts: BuildOptions, cut: str, head_target: str, tail_target: str, encoding: str = "fp32",
                progress: Progress | None = None, *, data: Path | None = None,
                bottleneck_channels: int | None = None, epochs: int = 30,
                attachments: Callable[[Path], None] | None = None) -> BuildResult:
    """Build a head/tail artifact: ``opts.model`` after the frontend and the passes, cut at tensor ``cut``,
    the head compiled for ``head_target`` and the tail for ``tail_target``, each verified on its
    device, and their composition verified against the whole model.

    Args:
        encoding: How the cut tensor travels (:mod:`edgec.split.encoding`): ``fp32``; ``int8`` /
            ``int8-per-channel`` calibrated on ``data``'s training images when given, else on the
            verification inputs (the user's ``--verify-inputs`` samples when given, else the model's
            real input range); or ``bottleneck``, a learned encoder/decoder
            (:mod:`edgec.split.bottleneck`) trained on ``data`` whose int8 codes travel. Anything but
            fp32 changes the function on purpose: the composition is then checked on the inputs each
            device received, and the report's ``function_change`` gives the fidelity against the unsplit model.
        data: A labelled ImageFolder (``train/`` and ``val/`` inside, or one tree of which every
            fifth image is held out): calibration and bottleneck training on the training images,
            and the report's ``function_change.task`` (top-1 accuracy unsplit and split, agreement,
            bytes against JPEG) on the held-out ones.
        bottleneck_channels: Channels of the learned bottleneck (default: a quarter of the cut's).
        epochs: Bottleneck training epochs.
        attachments: Writes extra files into the artifact's folder before its files are hashed.

    Raises:
        UsageError: ``cut`` is not a valid cut (see ``edgec split MODEL --list``), unknown targets or
            encoding, a bottleneck without ``data``, an unreadable ``data`` folder.
        (and what :func:`build` and :func:`build_parts` raise)
    """
    from edgec.split import split_model

    head_opts = BuildOptions(**{**opts.__dict__, "target": head_target})
    tail_opts = BuildOptions(**{**opts.__dict__, "target": tail_target})
    head_spec, tail_spec = check_request(head_opts), check_request(tail_opts)
    _check_encoding(encoding)
    if encoding == "bottleneck" and data is None:
        raise UsageError("--encoding bottleneck is trained on labelled images: give --data DIR",
                         "DIR/<class>/<image>.png (e.g. from `edgec zoo digits DIR`)")
    steps = Steps(progress)
    low = lower(opts, steps)
    head, tail = split_model(low.final, cut)
    input_sets = dict(low.input_sets)
    train = val = None
    if data is not None:
        train, val = steps.run(f"read --data {data}", lambda: read_task_data(data, low.final, low.source.preprocessing))
        input_sets.update({f"data:{p.parent.name}-{p.name}": {_input_names(low.final)[0]: val.x[i:i + 1]}
                           for i, p in enumerate(val.paths[:2])})
    data_sets = tuple(k for k in input_sets if k.startswith("data:"))
    sent, enc = cut, None
    if encoding == "bottleneck":
        from edgec.split.bottleneck import SENT, attach, train_bottleneck
        from edgec.split.task import head_outputs

        teacher = steps.run("the original head on the training images", lambda: head_outputs(head, train.x))
        channels = bottleneck_channels or max(1, teacher.shape[1] // 4)
        bn = steps.run(f"train the bottleneck ({channels} channels, {epochs} epochs)",
                       lambda: train_bottleneck(teacher, channels, epochs, seed=opts.seed))
        head, tail = attach(head, tail, cut, bn)
        codes = head_outputs(head, train.x)
        enc = replace(calibrate("int8", [codes], data_sets), bottleneck=bn.record())
        sent = SENT
    elif encoding != "fp32":
        if train is not None:
            from edgec.split.task import head_outputs

            enc = steps.run(f"calibrate the {encoding} cut on --data", lambda: calibrate(
                encoding, [head_outputs(head, train.x[:256])], data_sets))
        else:
            session = reference.ort_session(head)
            sets = _calibration_sets(low.input_sets)
            enc = steps.run(f"calibrate the {encoding} cut", lambda: calibrate(
                encoding, [session.run(None, xs)[0] for xs in sets.values()], tuple(sets)))
    task = None
    if val is not None:
        from edgec.split.task import task_accuracy

        task = steps.run(f"accuracy on {len(val)} held-out images", lambda: task_accuracy(
            low.final, head, tail, enc, val, str(data)))
    name = opts.name or f"{low.source.name}-split-{head_spec.name}-{tail_spec.name}"
    parts = [PartRequest("head", head, head_spec, {}, passes=low.records),
             PartRequest("tail", tail, tail_spec, {}, passes=low.records)]
    return build_parts(low.source, low.final, parts, [Connection("head", sent, "tail", sent, enc)], Path(opts.out_dir),
                       name, tuning=opts.tuning, verify=opts.verify, progress=progress, seed=opts.seed,
                       input_sets=input_sets, task=task, attachments=attachments)


def _check_encoding(kind: str) -> None:
    if kind not in (*ENCODINGS, "bottleneck"):
        raise UsageError(f"unknown --encoding '{kind}'", f"use one of: {', '.join((*ENCODINGS, 'bottleneck'))}")


def _calibration_sets(sets: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, np.ndarray]]:
    """The user's samples if any, else the real input range (``image``), else ``normal``: never the
    large-offset set, whose range would swamp the scale."""
    user = {k: v for k, v in sets.items() if k.startswith("user:")}
    if user:
        return user
    for name in ("image", "normal"):
        if name in sets:
            return {name: sets[name]}
    return dict(sets)


def _input_names(model: onnx.ModelProto) -> list[str]:
    return [i.name for i in graph_inputs(model)]


def _feed(part: str, tensor: str, whole_inputs: dict[str, np.ndarray], values: dict[tuple[str, str], np.ndarray],
          connections: list[Connection]) -> np.ndarray:
    for c in connections:
        if c.dst_part == part and c.dst_tensor == tensor:
            return c.carry(values[(c.src_part, c.src_tensor)])
    return whole_inputs[tensor]


def _check_parts(whole: onnx.ModelProto, parts: list[PartRequest], connections: list[Connection]) -> None:
    names = [p.name for p in parts]
    if len(set(names)) != len(names) or MAIN_PART in names:
        raise UsageError(f"part names must be unique and not '{MAIN_PART}': {', '.join(names)}",
                         "name the parts e.g. head and tail")
    for p in names:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", p):
            raise UsageError(f"part name '{p}' is not a plain folder name", "use letters, digits, _ and -")
    whole_in = set(_input_names(whole))
    produced: set[tuple[str, str]] = set()
    for part in parts:
        for n in _input_names(part.model):
            fed = [c for c in connections if c.dst_part == part.name and c.dst_tensor == n]
            if fed and (fed[0].src_part, fed[0].src_tensor) not in produced:
                raise UsageError(f"part '{part.name}' input '{n}' is fed by {fed[0].src_part}:{fed[0].src_tensor}, "
                                 "which no earlier part produces", "list the parts in execution order")
            if not fed and n not in whole_in:
                raise UsageError(f"part '{part.name}' input '{n}' is fed by nothing",
                                 "connect it to an earlier part's output")
        produced |= {(part.name, o.name) for o in part.model.graph.output}


def _verify_composition(parts: list[PartRequest], plans: dict[str, Any], connections: list[Connection],
                        whole: onnx.ModelProto, whole_sets: dict[str, dict[str, np.ndarray]],
                        whole_outputs: dict[str, list[np.ndarray]], say: Progress) -> dict[str, Any]:
    """Chain the parts on their verification devices, per input set, and compare with the whole model."""
    values: dict[str, dict] = {k: {} for k in whole_sets}
    same_inputs: dict[str, dict] = {k: {} for k in whole_sets}  # onnxruntime on what each device received
    encoded = any(c.encoding is not None for c in connections)
    emulated = False
    for part in parts:
        args = [[_feed(part.name, n, whole_sets[k], values[k], connections) for n in _input_names(part.model)]
                for k in whole_sets]
        outs, device = run_on_device(plans[part.name], args, say)
        emulated = emulated or bool(device.emulated)
        for k, set_outs, set_args in zip(whole_sets, outs, args):
            ort = reference.run_ort(part.reference or part.model, dict(zip(_input_names(part.model), set_args))) \
                if encoded else set_outs
            for o, arr, ref in zip(part.model.graph.output, set_outs, ort):
                values[k][(part.name, o.name)] = arr
                same_inputs[k][(part.name, o.name)] = ref
    finals = {k: [_whole_output(o.name, parts, values[k]) for o in whole.graph.output] for k in whole_sets}
    if encoded:  # the encoding changes the function on purpose: its fidelity is reported apart
        expected = {k: [_whole_output(o.name, parts, same_inputs[k]) for o in whole.graph.output] for k in whole_sets}
        label = "onnxruntime CPU, ORT_DISABLE_ALL, each part on the inputs its device received (cut encoded)"
    else:
        expected, label = whole_outputs, "onnxruntime CPU, ORT_DISABLE_ALL, whole model"
    return {"method": "parts chained on their verification devices: " + " -> ".join(
        f"{p.name} ({plans[p.name].device})" for p in parts),
            "reference": label, "emulated": emulated, **compare_sets(finals, expected)}


def cut_fidelity(parts: list[PartRequest], connections: list[Connection], whole: onnx.ModelProto,
                 whole_outputs: dict[str, list[np.ndarray]]) -> dict[str, Any] | None:
    """The function change of encoding the cut (None when every connection is fp32).

    onnxruntime runs the parts chained through the encodings on the input sets the encodings were
    calibrated on (``part.input_sets`` already carry the encoded tensors), compared with the whole model.

    Returns:
        A fidelity record (``edgec.passes.fidelity``'s fields) with ``passes`` naming the
        encoding and ``cut_snr_db``, the lowest SNR of the decoded cut tensor over the sets.
    """
    encoded = [c for c in connections if c.encoding is not None]
    if not encoded:
        return None
    # measured on the input distributions the encoding was calibrated for (the offset set, say, lies far outside)
    wanted = {n for c in encoded for n in c.encoding.calibrated_on}
    whole_outputs = {k: v for k, v in whole_outputs.items() if k in wanted} or whole_outputs
    err, ref_max, agree, rows, snr = 0.0, 0.0, 0, 0, float("inf")
    for set_name, want in whole_outputs.items():
        values = {}
        for part in parts:
            outs = reference.run_ort(part.reference or part.model, part.input_sets[set_name])
            values.update({(part.name, o.name): a for o, a in zip(part.model.graph.output, outs)})
        got = [_whole_output(o.name, parts, values) for o in whole.graph.output]
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


def _whole_output(name: str, parts: list[PartRequest], values: dict[tuple[str, str], np.ndarray]) -> np.ndarray:
    for part in reversed(parts):
        if (part.name, name) in values:
            return values[(part.name, name)]
    raise UsageError(f"no part produces the model output '{name}'", "the last part must end at the model's outputs")


def _whole_report(source: Source, whole: onnx.ModelProto, parts: list[dict[str, Any]],
                  connections: list[Connection], composition: dict[str, Any], steps: Steps, start: float,
                  folder: Path, versions: dict[str, str]) -> dict[str, Any]:
    stats = graph_stats(whole)
    report = {
        "schema": reports.SCHEMA_ID, "kind": "build", "created": reports.now_iso(),
        "model": {**source.to_dict(), "params": stats.params, "param_bytes": stats.param_bytes, "macs": stats.macs,
                  "nodes": stats.nodes, "weights": source.weights,
                  "inputs": tensor_infos(graph_inputs(whole)), "outputs": tensor_infos(whole.graph.output)},
        "parts": parts,
        "connections": [c.to_dict() for c in connections],
        "build": {"total_seconds": round(time.perf_counter() - start, 3),
                  "artifact_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())},
        "steps": steps.records,
        "verification": composition,
        "versions": versions,
    }
    reports.validate(report)
    return report
