"""``edgec split``: split computing. List where a model can be cut (:func:`list_cuts`), choose the cut for a
link from measured latencies (:func:`choose_cut`, ranking by :mod:`edgec.split.choose`), and build a
head/tail artifact cut at a tensor (:func:`build_split`), the cut sent as fp32, int8 codes or through
a learned bottleneck.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgec.errors import UsageError
from edgec.flows.assemble import assemble
from edgec.flows.compose import input_names
from edgec.flows.lower import lower
from edgec.flows.parts import Connection, PartRequest
from edgec.flows.request import BuildOptions, BuildResult, check_request, pipeline_spec
from edgec.flows.steps import Progress, Steps
from edgec.frontend import reference
from edgec.frontend.data import read_task_data
from edgec.split.encoding import ENCODINGS, calibrate


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
        (and what :func:`edgec.flows.build.build` and :func:`edgec.flows.assemble.assemble` raise)
    """
    from edgec.split import split_model
    from edgec.targets import get_target

    _check_encoding(encoding)
    name = opts.name or split_name(opts, cut, encoding, get_target(head_target).name, get_target(tail_target).name,
                                   bottleneck_channels)
    head_spec, tail_spec = (check_request(opts, head_target, name=name, kind="split"),
                            check_request(opts, tail_target, name=name, kind="split"))
    if encoding == "bottleneck" and data is None:
        raise UsageError("--encoding bottleneck is trained on labelled images: give --data DIR",
                         "DIR/<class>/<image>.png (e.g. from `edgec zoo digits DIR`)")
    if data is not None:
        from edgec.frontend.data import check_data_folder

        check_data_folder(data)  # before the model's export and passes
    steps = Steps(progress)
    low = lower(opts, steps)
    try:
        head, tail = split_model(low.final, cut)
    except UsageError as e:  # name the command that lists the valid cuts
        raise UsageError(e.message, f"{e.hint}; the valid cuts: edgec split {opts.model} --list") from None
    input_sets = dict(low.input_sets)
    train = val = None
    if data is not None:
        train, val = steps.run(f"read --data {data}", lambda: read_task_data(data, low.final, low.source.preprocessing))
        input_sets.update({f"data:{p.parent.name}-{p.name}": {input_names(low.final)[0]: val.x[i:i + 1]}
                           for i, p in enumerate(val.paths[:2])})
    data_sets = tuple(k for k in input_sets if k.startswith("data:"))
    fidelity_sets = None
    if val is not None:  # the function change of an encoded cut rests on FIDELITY_SETS held-out images
        fidelity_sets = {f"data:{p.parent.name}-{p.name}": {input_names(low.final)[0]: val.x[i:i + 1]}
                         for i, p in enumerate(val.paths[:FIDELITY_SETS])}
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
            sets = fidelity_sets = _calibration_sets(low, opts.seed)
            enc = steps.run(f"calibrate the {encoding} cut", lambda: calibrate(
                encoding, [session.run(None, xs)[0] for xs in sets.values()], tuple(sets)))
    task = None
    if val is not None:
        from edgec.split.task import task_accuracy

        task = steps.run(f"accuracy on {len(val)} held-out images", lambda: task_accuracy(
            low.final, head, tail, enc, val, str(data)))
    parts = [PartRequest("head", head, head_spec, {}, passes=low.records),
             PartRequest("tail", tail, tail_spec, {}, passes=low.records)]
    return assemble(low.source, low.final, parts, [Connection("head", sent, "tail", sent, enc)], Path(opts.out_dir),
                    name, tuning=opts.tuning, verify=opts.verify, verify_timeout=opts.verify_limit(), steps=steps, seed=opts.seed, input_sets=input_sets,
                    references=low.references, pass_spec=pipeline_spec(opts.passes), task=task,
                    attachments=attachments, fidelity_sets=fidelity_sets)


def split_name(opts: BuildOptions, cut: str, encoding: str, head: str, tail: str,
               bottleneck_channels: int | None = None) -> str:
    """The split artifact's folder name when ``--name`` is not given:
    ``<model>-split-<cut>-<encoding>-<head target>-<tail target>``, so that splits at other cuts or encodings
    do not replace each other. The cut is made a file name (``/a/b:0`` -> ``a_b_0``); a name over
    :data:`edgec.artifact.MAX_NAME_BYTES` keeps the start of the cut and a hash of the whole."""
    import hashlib
    import re

    from edgec.artifact import MAX_NAME_BYTES
    from edgec.flows.request import model_stem

    safe = re.sub(r"[^A-Za-z0-9_.+-]+", "_", cut).strip("._-") or "cut"
    kind = f"bottleneck{bottleneck_channels}" if encoding == "bottleneck" and bottleneck_channels else encoding
    stem = re.sub(r"^[^A-Za-z0-9_]+", "", model_stem(opts)) or "model"
    name = f"{stem}-split-{safe}-{kind}-{head}-{tail}"
    if len(name.encode()) > MAX_NAME_BYTES:
        digest = hashlib.sha256(cut.encode()).hexdigest()[:8]
        room = MAX_NAME_BYTES - len(f"{stem}-split--{digest}-{kind}-{head}-{tail}".encode())
        name = f"{stem}-split-{safe[:max(room, 0)]}-{digest}-{kind}-{head}-{tail}"
        if len(name.encode()) > MAX_NAME_BYTES:
            name = f"{name.encode()[:MAX_NAME_BYTES - 9].decode(errors='ignore')}-{digest}"
    return name


