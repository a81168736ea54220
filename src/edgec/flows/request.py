"""What a build is asked to do: the options of ``edgec build`` (and of the flows that build, tune or
analyse a model the same way), and every check that needs no work, run before any.

:func:`check_request` refuses a wrong model name, a model option that does not apply, an output folder
edgec cannot write, an unknown target, pipeline or pass option, a missing toolchain and an empty tuning
database, each with one line (:mod:`edgec.errors`), before the model is exported or compiled.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from edgec.backends import TuningOptions, get_backend
from edgec.errors import UsageError
from edgec.frontend.specs import DEFAULT_CALIBRATION_SAMPLES, parse_input_shapes
from edgec.targets import TargetSpec, get_target


@dataclass
class BuildOptions:
    """Options of one build (the CLI flags of ``edgec build``).

    Attributes:
        model: Zoo name or path of an ``.onnx`` file.
        target: Target name (``edgec targets list``) or a target data file.
        out_dir: Parent folder of the artifact.
        name: Artifact folder name (default ``<model>-<target>``).
        input_shapes: ``--input-shape`` strings (``NAME=1,3,224,224``).
        weights: State dict for a zoo model.
        pretrained: Use timm's pretrained weights.
        seed: Seed for random weights and for the verification inputs.
        verify: Run the numerical check of the artifact.
        passes: Pass pipeline: ``"default"``, ``"none"``, ``"a,b(k=v)"``, a pipeline file,
            or pass calls (:func:`edgec.passes.resolve_pipeline`).
        dump_ir: Folder receiving the ONNX after each pass.
        tune_db: Tuning database folder (None: the default one for the target).
        use_tune_db: Apply a tuning database when one exists.
        default_schedule: Give CPU kernels that no tuning record covers edgec's rule-based
            default schedule (False: TVM's single-threaded default, for benchmarks).
        model_kwargs: Extra zoo factory arguments (e.g. ``width_mult``).
        verify_inputs: The user's own verification samples (``.npz``, ``.npy`` or images), checked
            besides the generated input sets.
        input_values: ``--input-value`` strings (``NAME=1,1,2,2``): values of parameter inputs (Resize
            scales, Slice starts...; :mod:`edgec.frontend.params`), folded into the model.
        verify_timeout: Seconds the verification device may take to run the input sets (None:
            ``$EDGEC_VERIFY_TIMEOUT``, else :func:`edgec.flows.parts.run_limit_s` from the model's MACs
            and this machine's load).
        quantize: ``"int8"``: quantize after the passes (post-training static, :mod:`edgec.flows.int8`);
            None: float32.
        calibrate: Calibration images (a folder) or arrays (``.npz``) for ``quantize`` (None: package and
            generated images).
        calibration_samples: At most this many calibration samples (None: the default,
            :data:`edgec.frontend.specs.DEFAULT_CALIBRATION_SAMPLES`).
        calibration_method: ``minmax``, ``entropy`` or ``percentile``.
        data: A labelled image folder (``--data``): int8 and float32 top-1 accuracy on its validation images,
            and the calibration images when ``calibrate`` is not given.
    """

    model: str
    target: str = "host"
    out_dir: Path = Path("out")
    name: str | None = None
    input_shapes: list[str] | None = None
    weights: Path | None = None
    pretrained: bool = False
    seed: int = 0
    verify: bool = True
    passes: Any = "default"
    dump_ir: Path | None = None
    tune_db: Path | None = None
    use_tune_db: bool = True
    default_schedule: bool = True
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    verify_inputs: list[Path] = field(default_factory=list)
    input_values: list[str] | None = None
    verify_timeout: float | None = None
    quantize: str | None = None
    calibrate: Path | None = None
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    calibration_method: str = "minmax"
    data: Path | None = None

    def __post_init__(self) -> None:
        if self.calibration_samples is None:  # a command line without --samples
            self.calibration_samples = DEFAULT_CALIBRATION_SAMPLES

    def verify_limit(self) -> float | None:
        """``verify_timeout``, else ``$EDGEC_VERIFY_TIMEOUT``, else None (the limit scales with the model).

        Raises:
            UsageError: ``$EDGEC_VERIFY_TIMEOUT`` is not a positive number of seconds.
        """
        if self.verify_timeout is not None:
            if not self.verify_timeout < float("inf"):  # the flag's own range stops 0 and negatives
                raise UsageError(f"--verify-timeout {self.verify_timeout} is not a finite number of seconds",
                                 "e.g. --verify-timeout 1800; or skip the check: --no-verify")
            return self.verify_timeout
        text = os.environ.get("EDGEC_VERIFY_TIMEOUT")
        if text is None or not text.strip():
            return None
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value < float("inf"):
            raise UsageError(f"EDGEC_VERIFY_TIMEOUT '{text}' is not a positive number of seconds",
                             "e.g. EDGEC_VERIFY_TIMEOUT=1800; unset, the limit scales with the model")
        return value

    @cached_property
    def given_values(self) -> dict[str, list[float]]:
        """The ``--input-value`` values parsed, by input name.

        Raises:
            UsageError: a malformed value.
        """
        from edgec.frontend.specs import parse_input_values

        return parse_input_values(self.input_values)

    @cached_property
    def given_shapes(self) -> dict[str | None, tuple[int, ...]]:
        """The ``--input-shape`` values parsed (once per build), by input name (None: unnamed).

        Raises:
            UsageError: a malformed value.
        """
        return parse_input_shapes(self.input_shapes)

    @property
    def tuning(self) -> TuningOptions:
        return TuningOptions(use_database=self.use_tune_db, database=self.tune_db,
                             default_schedule=self.default_schedule)

    def record(self) -> dict[str, Any]:
        """The options that decide what an artifact holds (recorded in its manifest, compared for reuse)."""
        return {"model": self.model, "target": self.target, "input_shapes": list(self.input_shapes or []),
                "weights": str(self.weights) if self.weights else None, "pretrained": self.pretrained,
                "seed": self.seed, "passes": pipeline_spec(self.passes), "use_tune_db": self.use_tune_db,
                "default_schedule": self.default_schedule,
                "tune_db": str(self.tune_db) if self.tune_db else None, "model_kwargs": dict(self.model_kwargs),
                **({"input_values": list(self.input_values)} if self.input_values else {}),
                **({"quantize": self.quantize, "calibrate": str(self.calibrate) if self.calibrate else None,
                    "data": str(self.data) if self.data else None,
                    "calibration_samples": self.calibration_samples, "calibration_method": self.calibration_method}
                   if self.quantize else {})}


@dataclass
class BuildResult:
    """A finished build: the artifact folder, its report (``report.json``) and manifest."""

    artifact: Path
    report: dict[str, Any]
    manifest: dict[str, Any]


def default_name(opts: BuildOptions, spec: TargetSpec) -> str:
    """The artifact folder name when ``--name`` is not given: ``<model>-<target>``."""
    return f"{model_stem(opts)}-{spec.name}"


def model_stem(opts: BuildOptions) -> str:
    """The model's part of a default artifact name: the zoo name, or the ONNX file's stem made a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(opts.model).stem) if is_onnx_path(opts.model) else opts.model


def is_onnx_path(model: str) -> bool:
    """Whether ``model`` names a file rather than a zoo entry."""
    return model.endswith(".onnx") or "/" in model or Path(model).is_file()


#: Largest total input size a build accepts (bytes; ``$EDGEC_MAX_INPUT_BYTES`` overrides): activations
#: of vision models run to tens of times their input, so beyond this a build would exhaust memory.
MAX_INPUT_BYTES = 1 << 30

#: ``--width-mult`` range the zoo's width-scalable models accept.
WIDTH_MULT_RANGE = (0.1, 4.0)


def _check_model_file(path: Path) -> None:
    """A model file edgec can read at all (present, a file, readable, not empty), checked before anything slow
    is imported; its contents are checked when it is loaded.

    Raises:
        ModelError: it is not.
    """
    from edgec.errors import ModelError

    if not path.exists():
        kind = "TFLite" if path.suffix.lower() == ".tflite" else "ONNX"
        raise ModelError(f"{kind} file not found: {path}", "check the path, or give a zoo name (`edgec zoo list`)")
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a model file", "give the path of a .onnx or .tflite file")
    try:
        with open(path, "rb") as fh:
            empty = not fh.read(1)
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror}", "check the file's permissions") from exc
    if empty:
        raise ModelError(f"{path} is empty", "re-export or re-download the model")


