"""edgec: an edge deployment compiler (zoo or ONNX model -> verified artifact for a device).

Python API: one flow per command (``edgec.flows.<verb>``; each ``edgec`` command is a thin adapter,
``edgec.cli.<verb>``, over one of them)::

    from edgec.flows.build import BuildOptions, build  # build(BuildOptions(model="mobilenetv4", target="rpi4"))
    from edgec.flows.split import build_split          # build_split(BuildOptions(...), "add_3", "rpi4", "host")
    from edgec.flows.tune import tune                  # tune(BuildOptions(...), minutes=10, device="local")
    from edgec.flows.profile import profile            # profile("out/mobilenetv4-host", ProfileOptions())
    from edgec.flows.run import run_image              # run_image("out/mobilenetv4-host", "photo.png")

The design -- stages, layering, the device, backend and pass interfaces -- is in ``docs/design.md``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edgec")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"
