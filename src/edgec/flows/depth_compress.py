"""``edgec depth-compress``: latency-aware depth compression with fine-tuning (changes the function).

Kim et al., "Efficient Latency-Aware CNN Depth Compression via Two-Stage Dynamic Programming",
ICML 2023. Steps, each reported:

1. **Chains** of convolutions with activations between them (:mod:`edgec.passes.depth_chains`).
2. **Latency table** ``T(k, l)``: every group of consecutive layers of a chain whose merged kernel is at
   most ``max_kernel`` is built as one convolution (padding moved onto it, followed by the activation that
   ends it, if any), compiled for the target with the tuned or default schedules and its kernel timed on
   this machine in a loop (warm caches, threads awake, as inside the model), as a *ratio* to the whole
   model's time measured beside it (:func:`_group_ratios`): a shared machine's speed drifts by up to 1.5x
   over minutes, and a ratio does not. Cached per target, model and thread count; converted to ms with the
   model's time at planning. ``T_rest`` -- the model's measured end-to-end time minus its layers' table
   times -- holds the other kernels and the per-kernel call overhead.
3. **Importance** ``I(i, j)`` of removing the activations inside segment ``(i, j)``: minus the mean KL
   divergence of the class distribution from the original's on training images, with only those
   activations removed, after ``importance_steps`` (30) distillation steps of that network from the
   original weights (the paper's short fine-tune per segment, section 4.2; it measures what fine-tuning
   recovers). On the 98% digits model at ``--speedup 1.2`` the bare KL (``importance_steps=0``) chose a plan
   that lost 4.2 points after fine-tuning; the fine-tuned score's plan (22 activations removed) lost none.
4. **Two-stage DP** (:func:`edgec.passes.depth_dp.plan_network`) under the budget
   ``T_model / speedup - T_rest``, ``T_rest`` being the model's measured time minus its layers' table times.
   Then, ``plan_rounds`` times at most, the planned model (merged, original weights: speed does not depend
   on them) is compiled and timed beside the model, and the DP runs again under the budget corrected by
   the measured/predicted ratio, until the plan stops changing. The table errs on the slow side (a group's
   kernel timed alone; on the digits model the plan measured 11-13% faster than predicted), and a plan
   that overshoots the budget removes activations it did not need to, at a cost in accuracy.
5. **Fine-tuning** of the linearised model (activations removed, padding moved) by distillation from the
   original (KL + cross-entropy on ``--data``'s labels), then the groups are **merged exactly** (the merged
   model in onnxruntime within 1e-5 * max(1, max|ref|) of the linear model computed in float64).
6. **Measurement**: both models compiled and timed on this machine (back-to-back inferences, the two models
   alternating round by round, each model's fastest round kept like the table's, the median round reported
   too); top-1 on the held-out images.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import helper, numpy_helper, shape_inference

from edgec.artifact import check_replaceable, check_writable_folder
from edgec.backends import TuningOptions, get_backend
from edgec.flows.lower import lower
from edgec.flows.request import BuildOptions, check_request
from edgec.flows.steps import Steps
from edgec.errors import UsageError, raise_if_interrupted
from edgec.frontend.analysis import graph_stats, static_shapes
from edgec.passes.depth_chains import (
    Chain,
    chain_specs,
    conv_macs,
    find_chains,
    group_spec,
    linearise,
    merge_groups,
    merged_kernel,
)
from edgec.passes.depth_dp import ChainPlan, plan_network
from edgec.passes.depth_training import check_merge, finetune, ort_scores, segment_importance


@dataclass(frozen=True)
class CompressOptions:
    """Options of :func:`depth_compress`.

    Attributes:
        speedup: Target speed-up of the whole model (predicted), e.g. 1.25; or
        budget_ms: the model's predicted latency budget (ms). Exactly one is given.
        epochs: Fine-tuning epochs over ``--data``'s training images (AdamW, one-cycle lr peaking at ``lr``,
            batch 64).
        lr: Peak learning rate (3e-3 diverged on the digits model; 1e-3 recovers).
        max_kernel: Largest merged kernel side.
        calibration: Training images used for the importance scores.
        importance_steps: Distillation steps (batch 64) per segment before its importance is measured; 0 scores
            each segment by the KL of the bare removal (no fine-tuning).
        plan_rounds: Times the plan is re-made from a measurement: the planned model (merged, original weights)
            is compiled and timed beside the model, and the DP runs again with its budget corrected by the
            measured/predicted ratio (the table's bias), until the plan stops changing; 0 keeps the first plan.
        seed: Seed of the fine-tuning.
    """

    speedup: float | None = 1.25
    budget_ms: float | None = None
    epochs: int = 20
    lr: float = 1e-3
    max_kernel: int = 7
    calibration: int = 256
    importance_steps: int = 30
    plan_rounds: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.speedup is None) == (self.budget_ms is None):
            raise UsageError("give one of --speedup and --budget-ms", "e.g. --speedup 1.25")
        if self.speedup is not None and not 1.0 <= self.speedup < 100:
            raise UsageError(f"--speedup {self.speedup} must be at least 1 and below 100", "e.g. --speedup 1.25")
        if self.budget_ms is not None and not 0 < self.budget_ms < float("inf"):
            raise UsageError(f"--budget-ms {self.budget_ms} must be a positive number of milliseconds",
                             "e.g. --budget-ms 0.5")
        if not 0 < self.lr < 1:  # nan and inf too
            raise UsageError(f"--lr {self.lr} is not a learning rate in (0, 1)", "e.g. --lr 1e-3")
        if self.epochs < 0:
            raise UsageError(f"--epochs {self.epochs} must be 0 or more", "e.g. --epochs 20")
        if self.plan_rounds < 0 or self.importance_steps < 0:
            raise UsageError("--plan-rounds and --importance-steps must be 0 or more", "e.g. --plan-rounds 2")


def _group_model(model: onnx.ModelProto, ir_model: ir.Model, chain: Chain, k: int, l: int,
                 in_shape: tuple[int, ...]) -> onnx.ModelProto:
    """Layers ``k+1..l`` of ``chain`` as one merged Conv (+ the activation after layer ``l``) of their own."""
    spec = group_spec(chain_specs(ir_model, chain)[k:l])
    inits = [numpy_helper.from_array(spec.weight.astype(np.float32), "w"),
             numpy_helper.from_array(spec.bias.astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y0" if chain.layers[l - 1].act else "y"], name="group",
                              kernel_shape=list(spec.kernel), pads=spec.pads, strides=list(spec.strides),
                              group=spec.group)]
    act_name = chain.layers[l - 1].act
    if act_name:
        src = {init.name: init for init in model.graph.initializer}
        act = next(n for n in model.graph.node if (n.name or n.output[0]) == act_name)
        ins = ["y0"]
        for i, name in enumerate(act.input[1:]):
            if name in src:
                t = onnx.TensorProto()
                t.CopyFrom(src[name])
                t.name = f"a{i}"
                inits.append(t)
                ins.append(t.name)
            else:
                ins.append("")
        nodes.append(helper.make_node(act.op_type, ins, ["y"], name="group_act",
                                      **{a.name: helper.get_attribute_value(a) for a in act.attribute}))
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, list(in_shape))
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "group", [x], [y], inits)
    m = helper.make_model(g, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return shape_inference.infer_shapes(m, strict_mode=True)  # the output's shape too


def _signature(m: onnx.ModelProto, target: str, threads: int) -> str:
    """Cache key: the model without weight values (time depends on shapes and attributes only)."""
    stripped = onnx.ModelProto()
    stripped.CopyFrom(m)
    for t in stripped.graph.initializer:
        t.ClearField("raw_data")
        del t.float_data[:]
    return hashlib.sha256(stripped.SerializeToString() + f"{target}:{threads}".encode()).hexdigest()[:24]


#: Timing rounds of the latency table: every group is timed once per round; the median round is kept.
TABLE_ROUNDS = 3
#: Groups timed between two timings of the reference (the whole model) in a round (about 0.5 s).
GROUPS_PER_REFERENCE = 8


def _group_ratios(models: list[onnx.ModelProto], reference: onnx.ModelProto, spec, threads: int,
                  say: Callable[[str], None], rounds: int = TABLE_ROUNDS) -> list[list[float]]:
    """Each group model's kernel time as a ratio to ``reference``'s (the whole model's) end-to-end time.

    Each group is compiled alone (so that it gets the layout and schedules a whole model would); its
    group kernels -- not the layout transposes around them -- are timed by TVM's ``time_evaluator``
    looping each for >= 20 ms (warm caches, threads awake: as inside a model), the median of 3 loops.
    The reference runs the same way (back-to-back inferences) before and after every
    :data:`GROUPS_PER_REFERENCE` groups, and each group's time is divided by the mean of the two. On a
    shared 2-core machine the whole machine's speed drifted by up to 1.5x for tens of seconds (tables
    timed one after the other differed by 46% in sum; the model's time by 55%): ratios to a reference
    timed beside them cancel that, times alone do not.

    Returns:
        Per group, its ratio in each of the ``rounds`` rounds over all groups (round ``r`` of every group
        was timed in the same pass: :func:`latency_table` compares merges with their layers round by round).
    """
    from edgec.devices.local import LocalDevice

    backend = get_backend(spec)
    with tempfile.TemporaryDirectory(prefix="edgec-compress-") as tmp, LocalDevice(threads).open() as session:
        say("compile the model (the table's reference)")
        compiled = backend.compile(reference, spec, Path(tmp), TuningOptions())
        dims = [d.dim_value for d in reference.graph.input[0].type.tensor_type.shape.dim]
        vm = session.load_model(compiled.library)
        args = session.tensors([np.random.default_rng(0).standard_normal(dims).astype(np.float32)])
        vm["main"](*args)
        loop = vm.time_evaluator("main", session.device, number=1, repeat=3, min_repeat_ms=20)

        def reference_ms() -> float:
            return float(np.median(loop(*args).results)) * 1e3

        built = []
        for i, m in enumerate(models):
            raise_if_interrupted()
            say(f"compile group {i + 1}/{len(models)}")
            folder = Path(tmp) / f"g{i}"
            folder.mkdir()
            c = backend.compile(m, spec, folder, TuningOptions())
            built.append((folder / c.kernel_map["library"],
                          [k for k in c.kernel_map["calls"]
                           if any(n in ("group", "group_act") for n in k.get("onnx_nodes", []))]))
        ratios: list[list[float]] = [[] for _ in built]
        for r in range(rounds):
            say(f"time {len(built)} groups against the model (round {r + 1}/{rounds})")
            before = reference_ms()
            for start in range(0, len(built), GROUPS_PER_REFERENCE):
                raise_if_interrupted()
                block = range(start, min(start + GROUPS_PER_REFERENCE, len(built)))
                times = [sum(session.time_functions(*built[i], 3)) for i in block]
                after = reference_ms()
                for i, t in zip(block, times):
                    ratios[i].append(t / ((before + after) / 2))
                before = after
    return ratios


def _time_models(models: dict[str, onnx.ModelProto], spec, threads: int, say: Callable[[str], None],
                 rounds: int = 9, min_repeat_ms: int = 100) -> dict[str, dict[str, float]]:
    """Compile each model for ``spec`` and time it on this machine.

    The latency is that of back-to-back inferences (as TFLite's ``benchmark_model`` runs them): in each of
    ``rounds`` rounds every model runs in a loop of at least ``min_repeat_ms`` (TVM's ``time_evaluator``),
    the models alternating round by round (so that the machine's drift, up to 1.5x over tens of seconds on
    a shared machine, affects both alike); the fastest round is kept, the median reported too. Single calls
    after a pause vary by +-20% on a small model (thread wake-ups).

    Returns:
        ``{key: {"ms": fastest round's ms per inference, "ms_median": the median round's, "kernels_ms": the
        sum of its kernels' times (each the median of 3 loops of >= 20 ms; the fastest of the first
        :data:`TABLE_ROUNDS` rounds), "kernels": kernel calls, "overhead_ms": the
        dispatch overhead per kernel call, (ms - kernels_ms) / kernels, at least 0}}``.
    """
    from edgec.devices.local import LocalDevice

    backend = get_backend(spec)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="edgec-compress-") as tmp, LocalDevice(threads).open() as session:
        loops, kernels = {}, {}
        for i, (key, m) in enumerate(models.items()):
            raise_if_interrupted()
            say(f"compile {key}")
            folder = Path(tmp) / f"m{i}"
            folder.mkdir()
            compiled = backend.compile(m, spec, folder, TuningOptions())
            calls = compiled.kernel_map["calls"]
            kernels[key] = (folder / compiled.kernel_map["library"], calls)
            dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
            vm = session.load_model(compiled.library)
            args = session.tensors([rng.standard_normal(dims).astype(np.float32)])
            vm["main"](*args)
            loops[key] = (vm.time_evaluator("main", session.device, number=1, repeat=1, min_repeat_ms=min_repeat_ms),
                          args)
        samples: dict[str, list[float]] = {k: [] for k in loops}
        kernel_ms = {k: float("inf") for k in loops}
        for r in range(rounds):
            raise_if_interrupted()
            say(f"time {', '.join(loops)} (round {r + 1}/{rounds})")
            for key, (f, args) in loops.items():
                samples[key].append(float(f(*args).results[0]) * 1e3)
                if r < TABLE_ROUNDS:  # the kernels as the table times them, in the same rounds
                    kernel_ms[key] = min(kernel_ms[key], sum(session.time_functions(*kernels[key], 3)))
    out = {}
    for k, v in samples.items():
        ms, n = float(np.min(v)), len(kernels[k][1])
        out[k] = {"ms": ms, "ms_median": float(np.median(v)), "kernels_ms": kernel_ms[k], "kernels": n,
                  "overhead_ms": max(ms - kernel_ms[k], 0.0) / max(n, 1)}
    return out


def latency_table(model: onnx.ModelProto, chains: list[Chain], spec, threads: int, max_kernel: int,
                  say: Callable[[str], None], use_cache: bool = True) -> dict[tuple[int, int, int], dict[str, Any]]:
    """``(chain, k, l) -> {"ratio", "macs", "kernel"}`` for every group within ``max_kernel``
    (``ratio``: its kernel's time over ``model``'s end-to-end time, see :func:`_group_ratios`; ``macs``:
    multiply-accumulates of the merged convolution; ``kernel``: its ``[kh, kw]``). A merge of several layers
    also has ``gain`` and ``spread`` (:func:`merge_win`): one that beats its layers by no more than the
    spread of the rounds is credited no speed (its ``ratio`` is the layers', ``within_spread`` True), so a
    win measured at one loaded moment does not buy a removal. Cached per target, model (its structure, not
    its weight values) and thread count, each group's rounds kept."""
    from edgec.cache import cache_dir

    ir_model = ir.serde.deserialize_model(model)
    shapes = static_shapes(model)
    conv_inputs = {(n.name or n.output[0]): n.input[0] for n in model.graph.node if n.op_type == "Conv"}
    cache = cache_dir("depth-tables", spec.name) if use_cache else None
    groups: dict[tuple[int, int, int], tuple[str, onnx.ModelProto, dict[str, Any]]] = {}
    for c, chain in enumerate(chains):
        specs = chain_specs(ir_model, chain)
        for k in range(len(chain)):
            for l in range(k + 1, len(chain) + 1):
                kernel = merged_kernel(specs[k:l])
                if max(kernel) > max_kernel:
                    continue
                in_shape = shapes[conv_inputs[chain.layers[k].conv]]
                m = _group_model(model, ir_model, chain, k, l, in_shape)
                info = {"kernel": list(kernel), "macs": conv_macs(group_spec(specs[k:l]), in_shape)}
                groups[(c, k, l)] = (_signature(m, spec.name, threads), m, info)
    reference = _signature(model, spec.name, threads)
    known: dict[str, list[float]] = {}
    for sig, _m, _i in groups.values():
        f = cache / f"{reference}-{sig}.json" if cache else None
        if f is not None and f.is_file():
            rounds = json.loads(f.read_text()).get("rounds")
            if rounds:  # a record from before the rounds were kept is measured again
                known[sig] = rounds
    todo = {sig: m for sig, m, _i in groups.values() if sig not in known}
    if todo:
        say(f"latency table: {len(todo)} new group shapes")
        for sig, rounds in zip(todo, _group_ratios(list(todo.values()), model, spec, threads, say)):
            known[sig] = rounds
            if cache is not None:
                (cache / f"{reference}-{sig}.json").write_text(json.dumps({"ratio": float(np.median(rounds)),
                                                                           "rounds": rounds}))
    table = {g: {"ratio": float(np.median(known[sig])), **info} for g, (sig, _m, info) in groups.items()}
    for (c, k, l), entry in table.items():
        if l - k > 1 and all((c, i, i + 1) in groups for i in range(k, l)):
            merged = known[groups[(c, k, l)][0]]
            layers = [sum(r) for r in zip(*(known[groups[(c, i, i + 1)][0]] for i in range(k, l)))]
            entry.update(merge_win(merged, layers))
    return table


def merge_win(merged: list[float], layers: list[float]) -> dict[str, Any]:
    """Whether a merged group beats its layers: by more than the spread of the rounds (the interquartile
    range of the per-round gains, ``layers[r] - merged[r]``), as ``edgec merge-table`` judges a pair.

    Returns:
        ``{"gain", "spread"}`` (median gain and its spread, in ratios to the model's time) and, when the gain
        is within the spread, ``"ratio"``: the layers' own median (the merge is credited no speed) and
        ``"within_spread": True``.
    """
    gains = np.asarray(layers, np.float64) - np.asarray(merged, np.float64)
    q1, q3 = np.percentile(gains, [25, 75])
    out: dict[str, Any] = {"gain": float(np.median(gains)), "spread": float(q3 - q1)}
    if not out["gain"] > out["spread"]:
        out.update(ratio=max(float(np.median(merged)), float(np.median(layers))), within_spread=True)
    return out


@dataclass(frozen=True)
class _Plan:
    plans: list[ChainPlan]
    chains_ms: float
    score: float
    removed: dict[int, list[int]]
    groups: dict[int, list[tuple[int, int]]]

    @property
    def n_removed(self) -> int:
        return sum(len(v) for v in self.removed.values())

    @property
    def n_merged(self) -> int:
        return sum(1 for v in self.groups.values() for k, l in v if l - k > 1)


def _plan(chains: list[Chain], table, imp, budget: float) -> _Plan | None:
    """The two-stage DP's plan under ``budget`` (ms for the chains), or None if none meets it."""
    found = plan_network([len(c) for c in chains], {g: v["ms"] for g, v in table.items()},
                         lambda c, i, j: imp.get((c, i, j), 0.0), budget)
    if found is None:
        return None
    plans, chains_ms, score = found
    removed = {c: [x for x in p.removed_positions if chains[c].removable(x)] for c, p in enumerate(plans)}
    return _Plan(plans, chains_ms, score, removed, {c: list(p.groups) for c, p in enumerate(plans)})


def depth_compress(opts: BuildOptions, data: str | Path, copts: CompressOptions,
                   progress: Callable[[str], None] | None = None, *,
                   out: Path | None = None) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Compress ``opts.model`` for ``opts.target`` (this machine) and fine-tune it on ``data``.

    Args:
        data: An ImageFolder tree (``train/`` and ``val/`` sub-folders, or one folder: then every fifth
            image is held out for the accuracy).

    Returns:
        ``(compressed ONNX model, report)``; the report's fields are those
        :func:`edgec.profiling.depth_report.render_markdown` shows. With ``out``, both are also written
        there (:func:`write_result`; the model as ``out/compressed.onnx``).

    Raises:
        UsageError: ``out`` cannot be written or holds something else than an earlier result, a target
            that is not this machine, a model with no chain to compress, a budget no plan
            meets, data that does not fit the model.
    """
    from edgec.frontend.data import accuracy, check_data_folder, read_task_data

    say = progress or (lambda _m: None)
    check_data_folder(data)
    if out is not None:
        check_writable_folder(Path(out).resolve().parent, "--out")  # before minutes of work, not after
        check_replaceable(Path(out), fix="choose another --out")
    spec = check_request(opts)
    if spec.kind != "cpu" or spec.verify != "local":
        raise UsageError(f"depth compression measures its latency table on this machine; {spec.name} runs elsewhere",
                         "use --target host (tables over rpc:// are not implemented yet)")
    start = time.perf_counter()
    low = lower(opts, Steps(say))
    model = low.final
    ir_model = ir.serde.deserialize_model(model)
    chains = find_chains(ir_model)
    if not chains:
        raise UsageError(f"{opts.model} has no chain of two or more convolutions to compress",
                         "depth compression applies to CNNs (Conv -> activation -> Conv ...)")
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if len(model.graph.output) != 1 or len(dims) != 2:
        raise UsageError(f"{opts.model} is not a classifier (one [N, classes] output); depth compression "
                         "fine-tunes on labelled images", "give an image classifier")
    say("read --data")
    train, val = read_task_data(Path(data), model, low.source.preprocessing)
    threads = spec.cores
    table = latency_table(model, chains, spec, threads, copts.max_kernel, say)
    say("time the model")
    base = _time_models({"model": model}, spec, threads, say)["model"]
    model_ms = base["ms"]
    for entry in table.values():  # each group is one kernel call: its run time plus the dispatch overhead
        entry["kernel_ms"] = entry["ratio"] * model_ms
        entry["ms"] = entry["kernel_ms"] + base["overhead_ms"]
    layers_ms = sum(table[(c, k, k + 1)]["ms"] for c, ch in enumerate(chains) for k in range(len(ch)))
    rest_ms = model_ms - layers_ms
    budget = (model_ms / copts.speedup if copts.speedup else copts.budget_ms) - rest_ms
    best_ms = rest_ms + min_plan_ms(chains, table)

    def unreachable() -> UsageError:
        return UsageError(f"no plan reaches the budget: the fastest predicts {best_ms:.3f} ms against "
                          f"{model_ms:.3f} ms measured ({model_ms / best_ms:.2f}x)",
                          f"ask for at most --speedup {model_ms / best_ms:.2f}")

    if best_ms - rest_ms > budget:  # before the importance step: an unreachable budget fails early
        raise unreachable()
    say("importance of each segment")
    calib = train.x[np.linspace(0, len(train) - 1, min(copts.calibration, len(train))).astype(int)]
    imp = segment_importance(model, chains, calib, (train.x, train.labels), copts.importance_steps, copts.lr,
                             copts.seed, lambda n, total: say(f"importance {n}/{total}"))
    target_ms = model_ms / copts.speedup if copts.speedup else copts.budget_ms
    rounds: list[dict[str, Any]] = []
    plan = _plan(chains, table, imp, budget)
    if plan is None:
        raise unreachable()
    for _ in range(copts.plan_rounds):
        # the plan's latency measured: the merged model with the original weights (speed does not depend on
        # them), timed beside the model and scaled to the model's time at planning
        say(f"time plan {len(rounds) + 1}")
        candidate = merge_groups(linearise(model, chains, plan.removed, plan.groups), chains, plan.groups)
        t = _time_models({"model": model, "compressed": candidate}, spec, threads, say)
        predicted = rest_ms + plan.chains_ms
        measured = t["compressed"]["ms"] * model_ms / t["model"]["ms"]
        rounds.append({"budget_chains": budget, "predicted": predicted, "measured": measured,
                       "removed": plan.n_removed, "merged": plan.n_merged})
        corrected = target_ms * predicted / measured - rest_ms  # the DP's budget once its bias is taken out
        again = _plan(chains, table, imp, corrected)
        if again is None:  # no plan meets the corrected budget: keep the measured one and its budget
            break
        budget = corrected
        if again.groups == plan.groups and again.removed == plan.removed:
            break
        plan = again
    plans, chains_ms, score, removed, groups = plan.plans, plan.chains_ms, plan.score, plan.removed, plan.groups
    padded = linearise(model, chains, removed, groups, keep_activations=True)
    say("fine-tune by distillation")
    acts = {chains[c].layers[p - 1].act for c, ps in removed.items() for p in ps}
    tuned = finetune(padded, model, train.x, train.labels, copts, acts,
                     lambda e, n, loss: say(f"fine-tune epoch {e}/{n} loss {loss:.4f}"))
    tuned = linearise(tuned, chains, removed, {})
    merged = merge_groups(tuned, chains, groups)
    exact = check_merge(tuned, merged, val.x[:4])
    say("time the compressed model")
    timed = _time_models({"model": model, "compressed": merged}, spec, threads, say)
    scores = {k: ort_scores(m, val.x) for k, m in (("model", model), ("compressed", merged))}
    # the prediction, from the model's time in the same timing run: T_model - sum(layers) + sum(plan), the
    # table (ratios to the model's time, and the overhead) scaled to that time
    predicted = timed["model"]["ms"] * (1.0 + (chains_ms - layers_ms) / model_ms)
    report = {
        "kind": "depth_compress", "model": str(opts.model), "target": spec.name, "threads": threads,
        "function_change": "depth_compress: activations removed, convolutions merged, weights fine-tuned",
        "source": "Kim et al., ICML 2023 (two-stage DP); importance = -KL "
                  + (f"after {copts.importance_steps} fine-tuning steps per segment" if copts.importance_steps
                     else "without fine-tuning"),
        "options": asdict(copts),
        "data": {"train": len(train), "held_out": len(val), "classes": len(train.classes)},
        "latency_ms": {"model_at_planning": model_ms, "rest": rest_ms, "budget_chains": budget,
                       "dispatch_overhead_per_kernel": base["overhead_ms"],
                       "predicted": predicted, "model": timed["model"]["ms"], "compressed": timed["compressed"]["ms"],
                       "speedup": timed["model"]["ms"] / timed["compressed"]["ms"],
                       "model_median": timed["model"]["ms_median"], "compressed_median": timed["compressed"]["ms_median"],
                       "speedup_median": timed["model"]["ms_median"] / timed["compressed"]["ms_median"],
                       "prediction_error": predicted / timed["compressed"]["ms"] - 1.0},
        "kernels": {"model": timed["model"]["kernels"], "compressed": timed["compressed"]["kernels"]},
        "accuracy": {"model": accuracy(scores["model"], val.labels),
                     "compressed": accuracy(scores["compressed"], val.labels),
                     "top1_agreement": float(np.mean(np.argmax(scores["model"], -1)
                                                     == np.argmax(scores["compressed"], -1)))},
        "merge_check": exact, "importance": score, "plan_rounds": rounds,
        "macs": {"model": graph_stats(model).macs, "compressed": graph_stats(merged).macs},
        "chains": [_chain_rows(c, chain, plans[c], table, imp) for c, chain in enumerate(chains)],
        "seconds": round(time.perf_counter() - start, 1),
        "preprocessing": low.source.preprocessing,
    }
    if out is not None:
        write_result(out, merged, report, report.get("preprocessing"))
    return merged, report


def min_plan_ms(chains: list[Chain], table: dict[tuple[int, int, int], dict[str, Any]]) -> float:
    """The chains' fastest total time by stage 1 alone (every activation removed where that helps)."""
    from edgec.passes.depth_dp import stage1

    total = 0.0
    for c, chain in enumerate(chains):
        best = stage1(len(chain), {(k, l): v["ms"] for (cc, k, l), v in table.items() if cc == c})
        total += best[(0, len(chain))].ms
    return total


def _chain_rows(c: int, chain: Chain, plan: ChainPlan, table, imp) -> dict[str, Any]:
    layers_ms = sum(table[(c, k, k + 1)]["ms"] for k in range(len(chain)))
    return {"layers": [x.conv for x in chain.layers], "residual": chain.residual,
            "removed_activations": [chain.layers[p - 1].act for p in plan.removed_positions
                                    if chain.removable(p)],
            "segments": [{"segment": list(s), "importance": imp.get((c, *s), 0.0)} for s in plan.segments],
            "groups": [{"group": [k, l], "merged": l - k > 1, "kernel": table[(c, k, l)]["kernel"],
                        "predicted_ms": table[(c, k, l)]["ms"], "macs": table[(c, k, l)]["macs"]}
                       for k, l in plan.groups],
            "before_ms": layers_ms, "after_ms": sum(table[(c, k, l)]["ms"] for k, l in plan.groups),
            "before_macs": sum(table[(c, k, k + 1)]["macs"] for k in range(len(chain))),
            "after_macs": sum(table[(c, k, l)]["macs"] for k, l in plan.groups)}


#: The compressed model's file name in the output folder.
COMPRESSED = "compressed.onnx"


def write_result(out: Path, model: onnx.ModelProto, report: dict[str, Any],
                 preprocessing: dict[str, Any] | None) -> Path:
    """Write ``out/``: ``compressed.onnx`` (recording the preprocessing), ``depth-compress.json``/``.md``/``.png``
    and a ``manifest.json``; staged in a temporary folder and renamed, so a failure leaves nothing.

    Returns:
        The compressed model's path.
    """
    from edgec.artifact import staging_dir, write_json, write_manifest
    from edgec.frontend.image import PREPROCESSING_KEY
    from edgec.profiling.depth_report import plot, render_markdown

    if preprocessing:
        onnx.helper.set_model_props(model, {PREPROCESSING_KEY: json.dumps(preprocessing)})
    files = [COMPRESSED, "depth-compress.json", "depth-compress.md", "depth-compress.png"]
    with staging_dir(Path(out), fix="choose another --out") as tmp:
        onnx.save(model, str(tmp / files[0]))
        write_json(tmp / files[1], report)
        (tmp / files[2]).write_text(render_markdown(report))
        plot(report, tmp / files[3])
        write_manifest(tmp, {"kind": "depth_compress", "model": report["model"], "target": report["target"]})
    return Path(out) / files[0]
