"""Artifact folders: written to a temporary folder, then renamed into place, and read back.

An artifact ``out/<name>/`` holds one or more **parts**. A one-part artifact keeps
its files at the top: the library, ``model.onnx`` (exactly what was compiled),
``manifest.json``, ``report.json`` / ``report.md`` and the kernel map. A multi-part
artifact (a split deployment) holds one folder per part (``head/``, ``tail/``), each
laid out like a one-part artifact, and at the top a ``manifest.json`` listing the
parts and how they connect (which output feeds which input) and a ``report.json``
with the verification of their composition.

Nothing half-written is left after an error or Ctrl-C: everything is written to
``out/.<name>.tmp-<pid>-*`` and renamed at the end (a folder a killed build left there is
removed by the next build of that name). Artifacts are addressed as
``ARTIFACT[:PART]`` (``out/m-split:head``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from edgec.errors import ModelError, UsageError
from edgec.scratch import mkdtemp

#: The part name of a one-part artifact (its files sit at the top of the folder).
MAIN_PART = "main"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def file_hashes(folder: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``folder`` but the ``exclude`` paths."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_file() and rel not in exclude:
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_manifest(folder: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Write ``folder/manifest.json``: ``fields`` and ``files``, the sha256 and size of every other file in
    ``folder`` (so it is written last). Every manifest edgec writes goes through here.

    Returns:
        The manifest written.
    """
    manifest = {**fields, "files": file_hashes(folder)}
    write_json(folder / "manifest.json", manifest)
    return manifest


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON."""
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


#: What :func:`artifact_kind` returns, in words (for refusals).
KIND_WORDS = {"one-part": "a one-part artifact (edgec build)", "split": "a split artifact (edgec split)",
              "depth-compress": "a depth-compressed model (edgec depth-compress)"}


def artifact_kind(folder: Path) -> str | None:
    """What the edgec folder ``folder`` holds, from its ``manifest.json``: ``split`` (several parts),
    ``depth-compress``, ``one-part`` (a library for one target); None when there is no readable manifest."""
    try:
        manifest = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    if "parts" in manifest:
        return "split"
    if manifest.get("kind") == "depth_compress":
        return "depth-compress"
    return "one-part" if "library" in manifest else None


def check_replaceable(final: Path, kind: str | None = None, fix: str = "choose another --name or --out") -> None:
    """Refuse to replace anything at ``final`` but an earlier edgec artifact (or an empty folder) -- of the
    same ``kind`` when one is given (``one-part``, ``split``: :func:`artifact_kind`). ``fix``: the hint,
    naming the command's own flags.

    Raises:
        UsageError: ``final`` is a file, a folder holding something that is not an edgec artifact, or an
            artifact of another kind than ``kind``.
    """
    final = Path(final)
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise UsageError(f"{final} exists and is not an artifact folder; edgec will not replace it", fix)
    if any(final.iterdir()) and not (final / "manifest.json").is_file():
        raise UsageError(f"{final} holds files that are not an edgec artifact; edgec will not replace them", fix)
    found = artifact_kind(final) if kind is not None else None
    if found is not None and found != kind:
        raise UsageError(f"{final} holds {KIND_WORDS[found]}; edgec will not replace it with "
                         f"{KIND_WORDS.get(kind, kind)}", fix)


#: Longest ``--name``: the staging folder adds a prefix and suffix, within the 255-byte limit of a file name.
MAX_NAME_BYTES = 200


def check_writable_folder(folder: Path, flag: str, given: Path | None = None) -> None:
    """``folder`` is, or can be created as, a folder edgec can write: probed with a real file
    in the nearest existing ancestor, before any work (``os.access`` says yes to root on /proc).
    ``given``: what the user gave ``flag`` when it is a file in ``folder`` (named in the message).

    Raises:
        UsageError: ``folder`` is a file, lies under a file, or cannot be written.
    """
    import errno
    import os

    folder = Path(folder)
    shown = given if given is not None else folder
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{flag} {shown} is a file, not a folder", "give a folder (created if missing)")
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {shown} cannot be created ({probe} is a file)", "give a folder you can write")
    try:
        handle, name = tempfile.mkstemp(prefix=".edgec-probe-", dir=probe)
        os.close(handle)
        os.unlink(name)
    except OSError as exc:
        # /proc and /sys answer ENOENT to a new file: say what it means, not "no such file"
        why = "a read-only or special file system" if exc.errno in (errno.ENOENT, errno.EROFS) else \
            (exc.strerror or str(exc))
        raise UsageError(f"{flag} {shown} cannot be written ({probe}: {why})",
                         "give a folder you can write") from exc


@contextlib.contextmanager
def staging_dir(final: Path, kind: str | None = None, fix: str = "choose another --name or --out") -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; rename it to ``final`` on success.

    An existing ``final`` -- only ever an earlier artifact (of the same ``kind``, when given) or an empty
    folder (:func:`check_replaceable`) -- is replaced only once the new folder is complete.
    On any exception (or KeyboardInterrupt) the temporary folder is removed and
    ``final`` is left as it was.

    Raises:
        UsageError: ``final`` holds something that is not an artifact, or its parent cannot be created.
    """
    final = Path(final)
    check_replaceable(final, kind, fix)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {final.parent}: {exc.strerror or exc}", "give a folder you can write") \
            from exc
    tmp = mkdtemp(f".{final.name}.tmp-", final.parent)  # a killed build's leftover goes at the next one
    try:
        yield tmp
        tmp.chmod(0o755)
        old = None
        check_replaceable(final, kind, fix)  # nothing foreign appeared there while building
        if final.exists():
            old = final.parent / f".{final.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
            final.rename(old)
        tmp.rename(final)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def tensor_infos(values) -> list[dict[str, Any]]:
    """``[{"name", "shape", "dtype"}]`` of ONNX value infos (static shapes)."""
    import onnx

    out = []
    for v in values:
        tt = v.type.tensor_type
        out.append({"name": v.name, "shape": [d.dim_value for d in tt.shape.dim],
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name})
    return out


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})", f"rebuild the {what}") from exc
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}", f"rebuild the {what}") from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not an edgec manifest", f"rebuild the {what}")
    return data


