"""CUDA code generation on a build machine without a GPU (Jetson targets).

How a cubin gets embedded without a GPU (``docs/tvm-0.27.md``):

1. TVM's CUDA code generator must be loadable: :mod:`edgec.tvm_setup.cuda` loads the CUDA
   runtime and, without a driver, a stub ``libcuda.so.1`` before TVM is imported.
2. Kernels are compiled to cubin by NVRTC (CUDA 13, ``nvidia-cuda-nvrtc`` wheel)
   through ``tvm.support.nvcc``, with ``CUDA_PATH`` pointing at the CUDA headers
   of the ``nvidia-cuda-runtime`` / ``nvidia-cuda-cccl`` wheels (:func:`cuda_env`).
   Architectures the CUDA 13 toolkit no longer supports (below sm_75, e.g. the
   Jetson Nano's sm_53) need an older toolkit with ``nvcc`` named by ``CUDA_PATH``.
3. :func:`cubin_archs` reads the SM architecture back from the ELF header of
   every cubin embedded in the built library.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from edgec.cache import cache_dir
from edgec.errors import ToolchainError
from edgec.tvm_setup.cuda import cuda_codegen_status, nvidia_dir

log = logging.getLogger(__name__)

EM_CUDA = 190
NVRTC_MIN_SM = 75  # CUDA 13 dropped Maxwell, Pascal and Volta (sm_50 .. sm_72)


def _wheel_cuda_path() -> Path | None:
    """A ``CUDA_PATH``-shaped folder built from the nvidia wheels' headers."""
    nv = nvidia_dir()
    if nv is None or not (nv / "include" / "cuda_runtime.h").exists():
        return None
    if not (nv / "include" / "cccl").is_dir():
        return None
    shim = cache_dir("cuda-path", "cu13")
    links = {shim / "include": nv / "include",
             shim / "targets" / "x86_64-linux" / "include": nv / "include",
             shim / "lib64": nv / "lib"}
    for link, dest in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() and Path(os.readlink(link)) != dest:
            link.unlink()
        if not link.exists():
            link.symlink_to(dest)
    return shim


def _toolkit_version(path: Path) -> tuple[int, int] | None:
    header = path / "include" / "cuda.h"
    try:
        m = re.search(r"#define CUDA_VERSION (\d+)", header.read_text(errors="ignore"))
    except OSError:
        return None
    if not m:
        return None
    v = int(m.group(1))
    return v // 1000, (v % 1000) // 10


def _legacy_toolkit() -> Path | None:
    """A CUDA <= 12 toolkit with nvcc (for archs below sm_75)."""
    candidates = [os.environ.get("CUDA_PATH")] + sorted(
        (str(p) for p in Path("/usr/local").glob("cuda-1[0-2]*")), reverse=True)
    for c in candidates:
        if not c:
            continue
        p = Path(c)
        ver = _toolkit_version(p)
        if ver and ver[0] <= 12 and (p / "bin" / "nvcc").exists():
            return p
    return None


@contextlib.contextmanager
def cuda_env(arch: str) -> Iterator[dict[str, str]]:
    """Environment for compiling CUDA kernels of ``arch`` (e.g. ``"sm_87"``) to cubin.

    Yields:
        The environment variables set (``CUDA_PATH``, maybe ``TVM_CUDA_COMPILE_MODE``).

    Raises:
        ToolchainError: the code generator cannot load, or no toolkit supports ``arch``.
    """
    status = cuda_codegen_status()
    if status.startswith("unavailable"):
        raise ToolchainError(f"TVM's CUDA code generator is {status}",
                             "pip install nvidia-cuda-runtime==13.0.* nvidia-cuda-nvrtc==13.0.*")
    sm = int(re.sub(r"\D", "", arch) or 0)
    env: dict[str, str] = {}
    if sm < NVRTC_MIN_SM:
        legacy = _legacy_toolkit()
        if legacy is None:
            raise ToolchainError(
                f"{arch} is not supported by the CUDA 13 toolkit edgec uses (CUDA 13 dropped sm_50..sm_72)",
                "install a CUDA <= 12 toolkit with nvcc and set CUDA_PATH to it")
        env = {"CUDA_PATH": str(legacy), "TVM_CUDA_COMPILE_MODE": "nvcc"}
    else:
        path = os.environ.get("CUDA_PATH")
        if not path or (_toolkit_version(Path(path)) or (0, 0))[0] < 13:
            shim = _wheel_cuda_path()
            if shim is None:
                raise ToolchainError("CUDA 13 headers not found for NVRTC",
                                     "pip install nvidia-cuda-runtime==13.0.* nvidia-cuda-cccl==13.0.85, "
                                     "or set CUDA_PATH to a CUDA 13 toolkit")
            path = str(shim)
        env = {"CUDA_PATH": path, "TVM_CUDA_COMPILE_MODE": "nvrtc"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cubin_archs(library: str | Path) -> list[int]:
    """SM architectures of the CUDA cubins embedded in a built library.

    Scans the file for embedded ELF images whose ``e_machine`` is EM_CUDA (190)
    and decodes the SM number from ``e_flags`` (``flags & 0xff`` for ELF ABI
    version < 8, ``(flags >> 8) & 0xff`` from ABI version 8, CUDA >= 12.8).

    Args:
        library: Path of the ``.so`` (a fatbin's cubins are found too).

    Returns:
        SM numbers (e.g. ``[87]``), one per cubin, in file order; empty when the
        library holds CUDA source or PTX only.
    """
    data = Path(library).read_bytes()
    archs = []
    pos = data.find(b"\x7fELF", 1)
    while pos != -1:
        header = data[pos:pos + 64]
        if len(header) == 64 and header[4] == 2:  # ELFCLASS64
            machine = struct.unpack_from("<H", header, 18)[0]
            if machine == EM_CUDA:
                abi = header[8]
                flags = struct.unpack_from("<I", header, 48)[0]
                archs.append((flags >> 8) & 0xFF if abi >= 8 else flags & 0xFF)
        pos = data.find(b"\x7fELF", pos + 4)
    return archs
