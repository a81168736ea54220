"""Interleaved latency measurement: run several implementations round-robin in one process.

Shared machines drift (other tenants, frequency scaling); timing A then B
attributes the drift to one of them. Interleaving gives each the same
conditions, so ratios (e.g. edgec p50 / onnxruntime p50) are stable even when
absolute times are not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass
class LatencyStats:
    """Latency summary in milliseconds over ``runs`` timed calls."""

    runs: int
    latency_ms_min: float
    latency_ms_p50: float
    latency_ms_p90: float
    latency_ms_max: float
    latency_ms_mean: float

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(int(a.size), float(a.min()), float(np.percentile(a, 50)), float(np.percentile(a, 90)),
                   float(a.max()), float(a.mean()))

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 50, warmup: int = 5,
                progress: Callable[[int, int], None] | None = None) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Args:
        fns: ``{name: zero-argument callable}``; each call is one inference.
        repeats: Timed calls per callable.
        warmup: Untimed rounds first (caches, thread pools, lazy init).
        progress: Called with (round done, rounds) after each timed round.

    Returns:
        ``{name: [ms, ...]}`` samples in call order.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]  # alternate order: no fixed first/second position
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - t0) * 1e3)
        if progress:
            progress(r + 1, repeats)
    return samples
