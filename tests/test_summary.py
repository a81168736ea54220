"""The build summary: long rows wrap at a narrow terminal instead of being cut, and a pass that multiplies
the MACs gets a warning row naming it and its factors."""

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

C = 8


def _dw_pw_model(path):
    """x (1,C,16,16) -> depthwise 3x3 (padded) -> pointwise 1x1 -> y: depth_merge(mode=exact) makes one dense 3x3
    conv of 9*C*C MACs per pixel where the pair had 9*C + C*C (4.2x)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.uniform(-1, 1, s).astype(np.float32), n)
             for n, s in (("w1", (C, 1, 3, 3)), ("b1", (C,)), ("w2", (C, C, 1, 1)), ("b2", (C,)))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=C),
             helper.make_node("Conv", ["a", "w2", "b2"], ["y"], kernel_shape=[1, 1])]
    graph = helper.make_graph(nodes, "dwpw", [helper.make_tensor_value_info("x", 1, [1, C, 16, 16])],
                              [helper.make_tensor_value_info("y", 1, [1, C, 16, 16])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_growth_warning_names_the_pass_and_its_factors():
    from edgec.profiling.report import pass_growth_warnings

    grown = {"name": "depth_merge", "label": "depth_merge(mode=exact)", "applied": 12, "macs_before": 1.0e9,
             "macs_after": 5.1e9, "params_before": 9.7e6, "params_after": 41.7e6}
    (line,) = pass_growth_warnings([grown, {**grown, "label": "mild", "macs_after": 1.9e9},
                                    {**grown, "label": "idle", "applied": 0}])
    assert "depth_merge(mode=exact) multiplies MACs by 5.1" in line and "parameters x4.3" in line
    assert pass_growth_warnings(None) == []


def test_console_takes_columns_when_not_a_terminal():
    code = "from edgec.cli.console import console, err_console; print(console.width, err_console.width)"
    env = {**os.environ, "COLUMNS": "60"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["60", "60"]
    env.pop("COLUMNS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["160", "160"]  # piped, no COLUMNS: wide enough for the tables


@pytest.fixture
def narrow(monkeypatch):
    """The build summary printed on a 60-column terminal."""
    from rich.console import Console

    import edgec.cli.build as cli_build

    monkeypatch.setattr(cli_build, "console", Console(width=60, force_terminal=False, color_system=None))


def test_depth_merge_growth_is_warned_and_long_rows_wrap(run_cli, tmp_path, narrow):
    model = _dw_pw_model(tmp_path / "m.onnx")
    code, out, err = run_cli("build", str(model), "--target", "host", "--no-verify", "--out", str(tmp_path / "o"),
                             "--passes", "default,depth_merge(mode=exact)")
    assert code == 0, err
    summary = out.split("passes (each checked")[0]  # the one-screen rows, before the passes table
    assert all(len(ln.rstrip()) <= 60 for ln in summary.splitlines()) and "…" not in summary
    flat = " ".join(out.split())
    assert "warning depth_merge multiplies MACs by 4.2 (34.82 k -> 147.46 k), parameters x3.8" in flat, out
    assert "(artifact " in flat
    assert str(tmp_path / "o" / "m-host") in out.replace("\n", "")  # a long path folds, whole
    # the target's description is whole, wrapped, not cut mid-phrase
    from edgec.targets import get_target

    assert " ".join(get_target("host").description.split()) in flat


def test_a_long_target_description_wraps_whole(narrow, capsys):
    from pathlib import Path

    from edgec.cli.build import print_build_summary
    from edgec.targets import get_target

    spec = get_target("cortex-m7")
    assert len(spec.description) > 110  # was cut at 110 characters
    report = {"model": {"name": "m", "source": "onnx", "params": 10, "macs": 100, "nodes": 2},
              "target": {"name": spec.name, "description": spec.description, "kind": "mcu"},
              "build": {"artifact_bytes": 1000, "library_bytes": 500, "compile_seconds": 1.0, "total_seconds": 2.0},
              "verification": {"skipped": True, "reason": "--no-verify", "passed": None}}
    print_build_summary(report, Path("out/m-cortex-m7"))
    out = capsys.readouterr().out
    assert " ".join(spec.description.split()) in " ".join(out.split()) and "…" not in out
    assert all(len(ln.rstrip()) <= 60 for ln in out.splitlines())
