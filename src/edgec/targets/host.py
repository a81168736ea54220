"""Facts about this machine's CPU, read from Linux (no compiler, no TVM).

Used to fill in the ``host`` target (``"num-cores": "native"``) and in profile
reports. LLVM's name for the CPU (``"mcpu": "native"``) is resolved by the
backend that compiles, since only the compiler knows its own CPU names.
"""

from __future__ import annotations

import os
import platform

#: ISA flag prefixes worth recording (vector extensions decide which schedules apply).
ISA_PREFIXES = ("avx", "fma", "sse4", "amx", "asimd", "sve", "neon", "fphp", "dotprod")


def _cpuinfo_lines() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return fh.read().splitlines()
    except OSError:
        return []


def cpu_model_name() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` ``model name``), else the machine type."""
    for line in _cpuinfo_lines():
        if line.startswith(("model name", "Model")):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def isa_flags() -> list[str]:
    """Sorted vector-ISA flags of this CPU (``avx2``, ``avx512f``, ``asimd``...)."""
    for line in _cpuinfo_lines():
        if line.startswith(("flags", "Features")):
            flags = set(line.split(":", 1)[1].split())
            return sorted(f for f in flags if f.startswith(ISA_PREFIXES))
    return []


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted), at least 1."""
    try:
        import psutil

        cores = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        cores = os.cpu_count() or 1
    return max(1, min(int(cores), len(os.sched_getaffinity(0))))


def machine() -> str:
    """``x86_64``, ``aarch64``..."""
    return platform.machine()
