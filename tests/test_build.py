"""End-to-end builds: zoo models and a third-party ONNX file, for host, rpi4 and Jetson."""

import json
import struct

import pytest

from edgec.flows.build import BuildOptions, build
from edgec.profiling.report import validate

EM_AARCH64 = 183


def host_build(tmp_path, model, **kw):
    return build(BuildOptions(model=model, target=kw.pop("target", "host"), out_dir=tmp_path, passes="none", **kw))


# The quick tier keeps one family (MobileNetV4, the README's model); the other three are full zoo builds of up
# to a minute each, which CI runs (`-m slow`).
@pytest.mark.parametrize("model", ["mobilenetv4_conv_small", pytest.param("ghostnet_050", marks=pytest.mark.slow),
                                   pytest.param("efficientvit_m0", marks=pytest.mark.slow),
                                   pytest.param("mcunetv2", marks=pytest.mark.slow)])
def test_smallest_of_each_family_matches_onnxruntime_on_host(tmp_path, model):
    result = host_build(tmp_path, model)
    v = result.report["verification"]
    assert v["passed"] and v["top1_match"]
    assert v["max_abs_error"] <= 1e-4 * max(1.0, v["max_abs_ref"])
    files = {p.name for p in result.artifact.iterdir()}
    assert {"model.so", "model.onnx", "manifest.json", "report.json", "report.md"} <= files
    validate(json.loads((result.artifact / "report.json").read_text()))


@pytest.mark.slow  # a full zoo build (mcunetv2 at 224x224)
def test_manifest_records_versions_io_and_hashes(tmp_path):
    from edgec.artifact import sha256_file

    result = host_build(tmp_path, "mcunetv2")
    m = json.loads((result.artifact / "manifest.json").read_text())
    for key in ("apache-tvm", "onnx", "torch", "edgec"):
        assert key in m["versions"]
    assert m["inputs"] == [{"name": "input", "shape": [1, 3, 224, 224], "dtype": "float32"}]
    assert m["outputs"][0]["shape"] == [1, 1000]
    assert m["preprocessing"]["mean"] == [0.5, 0.5, 0.5]
    assert len(m["model"]["source_sha256"]) == 64
    for name, info in m["files"].items():
        assert sha256_file(result.artifact / name) == info["sha256"]
    assert "model.so" in m["files"] and m["target"]["name"] == "host"


def test_ppocr_cls_third_party_onnx_matches(tmp_path, ppocr_cls):
    result = host_build(tmp_path, str(ppocr_cls), input_shapes=["x=1,3,48,192"])
    v = result.report["verification"]
    assert v["passed"], v
    assert result.report["model"]["source"] == "onnx"
    assert result.artifact.name == "ch_ppocr_mobile_v2.0_cls_infer-host"


@pytest.mark.slow  # a full zoo build; rpi4 cross-compiles stay in the quick tier (tests/profiling)
def test_rpi4_build_is_an_aarch64_elf(tmp_path):
    result = host_build(tmp_path, "mcunetv2", target="rpi4", verify=False)
    header = (result.artifact / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and struct.unpack_from("<H", header, 18)[0] == EM_AARCH64
    assert result.report["verification"]["skipped"]


@pytest.mark.slow  # a full zoo build with CUDA code generation
def test_jetson_build_embeds_cubin_for_target_arch(tmp_path):
    result = host_build(tmp_path, "mcunetv2", target="jetson-orin-nano")
    assert result.report["build"]["cubin_archs"] and set(result.report["build"]["cubin_archs"]) == {87}
    assert result.report["verification"]["passed"]
    from edgec.profiling.report import verification_line

    assert verification_line(result.report["verification"]).startswith("CHECKED, GPU code not run")
    lib = (result.artifact / "model.so").read_bytes()
    assert b"__global__" not in lib  # no CUDA source: the device needs no NVRTC


@pytest.mark.slow
@pytest.mark.qemu
def test_mobilenetv4_rpi4_matches_under_qemu(tmp_path):
    result = host_build(tmp_path, "mobilenetv4", target="rpi4")
    v = result.report["verification"]
    assert v["emulated"] and v["passed"] and v["top1_match"], v
    assert result.artifact.name == "mobilenetv4-rpi4"
