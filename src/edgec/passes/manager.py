"""The pass harness: run a pipeline, checking every pass numerically.

A pipeline (:func:`edgec.passes.registry.resolve_pipeline`) is cut into segments
at its function-changing passes. A segment of exact passes repeats until no pass
changes the graph (each pass to its own fixed point through
``onnx_ir.passes.PassManager``, with dead-node removal). A function-changing pass
runs once, where it stands.

After every pass that changed the graph, the harness records node count,
parameter count, MACs and op-count changes, the time taken, and a check on fixed
inputs in onnxruntime (``ORT_DISABLE_ALL``):

* an exact/allclose pass must keep max abs error within its declared tolerance
  (``rtol * max(1, max|ref|) + atol``; exact passes: rtol 1e-5) against the graph
  before it, or the pipeline stops with :class:`~edgec.errors.VerificationError`;
* a function-changing pass gets its fidelity figure (its own, or max abs error and
  top-1 agreement on N input sets, :mod:`edgec.passes.fidelity`) against the graph
  before it.

The result names the model a compiled artifact must match exactly: the model as it
stood after the last function-changing pass (the input model when there is none),
and the whole function change against the input model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnx import shape_inference

from edgec.errors import EdgecError, VerificationError
from edgec.frontend import reference
from edgec.frontend.analysis import graph_stats
from edgec.frontend.float64 import Oracle, decides
from edgec.passes import fidelity
from edgec.passes.options import PassCall
from edgec.passes.registry import resolve_pipeline

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
MAX_STEPS = 64
#: Input sets a function change is measured on.
FIDELITY_INPUTS = 8


@dataclass
class PipelineResult:
    """What a pipeline did.

    Attributes:
        model: The rewritten model.
        records: One record per pipeline entry (see :func:`run_pipeline`).
        reference: The model a compiled artifact must match exactly: after the last
            function-changing pass that changed the graph, else the input model.
        function_change: The reference against the input model (``fidelity`` figures plus
            ``passes``: the labels of the function-changing passes), or None when no pass
            changed the function.
    """

    model: onnx.ModelProto
    records: list[dict[str, Any]]
    reference: onnx.ModelProto
    function_change: dict[str, Any] | None = None
    calls: list[PassCall] = field(default_factory=list)


def to_ir(model: onnx.ModelProto) -> ir.Model:
    """The ``onnx_ir`` model of an ONNX protobuf (what the passes rewrite)."""
    return ir.serde.deserialize_model(model)


def to_proto(model: ir.Model) -> onnx.ModelProto:
    """The ONNX protobuf of an ``onnx_ir`` model."""
    proto = ir.serde.serialize_model(model)
    del proto.graph.value_info[:]
    return shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)


def _new_record(call: PassCall) -> dict[str, Any]:
    return {"name": call.name, "label": call.label(), "options": call.options_dict(),
            "equivalence": call.info.equivalence.to_dict(), "applied": 0, "seconds": 0.0,
            "max_abs_error": None, "max_abs_ref": None, "tolerance": None, "passed": None}


def _op_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    return {op: [before.get(op, 0), after.get(op, 0)] for op in sorted(set(before) | set(after))
            if before.get(op, 0) != after.get(op, 0)}


def apply_pass(call: PassCall, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """Run one pass on a copy of ``model``: to its fixed point, or once if it changes the function.

    Returns:
        ``(new model, changed)``; the input proto is not modified.
    """
    ir_model = to_ir(model)
    once = call.info.equivalence.changes_function
    manager = ir.passes.PassManager([call.create(), common_passes.RemoveUnusedNodesPass()],
                                    steps=1 if once else MAX_STEPS, early_stop=True)
    try:
        result = manager(ir_model)
    except ir.passes.PassError as e:  # a pass's own one-line error (a bad option value) is the message
        cause = e.__cause__
        while cause is not None and not isinstance(cause, EdgecError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    if not result.modified:
        return model, False
    return to_proto(result.model), True


def _segments(calls: list[PassCall]) -> list[list[int]]:
    """Indices of ``calls`` grouped: runs of exact passes, and each function-changing pass alone."""
    out: list[list[int]] = []
    run: list[int] = []
    for i, c in enumerate(calls):
        if c.info.equivalence.changes_function:
            if run:
                out.append(run)
                run = []
            out.append([i])
        else:
            run.append(i)
    if run:
        out.append(run)
    return out


class _Run:
    """State of one pipeline run: the current model, its outputs on every input set, stats and the records.

    An exact pass is checked on every input set against the model before it. A set it fails by the size
    of the error alone is decided by the float64 truth (:mod:`edgec.frontend.float64`) of the model the
    exact passes started from (they keep its function), as the build's verification is.
    """

    def __init__(self, model, sets, calls, dump_dir, progress, oracle: Oracle | None = None) -> None:
        self.model = model
        self.sets = sets
        self.inputs = next(iter(sets.values()))
        self.outputs = _run_sets(model, sets)
        self.stats = graph_stats(model)
        self.calls = calls
        self.records = [_new_record(c) for c in calls]
        self.dump_dir = dump_dir
        self.dumps = 0
        self.progress = progress or (lambda _m: None)
        self.reference = model
        self.changed_by: list[str] = []
        self._oracle: Oracle | None = oracle  # the input model's truth, shared with the caller's verification

    def oracle(self) -> Oracle:
        """The float64 truth of the function the exact passes keep (made when first needed)."""
        if self._oracle is None:
            outputs = self.outputs
            self._oracle = Oracle(self.model, lambda name, _xs: outputs[name])
        return self._oracle

    def step(self, i: int) -> bool:
        call, rec = self.calls[i], self.records[i]
        self.progress(f"pass {call.label()}")
        start = time.perf_counter()
        new, changed = apply_pass(call, self.model)
        if not changed:
            rec["seconds"] += time.perf_counter() - start
            return False
        new_out = _run_sets(new, self.sets)
        new_stats = graph_stats(new)
        eq = call.info.equivalence
        if rec["applied"] == 0:
            rec.update(nodes_before=self.stats.nodes, params_before=self.stats.params, macs_before=self.stats.macs,
                       ops_before=self.stats.op_counts)
        rec["applied"] += 1
        rec.update(nodes_after=new_stats.nodes, params_after=new_stats.params, macs_after=new_stats.macs,
                   ops_after=new_stats.op_counts)
        if eq.changes_function:
            fn = call.info.fidelity or fidelity.compare_functions
            rec["fidelity"] = fn(self.model, new, fidelity.input_sets(self.inputs, FIDELITY_INPUTS))
            rec["max_abs_error"] = rec["fidelity"].get("max_abs_error")
            rec["max_abs_ref"] = rec["fidelity"].get("max_abs_ref")
            self.changed_by.append(call.label())
        else:
            self._check(call, rec, new_out)
        rec["seconds"] += time.perf_counter() - start
        if self.dump_dir is not None:
            self.dumps += 1
            onnx.save(new, str(self.dump_dir / f"{self.dumps:02d}_{call.name}.onnx"))
        self.model, self.outputs, self.stats = new, new_out, new_stats
        if eq.changes_function or eq.kind != "exact":
            self._oracle = None  # a new function (or an approximation of the old): a new truth
        if eq.changes_function:
            self.reference = new
        return True

    def _check(self, call: PassCall, rec: dict[str, Any], new_out: dict[str, list[np.ndarray]]) -> None:
        """An exact or allclose pass against the model before it, on every input set.

        Raises:
            VerificationError: a set differs beyond the tolerance (and, for an exact pass, beyond float32
                noise against the float64 truth).
        """
        eq = call.info.equivalence
        for name, outs in new_out.items():
            check = reference.compare(outs, self.outputs[name], rtol=eq.rtol, check_top1=False, floor=0.0)
            if check.passed is None:  # the model computes NaN or inf on this set: nothing to compare with
                rec.setdefault("skipped_sets", {})[name] = check.reason
                continue
            tol = check.tolerance + eq.atol
            err = check.max_abs_error
            passed = bool(check.passed) if not eq.atol else (err <= tol and check.numeric)
            verdict = None
            if eq.kind == "exact" and decides(check):
                verdict = self.oracle().check(name, self.sets[name], outs, eq.rtol, check_top1=False)
                if verdict.get("unstable"):  # float32 cannot compute the model on this set: not judged
                    rec.setdefault("skipped_sets", {})[name] = verdict["reason"]
                    continue
                if verdict["passed"] is not None:
                    rec.setdefault("float64", {})[name] = verdict
                    passed = verdict["passed"]
            if rec["max_abs_error"] is None or err / max(tol, 1e-30) > rec["max_abs_error"] / max(rec["tolerance"], 1e-30):
                rec.update(max_abs_error=err, max_abs_ref=check.max_abs_ref, tolerance=tol, worst_set=name)
            rec["passed"] = passed if rec["passed"] is None else rec["passed"] and passed
            if not passed:
                why = (check.reason or f"max abs error {err:.3g} > tolerance {tol:.3g}"
                       + (f"; float64 check: {verdict['reason']}" if verdict else ""))
                raise VerificationError(f"pass {call.label()} changed the outputs on the '{name}' inputs: {why}",
                                        "leave it out with --passes, e.g. --passes none; please report it")

    def finish(self) -> list[dict[str, Any]]:
        for rec in self.records:
            if rec["applied"]:
                rec["op_changes"] = _op_changes(rec.pop("ops_before"), rec.pop("ops_after"))
            else:
                s = self.stats
                rec.update(nodes_before=s.nodes, nodes_after=s.nodes, params_before=s.params, params_after=s.params,
                           macs_before=s.macs, macs_after=s.macs, op_changes={})
            rec["seconds"] = round(rec["seconds"], 3)
        return self.records


def run_pipeline(model: onnx.ModelProto, spec: str | list[PassCall] | None,
                 inputs: dict[str, np.ndarray] | None = None, dump_dir: Path | None = None,
                 progress: Callable[[str], None] | None = None,
                 input_sets: dict[str, dict[str, np.ndarray]] | None = None,
                 oracle: Oracle | None = None) -> PipelineResult:
    """Run the pipeline ``spec`` on ``model`` with checks.

    Args:
        model: ONNX model with static shapes (the frontend's output). Not modified.
        spec: ``default``, ``none``, ``a,b(k=v)``, a pipeline file, or pass calls.
        inputs: Fixed inputs of the numerical checks (default: seeded random from the input shapes).
        dump_dir: When given, the ONNX before the first pass and after every pass
            application is written there (``00_input.onnx``, ``01_<pass>.onnx``, ...).
        progress: Called with each pass as it runs.
        input_sets: Named input sets every exact pass is checked on (default ``{"normal": inputs}``; the
            build's verification sets); a function change is measured on ``inputs`` and seeded N(0, 1) sets.
        oracle: The float64 truth of ``model`` (:class:`edgec.frontend.float64.Oracle`) when the caller
            holds one, so that the build's verification reuses what the passes' checks computed.

    Returns:
        A :class:`PipelineResult`. Each record has ``name``, ``label`` (with options),
        ``options``, ``equivalence``, ``nodes_before/after``, ``params_before/after``,
        ``macs_before/after``, ``op_changes`` (``{op: [before, after]}``), ``seconds``,
        ``applied`` (how many times the pass changed the graph), and either the check's
        ``max_abs_error``, ``tolerance`` and ``passed`` (exact passes) or ``fidelity``
        (function-changing passes).

    Raises:
        UsageError: an unknown pass or option.
        VerificationError: an exact pass changed the outputs beyond its tolerance.
    """
    calls = resolve_pipeline(spec)
    if not calls:
        return PipelineResult(model, [], model, None, [])
    if inputs is None:
        inputs = default_inputs(model)
    if dump_dir is not None:
        dump_dir = Path(dump_dir)
        dump_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(dump_dir / "00_input.onnx"))
    run = _Run(model, {"normal": inputs, **(input_sets or {})}, calls, dump_dir, progress, oracle)
    for segment in _segments(calls):
        for _round in range(1 if calls[segment[0]].info.equivalence.changes_function else MAX_ROUNDS):
            changed = False
            for i in segment:
                changed = run.step(i) or changed
            if not changed:
                break
    change = None
    if run.changed_by:
        change = {"passes": run.changed_by,
                  **fidelity.compare_functions(model, run.reference, fidelity.input_sets(inputs, FIDELITY_INPUTS))}
    return PipelineResult(run.model, run.finish(), run.reference, change, calls)


def _run_sets(model: onnx.ModelProto, sets: dict[str, dict[str, np.ndarray]]) -> dict[str, list[np.ndarray]]:
    """onnxruntime's outputs (optimisations off) of ``model`` on every set, one session."""
    session = reference.ort_session(model)
    return {name: reference.run_session(session, xs) for name, xs in sets.items()}


def default_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs of the model's static input shapes."""
    from edgec.frontend.load import graph_inputs

    shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs(model)}
    return reference.make_inputs(shapes, reference.input_dtypes(model), seed=seed)


def verify_pass(name: str, model: onnx.ModelProto, inputs: dict[str, np.ndarray] | None = None,
                seed: int = 0) -> tuple[onnx.ModelProto, bool, reference.Comparison]:
    """Apply one pass and compare outputs before/after in onnxruntime (the equivalence harness).

    Args:
        name: A pipeline entry: ``name`` or ``name(key=value,...)``.
        model: Model with static input shapes.
        inputs: Fixed inputs (default: seeded random from the input shapes).
        seed: Seed of the default inputs.

    Returns:
        ``(new model, changed, comparison at the pass's declared tolerance)``.

    Raises:
        UsageError: not exactly one pass, or an unknown pass or option.
    """
    from edgec.errors import UsageError

    calls = resolve_pipeline(name)
    if len(calls) != 1:
        raise UsageError(f"verify_pass takes one pass, not '{name}'", "give one pipeline entry")
    call = calls[0]
    if inputs is None:
        inputs = default_inputs(model, seed)
    before = reference.run_ort(model, inputs)
    new, changed = apply_pass(call, model)
    after = reference.run_ort(new, inputs)
    eq = call.info.equivalence
    cmp = reference.compare(after, before, rtol=eq.rtol, check_top1=False)
    if eq.atol:
        cmp.tolerance += eq.atol
        cmp.passed = cmp.max_abs_error <= cmp.tolerance
    return new, changed, cmp