def _check_model_options(opts: BuildOptions) -> None:
    """The options that depend on the model: refused when they do not apply or are out of range."""
    given = opts.given_shapes
    if opts.given_values and not is_onnx_path(opts.model):
        raise UsageError("--input-value applies to ONNX files; a zoo model has one image input",
                         "drop --input-value")
    if is_onnx_path(opts.model):
        _check_model_file(Path(opts.model))
        if opts.weights is not None or opts.pretrained:
            flag = "--weights" if opts.weights is not None else "--pretrained"
            raise UsageError(f"{flag} applies to zoo models; an ONNX file carries its own weights",
                             f"drop {flag}, or give a zoo name (`edgec zoo list`)")
        if opts.model_kwargs:
            raise UsageError(f"--{next(iter(opts.model_kwargs)).replace('_', '-')} applies to zoo models, "
                             "not to an ONNX file", "drop it")
    else:
        from edgec.zoo import get

        entry = get(opts.model)  # an unknown name fails here, before the passes and the compiler are loaded
        for key, value in opts.model_kwargs.items():
            flag = f"--{key.replace('_', '-')}"
            if key not in entry.options:
                takes = sorted({e.name for e in _zoo_entries() if key in e.options and not e.alias_of})
                raise UsageError(f"{flag} does not apply to '{opts.model}'", f"models that take it: {', '.join(takes)}")
            lo, hi = WIDTH_MULT_RANGE
            if key == "width_mult" and not lo <= float(value) <= hi:
                raise UsageError(f"{flag} {value} is outside [{lo}, {hi}]", "e.g. --width-mult 0.5")
        unknown = [n for n in given if n not in (None, "input")]
        if unknown:
            raise UsageError(f"--input-shape names '{unknown[0]}', but zoo models have one input, 'input'",
                             "write --input-shape 1,3,H,W or input=1,3,H,W")
    check_input_bytes(given, "--input-shape asks for")