def _check_encoding(kind: str) -> None:
    if kind not in (*ENCODINGS, "bottleneck"):
        raise UsageError(f"unknown --encoding '{kind}'", f"use one of: {', '.join((*ENCODINGS, 'bottleneck'))}")


#: Input sets an encoded cut is calibrated and its function change measured on (when no samples are given).
FIDELITY_SETS = 8


def _calibration_sets(low, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """The user's samples if any, else :data:`FIDELITY_SETS` sets of the real input range (``image``:
    the verification set and seeded draws like it), else of ``normal``: never the large-offset set, whose
    range would swamp the scale."""
    user = {k: v for k, v in low.input_sets.items() if k.startswith("user:")}
    if user:
        return user
    name = "image" if "image" in low.input_sets else "normal"
    out = {name: low.input_sets[name]}
    for i in range(2, FIDELITY_SETS + 1):
        more = reference.verification_sets(low.shapes, low.dtypes, seed=seed + 1000 * i,
                                           preprocessing=low.source.preprocessing)
        out[f"{name}-{i}"] = more[name]
    return out


def list_cuts(opts: BuildOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Every valid cut of ``opts.model`` after the frontend and the passes, with its costs
    (:func:`edgec.split.cut_table`: the input's bytes, each cut's shape, fp32/int8 bytes, MACs and params
    on each side).

    Raises:
        UsageError, ModelError: see :func:`edgec.flows.request.check_request` and :func:`edgec.flows.lower.lower`.
    """
    from edgec.split import cut_table

    check_request(opts, name="")  # nothing is written
    return cut_table(lower(opts, Steps(progress)).final)


def choose_cut(opts: BuildOptions, head_target: str, tail_target: str, encoding: str, links: list[Any],
               sides: dict[str, tuple[float | None, Path | None]], progress: Progress | None = None) -> dict[str, Any]:
    """``--at auto``: every cut ranked by estimated latency on ``links[0]`` (Neurosurgeon, ASPLOS 2017;
    :mod:`edgec.split.choose`), and the best cut at each link.

    Args:
        opts: The model, input shapes and passes.
        head_target, tail_target: Targets of the device and the server.
        encoding: How the cut travels (``int8...`` sizes it as int8, else fp32).
        links: :class:`edgec.split.choose.Link` per bandwidth; the first is the one the artifact is built for.
        sides: ``{"head"|"tail": (given whole-model ms or None, profile report.json or None)}``.
        progress: Called with each step as it starts.

    Returns:
        ``{"link", "head_ms", "head_ms_source", "tail_ms", "tail_ms_source", "spread", "encoding",
        "device_only", "best", "ranking", "sweep"}``; ``device_only`` is ``{"bytes", "sends"}``, what the
        device sends when everything runs on it (a classifier's top-k result, not its logits);
        ``best["kind"]`` is ``cut`` when a split is fastest.

    Raises:
        UsageError: a side's latency cannot be known (see :func:`edgec.split.choose.side_latency`).
    """
    from edgec.split import cut_table
    from edgec.split.choose import device_only_result, rank_cuts, side_latency, sweep

    check_request(opts, name="", kind="split")  # a given --name now; the default names the cut, checked once chosen
    steps = Steps(progress)
    final = lower(opts, steps).final
    table = cut_table(final)
    cuts = [c["tensor"] for c in table["cuts"]]
    measured = {side: side_latency(side, target, final, cuts, given_ms=sides[side][0], profile=sides[side][1],
                                   model_name=opts.model, say=steps.progress)
                for side, target in (("head", head_target), ("tail", tail_target))}
    per_cut = {key: measured[side].per_cut_ms for side, key in (("head", "head_ms_at"), ("tail", "tail_head_ms_at"))
               if measured[side].per_cut_ms is not None}
    device_only = device_only_result(final)  # a classifier's top-k result, not its logits
    out_bytes = device_only["bytes"]
    key = "bytes_int8" if encoding.startswith("int8") else "bytes_fp32"
    head, tail = measured["head"].total_ms, measured["tail"].total_ms
    rows = rank_cuts(table, links[0], head, tail, key, out_bytes, **per_cut)
    spread = "per-kernel sums" if len(per_cut) == 2 else ("per-kernel sums and MACs" if per_cut else "spread by MACs")
    return {"link": {"bandwidth_mbps": links[0].bandwidth_mbps, "rtt_ms": links[0].rtt_ms},
            "head_ms": head, "head_ms_source": measured["head"].source,
            "tail_ms": tail, "tail_ms_source": measured["tail"].source, "spread": spread,
            "encoding": encoding, "device_only": device_only, "best": rows[0], "ranking": rows,
            "sweep": sweep(table, links, head, tail, key, out_bytes, **per_cut)}


def write_choice(choice: dict[str, Any], model: str, folder: Path) -> None:
    """``split-choice.json`` and its plots (``split-choice.png``, and ``split-sweep.png`` for several
    bandwidths) inside the artifact, before its files are hashed."""
    from edgec.artifact import write_json
    from edgec.split.choose import plot_ranking, plot_sweep

    write_json(folder / "split-choice.json", choice)
    plot_ranking(choice["ranking"], folder / "split-choice.png",
                 f"{model}: {choice['link']['bandwidth_mbps']:g} Mbit/s, rtt {choice['link']['rtt_ms']:g} ms")
    if len(choice.get("sweep", [])) > 1:
        plot_sweep(choice["sweep"], folder / "split-sweep.png", f"{model}: best cut per bandwidth")
