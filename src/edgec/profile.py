"""``edgec profile``: latency (end to end and per kernel) and memory of an artifact part on a device.

Takes an artifact (``ARTIFACT[:PART]``) or a model to build first; checks the
device before building, so an unreachable device fails in seconds; writes
``report.json`` (the build report's schema, extended with ``profile``),
``report.md`` and ``report.html`` (plots) next to the part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgec.artifact import is_artifact, open_part, write_json
from edgec.build import BuildOptions, Progress, build
from edgec.devices import DeviceURL, open_device
from edgec.profiling.html import render_html
from edgec.profiling.profiler import ProfileOptions, profile_part
from edgec.profiling.report import render_markdown


@dataclass
class ProfileResult:
    """A finished profile: the report and the folder holding ``report.json``/``.md``/``.html``.

    ``report["complete"]`` is false when the device dropped mid-run (partial results kept).
    """

    report: dict[str, Any]
    folder: Path
    built: Path | None = None


def profile(model: str, opts: ProfileOptions, *, build_opts: BuildOptions | None = None, out: Path | None = None,
            progress: Progress | None = None) -> ProfileResult:
    """Profile ``model`` (an artifact ``ARTIFACT[:PART]``, or a zoo name / ONNX file built first) on a device.

    Args:
        model: Artifact reference, zoo name or ONNX path.
        opts: Device, threads, repeats...
        build_opts: How to build when ``model`` is not an artifact (its ``model`` field is replaced).
        out: Report folder (default ``<part folder>/profile``).
        progress: Called with each step as it starts.

    Raises:
        UsageError: bad device address, no such part, a part the device cannot run.
        DeviceError: the device is unreachable, or failed before any sample.
        (and what :func:`edgec.build.build` raises when it builds)
    """
    url = DeviceURL.parse(opts.device)
    open_device(url).probe()  # before building: an unreachable device fails in seconds
    built = None
    if not is_artifact(model):
        bopts = build_opts or BuildOptions(model=model)
        bopts.model = model
        built = build(bopts, progress=progress).artifact
        model = str(built)
    artifact, part = open_part(model)
    if part is None:
        artifact.part(None)  # raises: name one part of a multi-part artifact
    report = profile_part(part, opts, progress=progress)
    folder = Path(out) if out is not None else part.folder / "profile"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report)
    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.html").write_text(render_html(report))
    return ProfileResult(report, folder, built)
