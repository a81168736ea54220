"""Latency tables for depth merging: each mergeable Conv pair timed as two convs and as one merged conv.

``depth_merge(mode=latency)`` (:mod:`edgec.passes.merge`) applies a merge only where the table says
the merged convolution is faster: merges usually *raise* MACs (a pointwise conv merged into a
depthwise one becomes a dense ``K x K`` conv), so only a measurement on the target can decide
(Kim et al., ICML 2023, section 4.1: "the latency table"). For every mergeable pair of the model
(after the frontend and the default passes) this module cuts the pair out as a model of its own,
merges it, compiles both with the target's backend (tuning records and default schedules, as a build
does), and times them interleaved on the device. Tables are cached per target, model and pair in the
edgec cache folder, like tuning records.

Only local timing (``--target host``) is implemented; an RPC device is the next step.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgec.artifact import check_writable_folder
from edgec.backends import TuningOptions, get_backend
from edgec.flows.lower import lower
from edgec.flows.request import BuildOptions, check_request
from edgec.flows.steps import Steps
from edgec.errors import UsageError, raise_if_interrupted
from edgec.frontend.analysis import graph_stats

#: Interleaved timed runs per pair (after warm-up).
REPEATS = 40
#: Calls per interleaved block (the first untimed): 10 blocks of 4 timed calls per side.
BLOCK = 5


def _pair_models(model: onnx.ModelProto, first_out: str, second_out: str, conv_input: str):
    """The pair as a model of its own, and the same merged by ``depth_merge``."""
    from edgec.passes import run_pipeline

    sub = onnx.utils.Extractor(model).extract_model([conv_input], [second_out])
    merged = run_pipeline(sub, "depth_merge(max_kernel=99)").model
    return sub, merged


def _time(libraries: dict[str, Path], inputs: list[np.ndarray], threads: int) -> dict[str, Any]:
    """p50 of each library over interleaved blocks, and the spread of the blocks' own p50s.

    Returns:
        ``{name: p50 ms, ..., "spread_ms": the larger interquartile range of the per-block p50s}``.
    """
    from edgec.devices.local import LocalDevice
    from edgec.profiling.timing import LatencyStats, interleaved

    device = LocalDevice(threads)
    runs = {k: device.prepare(lib, inputs) for k, lib in libraries.items()}
    # both sides are TVM modules sharing one thread pool: its spinning workers are the next block's own
    samples = interleaved(runs, repeats=REPEATS, warmup=5, block=BLOCK, quiet_timeout_s=0)
    out: dict[str, Any] = {k: LatencyStats.from_samples(v).latency_ms_p50 for k, v in samples.items()}
    out["spread_ms"] = max(block_spread(v, BLOCK - 1) for v in samples.values())
    return out


def block_spread(samples: list[float], per_block: int) -> float:
    """The interquartile range (ms) of the p50s of consecutive blocks of ``per_block`` samples: how much
    the same measurement moves between moments of one interleaved run."""
    blocks = [float(np.median(samples[i:i + per_block])) for i in range(0, len(samples), per_block)]
    q1, q3 = np.percentile(blocks, [25, 75])
    return float(q3 - q1)


def faster(entry: dict[str, Any]) -> bool:
    """A merge is faster only when it wins by more than the measurement's spread (a table without a
    spread, written before it was recorded, compares the p50s)."""
    return entry["separate_ms"] - entry["merged_ms"] > entry.get("spread_ms", 0.0)


def merge_table(opts: BuildOptions, *, max_kernel: int = 7, progress: Callable[[str], None] | None = None,
                use_cache: bool = True, out: Path | None = None) -> dict[str, Any]:
    """Measure every mergeable pair of ``opts.model`` on ``opts.target``.

    Returns:
        ``{"target", "model", "model_sha256", "pairs": [{"first", "second", "kernel", "separate_ms",
        "merged_ms", "spread_ms", "separate_macs", "merged_macs", "faster"}], "refused": [{"first", "second",
        "reason"}]}`` (ms: p50 of interleaved runs on this machine; ``spread_ms``: :func:`block_spread`, the
        larger of both sides; ``faster``: the merge wins by more than the spread). With ``out``, also
        written there as JSON.

    Raises:
        UsageError: a target that is not the local host, an ``out`` folder edgec cannot write.
    """
    from edgec.cache import cache_dir
    from edgec.passes.manager import to_ir
    from edgec.passes.merge import merge_candidates

    if out is not None:
        if Path(out).is_dir():
            raise UsageError(f"--out {out} is a folder", "give the table's file name, e.g. --out table.json")
        check_writable_folder(Path(out).resolve().parent, "--out", given=Path(out))  # before minutes of timing, not after
    spec = check_request(opts)
    if spec.kind != "cpu" or spec.verify != "local":
        raise UsageError(f"latency tables are measured on this machine only; {spec.name} runs elsewhere",
                         "use --target host (timing over rpc:// is not implemented yet)")
    say = progress or (lambda _m: None)
    low = lower(opts, Steps(say))
    model = low.final
    sha = hashlib.sha256(model.SerializeToString()).hexdigest()
    ir_model = to_ir(model)
    nodes = {(n.name or n.outputs[0].name): n for n in ir_model.graph}
    backend = get_backend(spec)
    cache = cache_dir("merge-tables", spec.name) if use_cache else None
    table = {"target": spec.name, "model": str(opts.model), "model_sha256": sha, "pairs": [], "refused": []}
    rng = np.random.default_rng(0)
    for cand in merge_candidates(ir_model, max_kernel):
        if cand.reason is not None:
            table["refused"].append(cand.to_dict())
            continue
        raise_if_interrupted()
        first, second = nodes[cand.first], nodes[cand.second]
        sub, merged = _pair_models(model, first.outputs[0].name, second.outputs[0].name, first.inputs[0].name)
        key = hashlib.sha256(sub.SerializeToString()).hexdigest()[:24]
        cached = cache / f"{key}.json" if cache else None
        entry = json.loads(cached.read_text()) if cached is not None and cached.is_file() else {}
        if "spread_ms" not in entry:  # not measured yet, or measured before the spread was recorded
            say(f"time {cand.first} + {cand.second}")
            shape = [d.dim_value for d in sub.graph.input[0].type.tensor_type.shape.dim]
            inputs = [rng.standard_normal(shape).astype(np.float32)]
            with tempfile.TemporaryDirectory(prefix="edgec-merge-") as tmp:
                libs = {}
                for label, m in (("separate", sub), ("merged", merged)):
                    folder = Path(tmp) / label
                    folder.mkdir()
                    libs[label] = backend.compile(m, spec, folder, TuningOptions()).library
                ms = _time(libs, inputs, spec.cores)
            entry = {"separate_ms": ms["separate"], "merged_ms": ms["merged"], "spread_ms": ms["spread_ms"],
                     "separate_macs": graph_stats(sub).macs, "merged_macs": graph_stats(merged).macs}
            if cached is not None:
                cached.write_text(json.dumps(entry))
        table["pairs"].append({"first": cand.first, "second": cand.second, "kernel": cand.kernel, **entry,
                               "faster": faster(entry)})
    if out is not None:
        write_table(table, out)
    return table


def write_table(table: dict[str, Any], path: Path) -> None:
    """Write ``table`` as JSON (through a temporary file, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(table, indent=1) + "\n")
    tmp.replace(path)
