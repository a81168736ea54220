"""Encodings of the tensor a split deployment transmits from the head to the tail.

* ``fp32``: the tensor as the head computes it (4 bytes per element).
* ``int8``: affine 8-bit, ``q = clip(round(x / scale) + zero_point, -128, 127)``, decoded as
  ``x' = (q - zero_point) * scale`` (Jacob et al., "Quantization and Training of Neural Networks
  for Efficient Integer-Arithmetic-Only Inference", CVPR 2018, Sec. 2.1; the same arithmetic as
  ONNX ``QuantizeLinear``/``DequantizeLinear``, rounding half to even). ``scale`` and
  ``zero_point`` come from the min/max of the cut tensor over calibration inputs, with 0 kept
  exactly representable; per tensor, or per channel (axis 1) with ``int8-per-channel``.

The compiled head and tail stay float32 and are verified exactly; the encoding is applied by
the runtime between them, so it is a change of function on purpose: the build reports its
fidelity (SNR of the cut tensor, top-1 agreement and max error of the outputs) against the
unsplit model instead of holding it to the build tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgec.errors import UsageError

ENCODINGS = ("fp32", "int8", "int8-per-channel")


@dataclass(frozen=True)
class CutEncoding:
    """How the cut tensor travels.

    Attributes:
        kind: One of :data:`ENCODINGS`.
        scale: fp32 step per int8 unit: shape ``()`` per tensor, ``(C,)`` per channel (int8 only).
        zero_point: int8 code of 0.0, same shape as ``scale``.
        axis: Channel axis of per-channel parameters (1), else None.
        calibrated_on: Names of the input sets the range came from (the fidelity is measured on them).
        bottleneck: For the int8 codes of a learned bottleneck (:mod:`edgec.split.bottleneck`), its
            training record (channels, epochs, train_mse...); None otherwise.
    """

    kind: str = "fp32"
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None
    calibrated_on: tuple[str, ...] = ()
    bottleneck: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        """The function change's name in reports: ``encode_cut(int8)`` or ``learned_bottleneck(channels=C)+...``."""
        enc = f"encode_cut({self.kind})"
        return enc if self.bottleneck is None else f"learned_bottleneck(channels={self.bottleneck['channels']})+{enc}"

    @property
    def bytes_per_element(self) -> int:
        return 4 if self.kind == "fp32" else 1

    def _params(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray(self.scale, np.float32)
        zp = np.asarray(self.zero_point, np.float32)
        if self.axis is not None:
            shape = [1] * x.ndim
            shape[self.axis] = -1
            scale, zp = scale.reshape(shape), zp.reshape(shape)
        return scale, zp

    def encode(self, x: np.ndarray) -> np.ndarray:
        """fp32 ``x`` -> what is transmitted (fp32 unchanged, or int8 codes)."""
        if self.kind == "fp32":
            return np.asarray(x, np.float32)
        scale, zp = self._params(x)
        return np.clip(np.rint(np.asarray(x, np.float32) / scale) + zp, -128, 127).astype(np.int8)

    def decode(self, q: np.ndarray) -> np.ndarray:
        """What was transmitted -> the fp32 tensor the tail takes."""
        if self.kind == "fp32":
            return np.asarray(q, np.float32)
        scale, zp = self._params(q)
        return ((q.astype(np.float32) - zp) * scale).astype(np.float32)

    def describe(self) -> str:
        """One phrase for messages: ``int8 (scale 0.0312, zero_point -3)``, ``int8-per-channel (64 channels)``,
        with ``learned bottleneck (channels=C)`` in front where there is one."""
        if self.kind == "fp32":
            text = "fp32"
        elif self.axis is None:
            text = f"{self.kind} (scale {float(np.asarray(self.scale)):.4g}, zero_point {float(np.asarray(self.zero_point)):g})"
        else:
            text = f"{self.kind} ({np.asarray(self.scale).size} channels)"
        return text if self.bottleneck is None else f"learned bottleneck (channels={self.bottleneck['channels']}) + {text}"

    def fingerprint(self, link: dict[str, Any]) -> str:
        """sha256 (hex, 16 digits) of the connection ``link`` (from/to part and tensor) with this encoding: a
        head and a tail agree on how the cut travels exactly when their fingerprints match."""
        import hashlib
        import json

        record = {"from": link["from"], "to": link["to"], "encoding": self.to_dict()}
        record["encoding"].pop("calibrated_on", None)
        return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]

    def roundtrip(self, x: np.ndarray) -> np.ndarray:
        return self.decode(self.encode(x))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record (``scale``/``zero_point`` as lists)."""
        out: dict[str, Any] = {"kind": self.kind, "dtype": "float32" if self.kind == "fp32" else "int8"}
        if self.kind != "fp32":
            out.update(scale=np.asarray(self.scale).tolist(), zero_point=np.asarray(self.zero_point).tolist(),
                       axis=self.axis, calibrated_on=list(self.calibrated_on))
        if self.bottleneck is not None:
            out["bottleneck"] = self.bottleneck
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CutEncoding:
        if data.get("kind", "fp32") == "fp32":
            return cls()
        return cls(data["kind"], np.asarray(data["scale"], np.float32), np.asarray(data["zero_point"], np.float32),
                   data.get("axis"), tuple(data.get("calibrated_on", ())), data.get("bottleneck"))


def calibrate(kind: str, samples: list[np.ndarray], names: tuple[str, ...] = ()) -> CutEncoding:
    """The encoding ``kind`` calibrated on ``samples`` of the cut tensor (min/max).

    Args:
        kind: One of :data:`ENCODINGS`.
        samples: fp32 arrays of the cut tensor's shape ``[N, C, ...]`` (at least one).
        names: Names of the input sets the samples came from (recorded).

    Raises:
        UsageError: an unknown kind; per channel on a tensor of rank < 2.
    """
    if kind not in ENCODINGS:
        raise UsageError(f"unknown --encoding '{kind}'", f"use one of: {', '.join(ENCODINGS)}")
    if kind == "fp32":
        return CutEncoding()
    x = np.concatenate([np.asarray(s, np.float32) for s in samples], axis=0)
    axis = 1 if kind == "int8-per-channel" else None
    if axis is not None and x.ndim < 2:
        raise UsageError(f"--encoding {kind} needs a cut tensor with a channel axis; this one has rank {x.ndim}",
                         "use --encoding int8")
    reduce = tuple(i for i in range(x.ndim) if i != axis)
    lo = np.minimum(x.min(axis=reduce), 0.0).astype(np.float64)
    hi = np.maximum(x.max(axis=reduce), 0.0).astype(np.float64)
    scale = np.maximum((hi - lo) / 255.0, np.finfo(np.float32).tiny)
    zero_point = np.clip(np.rint(-128.0 - lo / scale), -128, 127)
    return CutEncoding(kind, scale.astype(np.float32), zero_point.astype(np.float32), axis, tuple(names))


def snr_db(x: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-noise ratio of ``approx`` against ``x`` in dB (inf when exact)."""
    x = np.asarray(x, np.float64)
    noise = float(np.sum((x - np.asarray(approx, np.float64)) ** 2))
    signal = float(np.sum(x ** 2))
    return float("inf") if noise == 0 else 10.0 * np.log10(max(signal, 1e-300) / noise)
