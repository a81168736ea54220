"""Depth compression on a labelled task trained here (scikit-learn's digits): after fine-tuning, the compressed
model loses at most 1 point of top-1 and its merges are exact. Speed is measured by
benchmarks/bench_depth_compress.py, not here."""

import pytest

from edgec.build import BuildOptions
from edgec.compress import CompressOptions, depth_compress

pytestmark = pytest.mark.slow

SPEEDUP = 1.25
EPOCHS = 20


def test_compressed_digits_model_keeps_its_accuracy(digits, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    merged, r = depth_compress(BuildOptions(model=str(digits.onnx_path), target="host", verify=False),
                               digits.onnx_path.parent, CompressOptions(speedup=SPEEDUP, epochs=EPOCHS))
    acc = r["accuracy"]
    removed = sum(len(c["removed_activations"]) for c in r["chains"])
    merged_groups = sum(g["merged"] for c in r["chains"] for g in c["groups"])
    assert removed >= 2 and merged_groups >= 1, "the plan compressed nothing"
    assert r["kernels"]["compressed"] < r["kernels"]["model"]
    assert acc["model"] - acc["compressed"] <= 0.01, acc
    assert r["merge_check"]["max_abs_error"] <= r["merge_check"]["tolerance"]
    assert r["data"]["held_out"] == 360
