"""Shared fixtures: small ONNX graphs, the PP-OCR classifier from its PyPI wheel, CLI runner."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import onnx
import pytest

from edgec.cache import cache_dir

PPOCR_WHEEL = "rapidocr-onnxruntime==1.4.4"
PPOCR_CLS = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"


@pytest.fixture(scope="session")
def ppocr_cls() -> Path:
    """``ch_ppocr_mobile_v2.0_cls_infer.onnx`` from the PyPI wheel (``pip download --no-deps``, cached)."""
    folder = cache_dir("test-data", "rapidocr-1.4.4")
    target = folder / Path(PPOCR_CLS).name
    if not target.exists():
        tmp = folder / "download"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(tmp), PPOCR_WHEEL],
                       check=True)
        wheel = next(tmp.glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            (folder / "part").write_bytes(zf.read(PPOCR_CLS))
        (folder / "part").rename(target)
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def parse_model(text: str) -> onnx.ModelProto:
    """An ONNX model from ONNX text syntax (``onnx.parser``), checked."""
    model = onnx.parser.parse_model(text)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture
def run_cli(capsys):
    """Run ``edgec ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from edgec.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        out = capsys.readouterr()
        return exc.value.code, out.out, out.err

    return _run
