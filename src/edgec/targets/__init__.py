"""Target registry: one JSON data file per device, validated against ``target.schema.json``.

Each file holds the device's description and datasheet, the TVM target dict
(``tvm``; plus ``host`` for CUDA devices), the cross compiler and the Debian
package providing it, the library file name and how a build is verified
(a verification device kind -- ``local``, ``qemu-aarch64``, ``qemu-system-arm`` or one
registered in :mod:`edgec.devices` -- or ``cuda-cubin``). A microcontroller
(kind ``mcu``) also has ``mcu``: its core and FPU, the real chip's flash and SRAM
budget (bytes) and the emulated board (``qemu``) it is verified on; it lands in ``extra``. ``--target`` takes a registry
name or the path of such a file (a board of your own).

The ``host`` target is data too: ``"num-cores": "native"`` becomes this machine's
physical core count here (:mod:`edgec.targets.host`), and ``"mcpu": "native"`` is
resolved by the backend that compiles (only the compiler knows its CPU names).
This package imports nothing of edgec but :mod:`edgec.errors`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from edgec.errors import UsageError, unknown_name
from edgec.targets import host as host_facts

__all__ = ["TargetSpec", "TargetError", "get_target", "list_targets", "target_class", "target_names", "host_facts"]


class TargetError(UsageError):
    """A target data file is malformed: names the file and the field."""


@dataclass(frozen=True)
class TargetSpec:
    """A deployment target, as data.

    Attributes:
        name: Registry name (``--target NAME``).
        description: The board, its SoC, CPU and memory.
        kind: ``"cpu"``, ``"cuda"`` or ``"mcu"`` (a microcontroller: C backend, bare-metal ELF).
        arch: CPU architecture of the device (``"x86_64"``, ``"aarch64"``, ``"armv7e-m"``).
        datasheet: Where the figures come from.
        tvm: TVM target dict of the device code (``mcpu`` may be ``"native"`` for the host).
        host: TVM target dict of the host code (CUDA targets), else None.
        cross_compiler: C++ compiler used to link the library (None: the system's).
        toolchain_apt: Debian package providing ``cross_compiler``.
        library: File name of the compiled library in the artifact.
        verify: How a build is checked: a verification device kind (``local``, ``qemu-aarch64``,
            ``qemu-system-arm``, or one registered in :mod:`edgec.devices`, checked when a build
            starts) or a backend's own check (``cuda-cubin``).
        extra: Other fields (``cores``, ``device_software``, detected ``isa`` and ``cpu_model``, a
            microcontroller's ``mcu``...).
    """

    name: str
    description: str
    kind: str
    arch: str
    datasheet: str
    tvm: dict[str, Any]
    host: dict[str, Any] | None = None
    cross_compiler: str | None = None
    toolchain_apt: str | None = None
    library: str = "model.so"
    verify: str = "local"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_target(self) -> dict[str, Any]:
        """The LLVM target dict that runs host-side code on the device."""
        return self.host if self.host is not None else self.tvm

    @property
    def cores(self) -> int:
        """CPU cores of the device (for thread pools), at least 1."""
        return int(self.cpu_target.get("num-cores") or self.extra.get("cores") or 1)

    def to_dict(self) -> dict[str, Any]:
        """Data as recorded in manifests and printed by ``edgec targets list``."""
        d = {"name": self.name, "description": self.description, "kind": self.kind, "arch": self.arch,
             "datasheet": self.datasheet, "tvm": self.tvm, "library": self.library, "verify": self.verify}
        if self.host is not None:
            d["host"] = self.host
        if self.cross_compiler:
            d["cross_compiler"] = self.cross_compiler
            d["toolchain_apt"] = self.toolchain_apt
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSpec:
        """Rebuild a spec from :meth:`to_dict` output (e.g. an artifact's manifest)."""
        data = copy.deepcopy(data)
        extra = {k: v for k, v in data.items() if k not in _FIELDS}
        return cls(**{k: v for k, v in data.items() if k in _FIELDS}, extra=extra)


_FIELDS = {"name", "description", "kind", "arch", "datasheet", "tvm", "host", "cross_compiler",
           "toolchain_apt", "library", "verify"}


def _schema() -> dict[str, Any]:
    return json.loads(resources.files(__name__).joinpath("target.schema.json").read_text())


def validate(data: Any, label: str) -> None:
    """Check target data against ``target.schema.json``.

    Raises:
        TargetError: one line naming ``label`` (the file) and the offending field.
    """
    import jsonschema

    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.path))
    if not errors:
        return
    err = errors[0]
    where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
    if err.validator == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        what = f"unknown field '{extra[0]}'" if extra else err.message
    elif err.validator == "required":
        what = err.message.replace("is a required property", "is missing")
    else:
        what = err.message
    raise TargetError(f"target file {label}: {where}: {' '.join(what.split())[:200]}",
                      "fix the file (fields: src/edgec/targets/target.schema.json)")


def _read(path: Path | Any, label: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TargetError(f"target file {label} is not valid JSON: {exc.msg} at line {exc.lineno}",
                          "fix the file") from exc
    except (UnicodeDecodeError, OSError) as exc:
        raise TargetError(f"target file {label} cannot be read as UTF-8 JSON: {exc}", "fix the file") from exc
    validate(data, label)
    return data


def _data_files() -> dict[str, dict[str, Any]]:
    out = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json") and entry.name != "target.schema.json":
            data = _read(entry, entry.name)
            out[data["name"]] = data
    return out


def _resolve_native(data: dict[str, Any]) -> dict[str, Any]:
    """Fill in the detected facts of this machine for ``"native"`` fields."""
    data = copy.deepcopy(data)
    tvm_t = data["tvm"]
    if tvm_t.get("num-cores") == "native":
        tvm_t["num-cores"] = host_facts.physical_cores()
    data["cores"] = tvm_t.get("num-cores")
    data["isa"] = host_facts.isa_flags()
    data["cpu_model"] = host_facts.cpu_model_name()
    vector = next((words for flag, words in (("avx512f", " with AVX-512"), ("avx2", " with AVX2"), ("sve", " with SVE"),
                                              ("asimd", " with NEON")) if flag in data["isa"]), "")
    arch = data["arch"].replace("x86_64", "x86-64")
    data["description"] = f"This machine: {data['cpu_model']}, {arch}{vector}, {data['cores']} cores (detected)"
    return data


def target_class(spec: TargetSpec) -> str:
    """The class of machines whose tuned kernel schedules ``spec`` shares, derived from its data.

    ``x86_64-avx512`` / ``x86_64-avx2`` / ``x86_64`` (from the detected ISA of the host, or
    ``mattr``), ``aarch64-neon``, or ``cuda-sm_NN`` for CUDA targets.
    """
    if spec.kind == "cuda":
        return f"cuda-{spec.tvm.get('arch', 'unknown')}"
    features = set(spec.extra.get("isa", [])) | {a.lstrip("+") for a in spec.cpu_target.get("mattr", [])
                                                 if a.startswith("+")}
    if spec.arch == "x86_64":
        if "avx512f" in features:
            return "x86_64-avx512"
        return "x86_64-avx2" if "avx2" in features else "x86_64"
    if spec.arch == "aarch64":
        return "aarch64-neon"
    return spec.arch


def target_names() -> list[str]:
    """Names of all registered targets."""
    return sorted(_data_files())


def get_target(name: str) -> TargetSpec:
    """Load a target by registry name, or from a target data file (``board.json``).

    Raises:
        UsageError: unknown target (suggests near names).
        TargetError: the data file is malformed (names the file and the field).
    """
    if name.endswith(".json"):
        if not Path(name).is_file():
            raise UsageError(f"target file {name} not found", "give a registry name (`edgec targets list`) or a "
                             "target data file")
        data = _read(Path(name), name)
    else:
        files = _data_files()
        if name not in files:
            raise unknown_name("target", name, files, "edgec targets list")
        data = files[name]
    if "native" in (data["tvm"].get("mcpu"), data["tvm"].get("num-cores")):
        data = _resolve_native(data)
    extra = {k: v for k, v in data.items() if k not in _FIELDS}
    return TargetSpec(**{k: v for k, v in data.items() if k in _FIELDS}, extra=extra)


def list_targets() -> list[TargetSpec]:
    """All registered targets, host first."""
    names = target_names()
    names.sort(key=lambda n: (n != "host", n))
    return [get_target(n) for n in names]
