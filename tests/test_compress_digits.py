"""Depth compression on a labelled task trained here (scikit-learn's digits): after fine-tuning, the compressed
model loses at most 1 point of top-1 and its merges are exact.

The plan comes from a latency table recorded on one machine (``data/digits_latency_table.json``: the
median of three measured tables and model timings), not from this run's timings: on a 2-core machine one
group's kernel time varies up to 2x between two tables (kernels of a few microseconds), and with it the
plan, and with the plan the accuracy (so no re-planning from measured times: ``plan_rounds=0``). The
importance scores, fine-tuning, merging and accuracy are this run's. Importance here is the bare removal's
(``importance_steps=0``): the 30-step distilled importance, the default, is tested in ``test_compress.py``
and costs minutes of CPU on this model. Measured
speed-ups and the timing of the planning step are benchmarks (``benchmarks/bench_depth_compress.py``).
"""

import json
from pathlib import Path

import pytest

import edgec.compress as compress
from edgec.build import BuildOptions
from edgec.compress import CompressOptions, depth_compress

pytestmark = pytest.mark.slow

SPEEDUP = 1.25
EPOCHS = 20
RECORDED = Path(__file__).parent / "data" / "digits_latency_table.json"


@pytest.fixture
def recorded_timings(monkeypatch):
    """``latency_table`` and the planning's model timing from the recorded file; the final timing is real."""
    rec = json.loads(RECORDED.read_text())
    real_time_models = compress._time_models

    def table(model, chains, spec, threads, max_kernel, say, use_cache=True):
        assert [len(c) for c in chains] == rec["chains"], "the digits model's chains changed: record the table again"
        return {tuple(int(v) for v in k.split(",")): dict(v) for k, v in rec["groups"].items()}

    def time_models(models, spec, threads, say, **kw):
        if list(models) == ["model"]:
            return {"model": dict(rec["model"])}
        return real_time_models(models, spec, threads, say, **kw)

    monkeypatch.setattr(compress, "latency_table", table)
    monkeypatch.setattr(compress, "_time_models", time_models)
    return rec


def test_compressed_digits_model_keeps_its_accuracy(digits, recorded_timings, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    merged, r = depth_compress(BuildOptions(model=str(digits.onnx_path), target="host", verify=False),
                               digits.onnx_path.parent, CompressOptions(speedup=SPEEDUP, epochs=EPOCHS, plan_rounds=0,
                                                                          importance_steps=0))
    acc = r["accuracy"]
    removed = sum(len(c["removed_activations"]) for c in r["chains"])
    merged_groups = sum(g["merged"] for c in r["chains"] for g in c["groups"])
    assert removed >= 2 and merged_groups >= 1, "the plan compressed nothing"
    assert r["kernels"]["compressed"] < r["kernels"]["model"]
    # the plan meets the budget on the recorded table
    assert r["latency_ms"]["model_at_planning"] == recorded_timings["model"]["ms"]
    assert sum(c["after_ms"] for c in r["chains"]) <= r["latency_ms"]["budget_chains"] + 1e-9
    assert acc["model"] - acc["compressed"] <= 0.01, acc
    assert r["merge_check"]["max_abs_error"] <= r["merge_check"]["tolerance"]
    assert r["data"]["held_out"] == 360
