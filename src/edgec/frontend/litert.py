"""The TFLite interpreter as the reference of ``.tflite`` builds (LiteRT, PyPI ``ai-edge-litert``).

The design card named ``tflite-runtime``; its last release (2.14) is built against numpy 1 and fails to
import beside edgec's numpy 2, so the reference is its successor, LiteRT (``ai_edge_litert``), the same
interpreter and kernels. The reference runs TFLite's built-in kernels without the XNNPACK delegate
(``BUILTIN_WITHOUT_DEFAULT_DELEGATES``): the kernels every TFLite runtime has, deterministic on one thread.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgec.errors import ModelError


def run_litert(model: str | Path | bytes, inputs: list[np.ndarray], *, threads: int = 1, xnnpack: bool = False
               ) -> list[np.ndarray]:
    """Run the TFLite model ``model`` on ``inputs`` (in the model's input order, its dtypes and shapes).

    Args:
        model: A ``.tflite`` file, or its bytes (checked first with :func:`edgec.frontend.tflite.inspect_tflite`).
        inputs: One array per input.
        threads: Interpreter threads.
        xnnpack: Use LiteRT's default XNNPACK delegate (how LiteRT runs in production: the speed peer)
            instead of the built-in reference kernels.

    Returns:
        The outputs, in the model's output order (copies).

    Raises:
        ModelError: the interpreter cannot load or run the file, or ``inputs`` do not match its inputs.
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    given = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    path = "the TFLite model" if isinstance(model, bytes) else model
    try:
        interp = Interpreter(**given, num_threads=threads, experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"the TFLite interpreter cannot load {path}: {' '.join(str(exc).split())[:200]}",
                         "check the file with the TFLite tools that wrote it") from None
    details = interp.get_input_details()
    if len(inputs) != len(details):
        raise ModelError(f"{path} takes {len(details)} inputs, got {len(inputs)}", "give one array per input")
    for d, x in zip(details, inputs):
        x = np.asarray(x)
        if tuple(x.shape) != tuple(d["shape"]) or x.dtype != d["dtype"]:
            raise ModelError(f"input '{d['name']}' of {path} is {tuple(d['shape'])} {np.dtype(d['dtype'])}, got "
                             f"{tuple(x.shape)} {x.dtype}", "give arrays of the model's shapes and dtypes")
        interp.set_tensor(d["index"], np.ascontiguousarray(x))
    try:
        interp.invoke()
    except RuntimeError as exc:
        raise ModelError(f"the TFLite interpreter failed on {path}: {' '.join(str(exc).split())[:200]}",
                         "check the file with the TFLite tools that wrote it") from None
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]


def litert_call(model: str | Path | bytes, inputs: list[np.ndarray], threads: int):
    """LiteRT as a speed peer: a no-argument function running one inference of ``model`` on ``inputs`` with
    the default XNNPACK delegate and ``threads`` threads (how users run TFLite on a CPU)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgec.tvm_setup.capture import captured_fds

    given = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
    with captured_fds():  # LiteRT announces its XNNPACK delegate on stderr
        interp = Interpreter(**given, num_threads=threads)
        interp.allocate_tensors()
    for d, x in zip(interp.get_input_details(), inputs):
        interp.set_tensor(d["index"], np.ascontiguousarray(x))
    return interp.invoke


__all__ = ["litert_call", "run_litert"]
