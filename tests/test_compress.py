"""edgec depth-compress end to end on a small CNN and generated images: the planned activations are removed,
the groups merged exactly, the weights fine-tuned, the report and files written; bad requests get one line."""

import json

import numpy as np
import onnx
import pytest
from PIL import Image

from edgec.flows.build import BuildOptions
from edgec.flows.depth_compress import CompressOptions, depth_compress
from edgec.errors import UsageError
from edgec.frontend.reference import run_ort
from passes.test_depth_chains import mbv2_like


@pytest.fixture
def task(tmp_path):
    """The MobileNetV2-like model (5 classes, 20x20) and an ImageFolder of 5 classes x 6 coloured images."""
    path = tmp_path / "m.onnx"
    onnx.save(mbv2_like(), str(path))
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(5):
            (tmp_path / "data" / split / f"c{c}").mkdir(parents=True)
            for i in range(6):
                img = (rng.random((20, 20, 3)) * 60 + c * 40).astype(np.uint8)
                Image.fromarray(img).save(tmp_path / "data" / split / f"c{c}" / f"{i}.png")
    return path, tmp_path / "data"


def _table_favouring_the_block(monkeypatch):
    """A latency table in which merging the residual block (chain 1) whole is the only saving, and a large one
    (10 model times per layer, 1 for the merged block): any speed-up above 1 then asks for exactly that merge."""
    import edgec.flows.depth_compress as compress

    real = compress.latency_table

    def table(model, chains, spec, threads, max_kernel, say, use_cache=True):
        t = real(model, chains, spec, threads, max_kernel, say, use_cache=False)
        for (c, k, l), v in t.items():
            v["ratio"] = 1.0 if (c, k, l) == (1, 0, 3) else 10.0 * (l - k) + (l - k > 1)  # other merges: slower
        return t

    monkeypatch.setattr(compress, "latency_table", table)


@pytest.mark.slow  # latency table, fine-tuning, timing: about a minute
def test_depth_compress_removes_merges_and_fine_tunes(task, monkeypatch, tmp_path):
    model, data = task
    _table_favouring_the_block(monkeypatch)
    opts = BuildOptions(model=str(model), target="host", verify=False)
    merged, r = depth_compress(opts, data, CompressOptions(speedup=1.01, epochs=2, plan_rounds=0))
    chains = r["chains"]
    assert sorted(chains[1]["removed_activations"]) == ["ea", "fa"]
    assert chains[1]["groups"] == [{"group": [0, 3], "merged": True, "kernel": [3, 3], "predicted_ms": pytest.approx(
        r["latency_ms"]["model_at_planning"] + r["latency_ms"]["dispatch_overhead_per_kernel"]), "macs": chains[1]["after_macs"]}]
    assert chains[0]["removed_activations"] == []  # no saving there: the activations stay
    ops = [n.op_type for n in merged.graph.node]
    assert ops.count("Clip") == 0 and ops.count("Relu") == 3 and ops.count("Add") == 0  # residual -> centre tap
    assert r["merge_check"]["max_abs_error"] <= r["merge_check"]["tolerance"]
    x = {"x": np.random.default_rng(1).standard_normal((1, 3, 20, 20)).astype(np.float32)}
    assert run_ort(merged, x)[0].shape == (1, 5)
    assert 0 <= r["accuracy"]["compressed"] <= 1 and r["data"] == {"train": 30, "held_out": 30, "classes": 5}
    lat = r["latency_ms"]
    assert lat["model"] > 0 and lat["compressed"] > 0 and lat["speedup"] == pytest.approx(
        lat["model"] / lat["compressed"])
    assert r["kernels"]["compressed"] < r["kernels"]["model"]


@pytest.mark.slow  # latency table, fine-tuning, timing: over a minute
def test_cli_writes_the_model_report_and_plot(task, monkeypatch, run_cli, tmp_path):
    model, data = task
    _table_favouring_the_block(monkeypatch)
    out = tmp_path / "out"
    code, stdout, err = run_cli("depth-compress", str(model), "--data", str(data), "--speedup", "1.01",
                                "--epochs", "1", "--out", str(out))
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"compressed.onnx", "depth-compress.json", "depth-compress.md",
                                               "depth-compress.png", "manifest.json"}
    report = json.loads((out / "depth-compress.json").read_text())
    md = (out / "depth-compress.md").read_text()
    assert "Changes the function on purpose" in md and "measured speed-up" in md
    assert "2 activations removed, 1 groups merged" in " ".join(stdout.split())
    onnx.checker.check_model(str(out / "compressed.onnx"))
    assert report["options"]["epochs"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--speedup", "0.5"], "--speedup 0.5 must be at least 1"),
    (["--speedup", "1.2", "--budget-ms", "3"], "give one of --speedup and --budget-ms"),
    (["--target", "rpi4"], "measures its latency table on this machine"),
    (["--data", "/nonexistent/folder"], "is not a folder"),
])
def test_bad_requests_get_one_line(task, run_cli, tmp_path, args, message):
    model, data = task
    argv = ["depth-compress", str(model), "--out", str(tmp_path / "out")]
    argv += args if "--data" in args else ["--data", str(data), *args]
    code, _out, err = run_cli(*argv)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_budget_no_plan_meets_says_what_is_reachable(task, monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    model, data = task
    with pytest.raises(UsageError, match=r"no plan reaches the budget: the fastest predicts") as e:
        depth_compress(BuildOptions(model=str(model), target="host", verify=False), data,
                       CompressOptions(speedup=50.0, epochs=0))
    assert "ask for at most --speedup" in e.value.one_line()


def test_the_merge_check_measures_against_float64_and_refuses_an_inexact_merge():
    from onnx import numpy_helper

    from edgec.passes.depth_training import check_merge

    model = mbv2_like()
    x = np.random.default_rng(2).standard_normal((3, 3, 20, 20)).astype(np.float32)
    same = check_merge(model, model, x)
    assert same["reference"] == "linear model in float64"
    assert same["max_abs_error"] == same["linear_float32_error"] <= same["tolerance"]
    assert 0 < same["linear_float32_error"]  # float32 is not the float64 truth
    off = onnx.ModelProto()
    off.CopyFrom(model)
    w = next(t for t in off.graph.initializer if len(t.dims) == 4)
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.001), w.name))
    with pytest.raises(UsageError, match="changed the output"):
        check_merge(model, off, x)


