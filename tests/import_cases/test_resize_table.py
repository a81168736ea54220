"""Resize follows the ONNX spec for every mode x coordinate transform x scale x size that onnxruntime
supports: one model holds every combination as its own output, built once and checked against onnxruntime."""

import itertools

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnx import numpy_helper as nh

MODES = [("nearest", "round_prefer_floor"), ("nearest", "round_prefer_ceil"), ("nearest", "floor"),
         ("nearest", "ceil"), ("linear", None), ("cubic", None)]
TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric",
              "tf_crop_and_resize"]
SCALES = [2.0, 1.5, 2.5, 0.6]
SIZES = [5, 8]
OPSET = 19


def _node(i, mode, nearest, transform, scale, size):
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    if nearest:
        attrs["nearest_mode"] = nearest
    if transform == "tf_crop_and_resize":
        attrs["extrapolation_value"] = 0.5
    roi = f"roi{i}" if transform == "tf_crop_and_resize" else ""
    return helper.make_node("Resize", [f"x{size}", roi, f"s{i}"], [f"y{i}"], **attrs)


def _supported(node, inits, size) -> bool:
    g = helper.make_graph([node], "one", [helper.make_tensor_value_info(f"x{size}", 1, [1, 2, size, size])],
                          [helper.make_tensor_value_info(node.output[0], 1, None)], inits)
    try:
        ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)]).SerializeToString())
        return True
    except Exception:  # noqa: BLE001  onnxruntime refuses the combination
        return False


def table_model():
    nodes, inits, outputs, labels = [], [], [], []
    for i, ((mode, nearest), transform, scale, size) in enumerate(itertools.product(MODES, TRANSFORMS, SCALES, SIZES)):
        own = [nh.from_array(np.array([1, 1, scale, scale], np.float32), f"s{i}")]
        if transform == "tf_crop_and_resize":
            own.append(nh.from_array(np.array([0, 0, 0.1, 0.2, 1, 1, 0.9, 0.95], np.float32), f"roi{i}"))
        node = _node(i, mode, nearest, transform, scale, size)
        if not _supported(node, own, size):
            continue
        out = int(np.floor(size * scale))
        nodes.append(node)
        inits += own
        outputs.append(helper.make_tensor_value_info(f"y{i}", 1, [1, 2, out, out]))
        labels.append(f"{mode}/{nearest or '-'} {transform} x{scale} on {size}")
    ins = [helper.make_tensor_value_info(f"x{s}", 1, [1, 2, s, s]) for s in SIZES]
    m = helper.make_model(helper.make_graph(nodes, "resize_table", ins, outputs, inits),
                          opset_imports=[helper.make_opsetid("", OPSET)])
    onnx.checker.check_model(m, full_check=True)
    return m, labels


@pytest.mark.slow
def test_every_supported_resize_matches_onnxruntime(tmp_path):
    from edgec.flows.build import BuildOptions, build
    from edgec.devices.local import LocalDevice
    from edgec.frontend.reference import run_ort

    model, labels = table_model()
    assert len(labels) >= 150  # most of the 288 combinations run in onnxruntime
    path = tmp_path / "resize_table.onnx"
    onnx.save(model, str(path))
    art = build(BuildOptions(model=str(path), out_dir=tmp_path, verify=False, passes="none")).artifact
    rng = np.random.default_rng(0)
    failures = []
    for offset in (0.0, 100.0):
        feeds = {f"x{s}": (offset + rng.standard_normal((1, 2, s, s))).astype(np.float32) for s in SIZES}
        ours = LocalDevice().run(art / "model.so", list(feeds.values()))
        ref = run_ort(model, feeds)
        for label, o, r in zip(labels, ours, ref):
            err = float(np.abs(o - r).max())
            if not err <= 1e-4 * max(1.0, float(np.abs(r).max())):
                failures.append(f"{label}: max abs err {err:.3g}")
    assert not failures, f"{len(failures)} of {len(labels)} combinations differ:\n" + "\n".join(failures[:40])
