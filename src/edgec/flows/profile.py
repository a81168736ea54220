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

from edgec.artifact import check_writable_folder, is_artifact, open_part, write_json
from edgec.flows.build import build
from edgec.flows.request import BuildOptions
from edgec.flows.steps import Progress
from edgec.devices import open_device, parse_url
from edgec.profiling.html import render_html
from edgec.profiling.profiler import ProfileOptions, profile_part
from edgec.profiling.report import render_markdown


@dataclass
class ProfileResult:
    """A finished profile: the report and the folder holding ``report.json``/``.md``/``.html``.

    ``report["complete"]`` is false when the device dropped mid-run (partial results kept).
    ``built`` is the artifact built for the profile; ``reused`` an existing one that matched.
    """

    report: dict[str, Any]
    folder: Path
    built: Path | None = None
    reused: Path | None = None
    rebuilt_because: str | None = None


def reusable(folder: Path, opts: BuildOptions) -> tuple[bool, str]:
    """Whether the artifact in ``folder`` was built from the same model with the same options.

    Returns:
        ``(reusable, why not)``.
    """
    import edgec
    from edgec.artifact import read_artifact, sha256_file
    from edgec.flows.request import is_onnx_path

    if not (folder / "manifest.json").is_file():
        return False, "no artifact there yet"
    try:
        manifest = read_artifact(folder).manifest
    except Exception as exc:  # noqa: BLE001  unreadable: rebuild
        return False, f"its manifest is unreadable ({exc})"
    recorded = manifest.get("build_options")
    if recorded is None:
        return False, "it was built by an older edgec (no options recorded)"
    want = opts.record()
    differ = [k for k in want if recorded.get(k) != want[k]]
    if differ:
        return False, f"options differ: {', '.join(differ)}"
    if manifest.get("versions", {}).get("edgec") != edgec.__version__:
        return False, "it was built by another edgec version"
    if is_onnx_path(opts.model) and manifest["model"].get("source_sha256") != sha256_file(opts.model):
        return False, "the ONNX file changed"
    return True, ""


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
        (and what :func:`edgec.flows.build.build` raises when it builds)
    """
    url = parse_url(opts.device)
    if out is not None:
        check_writable_folder(Path(out), "--out")
    open_device(url).probe()  # before building: an unreachable device fails in seconds
    built, reused, why = None, None, None
    if not is_artifact(model):
        from edgec.flows.request import check_request, default_name

        bopts = build_opts or BuildOptions(model=model)
        bopts.model = model
        spec = check_request(bopts)
        existing = Path(bopts.out_dir) / (bopts.name or default_name(bopts, spec))
        ok, why = reusable(existing, bopts)
        if ok:
            reused = existing
            if progress:
                progress(f"reusing {existing} (same model, target and options)")
        else:
            built = build(bopts, progress=progress).artifact
        model = str(reused or built)
    artifact, part = open_part(model)
    if part is None:
        artifact.part(None)  # raises: name one part of a multi-part artifact
    report = profile_part(part, opts, progress=progress)
    folder = Path(out) if out is not None else part.folder / "profile"
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "report.json", report)
    (folder / "report.md").write_text(render_markdown(report))
    (folder / "report.html").write_text(render_html(report))
    return ProfileResult(report, folder, built, reused, why if built is not None else None)