def _seeded(model, seed):
    """``model`` with weights of its own seed (mbv2_like's depend on how many were made before), and the
    block's expand bias at -1, so that its ReLU6 clips and removing it moves the output."""
    from onnx import numpy_helper

    rng = np.random.default_rng(seed)
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        if t.name in ("lo", "hi"):
            continue
        new = np.full_like(a, -1.0) if t.name == "b3" else (0.5 * rng.standard_normal(a.shape)).astype(a.dtype)
        t.CopyFrom(numpy_helper.from_array(new, t.name))
    return model


@pytest.mark.slow  # distils every segment, twice: over a minute
def test_importance_after_a_short_fine_tune_recovers_what_the_bare_removal_loses():
    """``importance_steps``: each segment's network is distilled from the original for a few steps before its
    KL is measured (the paper's importance); the scores stay <= 0, are reproducible, and the fine-tuned
    segments are closer to the original than the bare removals."""
    import onnx_ir as ir

    from edgec.passes.depth_training import segment_importance
    from edgec.passes.depth_chains import find_chains

    model = _seeded(mbv2_like(), seed=5)
    chains = find_chains(ir.serde.deserialize_model(model))
    rng = np.random.default_rng(4)
    images = rng.standard_normal((64, 3, 20, 20)).astype(np.float32)
    labels = rng.integers(0, 5, 64).astype(np.int64)
    bare = segment_importance(model, chains, images[:32])
    tuned = segment_importance(model, chains, images[:32], (images, labels), steps=30, lr=3e-3)
    assert tuned.keys() == bare.keys() and len(bare) >= 3
    assert all(v <= 0 for v in tuned.values()) and all(v <= 0 for v in bare.values())
    assert sum(tuned.values()) > sum(bare.values())
    assert tuned == segment_importance(model, chains, images[:32], (images, labels), steps=30, lr=3e-3)


@pytest.mark.slow  # latency table and two planned models timed: about a minute
def test_a_plan_measured_faster_than_predicted_is_made_again_with_fewer_removals(task, monkeypatch, tmp_path):
    """``plan_rounds``: the planned model is timed, and the DP runs again under the budget corrected by the
    measured/predicted ratio. Here every compressed model "measures" at a third of its real time: the first
    plan (the block merged) beats the budget by far, so the second keeps every activation."""
    import edgec.flows.depth_compress as compress

    monkeypatch.setenv("EDGEC_CACHE_DIR", str(tmp_path / "cache"))
    model, data = task
    real_table = compress.latency_table

    def table(model, chains, spec, threads, max_kernel, say, use_cache=True):
        """Layers 5% of the model's time each; the block merged whole 2% (saves 13%); other merges slower."""
        t = real_table(model, chains, spec, threads, max_kernel, say, use_cache=False)
        for (c, k, l), v in t.items():
            v["ratio"] = 0.02 if (c, k, l) == (1, 0, 3) else 0.05 * (l - k) + 0.01 * (l - k > 1)
        return t

    monkeypatch.setattr(compress, "latency_table", table)
    real = compress._time_models

    def fast(models, *a, **k):
        out = real(models, *a, **k)
        if "compressed" in out:
            out["compressed"] = {**out["compressed"], "ms": out["compressed"]["ms"] / 3}
        return out

    monkeypatch.setattr(compress, "_time_models", fast)
    opts = BuildOptions(model=str(model), target="host", verify=False)
    _, r = depth_compress(opts, data, CompressOptions(speedup=1.05, epochs=0, plan_rounds=1, importance_steps=0))
    first = r["plan_rounds"][0]
    assert len(r["plan_rounds"]) == 1 and first["removed"] >= 2 and first["merged"] >= 1
    assert first["measured"] < first["predicted"]
    assert all(c["removed_activations"] == [] for c in r["chains"])  # the corrected budget needs no removal


def test_a_missed_target_is_said_with_the_load():
    from edgec.cli.depth_compress import missed_target

    lat = {"speedup": 0.93, "compressed": 0.54}
    text = missed_target(lat, 1.25, None)
    assert text.startswith("the measured speed-up 0.93x misses the --speedup 1.25 target (load average ")
    assert missed_target({"speedup": 1.23, "compressed": 0.1}, 1.25, None) is None  # within 3%
    assert "over the --budget-ms 0.5" in missed_target({"speedup": 1.1, "compressed": 0.6}, None, 0.5)
    assert missed_target({"speedup": 1.1, "compressed": 0.5}, None, 0.5) is None
