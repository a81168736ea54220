"""The committed TFLite test models (``tests/data/tflite``, made by ``scripts/make_tflite_models.py``) are intact.

No TensorFlow, and no ``tflite`` package (edgec's environment has neither): each file must be a TFLite
flatbuffer (file identifier ``TFL3`` at bytes 4..8), match the size and sha256 that PROVENANCE.md records,
and each ``.npz`` must hold the inputs and reference outputs with the names, shapes and dtypes PROVENANCE.md
documents for its model.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1] / "data" / "tflite"
PROVENANCE = DATA / "PROVENANCE.md"
MODELS = ["cnn_fp32", "cnn_int8", "cnn_int8_io", "cnn_fp16", "custom_op", "detection_postprocess"]

_FILE_ROW = re.compile(r"^\| (\S+\.(?:tflite|npz)) \| (\d+) \| ([0-9a-f]{64}) \|$", re.M)
_IO_ROW = re.compile(r"^\| (input|output) \| (\d+) \| (.+?) \| \[([\d, ]*)\] \| (\w+) \| (.*) \|$", re.M)


def _provenance() -> str:
    return PROVENANCE.read_text()


def _recorded_files() -> dict[str, tuple[int, str]]:
    return {m[1]: (int(m[2]), m[3]) for m in _FILE_ROW.finditer(_provenance())}


def _documented_io(model: str) -> dict[str, list[tuple[str, tuple[int, ...], str]]]:
    """{"input": [(name, shape, dtype), ...], "output": [...]} from the model's section of PROVENANCE.md."""
    text = _provenance()
    start = text.index(f"\n## {model}.tflite\n")
    end = text.find("\n## ", start + 1)
    section = text[start:end if end >= 0 else len(text)]
    io: dict[str, list] = {"input": [], "output": []}
    for m in _IO_ROW.finditer(section):
        kind, idx, name, shape, dtype = m[1], int(m[2]), m[3], m[4], m[5]
        assert idx == len(io[kind]), f"{model}: {kind} rows out of order"
        io[kind].append((name, tuple(int(d) for d in shape.split(",") if d.strip()), dtype))
    return io


def test_every_file_is_recorded():
    recorded = _recorded_files()
    expected = {f"{m}.{ext}" for m in MODELS for ext in ("tflite", "npz")}
    assert set(recorded) == expected
    on_disk = {p.name for p in DATA.iterdir() if p.is_file()} - {"PROVENANCE.md"}
    assert on_disk == expected, "files in tests/data/tflite not listed in PROVENANCE.md, or missing"
    total = sum(p.stat().st_size for p in DATA.iterdir() if p.is_file())
    assert total < 200_000, f"tests/data/tflite holds {total} bytes"


@pytest.mark.parametrize("name", [f"{m}.{ext}" for m in MODELS for ext in ("tflite", "npz")])
def test_size_and_sha256_match_provenance(name):
    size, digest = _recorded_files()[name]
    data = (DATA / name).read_bytes()
    assert len(data) == size
    assert hashlib.sha256(data).hexdigest() == digest


@pytest.mark.parametrize("model", MODELS)
def test_tflite_flatbuffer_identifier(model):
    data = (DATA / f"{model}.tflite").read_bytes()
    assert data[4:8] == b"TFL3"
    root = int.from_bytes(data[:4], "little")  # uoffset of the root table (tflite.Model)
    assert 8 <= root < len(data) and root % 4 == 0


@pytest.mark.parametrize("model", MODELS)
def test_npz_matches_documented_io(model):
    io = _documented_io(model)
    assert io["input"] and io["output"], f"no I/O table for {model} in PROVENANCE.md"
    with np.load(DATA / f"{model}.npz", allow_pickle=False) as z:
        keys = set(z.files)
        expected = {f"{kind}_{i}" for kind in ("input", "output") for i in range(len(io[kind]))}
        assert keys == expected | {"input_names", "output_names", "reference"}
        for kind in ("input", "output"):
            assert z[f"{kind}_names"].tolist() == [name for name, _, _ in io[kind]]
            for i, (_, shape, dtype) in enumerate(io[kind]):
                arr = z[f"{kind}_{i}"]
                assert arr.shape == shape and arr.dtype == np.dtype(dtype), (model, kind, i, arr.shape, arr.dtype)
                if arr.dtype.kind == "f":
                    assert np.isfinite(arr).all()
        assert str(z["reference"])
