"""CUDA code generation on a machine without a GPU (Jetson targets).

TVM's CUDA code generator lives in ``libtvm_runtime_cuda.so``, which links ``libcuda.so.1`` (the
driver) and ``libcudart.so.13``. :func:`cuda_codegen_status` loads the CUDA runtime from the
``nvidia-cuda-runtime`` wheel and, when no driver is installed, a stub ``libcuda.so.1`` compiled
from ``cuda_stub.c`` (every call fails), so the code generator loads (``docs/tvm-0.27.md``, "Jetson").
This module imports no TVM.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

from edgec.cache import cache_dir

log = logging.getLogger(__name__)

_STATE: dict[str, str] = {}


def nvidia_dir() -> Path | None:
    """The ``nvidia/cu13`` folder of the CUDA 13 wheels, if installed."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        if (Path(loc) / "cu13").is_dir():
            return Path(loc) / "cu13"
    return None


def _try_load(name: str) -> bool:
    try:
        ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        return True
    except OSError:
        return False


def _build_stub() -> Path:
    out = cache_dir("cuda-stub") / "libcuda.so.1"
    if out.exists():
        return out
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise RuntimeError("no C compiler to build the CUDA driver stub (apt-get install gcc)")
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    with resources.as_file(resources.files("edgec.tvm_setup").joinpath("cuda_stub.c")) as path:
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", "-o", str(tmp), str(path)],
                       check=True, capture_output=True)
    tmp.replace(out)
    return out


def cuda_codegen_status() -> str:
    """Make TVM's CUDA code generator loadable (once per process).

    Returns:
        ``"driver"`` (a real NVIDIA driver is present), ``"stub"`` (the stub was
        loaded) or ``"unavailable: <why>"``. Never raises.
    """
    if "status" in _STATE:
        return _STATE["status"]
    status = "driver"
    try:
        if not _try_load("libcuda.so.1"):
            cudart = "libcudart.so.13"
            nv = nvidia_dir()
            if not _try_load(cudart) and not (nv and _try_load(str(nv / "lib" / cudart))):
                status = "unavailable: libcudart.so.13 not found (pip install nvidia-cuda-runtime)"
            else:
                ctypes.CDLL(str(_build_stub()), mode=ctypes.RTLD_GLOBAL)
                status = "stub"
    except Exception as exc:  # noqa: BLE001  never break CPU builds over CUDA set-up
        status = f"unavailable: {exc}"
    _STATE["status"] = status
    log.debug("CUDA codegen: %s", status)
    return status
