"""--at auto: the Neurosurgeon latency model over every cut, the ends included, and the CLI around it."""

import json

import numpy as np
import pytest
from onnx import helper, numpy_helper

from edgec.split.choose import Link, rank_cuts


def _table():
    return {"macs": 1000, "input": {"name": "x", "bytes_uint8": 3000, "jpeg_q90_bytes": 2000},
            "cuts": [{"tensor": "a", "bytes_fp32": 4000, "bytes_int8": 1000, "head_macs": 100, "tail_macs": 900},
                     {"tensor": "b", "bytes_fp32": 40, "bytes_int8": 10, "head_macs": 600, "tail_macs": 400}]}


def test_each_candidate_is_head_plus_transfer_plus_tail():
    rows = rank_cuts(_table(), Link(bandwidth_mbps=1.0, rtt_ms=2.0), head_total_ms=10.0, tail_total_ms=1.0,
                     bytes_key="bytes_fp32", output_bytes=400)
    by = {r["cut"]: r for r in rows}
    assert by["b"]["head_ms"] == pytest.approx(6.0) and by["b"]["tail_ms"] == pytest.approx(0.4)
    assert by["b"]["transfer_ms"] == pytest.approx(8 * 40 / 1e6 * 1e3 + 2.0)
    assert by["x"]["kind"] == "server only" and by["x"]["transfer_ms"] == pytest.approx(8 * 2000 / 1e3 + 2.0)
    assert by["(outputs)"]["kind"] == "device only" and by["(outputs)"]["head_ms"] == 10.0
    assert [r["total_ms"] for r in rows] == sorted(r["total_ms"] for r in rows)
    assert rows[0]["cut"] == "b"  # a tiny cut beats the JPEG and the outputs on a slow link
    fast = rank_cuts(_table(), Link(1000.0), 10.0, 1.0)
    assert fast[0]["kind"] == "server only"  # a fast link and a fast server: send the image
    with pytest.raises(ValueError):
        Link(0.0)
    with pytest.raises(ValueError):
        rank_cuts(_table(), Link(1.0), 0.0, 1.0)


