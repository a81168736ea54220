"""One part of an artifact: compile it for its target and verify it on its device.

A part is verified on every input set against onnxruntime's run of its reference model (the model
after any function-changing pass). :mod:`edgec.flows.assemble` lays the parts out as an artifact
and writes their reports and manifests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.backends import Backend, Compiled, TuningOptions, VerifyPlan, get_backend
from edgec.errors import VerificationError
from edgec.flows.int8 import SYNTHETIC_SETS
from edgec.flows.steps import Progress, Steps
from edgec.frontend import reference
from edgec.frontend.float64 import Oracle, decides
from edgec.frontend.quantize import is_qdq, output_steps
from edgec.frontend.tflite import TFLiteModel
from edgec.split.encoding import CutEncoding
from edgec.targets import TargetSpec

#: Named input sets: ``{set name: {input name: array}}``.
InputSets = dict[str, dict[str, np.ndarray]]


# --------------------------------------------------------------------------- the model a part compiles
# An ONNX model (after the frontend and the passes), or a TFLite file compiled as it is
# (:class:`edgec.frontend.tflite.TFLiteModel`): these few functions are all a flow asks of either.

def model_io(model: onnx.ModelProto | TFLiteModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(inputs, outputs)`` as ``[{"name", "shape", "dtype", ...}]`` (a TFLite file's quantization and layout too)."""
    if isinstance(model, TFLiteModel):
        return model.input_infos(), model.output_infos()
    from edgec.artifact import tensor_infos
    from edgec.frontend.integer_io import io_quantization
    from edgec.frontend.load import graph_inputs

    coded = io_quantization(model)  # an int8 input's or output's scale and zero_point
    inputs, outputs = tensor_infos(graph_inputs(model)), tensor_infos(model.graph.output)
    return ([{**t, **coded["inputs"].get(t["name"], {})} for t in inputs],
            [{**t, **coded["outputs"].get(t["name"], {})} for t in outputs])


def model_stats(model: onnx.ModelProto | TFLiteModel) -> Any:
    """Nodes, params, param bytes, MACs and op counts (:class:`~edgec.frontend.analysis.GraphStats` or
    :class:`~edgec.frontend.tflite.TFLiteStats`: the same fields)."""
    if isinstance(model, TFLiteModel):
        return model.info.stats
    from edgec.frontend.analysis import graph_stats

    return graph_stats(model)


def save_model(model: onnx.ModelProto | TFLiteModel, folder: Path) -> str:
    """Write exactly what was compiled into ``folder`` (``model.onnx`` or ``model.tflite``); the file's name."""
    if isinstance(model, TFLiteModel):
        return model.save(folder).name
    onnx.save(model, str(Path(folder) / "model.onnx"))
    return "model.onnx"


class References:
    """onnxruntime's outputs (graph optimisations off) of reference models on named input sets, each
    model's session made once and each (model, set) run once.

    A flow shares one instance from the frontend to the verification, so the simplified model is run
    in onnxruntime once per input set however many steps compare with it.
    """

    def __init__(self) -> None:
        self._models: dict[int, tuple[onnx.ModelProto, Any, dict[str, list[np.ndarray]]]] = {}
        self._oracles: dict[int, Oracle] = {}

    def outputs(self, model: onnx.ModelProto | TFLiteModel, sets: InputSets) -> dict[str, list[np.ndarray]]:
        """``{set name: outputs in graph order}`` of ``model`` on ``sets`` (cached by model and set name); a
        TFLite file's from the TFLite interpreter (:func:`edgec.frontend.litert.run_litert`)."""
        if id(model) not in self._models:
            if isinstance(model, TFLiteModel):
                from edgec.frontend.litert import run_litert

                self._models[id(model)] = (model, lambda xs: run_litert(model.data, list(xs.values())), {})
            else:  # a quantized (QDQ) model's reference is onnxruntime's integer kernels (optimizations on)
                session = reference.ort_session(model, optimized=is_qdq(model))
                self._models[id(model)] = (model, lambda xs, s=session: reference.run_session(s, xs), {})
        _, run, done = self._models[id(model)]
        for name, xs in sets.items():
            if name not in done:
                done[name] = run(xs)
        return {name: done[name] for name in sets}

    def oracle(self, model: onnx.ModelProto | TFLiteModel) -> Oracle | None:
        """The float64 truth of ``model`` (one per model, sharing this cache's onnxruntime outputs); None for a
        TFLite file (no float64 interpreter exists for it: its check is the plain one) and for a quantized model
        (integer arithmetic has no float32 noise: its check counts quantization steps)."""
        if isinstance(model, TFLiteModel) or is_qdq(model):
            return None
        return self._oracle(model)

    def int8_oracle(self, model: onnx.ModelProto | TFLiteModel) -> Oracle | None:
        """The float64 truth of a quantized (QDQ) model, which decides an int8 set onnxruntime's result does not
        (:meth:`edgec.frontend.float64.Oracle.check_steps`); None for any other model."""
        return self._oracle(model) if isinstance(model, onnx.ModelProto) and is_qdq(model) else None

    def _oracle(self, model: onnx.ModelProto) -> Oracle:
        if id(model) not in self._oracles:
            self._oracles[id(model)] = Oracle(model, lambda name, xs: self.outputs(model, {name: xs})[name])
        return self._oracles[id(model)]


