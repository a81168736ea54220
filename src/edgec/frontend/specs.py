"""The command line's descriptions of a model's inputs (``--input-shape``, ``--input-value``), parsed
without onnx or numpy, so that a malformed one is refused before anything heavy is imported
(:func:`edgec.flows.request.check_request`).

:mod:`edgec.frontend.load` and :mod:`edgec.frontend.params` apply them to a model.
"""

from __future__ import annotations

import re

from edgec.errors import UsageError

#: Post-training calibration methods (onnxruntime's ``CalibrationMethod`` names), checked before any work.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

#: Calibration samples by default: TFLite's post-training guide asks for about 100-500 representative samples;
#: ``benchmarks/bench_calibration.py`` (digits classifier, minmax) measured 96.67% top-1 with 32 images and
#: 97.22% with 128 (float32 98.06%): 128 keeps int8 within one point of float32 there, at a calibration cost of
#: seconds.
DEFAULT_CALIBRATION_SAMPLES = 128


def parse_input_shapes(specs: list[str] | None) -> dict[str | None, tuple[int, ...]]:
    """Parse ``--input-shape`` values.

    Args:
        specs: Strings ``NAME=1,3,224,224`` or ``1,3,224,224`` (the only input).

    Returns:
        ``{name or None: shape}``.

    Raises:
        UsageError: a spec is malformed or has a non-positive dim.
    """
    out: dict[str | None, tuple[int, ...]] = {}
    for spec in specs or []:
        name, _, dims = spec.rpartition("=")
        try:
            shape = tuple(int(d) for d in re.split(r"[,x]", dims.strip()))
        except ValueError:
            shape = ()
        if not shape or any(d <= 0 for d in shape):
            letters = [d for d in re.split(r"[,x]", dims.strip()) if d.strip() and not d.strip().isdigit()]
            hint = (f"replace {', '.join(letters)} with sizes, e.g. NAME=1,3,224,224" if letters
                    else "write NAME=1,3,224,224 with positive integer dims")
            raise UsageError(f"bad --input-shape '{spec}'", hint)
        if (name or None) in out:
            raise UsageError(f"--input-shape is given twice for {repr(name) if name else 'the input'}",
                             "give one shape per input")
        out[name or None] = shape
    return out


def parse_input_values(specs: list[str] | None) -> dict[str, list[float]]:
    """Parse ``--input-value NAME=v1,v2,...`` (numbers; one value for a rank-0 input; ``NAME=`` for an
    empty tensor, such as Reduce axes meaning all axes).

    Raises:
        UsageError: a malformed value, or a name given twice.
    """
    out: dict[str, list[float]] = {}
    for spec in specs or []:
        name, sep, text = spec.partition("=")
        try:
            values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
            ok = bool(values) or not text.strip()
        except ValueError:
            values, ok = [], False
        if not sep or not name or not ok:
            raise UsageError(f"bad --input-value '{spec}'", "write NAME=1,1,2,2 (the input's name, then its values)")
        if name in out:
            raise UsageError(f"--input-value is given twice for '{name}'", "give one value list per input")
        out[name] = values
    return out