def _bottleneck_model(path, hidden=512):
    """conv -> global pool (a 16-channel cut) -> [Gemm to ``hidden``, ReLU ->] Gemm to 1000 classes: the cut is
    far smaller than the logits; with ``hidden`` the tail holds more than half the MACs."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((1000, hidden or 16)).astype(np.float32), "fw")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["h" if hidden else "f", "fw"], ["y"], transB=1)]
    if hidden:
        inits.append(numpy_helper.from_array(rng.standard_normal((hidden, 16)).astype(np.float32), "hw"))
        nodes[4:4] = [helper.make_node("Gemm", ["f", "hw"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["h"])]
    graph = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", 1, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", 1, [1, 1000])], inits)
    import onnx

    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_auto_builds_the_fastest_cut_and_records_the_ranking(tmp_path, run_cli):
    model = _bottleneck_model(tmp_path / "b.onnx")
    code, out, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "0.1", "--head-ms", "20",
                             "--tail-ms", "1", "--out", str(tmp_path / "o"), "--name", "s")
    assert code == 0, err
    art = tmp_path / "o" / "s"
    choice = json.loads((art / "split-choice.json").read_text())
    assert choice["best"]["kind"] == "cut" and choice["best"]["bytes"] <= 64
    assert (art / "split-choice.png").stat().st_size > 0
    manifest = json.loads((art / "manifest.json").read_text())
    assert manifest["connections"][0]["from"]["tensor"] == choice["best"]["cut"]
    assert {"split-choice.json", "split-choice.png"} <= set(manifest["files"])  # hashed with the rest
    assert choice["device_only"]["bytes"] == 5 * (4 + 4) and "top-5" in choice["device_only"]["sends"]


def test_device_only_sends_the_top_k_result_not_the_logits(tmp_path, run_cli):
    """A device that answers locally sends 5 x (int32 index + float32 score), not 4 kB of logits: a cut after
    global pooling no longer wins just by being smaller than the logits."""
    import onnx

    from edgec.flows.request import BuildOptions
    from edgec.flows.split import choose_cut
    from edgec.split.choose import device_only_result

    model = _bottleneck_model(tmp_path / "b.onnx", hidden=0)  # the tail is one small Gemm
    result = device_only_result(onnx.load(str(model)))
    assert result["bytes"] == 40 and "5 x (int32 class index + float32 score)" in result["sends"]
    assert device_only_result(_chain_model(tmp_path / "c.onnx"))["bytes"] == 4 * 4  # not a classifier: its outputs
    choice = choose_cut(BuildOptions(model=str(model)), "host", "host", "fp32", [Link(0.1)],
                        {"head": (5.0, None), "tail": (1.0, None)})
    by = {r["kind"]: r for r in choice["ranking"] if r["kind"] != "cut"}
    pooled = next(r for r in choice["ranking"] if r["cut"] == "p")
    assert by["device only"]["bytes"] == 40 and choice["device_only"]["bytes"] == 40
    assert choice["best"]["kind"] == "device only"
    # charged for the 4000 bytes of logits, the device-only end would have lost to the pooled cut
    assert pooled["total_ms"] < 5.0 + Link(0.1).transfer_ms(4 * 1000)
    code, out, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "0.1", "--head-ms", "5",
                             "--tail-ms", "1", "--out", str(tmp_path / "o"))
    assert code == 0 and "no split is fastest on this link: run everything on the device" in out, err
    assert "sends the top-5 result" in " ".join(out.split())


def test_a_bandwidth_sweep_picks_a_cut_per_link(tmp_path, run_cli):
    from edgec.split.choose import sweep

    rows = sweep(_table(), [Link(1.0), Link(1000.0)], 10.0, 1.0)
    assert rows[0]["best"]["cut"] == "b" and rows[1]["best"]["kind"] == "server only"
    assert rows[0]["speedup_vs_best_end"] > 1.0 and rows[1]["speedup_vs_best_end"] == pytest.approx(1.0)
    assert rows[0]["device_only_ms"] == pytest.approx(10.0 + 8 * 0 / 1e3)
    model = _bottleneck_model(tmp_path / "b.onnx")
    code, out, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "0.1,1000", "--head-ms", "20",
                             "--tail-ms", "1", "--out", str(tmp_path / "o"), "--name", "s")
    assert code == 0 and "best cut per bandwidth" in out, err
    choice = json.loads((tmp_path / "o" / "s" / "split-choice.json").read_text())
    assert [r["bandwidth_mbps"] for r in choice["sweep"]] == [0.1, 1000.0]
    assert choice["sweep"][0]["best"]["kind"] == "cut" and choice["best"] == choice["sweep"][0]["best"]
    assert (tmp_path / "o" / "s" / "split-sweep.png").stat().st_size > 0
    code, _, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "1,fast", "--head-ms", "5")
    assert code == 2 and "comma-separated" in err


def test_auto_errors(tmp_path, run_cli):
    model = _bottleneck_model(tmp_path / "b.onnx")
    code, _, err = run_cli("split", str(model), "--at", "auto")
    assert code == 2 and "--bandwidth" in err
    code, _, err = run_cli("split", str(model), "--at", "c", "--bandwidth", "5")
    assert code == 2 and "go with --at auto" in err
    code, _, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "5", "--head-target", "rpi4")
    assert code == 2 and "--head-ms" in err and "edgec profile" in err
    code, out, err = run_cli("split", str(model), "--at", "auto", "--bandwidth", "10000", "--head-ms", "50",
                             "--tail-ms", "0.1", "--out", str(tmp_path / "o2"))
    assert code == 0 and "no split is fastest" in out and not (tmp_path / "o2").exists()


def _chain_model(path):
    """x -> conv a -> relu b -> conv c -> relu d -> pool -> y: cuts at a, b, c, d."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["a"], ["b"], name="relu1"),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c"], ["d"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["d"], ["y"], name="pool")]
    graph = helper.make_graph(nodes, "c", [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 4, 1, 1])], inits)
    import onnx

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


def _profile(rows, p50):
    return {"profile": {"latency": {"edgec": {"latency_ms_p50": p50}},
                        "kernels": [{"kernel": k, "time_ms": t, "onnx_nodes": n} for k, t, n in rows]}}


