"""The failing-input classes of ../shared/cases/import (copied here): each builds and matches, or fails
with the one-line message its class deserves. Builds run on this machine's CPU class (AVX2 or AVX-512)."""

from pathlib import Path

import numpy as np
import pytest

from edgec.flows.build import BuildOptions, build
from edgec.errors import UnsupportedOpError

CASES = Path(__file__).parent / "shared"

BUILDS = ["ir3_opset6_initializers_as_inputs", "mvn_large_mean_input", "prob_map_near_one", "residual_sum_opset9",
          "upsample7_nearest", "upsample9_scales_input", "resize_cubic_pytorch_half_pixel_2p5",
          "pad21_end_pads_avgpool"]


@pytest.mark.parametrize("name", BUILDS)
def test_case_builds_and_matches_on_every_input_set(name, tmp_path):
    result = build(BuildOptions(model=str(CASES / f"{name}.onnx"), out_dir=tmp_path))
    v = result.report["verification"]
    assert v["passed"], v
    names = {s["name"] for s in v["sets"]}
    assert {"normal", "offset"} <= names  # and the image ranges where the input looks like an image
    for s in v["sets"]:
        assert s["max_abs_error"] <= 1e-4 * max(1.0, s["max_abs_ref"]), s


def test_normalisations_are_reported(tmp_path):
    result = build(BuildOptions(model=str(CASES / "ir3_opset6_initializers_as_inputs.onnx"), out_dir=tmp_path))
    notes = result.report["passes"][0]["normalizations"]
    assert any("initializers listed as graph inputs" in n for n in notes)
    assert any("opset 6 converted to 17" in n for n in notes)


def test_residual_sum_keeps_the_fast_layout(tmp_path):
    result = build(BuildOptions(model=str(CASES / "residual_sum_opset9.onnx"), out_dir=tmp_path))
    assert result.report["kernels"]["conv_layout"] == "NHWC"  # Sum became Add, which ConvertLayout follows


def test_prob_map_is_not_held_to_a_top1_check(tmp_path):
    """A [1, 1, H, W] probability map is no classifier: no top-1 check, near-equal values are fine."""
    result = build(BuildOptions(model=str(CASES / "prob_map_near_one.onnx"), out_dir=tmp_path))
    assert all(s["top1_match"] is None for s in result.report["verification"]["sets"])


def test_lrn_even_size_keeps_onnxruntimes_reason(run_cli, tmp_path):
    code, _, err = run_cli("build", str(CASES / "lrn_even_size.onnx"), "--out", str(tmp_path))
    assert code == 4 and "LRN: check failed: size_ % 2 == 1" in err and len(err.strip().splitlines()) <= 3
    with pytest.raises(UnsupportedOpError, match="onnxruntime cannot load the model"):
        build(BuildOptions(model=str(CASES / "lrn_even_size.onnx"), out_dir=tmp_path))


def test_the_unstable_variance_would_fail_verification(tmp_path, monkeypatch):
    """Without the stable rewrite, TVM's E[x^2] - E[x]^2 is exact on N(0, 1) and wrong at offset 1000:
    the offset input set must fail the build."""
    from edgec.errors import VerificationError
    from edgec.frontend import normalize

    monkeypatch.setattr(normalize, "_stable_normalizations", lambda model: 0)
    with pytest.raises(VerificationError, match="on the 'offset' inputs"):
        build(BuildOptions(model=str(CASES / "mvn_large_mean_input.onnx"), out_dir=tmp_path))


def test_user_samples_are_a_verification_set(tmp_path):
    x = (1000 + np.random.default_rng(5).standard_normal((1, 3, 16, 16))).astype(np.float32)
    np.savez(tmp_path / "depth.npz", x=x)
    result = build(BuildOptions(model=str(CASES / "mvn_large_mean_input.onnx"), out_dir=tmp_path / "o",
                                verify_inputs=[tmp_path / "depth.npz"]))
    assert "user:depth.npz" in {s["name"] for s in result.report["verification"]["sets"]}


# One CPU of each x86 class, whatever this machine is: the AVX2 LLVM crash of pad21 lived in the code
# generator, so each case is compiled for both classes here, and run where this CPU can run the code.
X86_CPUS = {"haswell": ("avx2", "x86_64-avx2"), "znver3": ("avx2", "x86_64-avx2"),
            "skylake-avx512": ("avx512f", "x86_64-avx512"), "znver4": ("avx512f", "x86_64-avx512")}
RUNNABLE = {"haswell": {"avx2", "fma", "bmi2", "f16c"}, "skylake-avx512": {"avx512f", "avx512bw", "avx512dq",
                                                                          "avx512vl", "avx512cd"}}


@pytest.mark.slow
@pytest.mark.parametrize("mcpu", sorted(X86_CPUS))
def test_cases_build_for_each_x86_class(mcpu, tmp_path):
    import json

    from edgec.targets import get_target, target_class

    isa, cls = X86_CPUS[mcpu]
    spec = {"name": f"x86-{mcpu}", "description": f"x86-64 {mcpu}", "kind": "cpu", "arch": "x86_64",
            "datasheet": "LLVM CPU name", "library": "model.so", "verify": "local",
            "tvm": {"kind": "llvm", "mtriple": "x86_64-linux-gnu", "mcpu": mcpu, "mattr": [f"+{isa}"]}}
    target_file = tmp_path / f"{mcpu}.json"
    target_file.write_text(json.dumps(spec))
    assert target_class(get_target(str(target_file))) == cls
    runnable = mcpu in RUNNABLE and RUNNABLE[mcpu] <= _cpu_flags()
    for name in BUILDS:
        result = build(BuildOptions(model=str(CASES / f"{name}.onnx"), target=str(target_file),
                                    out_dir=tmp_path / name, verify=runnable, use_tune_db=False))
        assert (result.artifact / "model.so").exists(), name
        if runnable:
            assert result.report["verification"]["passed"], (name, result.report["verification"])


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()
