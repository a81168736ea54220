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


#: Pause before each block (s): long enough for the previous engine's worker threads to stop spinning
#: and park (TVM's workers spin TVM_THREAD_POOL_SPIN_COUNT = 1e6 rounds, tens of ms on 2 cores).
SETTLE_S = 0.05


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 50, warmup: int = 5, block: int = 5,
                progress: Callable[[int, int], None] | None = None,
                settle_s: float = SETTLE_S) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, interleaved in blocks, after ``warmup`` untimed calls each.

    Runtimes keep their worker threads spinning for a while after a call (TVM's
    thread pool, onnxruntime's intra-op pool). Alternating single calls would
    make each engine run while the other's threads still spin -- on a 2-core
    machine that doubles both latencies. So the engines alternate in blocks of
    ``block`` calls, each block starts after a pause of ``settle_s`` (the other
    engine's threads park), and its first call is not timed. Block order
    alternates every round.

    Args:
        fns: ``{name: zero-argument callable}``; each call is one inference.
        repeats: Timed calls per callable.
        warmup: Untimed calls of each callable first (caches, thread pools, lazy init).
        block: Calls per block (``block - 1`` are timed).
        progress: Called with (timed calls done, repeats) after each round.

    Returns:
        ``{name: [ms, ...]}`` samples in call order.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    names = list(fns)
    timed_per_block = max(1, block - 1)
    r = 0
    while min(len(v) for v in samples.values()) < repeats:
        order = names if r % 2 == 0 else names[::-1]  # alternate order: no fixed first/second position
        for name in order:
            fn = fns[name]
            if settle_s:
                time.sleep(settle_s)  # the previous engine's workers stop spinning
            fn()  # untimed: caches and this engine's own pool warm up again
            for _ in range(timed_per_block):
                if len(samples[name]) >= repeats:
                    break
                t0 = time.perf_counter()
                fn()
                samples[name].append((time.perf_counter() - t0) * 1e3)
        r += 1
        if progress:
            progress(min(len(v) for v in samples.values()), repeats)
    return samples