def test_per_cut_times_sum_the_kernels_before_each_cut(tmp_path):
    from edgec.errors import UsageError
    from edgec.split.choose import per_cut_ms

    model = _chain_model(tmp_path / "c.onnx")
    report = _profile([("t", 1.0, ["<layout NCHW<->NHWC>"]), ("k1", 2.0, ["conv1", "relu1"]),
                       ("k2", 4.0, ["conv2", "relu2"]), ("k3", 1.0, ["pool"])], p50=16.0)
    ms = per_cut_ms(model, ["a", "b", "c", "d"], report)
    # scale 16/8 = 2; the layout kernel goes with its neighbour k1; a fused kernel split by the cut counts by half
    assert ms["b"] == pytest.approx(2 * (1 + 2)) and ms["d"] == pytest.approx(2 * (1 + 2 + 4))
    assert ms["a"] == pytest.approx(2 * (0.5 + 1)) and ms["c"] == pytest.approx(2 * (3 + 2))
    rows = rank_cuts({"macs": 1, "input": {"name": "x", "bytes_uint8": 192},
                      "cuts": [{"tensor": t, "bytes_fp32": 256, "head_macs": 0, "tail_macs": 1} for t in "bd"]},
                     Link(1000.0), 16.0, 4.0, head_ms_at=ms, tail_head_ms_at={k: v / 4 for k, v in ms.items()})
    by = {r["cut"]: r for r in rows}
    assert by["b"]["head_ms"] == pytest.approx(6.0) and by["b"]["tail_ms"] == pytest.approx(4.0 - 1.5)
    with pytest.raises(UsageError, match="not this model's nodes"):
        per_cut_ms(model, ["b"], _profile([("k", 1.0, ["other1"]), ("k", 1.0, ["other2"])], 2.0))
    with pytest.raises(UsageError, match="part 'head', not of the whole model"):
        per_cut_ms(model, ["b"], {**report, "part": "head"})
    with pytest.raises(UsageError, match="no per-kernel table"):
        per_cut_ms(model, ["b"], _profile([], 2.0))
    with pytest.raises(UsageError, match="not an edgec profile report"):
        per_cut_ms(model, ["b"], {"kind": "build"})


def test_auto_takes_per_kernel_profiles(tmp_path, run_cli):
    _chain_model(tmp_path / "c.onnx")
    head = tmp_path / "head.json"
    head.write_text(json.dumps(_profile([("k1", 5.0, ["conv1", "relu1"]), ("k2", 5.0, ["conv2", "relu2"]),
                                         ("k3", 0.1, ["pool"])], 10.1)))
    code, out, err = run_cli("split", str(tmp_path / "c.onnx"), "--at", "auto", "--bandwidth", "1000",
                             "--head-profile", str(head), "--tail-ms", "0.01", "--out", str(tmp_path / "o"))
    assert code == 0 and "per-kernel sums and MACs" in out, err
    code, _, err = run_cli("split", str(tmp_path / "c.onnx"), "--at", "auto", "--bandwidth", "10",
                           "--head-profile", str(head), "--head-ms", "3")
    assert code == 2 and "not both" in err
    for bad in ("nan", "inf"):
        code, _, err = run_cli("split", str(tmp_path / "c.onnx"), "--at", "auto", "--bandwidth", "10",
                               "--head-ms", bad, "--tail-ms", "1")
        assert code == 2 and "positive number of ms" in err
    code, _, err = run_cli("split", str(tmp_path / "c.onnx"), "--at", "auto", "--bandwidth", "10",
                           "--head-profile", str(tmp_path / "missing.json"), "--tail-ms", "1")
    assert code == 2 and "does not exist" in err
    (tmp_path / "other.json").write_text("{}")
    code, _, err = run_cli("split", str(tmp_path / "c.onnx"), "--at", "auto", "--bandwidth", "10",
                           "--tail-profile", str(tmp_path / "other.json"), "--head-ms", "1")
    assert code == 2 and "--tail-profile" in err and "not an edgec profile report" in err
    (tmp_path / "bad.json").write_text("{")
    code, _, err = run_cli("split", str(tmp_path / "c.onnx"), "--at", "auto", "--bandwidth", "10",
                           "--head-profile", str(tmp_path / "bad.json"), "--tail-ms", "1")
    assert code == 2 and "cannot be read as JSON" in err
