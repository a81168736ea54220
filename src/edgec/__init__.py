"""edgec: an edge deployment compiler (zoo or ONNX model -> verified artifact for a device).

Python API (each CLI subcommand is a thin adapter over one of these)::

    from edgec.build import BuildOptions, build      # build(BuildOptions(model="mobilenetv4", target="rpi4"))
    from edgec.tune import tune                      # tune(BuildOptions(...), minutes=10, device="local")
    from edgec.profile import profile                # profile("out/mobilenetv4-host", ProfileOptions())
    from edgec.run import run_image                  # run_image("out/mobilenetv4-host", "photo.png")

The design -- stages, layering, the device, backend and pass interfaces -- is in ``docs/design.md``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgec")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
