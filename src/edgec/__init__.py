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

import os as _os

#: PyTorch's OpenMP threads (training, export) wait for each other sleeping, not spinning. On a machine shared
#: with other work, a thread spinning at a barrier for one that was descheduled burns the core the other needs:
#: the digits task's epochs took 94-190 s instead of 11-37 s (2 threads, 2-core AMD EPYC, load average 5-9), the
#: same numbers either way. Set before torch loads libgomp; a value of the user's own is kept. TVM and
#: onnxruntime run thread pools of their own (:mod:`edgec.tvm_setup`), untouched by it.
OMP_WAIT_POLICY = "PASSIVE"
_os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)


def __getattr__(name: str) -> str:
    """``__version__``, read from the installed metadata when first asked for (importlib.metadata takes
    tens of milliseconds to import, and ``edgec --help`` never needs it)."""
    if name != "__version__":
        raise AttributeError(f"module 'edgec' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        value = version("edgec")
    except PackageNotFoundError:  # running from a source tree without install
        value = "0.0.0"
    globals()["__version__"] = value
    return value
