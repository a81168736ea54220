"""The pass harness: run a named pipeline to a fixed point, checking every pass numerically.

Each pass runs through ``onnx_ir.passes.PassManager`` (with dead-node removal) to
its own fixed point; the pipeline repeats until no pass changes the graph. After
every pass that changed the graph, the harness records node count, parameter
count, MACs and op-count changes, the time taken, and the numerical check: the
graph before and after the pass run in onnxruntime (``ORT_DISABLE_ALL``) on the
same fixed inputs, and the max abs error must stay within the pass's declared
tolerance (``rtol * max(1, max|ref|)``; ``shared/README.md``). Passes declared as
``changes-function`` are measured but not held to a tolerance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnx import shape_inference

from edgec.errors import VerificationError
from edgec.frontend import reference
from edgec.frontend.analysis import graph_stats
from edgec.passes.registry import PassInfo, resolve_pipeline

log = logging.getLogger(__name__)

MAX_ROUNDS = 8
MAX_STEPS = 64


def _to_ir(model: onnx.ModelProto) -> ir.Model:
    return ir.serde.deserialize_model(model)


def _to_proto(model: ir.Model) -> onnx.ModelProto:
    proto = ir.serde.serialize_model(model)
    del proto.graph.value_info[:]
    return shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)


def _new_record(info: PassInfo) -> dict[str, Any]:
    return {"name": info.name, "equivalence": info.equivalence.to_dict(), "applied": 0, "seconds": 0.0,
            "max_abs_error": None, "max_abs_ref": None, "tolerance": None, "passed": None}


def _op_changes(before: dict[str, int], after: dict[str, int]) -> dict[str, list[int]]:
    return {op: [before.get(op, 0), after.get(op, 0)] for op in sorted(set(before) | set(after))
            if before.get(op, 0) != after.get(op, 0)}


def apply_pass(info: PassInfo, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """Run one pass to its fixed point on a copy of ``model``.

    Returns:
        ``(new model, changed)``; the input proto is not modified.
    """
    ir_model = _to_ir(model)
    manager = ir.passes.PassManager([info.factory(), common_passes.RemoveUnusedNodesPass()],
                                    steps=MAX_STEPS, early_stop=True)
    result = manager(ir_model)
    if not result.modified:
        return model, False
    return _to_proto(result.model), True


def run_pipeline(model: onnx.ModelProto, spec: str, inputs: dict[str, np.ndarray] | None = None,
                 dump_dir: Path | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[onnx.ModelProto, list[dict[str, Any]]]:
    """Run the pipeline ``spec`` (``default``, ``none`` or ``a,b,c``) on ``model`` with checks.

    Args:
        model: ONNX model with static shapes (the frontend's output). Not modified.
        spec: Pipeline name or comma-separated pass names.
        inputs: Fixed inputs of the numerical check (default: seeded random from the input shapes).
        dump_dir: When given, the ONNX before the first pass and after every pass
            application is written there (``00_input.onnx``, ``01_<pass>.onnx``, ...).
        progress: Called with each pass name as it runs.

    Returns:
        ``(rewritten model, per-pass records)``; each record has ``nodes_before/after``,
        ``params_before/after``, ``macs_before/after``, ``op_changes`` (``{op: [before, after]}``),
        ``seconds``, ``applied`` (how many times the pass changed the graph) and the
        check's ``max_abs_error``, ``tolerance`` and ``passed``.

    Raises:
        UsageError: an unknown pass name.
        VerificationError: an exact pass changed the outputs beyond its tolerance.
    """
    infos = resolve_pipeline(spec)
    if not infos:
        return model, []
    if inputs is None:
        from edgec.frontend.load import graph_inputs

        shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs(model)}
        inputs = reference.make_inputs(shapes, reference.input_dtypes(model))
    if dump_dir is not None:
        dump_dir = Path(dump_dir)
        dump_dir.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(dump_dir / "00_input.onnx"))
    current = model
    current_out = reference.run_ort(current, inputs)
    stats = graph_stats(current)
    records = {info.name: _new_record(info) for info in infos}
    dumps = 0
    for _round in range(MAX_ROUNDS):
        round_changed = False
        for info in infos:
            if progress:
                progress(f"pass {info.name}")
            rec = records[info.name]
            start = time.perf_counter()
            new, changed = apply_pass(info, current)
            if not changed:
                rec["seconds"] += time.perf_counter() - start
                continue
            new_out = reference.run_ort(new, inputs)
            check = reference.compare(new_out, current_out, rtol=info.equivalence.rtol, check_top1=False)
            new_stats = graph_stats(new)
            rec["seconds"] += time.perf_counter() - start
            if rec["applied"] == 0:
                rec.update(nodes_before=stats.nodes, params_before=stats.params, macs_before=stats.macs,
                           ops_before=stats.op_counts)
            rec["applied"] += 1
            rec.update(nodes_after=new_stats.nodes, params_after=new_stats.params, macs_after=new_stats.macs,
                       ops_after=new_stats.op_counts)
            err = check.max_abs_error
            rec["max_abs_error"] = err if rec["max_abs_error"] is None else max(rec["max_abs_error"], err)
            rec["max_abs_ref"], rec["tolerance"] = check.max_abs_ref, check.tolerance
            exact = info.equivalence.kind == "exact"
            rec["passed"] = (check.passed if rec["passed"] is None else rec["passed"] and check.passed) if exact \
                else None
            if exact and not check.passed:
                raise VerificationError(
                    f"pass {info.name} changed the outputs: max abs error {err:.3g} > tolerance "
                    f"{check.tolerance:.3g}", f"leave it out with --passes, e.g. --passes none; please report it")
            if dump_dir is not None:
                dumps += 1
                onnx.save(new, str(dump_dir / f"{dumps:02d}_{info.name}.onnx"))
            current, current_out, stats = new, new_out, new_stats
            round_changed = True
        if not round_changed:
            break
    out = []
    for info in infos:
        rec = records[info.name]
        if rec["applied"]:
            rec["op_changes"] = _op_changes(rec.pop("ops_before"), rec.pop("ops_after"))
        else:
            rec.update(nodes_before=stats.nodes, nodes_after=stats.nodes, params_before=stats.params,
                       params_after=stats.params, macs_before=stats.macs, macs_after=stats.macs, op_changes={})
        rec["seconds"] = round(rec["seconds"], 3)
        out.append(rec)
    return current, out


def verify_pass(name: str, model: onnx.ModelProto, inputs: dict[str, np.ndarray] | None = None,
                seed: int = 0) -> tuple[onnx.ModelProto, bool, reference.Comparison]:
    """Apply one pass and compare outputs before/after in onnxruntime (the equivalence harness).

    Args:
        name: Registered pass name.
        model: Model with static input shapes.
        inputs: Fixed inputs (default: seeded random from the input shapes).
        seed: Seed of the default inputs.

    Returns:
        ``(new model, changed, comparison at the pass's declared tolerance)``.
    """
    from edgec.frontend.load import graph_inputs
    from edgec.passes.registry import get_pass

    info = get_pass(name)
    if inputs is None:
        shapes = {i.name: tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in graph_inputs(model)}
        inputs = reference.make_inputs(shapes, reference.input_dtypes(model), seed=seed)
    before = reference.run_ort(model, inputs)
    new, changed = apply_pass(info, model)
    after = reference.run_ort(new, inputs)
    return new, changed, reference.compare(after, before, rtol=info.equivalence.rtol, check_top1=False)