@dataclass
class PartRequest:
    """One part to compile and verify.

    Attributes:
        name: Part name (``head``, ``tail``; :data:`edgec.artifact.MAIN_PART` for a one-part artifact).
        model: ONNX with static shapes to compile.
        target: Its target.
        inputs: Verification inputs of the part, by input name (the ``normal`` set).
        reference: The model the compiled part must match (default: ``model``).
        passes: Pass records to report (frontend parity first).
        function_change: The intended function change to report, or None.
        before_passes: The model before the passes (for kernel counts and memory), or None.
        input_sets: Named verification input sets (default: ``{"normal": inputs}``).
    """

    name: str
    model: onnx.ModelProto
    target: TargetSpec
    inputs: dict[str, np.ndarray]
    reference: onnx.ModelProto | None = None
    passes: list[dict[str, Any]] = field(default_factory=list)
    function_change: dict[str, Any] | None = None
    before_passes: onnx.ModelProto | None = None
    input_sets: InputSets = field(default_factory=dict)

    def sets(self) -> InputSets:
        return self.input_sets or {"normal": self.inputs}

    @property
    def passes_changed(self) -> bool:
        return any(p.get("applied") for p in self.passes)


@dataclass
class Connection:
    """A tensor flowing from one part's output to another part's input, with how it travels
    (``encoding``: :class:`edgec.split.encoding.CutEncoding`; None is fp32 as computed)."""

    src_part: str
    src_tensor: str
    dst_part: str
    dst_tensor: str
    encoding: CutEncoding | None = None

    def carry(self, value: np.ndarray) -> np.ndarray:
        """What the destination part receives when the source part produced ``value``."""
        return value if self.encoding is None else self.encoding.roundtrip(value)

    def to_dict(self) -> dict[str, Any]:
        out = {"from": {"part": self.src_part, "tensor": self.src_tensor},
               "to": {"part": self.dst_part, "tensor": self.dst_tensor}}
        if self.encoding is not None:
            out["encoding"] = self.encoding.to_dict()
        return out


@dataclass
class CompiledPart:
    """A part compiled into its folder, with its backend (resolved once) and its verification.

    Attributes:
        request: What was asked.
        backend: The backend module that compiled it.
        compiled: What the backend produced.
        verification: The verification record (``passed`` None when skipped).
        plan: How it was verified (None when skipped): the composition runs the same library on the
            same device.
    """

    request: PartRequest
    backend: Backend
    compiled: Compiled
    verification: dict[str, Any]
    plan: VerifyPlan | None


#: The verification run's limit: this many seconds of start-up (an emulator, its Python and the TVM
#: runtime), then every input set's MACs at :data:`RUN_MACS_PER_S`, all times the machine's load.
RUN_START_S = 120.0
#: A slow pace for one inference (MACs per second): qemu-aarch64 ran mobilenetv4 (186 M MACs) at about
#: 14 M MAC/s on one thread of a 2-core AMD EPYC under a load average of 6 (two busy loops beside it).
RUN_MACS_PER_S = 1e7
#: The limit is never below this (s).
RUN_MIN_S = 600.0


def run_limit_s(model: onnx.ModelProto, n_sets: int, given: float | None = None) -> float:
    """Seconds the verification device may take to run ``n_sets`` input sets of ``model``.

    Args:
        model: The part's ONNX (its MACs set the pace).
        n_sets: Input sets in the run.
        given: ``--verify-timeout`` / ``$EDGEC_VERIFY_TIMEOUT`` (s), which wins when given.

    Returns:
        ``given``, else ``max(RUN_MIN_S, (RUN_START_S + n_sets * MACs / RUN_MACS_PER_S) * load)`` where
        ``load`` is the 1-minute load average per core (at least 1).
    """
    import os

    if given is not None:
        return float(given)
    load = max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))
    return max(RUN_MIN_S, (RUN_START_S + n_sets * model_stats(model).macs / RUN_MACS_PER_S) * load)


