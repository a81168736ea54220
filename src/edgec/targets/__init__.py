"""Target registry: one JSON data file per device in this folder.

Each file holds the device's description and datasheet, the TVM target dict
(``tvm``; plus ``host`` for CUDA devices), the cross compiler and the Debian
package providing it, the library file name and how a build is verified
(``local``, ``qemu-aarch64`` or ``cuda-cubin``).

The ``host`` target is resolved at load time: ``"mcpu": "native"`` becomes
LLVM's name for this CPU and ``"num-cores": "native"`` the physical core count.
"""

from __future__ import annotations

import copy
import json
import os
import platform
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from edgec.errors import unknown_name


@dataclass(frozen=True)
class TargetSpec:
    """A deployment target, as data.

    Attributes:
        name: Registry name (``--target NAME``).
        description: The board, its SoC, CPU and memory.
        kind: ``"cpu"`` or ``"cuda"``.
        arch: CPU architecture of the device (``"x86_64"``, ``"aarch64"``).
        datasheet: Where the figures come from.
        tvm: TVM target dict of the device code.
        host: TVM target dict of the host code (CUDA targets), else None.
        cross_compiler: C++ compiler used to link the library (None: the system's).
        toolchain_apt: Debian package providing ``cross_compiler``.
        library: File name of the compiled library in the artifact.
        verify: How a build is checked: ``local``, ``qemu-aarch64`` or ``cuda-cubin``.
        extra: Other fields of the data file (``cores``, ``device_software``, detected ISA...).
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

    def key(self) -> str:
        """A stable string naming what code generation depends on (triple, mcpu, features)."""
        parts = []
        for t in (self.tvm, self.host or {}):
            for k in ("kind", "mtriple", "mcpu", "arch"):
                if k in t:
                    parts.append(str(t[k]))
            parts.extend(t.get("mattr", []))
        return "-".join(p.replace("+", "") for p in parts)


_FIELDS = {"name", "description", "kind", "arch", "datasheet", "tvm", "host", "cross_compiler",
           "toolchain_apt", "library", "verify"}


def _data_files() -> dict[str, dict[str, Any]]:
    out = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text())
            out[data["name"]] = data
    return out


def _host_isa() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx", "fma", "sse4", "amx")))
    except OSError:
        pass
    return []


def _resolve_native(data: dict[str, Any]) -> dict[str, Any]:
    data = copy.deepcopy(data)
    tvm_t = data["tvm"]
    if tvm_t.get("mcpu") == "native":
        from edgec.backends.tvm.env import host_cpu_name

        tvm_t["mcpu"] = host_cpu_name()
    if tvm_t.get("num-cores") == "native":
        try:
            import psutil

            cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
        except ImportError:
            cores = os.cpu_count() or 1
        cores = min(cores, len(os.sched_getaffinity(0)))
        tvm_t["num-cores"] = int(cores)
    data["cores"] = tvm_t.get("num-cores")
    data["isa"] = _host_isa()
    data["cpu_model"] = _cpu_model_name() or platform.processor()
    avx512 = " with AVX-512" if "avx512f" in data["isa"] else ""
    data["description"] = (f"This machine: {data['cpu_model']}, x86-64{avx512}, LLVM mcpu {tvm_t['mcpu']}, "
                           f"{data['cores']} cores (detected)")
    return data


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def target_names() -> list[str]:
    """Names of all registered targets."""
    return sorted(_data_files())


def get_target(name: str) -> TargetSpec:
    """Load a target by name.

    Raises:
        UsageError: unknown target (suggests near names).
    """
    files = _data_files()
    if name not in files:
        raise unknown_name("target", name, files, "edgec targets list")
    data = files[name]
    if data["tvm"].get("mcpu") == "native" or data["tvm"].get("num-cores") == "native":
        data = _resolve_native(data)
    extra = {k: v for k, v in data.items() if k not in _FIELDS}
    return TargetSpec(**{k: v for k, v in data.items() if k in _FIELDS}, extra=extra)


def list_targets() -> list[TargetSpec]:
    """All targets, host first."""
    names = target_names()
    names.sort(key=lambda n: (n != "host", n))
    return [get_target(n) for n in names]
