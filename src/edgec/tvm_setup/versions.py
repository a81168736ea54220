"""Versions of the compiler stack, as manifests record them."""

from __future__ import annotations


def versions() -> dict[str, str]:
    """Versions of the compiler stack, as recorded in manifests."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("edgec", "apache-tvm", "apache-tvm-ffi", "onnx", "onnxruntime", "onnxslim", "onnx-ir",
                "torch", "timm", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
