"""PP-OCRv4's text detector (shipped in the rapidocr-onnxruntime wheel): a stride-2 ConvTranspose head that
the NHWC layout choice once left unlowerable (exit 8), and a probability map near 1 whose float32 noise on
the pixel-range set exceeds the tolerance (the float64 truth decides it)."""

import pytest

from edgec.flows.build import BuildOptions, build


@pytest.mark.slow  # about a minute
def test_ppocr_v4_detector_builds_and_verifies(ppocr_det, tmp_path):
    result = build(BuildOptions(model=str(ppocr_det), input_shapes=["x=1,3,320,320"], out_dir=tmp_path))
    v = result.report["verification"]
    assert v["passed"] and result.report["kernels"]["conv_layout"] == "NHWC", v
    assert all(s["passed"] for s in v["sets"])
