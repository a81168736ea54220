"""Which calibration method to default to: int8 accuracy of a trained classifier per onnxruntime calibrator.

Trains (or reuses) the digits task (``edgec zoo digits``: scikit-learn's digits, mobilenetv2_035 at 64x64),
quantizes the classifier with each method (``minmax``, ``entropy``, ``percentile``) on calibration images from
the training split, and prints the validation top-1 of float32 and of each int8 model (onnxruntime's integer
kernels), with the SNR of the logits against float32. Accuracy only: no time is measured.

    .venv/bin/python benchmarks/bench_calibration.py [--folder digits] [--samples 32 128]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(".cache/bench-digits"))
    parser.add_argument("--samples", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()

    from edgec.flows.zoo import digits
    from edgec.frontend.data import load_image_folder
    from edgec.frontend.image import recorded_preprocessing
    from edgec.frontend.quantize import METHODS, calibration_samples, quantize_int8, snr_db
    from edgec.frontend.reference import ort_session

    models = sorted(args.folder.glob("*-digits.onnx")) if args.folder.exists() else []
    if not models:
        digits(args.folder)
        models = sorted(args.folder.glob("*-digits.onnx"))
    model = onnx.load(str(models[0]))
    pre = recorded_preprocessing(model)
    name = model.graph.input[0].name
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    val = load_image_folder(args.folder / "val", shape, pre)

    def scores(m, optimized):
        session = ort_session(m, optimized=optimized)
        return np.concatenate([session.run(None, {name: val.x[i:i + 1]})[0] for i in range(len(val.x))])

    fp32 = scores(model, False)
    print(f"model {models[0].name}, {len(val.x)} validation images; float32 top-1 "
          f"{100 * (fp32.argmax(1) == val.labels).mean():.2f}%")
    print("| method | calibration images | int8 top-1 | agreement with float32 | logits SNR dB |")
    print("|---|---|---|---|---|")
    for samples in args.samples:
        cal = calibration_samples(args.folder / "train", {name: shape}, {name: np.dtype(np.float32)}, pre, samples)
        for method in METHODS:
            q = scores(quantize_int8(model, cal, method), True)
            print(f"| {method} | {len(cal.samples)} | {100 * (q.argmax(1) == val.labels).mean():.2f}% | "
                  f"{100 * (q.argmax(1) == fp32.argmax(1)).mean():.2f}% | {snr_db(q, fp32):.1f} |")


if __name__ == "__main__":
    main()