def check_input_bytes(shapes: dict[Any, tuple[int, ...]], what: str) -> None:
    """The inputs of ``shapes`` (4 bytes per element) fit under ``$EDGEC_MAX_INPUT_BYTES``.

    Raises:
        UsageError: they do not (``what`` starts the message: ``"--input-shape asks for"``), or
            ``$EDGEC_MAX_INPUT_BYTES`` is not a number.
    """
    text = os.environ.get("EDGEC_MAX_INPUT_BYTES", str(MAX_INPUT_BYTES))
    try:
        limit = int(text)
        if limit <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"EDGEC_MAX_INPUT_BYTES '{text}' is not a whole number of bytes",
                         "e.g. EDGEC_MAX_INPUT_BYTES=2147483648, or unset it (1 GiB)") from None
    need = sum(4 * math.prod(int(d) for d in shape) for shape in shapes.values())  # exact: no overflow
    if need > limit:
        from edgec.profiling.report import human_bytes

        raise UsageError(f"{what} {human_bytes(need)} of input alone, over the {human_bytes(limit)} limit",
                         "give a smaller --input-shape, or raise the limit with EDGEC_MAX_INPUT_BYTES")


def _zoo_entries():
    from edgec.zoo import list_models

    return list_models()


def _check_output(opts: BuildOptions) -> None:
    """``--name`` is a plain folder name, ``--out`` and ``--dump-ir`` folders edgec can write, before any work."""
    from edgec.artifact import MAX_NAME_BYTES, check_writable_folder

    if opts.name is not None and (not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*", opts.name)
                                  or opts.name in (".", "..")):
        raise UsageError(f"--name '{opts.name}' is not a plain folder name",
                         "use letters, digits, '_', '.', '+' and '-' (not first); the artifact goes inside --out")
    if opts.name is not None and len(opts.name.encode()) > MAX_NAME_BYTES:
        raise UsageError(f"--name is {len(opts.name.encode())} bytes long", f"use at most {MAX_NAME_BYTES}")
    check_writable_folder(Path(opts.out_dir), "--out")
    if opts.dump_ir is not None:
        check_writable_folder(Path(opts.dump_ir), "--dump-ir")