def run_on_device(plan: VerifyPlan, sets: list[list[np.ndarray]], say: Progress, model: onnx.ModelProto,
                  timeout: float | None = None) -> tuple[list[list[np.ndarray]], Any]:
    """Run ``plan.library`` on every input set on the verification device ``plan.device`` names.

    Args:
        plan: The backend's verification plan.
        sets: Input arrays per set, in graph order.
        say: Progress.
        model: The part's ONNX (sizes the run's time limit, :func:`run_limit_s`).
        timeout: ``--verify-timeout`` (s), or None.

    Returns:
        ``(outputs per set, the device)`` (an :class:`edgec.devices.Device`).

    Raises:
        UsageError: ``plan.device`` names no registered verification device.
        DeviceError, ToolchainError: the device failed or ran past its limit, or its emulator is missing.
    """
    from edgec.devices import verification_device

    device = verification_device(plan.device)
    return device.run_sets(plan.library, sets, timeout=run_limit_s(model, len(sets), timeout), progress=say), device


def step_figures(outputs: list[np.ndarray], expected: list[np.ndarray], steps: list[float | None]) -> dict[str, Any]:
    """How far int8 outputs are from their int8 reference in quantization steps: ``max_steps`` (the largest
    difference, in steps of its output) and ``exact_fraction`` (of the quantized outputs' elements, those equal
    to the reference), over the outputs with a step (a ``DequantizeLinear`` at the end)."""
    worst, exact, total = 0.0, 0, 0
    for out, ref, q_step in zip(outputs, expected, steps):
        if not q_step:
            continue
        if np.shape(out) != np.shape(ref):  # compare() fails the set with the reason
            return {"max_steps": float("inf"), "exact_fraction": 0.0}
        diff = np.abs(np.asarray(out, np.float64) - np.asarray(ref, np.float64)) / q_step
        diff = np.where(np.isfinite(diff), diff, np.inf)
        worst = max(worst, float(diff.max(initial=0)))
        exact += int((diff < 0.5).sum())
        total += diff.size
    return {"max_steps": round(worst, 3), "exact_fraction": exact / total if total else None}


#: An int8 output may differ from its reference by one quantization step (the requantization's rounding);
#: the factor absorbs the float32 rounding of the dequantized values.
ONE_STEP = 1.0 + 1e-4


