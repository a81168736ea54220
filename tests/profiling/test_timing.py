"""Interleaved timing: a block waits until no other thread of the process is runnable."""

import itertools
import threading

from edgec.profiling.timing import interleaved, wait_quiet


def _spinner(stop: threading.Event) -> threading.Thread:
    def spin():
        while not stop.is_set():  # runnable all the time, like a worker that yields instead of sleeping
            pass

    t = threading.Thread(target=spin, daemon=True)
    t.start()
    return t


def test_wait_quiet_waits_for_a_spinning_thread_and_not_for_a_sleeping_one():
    stop = threading.Event()
    t = _spinner(stop)
    try:
        assert wait_quiet(timeout_s=0.3) >= 0.3  # the spinner never parks: waited to the timeout
    finally:
        stop.set()
        t.join()
    sleeper = threading.Thread(target=threading.Event().wait, args=(5,), daemon=True)
    sleeper.start()
    assert wait_quiet(timeout_s=2.0) < 1.0  # a parked thread does not count


def test_interleaved_times_every_engine_in_blocks():
    calls = []
    samples = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=8, warmup=1,
                          block=5, quiet_timeout_s=0.5)
    assert {k: len(v) for k, v in samples.items()} == {"a": 8, "b": 8}
    assert all(x >= 0 for v in samples.values() for x in v)
    runs = [len(list(g)) for _, g in itertools.groupby(calls[2:])]  # after one warm-up call each
    assert runs == [5, 10, 5]  # blocks of 5 calls (1 untimed + 4 timed); the order reverses each round: a b, b a
