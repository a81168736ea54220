"""Shared fixtures: small ONNX graphs, the PP-OCR classifier (fetched by scripts/setup.sh), CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import onnx
import pytest

#: Test data fetched by ``scripts/setup.sh`` (``$EDGEC_TEST_DATA``, default ``.cache/test-data`` in the repository):
#: no test downloads anything while it runs.
TEST_DATA = Path(os.environ.get("EDGEC_TEST_DATA") or Path(__file__).resolve().parents[1] / ".cache" / "test-data")
PPOCR_CLS = TEST_DATA / "rapidocr-1.4.4" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
PPOCR_DET = TEST_DATA / "rapidocr-1.4.4" / "ch_PP-OCRv4_det_infer.onnx"


@pytest.fixture(scope="session")
def ppocr_cls() -> Path:
    """``ch_ppocr_mobile_v2.0_cls_infer.onnx`` from the rapidocr-onnxruntime 1.4.4 wheel, fetched by setup."""
    if not PPOCR_CLS.is_file():
        pytest.fail(f"test data missing: {PPOCR_CLS}; run ./scripts/setup.sh to fetch it", pytrace=False)
    return PPOCR_CLS


@pytest.fixture(scope="session")
def ppocr_det() -> Path:
    """``ch_PP-OCRv4_det_infer.onnx`` (the text detector) from the same wheel, fetched by setup."""
    if not PPOCR_DET.is_file():
        pytest.fail(f"test data missing: {PPOCR_DET}; run ./scripts/setup.sh to fetch it", pytrace=False)
    return PPOCR_DET


def parse_model(text: str) -> onnx.ModelProto:
    """An ONNX model from ONNX text syntax (``onnx.parser``), checked."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def run_cli(capsys):
    """Run ``edgec ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from edgec.cli.app import main

    def _run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    return _run


def tiny_cnn(path: Path, channels: int = 8, size: int = 16) -> Path:
    """A two-conv CNN with random weights saved at ``path`` (input ``x`` of shape (1, 3, size, size))."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((channels, 3, 3, 3)).astype(np.float32), "w1")
    b1 = numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), "b1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, channels, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["y"], name="flatten")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", 1, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", 1, [1, 4])], [w1, b1, w2])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.fixture
def scale_output_pass():
    """Registers the test-only function-changing pass ``scale_output(factor=...)`` for one test."""
    from edgec.passes import registry
    from passes.scale_output import INFO

    registry.add(INFO)
    yield INFO
    registry.remove(INFO.name)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """mobilenetv2_035 trained on scikit-learn's digits (64x64, 8 epochs, about a minute), with its
    ImageFolder ``train/`` and ``val/``; shared by the slow task tests."""
    from edgec.zoo.digits import train_digits_model

    return train_digits_model(tmp_path_factory.mktemp("digits"), epochs=8)
