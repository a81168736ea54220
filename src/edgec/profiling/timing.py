"""Interleaved latency measurement: run several implementations round-robin in one process.

Shared machines drift (other tenants, frequency scaling); timing A then B
attributes the drift to one of them. Interleaving gives each the same
conditions, so ratios (e.g. edgec p50 / onnxruntime p50) are stable even when
absolute times are not.
"""

from __future__ import annotations

import os
import threading
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


#: Longest wait (s) for the previous engine's worker threads to park before a block. TVM's workers
#: yield the CPU TVM_THREAD_POOL_SPIN_COUNT = 1e6 times before they sleep (a few hundred ms on an idle
#: machine); onnxruntime's intra-op pool spins too. A runnable (spinning) thread takes CPU time from
#: the engine timed next -- on 2 cores that doubled onnxruntime's p50 when the blocks followed each other.
QUIET_TIMEOUT_S = 3.0


def _runnable_threads(own: int) -> int | None:
    """Threads of this process other than ``own`` that are runnable (state R), or None where
    /proc does not say (not Linux)."""
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return None
    running = 0
    for tid in tids:
        if int(tid) == own:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        if stat[stat.rindex(b")") + 2:stat.rindex(b")") + 3] == b"R":
            running += 1
    return running


def wait_quiet(timeout_s: float = QUIET_TIMEOUT_S, poll_s: float = 0.002, quiet_polls: int = 3) -> float:
    """Wait until no other thread of this process is runnable: every engine's workers have parked.

    Polls ``/proc/self/task/*/stat`` every ``poll_s`` seconds until ``quiet_polls`` polls in a row
    see no runnable thread besides the caller, or ``timeout_s`` passes. Where /proc is missing it
    sleeps ``min(timeout_s, 0.5)`` instead.

    Returns:
        Seconds waited.
    """
    start = time.perf_counter()
    own = threading.get_native_id()
    quiet = 0
    while time.perf_counter() - start < timeout_s:
        running = _runnable_threads(own)
        if running is None:
            time.sleep(min(timeout_s, 0.5))
            break
        quiet = quiet + 1 if running == 0 else 0
        if quiet >= quiet_polls:
            break
        time.sleep(poll_s)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 50, warmup: int = 5, block: int = 5,
                progress: Callable[[int, int], None] | None = None,
                quiet_timeout_s: float = QUIET_TIMEOUT_S) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, interleaved in blocks, after ``warmup`` untimed calls each.

    Runtimes keep their worker threads spinning for a while after a call (TVM's
    thread pool, onnxruntime's intra-op pool). Alternating single calls would
    make each engine run while the other's threads still spin -- on a 2-core
    machine that doubles both latencies. So the engines alternate in blocks of
    ``block`` calls, each block starts once no other thread of the process is
    runnable (:func:`wait_quiet`: the other engine's workers have parked), and its
    first call is not timed. Block order alternates every round.

    Args:
        fns: ``{name: zero-argument callable}``; each call is one inference.
        repeats: Timed calls per callable.
        warmup: Untimed calls of each callable first (caches, thread pools, lazy init).
        block: Calls per block (``block - 1`` are timed).
        progress: Called with (timed calls done, repeats) after each round.
        quiet_timeout_s: Longest wait for the other engine's threads before a block (0: none).

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
            if quiet_timeout_s:
                wait_quiet(quiet_timeout_s)  # the previous engine's workers stop spinning
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