def compare_sets(outputs: dict[str, list[np.ndarray]], expected: dict[str, list[np.ndarray]], *,
                 oracle: Oracle | None = None, inputs: InputSets | None = None,
                 step: Callable[[str, Callable[[], Any]], Any] | None = None,
                 quantization_steps: list[float | None] | None = None, int8_oracle: Oracle | None = None
                 ) -> dict[str, Any]:
    """Compare per input set at the build tolerance; the worst set's figures lead the record.

    A set whose error fails the tolerance, or comes near it, everything finite
    (:func:`edgec.frontend.float64.decides`), is decided by ``oracle`` when given (the float64 truth of the
    reference model; ``inputs`` are the sets' inputs): its row gains a ``float64`` record and takes that
    verdict (a model without a float64 path keeps the plain one). A set whose reference is not finite is skipped
    (``passed`` None, with its reason); when every set is, the verification fails (``unverifiable``).

    Args:
        step: Runs each float64 check as a timed step (``Steps.run``).
        quantization_steps: Per output, the quantization step of an int8 reference (:func:`edgec.frontend.
            quantize.output_steps`): such an output passes within one step (:data:`ONE_STEP`), near-tie top-1
            within one step, and its row gains :func:`step_figures`.
        int8_oracle: The float64 truth of a quantized reference (:meth:`References.int8_oracle`): a judged set
            more than one step from onnxruntime's integer kernels is decided by its distance from the truth.

    Returns:
        ``{"sets": [{"name", "max_abs_error", "max_abs_ref", "tolerance", "top1_match", "passed",
        ["reason"], ["float64"]}], "worst_set", and the worst set's fields, "passed": every checked set
        passed}``.
    """
    rows = []
    floor = [ONE_STEP * s if s else 0.0 for s in quantization_steps] if quantization_steps else 0.0
    for name, outs in outputs.items():
        cmp = reference.compare(outs, expected[name], rtol=reference.BUILD_RTOL, floor=floor)
        row = {"name": name, **cmp.to_dict()}
        if quantization_steps:
            row.update(step_figures(outs, expected[name], quantization_steps))
            # only a finite rounding difference is excused: NaN, inf or a wrong shape fails on every set
            if name in SYNTHETIC_SETS and row["passed"] is False and cmp.numeric and np.isfinite(row["max_steps"]):
                row.update(passed=None, reason=f"synthetic inputs, {row['max_steps']:g} steps: reported, not judged "
                                               "(one-step rounding differences compound through the layers far "
                                               "from the calibration data)")
        if (int8_oracle is not None and quantization_steps and inputs is not None and row["passed"] is False
                and cmp.numeric):
            def check_steps(name=name, outs=outs):
                return int8_oracle.check_steps(name, inputs[name], outs, quantization_steps, floor)

            row["float64"] = (step or (lambda _n, fn: fn()))(f"float64 reference ('{name}' inputs)", check_steps)
            if row["float64"]["passed"] is not None:
                row.update(passed=row["float64"]["passed"], reason=row["float64"]["reason"])
        elif oracle is not None and inputs is not None and decides(cmp):
            def check(name=name, outs=outs):
                return oracle.check(name, inputs[name], outs, reference.BUILD_RTOL)

            row["float64"] = (step or (lambda _n, fn: fn()))(f"float64 reference ('{name}' inputs)", check)
            if row["float64"].get("unstable"):  # float32 cannot compute the model here: not judged
                row.update(passed=None, reason=row["float64"]["reason"])
            elif row["float64"]["passed"] is not None:
                row["passed"] = row["float64"]["passed"]
        rows.append(row)
    checked = [r for r in rows if r["passed"] is not None]
    worst = max(checked or rows, key=lambda r: (not r["passed"], r["max_abs_error"] / max(r["tolerance"], 1e-30)))
    record = {**{k: v for k, v in worst.items() if k != "name"}, "worst_set": worst["name"], "sets": rows,
              "passed": bool(checked) and all(r["passed"] for r in checked)}
    if not checked:
        record["unverifiable"] = "no input set could be checked: " + "; ".join(
            f"'{r['name']}': {r.get('reason', '')}" for r in rows)
    return record


def quantization_steps(model: onnx.ModelProto | TFLiteModel) -> list[float | None] | None:
    """Per output, the quantization step of an int8 model's output (a QDQ ONNX model's, or a full-integer
    TFLite file's); None for a float model."""
    if isinstance(model, TFLiteModel):
        return model.info.output_steps if model.info.kind == "int8" else None
    return output_steps(model) if is_qdq(model) else None


def compile_part(req: PartRequest, folder: Path, steps: Steps, references: References, *, tuning: TuningOptions,
                 verify: bool, reference_label: str, workdir: Path, verify_timeout: float | None = None) -> CompiledPart:
    """Compile one part into ``folder`` and verify it against onnxruntime on its input sets.

    ``workdir`` receives what the verification needs besides the artifact (a CUDA part's stand-in CPU
    library); it must outlive the composition's verification, which runs the same plan again.
    ``verify_timeout`` (s) limits the device's run (None: :func:`run_limit_s`).

    Raises:
        UnsupportedOpError, ToolchainError, DeviceError: from the backend or the device.
    """
    backend = get_backend(req.target)
    folder.mkdir(parents=True, exist_ok=True)
    compiled = backend.compile(req.model, req.target, folder, tuning, step=steps.run)
    if not verify:
        record = {"method": req.target.verify, "skipped": True, "reason": "--no-verify", "passed": None,
                  "cubin_archs": compiled.cubin_archs}
        return CompiledPart(req, backend, compiled, record, None)
    expected = references.outputs(req.reference or req.model, req.sets())
    sets = req.sets()
    ref_model = req.reference or req.model
    q_steps = quantization_steps(ref_model)

    def check() -> tuple[dict[str, Any], VerifyPlan]:
        plan = backend.verify_plan(req.model, req.target, compiled, workdir)
        outs, device = run_on_device(plan, [list(v.values()) for v in sets.values()], steps.progress, req.model,
                                     verify_timeout)
        tflite = isinstance(req.model, TFLiteModel)
        return {"method": plan.method or device.description,
                "reference": "TFLite interpreter (LiteRT built-in kernels, no XNNPACK), source model" if tflite
                else reference_label,
                "reference_engine": "the TFLite interpreter" if tflite else "onnxruntime",
                "emulated": bool(device.emulated), **plan.extra,
                **({"reference_engine": "onnxruntime (integer kernels of the quantized model)"} if q_steps and not tflite
                   else {}),
                **({"tolerance_rule": "one quantization step of each output"} if q_steps else {}),
                **compare_sets(dict(zip(sets, outs)), expected, oracle=references.oracle(ref_model),
                               int8_oracle=references.int8_oracle(ref_model),
                               inputs=sets, step=steps.run, quantization_steps=q_steps)}, plan

    record, plan = steps.run("verify", check)
    return CompiledPart(req, backend, compiled, record, plan)


