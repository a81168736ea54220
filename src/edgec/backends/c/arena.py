"""Arena planning: place every activation buffer at a byte offset so that buffers alive at the same
time never overlap, in as few bytes as possible.

Greedy by size (the heuristic of TensorFlow Lite Micro's ``GreedyMemoryPlanner``,
``tensorflow/tflite-micro``, ``micro/memory_planner/greedy_memory_planner.cc``; Pisarchyk and Lee,
"Efficient Memory Management for Deep Neural Net Inference", 2020, section 4): buffers are taken
largest first, and each goes at the lowest aligned offset where it fits between the buffers already
placed that are alive at an overlapping time. Unlike TVM's ``StaticPlanBlockMemory``, which reuses
a whole storage only for a tensor of a size it can hold, this packs small buffers (the patches of
``patch_inference``) into the gaps of large ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Buffer:
    """One buffer to place.

    Attributes:
        size: Bytes.
        first: First step (kernel call index) at which it is alive (written).
        last: Last step at which it is alive (read), inclusive.
    """

    size: int
    first: int
    last: int


def greedy_by_size(buffers: list[Buffer], align: int = 32) -> tuple[list[int], int]:
    """Offsets (bytes, multiples of ``align``) of ``buffers`` and the arena size (bytes).

    Raises:
        ValueError: a buffer with ``last < first`` or a negative size.
    """
    for b in buffers:
        if b.last < b.first or b.size < 0:
            raise ValueError(f"bad buffer {b}")
    offsets = [0] * len(buffers)
    placed: list[int] = []
    for i in sorted(range(len(buffers)), key=lambda k: (-buffers[k].size, buffers[k].first)):
        b = buffers[i]
        busy = sorted((offsets[j], offsets[j] + buffers[j].size) for j in placed
                      if buffers[j].first <= b.last and b.first <= buffers[j].last)
        at = 0
        for lo, hi in busy:
            if at + b.size <= lo:
                break
            at = max(at, -(-hi // align) * align)
        offsets[i] = at
        placed.append(i)
    total = max((offsets[i] + buffers[i].size for i in placed), default=0)
    return offsets, -(-total // align) * align
