"""edgec: an edge deployment compiler (zoo or ONNX model -> verified TVM artifact for a device)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgec")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