def kernel_counts(part: CompiledPart) -> dict[str, Any]:
    """The fused-kernel facts of the compiled part, with the counts before the passes when they changed it."""
    req, k = part.request, dict(part.compiled.kernels)
    if req.before_passes is not None and req.passes_changed:
        before = part.backend.count_kernels(req.before_passes, req.target)
        k.update(before_passes=before["count"], standalone_before_passes=before["standalone"])
    else:
        k.update(before_passes=k.get("after_passes"), standalone_before_passes=k.get("standalone_after_passes", []))
    return k


#: Timed runs of the quick latency a host build's summary shows (``edgec profile`` measures properly).
QUICK_RUNS = 10


def quick_latency(library: Path, model: onnx.ModelProto, inputs: dict[str, np.ndarray],
                  threads: int) -> dict[str, Any]:
    """A quick p50 of the artifact beside onnxruntime's (all optimisations), same inputs and threads.

    Returns:
        ``{"runs", "threads", "edgec_ms_p50", "onnxruntime_ms_p50", "ratio_vs_onnxruntime_p50"}`` (ms).
    """
    from edgec.devices import open_device
    from edgec.profiling.timing import LatencyStats, interleaved

    with open_device("local", threads=threads).open() as session:
        run = session.prepare(library, list(inputs.values()))
    if isinstance(model, TFLiteModel):  # its peer is the TFLite interpreter as users run it (XNNPACK)
        from edgec.frontend.litert import litert_call

        peer, call = "litert", litert_call(model.data, list(inputs.values()), threads)
    else:
        sess = reference.ort_session(model, optimized=True, threads=threads)
        peer, call = "onnxruntime", lambda: sess.run(None, inputs)
    samples = interleaved({"edgec": run, peer: call}, repeats=QUICK_RUNS, warmup=2)
    p50 = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
    return {"runs": QUICK_RUNS, "threads": threads, "edgec_ms_p50": p50["edgec"],
            f"{peer}_ms_p50": p50[peer], f"ratio_vs_{peer}_p50": p50["edgec"] / p50[peer]}


def fail_if_unverified(verification: dict[str, Any], what: str) -> None:
    """Raise when a verification record failed.

    Raises:
        VerificationError: ``verification["passed"]`` is False; ``what`` names whose outputs differ, the
            message says on which input set and why (the error against onnxruntime, the float64 verdict,
            NaN or inf, or a reference with nothing finite to compare with).
    """
    if verification.get("passed") is not False:
        return
    hint = ("rerun with --no-tune-db to find the cause (a TFLite file runs no passes); no artifact was written"
            if verification.get("reference_engine") == "the TFLite interpreter" else
            "rerun with --passes none or --no-tune-db to find the cause; no artifact was written")
    if verification.get("unverifiable"):
        raise VerificationError(f"{what} outputs cannot be verified: {verification['unverifiable']}",
                                "give inputs on which the model's outputs are finite with --verify-inputs FILE.npz, "
                                "or build with --no-verify; no artifact was written")
    where = f" on the '{verification['worst_set']}' inputs" if verification.get("worst_set") else ""
    engine = verification.get("reference_engine", "onnxruntime")
    f64 = verification.get("float64") or {}
    if verification.get("reason"):
        raise VerificationError(f"{what} outputs differ from {engine}{where}: {verification['reason']}", hint)
    top1 = "" if verification.get("top1_match") is not False else ", top-1 differs"
    extra = f"; float64 check: {f64['reason']}" if f64.get("reason") else ""
    sign = ">" if verification["max_abs_error"] > verification["tolerance"] else "≤"  # near it, float64 decided
    raise VerificationError(
        f"{what} outputs differ from {engine}{where}: max abs error {verification['max_abs_error']:.3g} "
        f"{sign} {verification['tolerance']:.3g}{top1}{extra}", hint)


def reference_label(function_change: dict[str, Any] | None) -> str:
    """How the verification reference is described in reports."""
    base = "onnxruntime CPU, ORT_DISABLE_ALL"
    if function_change:
        return f"{base}, model after {', '.join(function_change['passes'])} (the function-changing passes)"
    return f"{base}, source model"