@dataclass
class Part:
    """One part of an artifact: a folder with a library for one target.

    Attributes:
        name: ``main`` for a one-part artifact, else the part's name (``head``, ``tail``).
        folder: The part's folder (the artifact folder itself for ``main``).
        manifest: The part's ``manifest.json``.
    """

    name: str
    folder: Path
    manifest: dict[str, Any]

    @property
    def library(self) -> Path:
        return self.folder / self.manifest["library"]

    @property
    def target(self) -> dict[str, Any]:
        return self.manifest["target"]

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.manifest["inputs"]

    def check_library(self) -> None:
        """The library is there and is the file the manifest recorded.

        Raises:
            ModelError: missing, or its sha256 differs from the manifest's (damaged or replaced).
        """
        lib = self.library
        if not lib.is_file():
            raise ModelError(f"the artifact {self.folder} is damaged: {lib.name} is missing", "rebuild the artifact")
        files = self.manifest.get("files") or {}
        recorded = files.get(lib.name) or files.get(str(lib.relative_to(self.folder)))
        if recorded and (recorded.get("bytes") != lib.stat().st_size or recorded.get("sha256") != sha256_file(lib)):
            raise ModelError(f"the artifact {self.folder} is damaged: {lib.name} differs from what its manifest "
                             "recorded (truncated or replaced)", "rebuild the artifact")

    def report(self) -> dict[str, Any]:
        """The part's build report (``report.json``)."""
        return _read_json(self.folder / "report.json", "artifact")

    def kernels(self) -> dict[str, Any] | None:
        """The kernel map (``kernels.json``), if the backend wrote one."""
        path = self.folder / "kernels.json"
        return _read_json(path, "artifact") if path.exists() else None


@dataclass
class Artifact:
    """An artifact folder read back (any edgec version's layout).

    Attributes:
        folder: The artifact folder.
        manifest: Its top-level ``manifest.json``.
        parts: Parts by name, in execution order.
        connections: ``[{"from": {"part", "tensor"}, "to": {"part", "tensor"}}]``.
    """

    folder: Path
    manifest: dict[str, Any]
    parts: dict[str, Part] = field(default_factory=dict)
    connections: list[dict[str, Any]] = field(default_factory=list)

    @property
    def multi_part(self) -> bool:
        return MAIN_PART not in self.parts

    def part(self, name: str | None) -> Part:
        """A part by name; ``None`` is the only part of a one-part artifact.

        Raises:
            UsageError: no such part, or ``None`` on a multi-part artifact.
        """
        names = ", ".join(self.parts)
        if name is None:
            if len(self.parts) == 1:
                return next(iter(self.parts.values()))
            raise UsageError(f"{self.folder} has parts {names}; name one",
                             f"e.g. {self.folder}:{next(iter(self.parts))}")
        if name not in self.parts:
            raise UsageError(f"{self.folder} has no part '{name}'", f"its parts: {names}")
        return self.parts[name]


def read_artifact(folder: str | Path) -> Artifact:
    """Read an artifact folder: one part (today's and older layouts) or several.

    Raises:
        UsageError: the folder is not an edgec artifact.
        ModelError: a manifest is unreadable.
    """
    folder = Path(folder)
    path = folder / "manifest.json"
    if not folder.exists():
        raise UsageError(f"{folder} does not exist", "give the artifact folder `edgec build` printed")
    if not path.is_file():
        raise UsageError(f"{folder} is not an edgec artifact (no manifest.json)",
                         "give the folder `edgec build` printed")
    manifest = _read_json(path, "artifact")
    if "parts" not in manifest:
        if "library" not in manifest or "target" not in manifest:
            raise ModelError(f"{path} lacks 'library' or 'target'", "rebuild the artifact")
        return Artifact(folder, manifest, {MAIN_PART: Part(MAIN_PART, folder, manifest)})
    parts = {}
    for entry in manifest["parts"]:
        sub = folder / entry["path"]
        parts[entry["name"]] = Part(entry["name"], sub, _read_json(sub / "manifest.json", "artifact"))
    return Artifact(folder, manifest, parts, list(manifest.get("connections", [])))


def _split_ref(ref: str | Path) -> tuple[Path, str | None] | None:
    """``(folder, part or None)`` when ``ref`` names an artifact (``ARTIFACT[:PART]``), else None."""
    text = str(ref)
    if (Path(text) / "manifest.json").is_file():
        return Path(text), None
    head, sep, tail = text.rpartition(":")
    if sep and (Path(head) / "manifest.json").is_file():
        return Path(head), tail
    return None


def is_artifact(ref: str | Path) -> bool:
    """Whether ``ref`` names an artifact folder (``ARTIFACT[:PART]``)."""
    return _split_ref(ref) is not None


def open_part(ref: str | Path) -> tuple[Artifact, Part | None]:
    """Resolve ``ARTIFACT[:PART]``.

    Returns:
        ``(artifact, part)``; ``part`` is None when no part was named on a multi-part
        artifact, else the named (or only) part.

    Raises:
        UsageError: not an artifact, or no such part.
    """
    folder, part = _split_ref(ref) or (Path(ref), None)
    artifact = read_artifact(folder)
    if part is None and artifact.multi_part:
        return artifact, None
    return artifact, artifact.part(part)