def check_request(opts: BuildOptions, target: str | None = None, *, name: str | None = None,
                  kind: str | None = None) -> TargetSpec:
    """Validate the model's options, the output folder, the target, the pipeline, the toolchain,
    the tuning database and the verification device, before any work.

    Args:
        opts: The request.
        target: Check this target instead of ``opts.target`` (a split's head or tail).
        name: The artifact folder's name when ``opts.name`` is not given (default ``<model>-<target>``; a
            split's names its cut); ``""`` when it is not known yet (``--at auto`` before the cut is
            chosen): then only a given ``opts.name`` is checked.
        kind: What the artifact will be (``one-part``, ``split``): an earlier artifact of another kind in
            its folder is refused (:func:`edgec.artifact.check_replaceable`).

    Returns:
        The target's data.

    Raises:
        UsageError, TargetError, ToolchainError.
    """
    _check_model_options(opts)
    for sample in opts.verify_inputs or []:  # the files' contents are read after the export
        path = Path(sample)
        if not path.is_file() or path.stat().st_size == 0:
            what = "is a folder" if path.is_dir() else "not found" if not path.exists() else "is empty"
            raise UsageError(f"--verify-inputs {sample} {what}", "give .npz, .npy or image files")
    opts.verify_limit()  # a bad $EDGEC_VERIFY_TIMEOUT is refused before any work
    check_quantize(opts)
    _check_output(opts)
    spec = get_target(target or opts.target)
    from edgec.artifact import check_replaceable

    folder = opts.name or (default_name(opts, spec) if name is None else name)
    if folder:
        check_replaceable(Path(opts.out_dir) / folder, kind)
    from edgec.passes import resolve_pipeline

    backend = get_backend(spec)
    from edgec.devices import check_verification_kind

    given = target or opts.target
    check_verification_kind(spec.verify, target=given if given.endswith(".json") else spec.name,
                            checks=backend.verify_checks)
    resolve_pipeline(opts.passes)
    backend.check(spec, opts.tuning)
    return spec


def check_quantize(opts: BuildOptions) -> None:
    """``--quantize``, ``--calibrate``, ``--samples`` and ``--calibration`` before any work.

    Raises:
        UsageError: an unknown scheme or method, samples out of 1..10000, a missing ``--calibrate`` path, or
            calibration options without ``--quantize``.
    """
    from edgec.frontend.specs import CALIBRATION_METHODS as METHODS

    if opts.quantize is None:
        for flag, value in (("--calibrate", opts.calibrate), ("--data", opts.data)):
            if value is not None:
                raise UsageError(f"{flag} is given without --quantize", f"add --quantize int8, or drop {flag}")
        return
    if opts.data is not None and not Path(opts.data).is_dir():
        raise UsageError(f"--data {opts.data} is not a folder", "give a folder with one sub-folder of images per class")
    if opts.quantize != "int8":
        raise UsageError(f"--quantize {opts.quantize!r} is not a known scheme", "use --quantize int8")
    if opts.calibration_method not in METHODS:
        raise UsageError(f"--calibration {opts.calibration_method!r} is not a calibration method",
                         f"choose one of {', '.join(METHODS)}")
    if not 1 <= opts.calibration_samples <= 10_000:
        raise UsageError(f"--samples {opts.calibration_samples} is out of range", "give 1 to 10000 samples (e.g. 32)")
    if opts.calibrate is not None:
        path = Path(opts.calibrate)
        if not path.exists():
            raise UsageError(f"--calibrate {path} not found", "give a folder of images or a .npz of input arrays")
        if path.is_file() and path.suffix != ".npz":
            raise UsageError(f"--calibrate {path} is neither a folder of images nor a .npz file",
                             "give a folder of images or a .npz of input arrays")


def pipeline_spec(passes: Any) -> Any:
    if isinstance(passes, list):
        return ",".join(c.label() for c in passes)
    return passes
