"""``edgec build``: a zoo model or an ONNX file in, a verified device artifact out.

Stages (data flows one way, ``docs/design.md``):

1. source -- export a zoo model to ONNX (:mod:`edgec.frontend.export`) or load an ONNX file;
2. frontend -- check, fix input shapes, simplify (:mod:`edgec.frontend.load`), parity
   of the simplified graph against the source (PyTorch or onnxruntime);
3. passes -- ONNX -> ONNX rewrites (:mod:`edgec.passes`), each verified; function-changing
   passes report their fidelity and name the model the artifact must match;
4. backend -- compile for the target (:func:`edgec.backends.get_backend`);
5. verification -- the artifact against onnxruntime on fixed inputs, on the target's
   verification device (:mod:`edgec.devices`: this machine, the emulated Raspberry Pi),
   or as the backend plans it (CUDA: cubin architecture plus the same graph on the CPU);
6. artifact -- written to a temporary folder and renamed into place
   (:mod:`edgec.artifact`).

An artifact holds one part (today's layout: files at the top) or several named
parts (``head/``, ``tail/``; :mod:`edgec.flows.split`); :func:`edgec.flows.assemble.assemble` lays out
both. This module orchestrates; it handles no backend IR.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgec.artifact import MAIN_PART
from edgec.flows.request import BuildOptions, BuildResult, check_request, default_name, pipeline_spec
from edgec.flows.steps import Progress, Steps

__all__ = ["BuildOptions", "BuildResult", "build"]


def lower(opts: BuildOptions, steps: Steps, spec: Any = None) -> Any:
    """:func:`edgec.flows.lower.lower`, imported once the request has passed its checks: onnx, onnxruntime and
    the backends take seconds to import, and a usage error should not wait for them (``edgec build nosuch``).
    With ``spec``, the target refuses weights it cannot hold right after the frontend (:func:`check_weights`)."""
    from edgec.flows.lower import lower as lower_model

    return lower_model(opts, steps, None if spec is None else
                       lambda m, names: check_weights(spec, m, names, int8=opts.quantize == "int8"), tflite=True)


def check_weights(spec: Any, model: Any, pass_names: list[str], *, int8: bool = False) -> None:
    """Refuse, before the passes, a model whose weights cannot fit ``spec``'s memory: the weight bytes no pass
    of the pipeline can remove (:func:`edgec.passes.weight_floor`) against the target (the backend's
    ``check_weights``; a microcontroller's flash).

    With ``int8`` (``--quantize int8``) the float32 weights count one byte each.

    Raises:
        BudgetError: the weights cannot fit.
    """
    from edgec.backends import get_backend
    from edgec.passes import weight_floor

    floor = weight_floor(model, pass_names)
    if floor is not None:
        if int8:  # float32 weights become int8: a quarter of the bytes (the int32 biases are not counted)
            floor //= 4
        get_backend(spec).check_weights(spec, model, floor,
                                        "exported weights" + (" as int8" if int8 else "")
                                        + "; no pass of the pipeline shrinks them below that")


def build(opts: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build a verified one-part artifact for a target.

    Args:
        opts: Build options.
        progress: Called with the name of each step as it starts.

    Returns:
        The artifact folder (``<out_dir>/<model>-<target>``), its report and manifest.

    Raises:
        UsageError: unknown model/target/pass/option, bad ``--input-shape``, empty ``--db``.
        TargetError: a malformed target file.
        ModelError: unreadable or malformed model.
        UnsupportedOpError: an op the backend cannot import or lower.
        ToolchainError: cross compiler, emulator or CUDA toolkit missing.
        VerificationError: a pass or the artifact changed the outputs beyond tolerance.
        DeviceError: the verification device failed.
    """
    start = time.perf_counter()
    spec = check_request(opts, kind="one-part")
    from edgec.flows.assemble import assemble
    from edgec.flows.parts import PartRequest

    steps = Steps(progress)
    low = lower(opts, steps, spec)
    part = PartRequest(MAIN_PART, low.final, spec, low.inputs, reference=low.reference, passes=low.records,
                       function_change=low.function_change, before_passes=low.prepared, input_sets=low.input_sets)
    return assemble(low.source, low.final, [part], [], Path(opts.out_dir), opts.name or default_name(opts, spec),
                    tuning=opts.tuning, verify=opts.verify, verify_timeout=opts.verify_limit(), steps=steps,
                    start=start, seed=opts.seed,
                    input_sets=low.input_sets, references=low.references, pass_spec=pipeline_spec(opts.passes),
                    build_options=opts.record())
