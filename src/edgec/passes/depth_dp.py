"""The two-stage dynamic program of latency-aware depth compression.

Kim et al., "Efficient Latency-Aware CNN Depth Compression via Two-Stage Dynamic Programming",
ICML 2023, section 4. A chain of ``n`` convolutions (layers ``1..n``) has an activation after each
layer but the last (positions ``1..n-1``). Keeping a set of activations cuts the chain into
*segments* ``(i, j]`` -- layers ``i+1..j`` with every activation inside removed -- and a segment is
linear, so its layers can be merged into convolutions (:mod:`edgec.passes.merge`).

* **Stage 1** -- for every segment, the fastest way to run it: a partition of its layers into
  consecutive groups, each merged into one convolution, minimising the summed measured latency
  ``T(k, l)`` of the merged groups: ``T*(i, j) = min_k T*(i, k) + T(k, j)``, ``T*(i, i) = 0``.
* **Stage 2** -- which activations to keep: the segmentation ``0 = a_0 < a_1 < ... < a_m = n``
  maximising the summed importance ``I(a_t, a_{t+1})`` of its segments under a latency budget
  ``sum T*(a_t, a_{t+1}) <= budget``. Solved exactly over Pareto fronts of (latency, importance)
  per prefix (the paper discretises the latency instead).

``T(k, l)`` may be missing (None) where layers ``k+1..l`` cannot merge into one convolution; a
single layer's own time ``T(k-1, k)`` must be given. Importance is the caller's: higher is better
(e.g. minus the function change when the segment's activations are removed); a one-layer
segment removes nothing and should score 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

Table = Mapping[tuple[int, int], float | None]


@dataclass(frozen=True)
class SegmentPlan:
    """Stage 1's answer for one segment.

    Attributes:
        ms: Optimal latency of the segment (ms).
        groups: The merged groups ``[(k, l), ...]`` achieving it, in order.
    """

    ms: float
    groups: tuple[tuple[int, int], ...]


def stage1(n: int, latency: Table) -> dict[tuple[int, int], SegmentPlan]:
    """Optimal merge partition of every segment ``(i, j]``, ``0 <= i < j <= n``.

    Raises:
        ValueError: a single layer's latency ``T(k-1, k)`` is missing.
    """
    for k in range(1, n + 1):
        if latency.get((k - 1, k)) is None:
            raise ValueError(f"the latency of layer {k} alone, T({k - 1}, {k}), is missing")
    best: dict[tuple[int, int], SegmentPlan] = {}
    for i in range(n):
        plans: dict[int, SegmentPlan] = {i: SegmentPlan(0.0, ())}
        for j in range(i + 1, n + 1):
            choice = None
            for k in range(i, j):
                t = latency.get((k, j))
                if t is None or k not in plans:
                    continue
                total = plans[k].ms + t
                if choice is None or total < choice.ms:
                    choice = SegmentPlan(total, plans[k].groups + ((k, j),))
            plans[j] = choice
            best[(i, j)] = choice
    return best


@dataclass(frozen=True)
class CompressionPlan:
    """Stage 2's answer.

    Attributes:
        segments: The kept segmentation ``[(a_t, a_{t+1}), ...]``; activations at the inner boundaries stay.
        groups: The merged groups of all segments, in order (from stage 1).
        ms: Predicted latency (ms): the sum of the segments' optimal latencies.
        importance: Summed importance of the segments.
    """

    segments: tuple[tuple[int, int], ...]
    groups: tuple[tuple[int, int], ...]
    ms: float
    importance: float

    @property
    def removed_activations(self) -> list[int]:
        """Positions ``p`` (after layer ``p``) of the activations removed."""
        return [p for i, j in self.segments for p in range(i + 1, j)]


def stage2(n: int, plans: Mapping[tuple[int, int], SegmentPlan], importance: Callable[[int, int], float],
           budget_ms: float) -> CompressionPlan | None:
    """The segmentation of maximal importance whose predicted latency is within ``budget_ms``.

    Ties in importance go to the faster plan. Returns None when even the fastest plan is over budget.
    """
    # fronts[j]: Pareto-optimal (ms, importance, segments) of the prefix 0..j, ms ascending, importance ascending
    fronts: list[list[tuple[float, float, tuple[tuple[int, int], ...]]]] = [[(0.0, 0.0, ())]]
    for j in range(1, n + 1):
        options = []
        for i in range(j):
            plan = plans.get((i, j))
            if plan is None:
                continue
            gain = importance(i, j)
            for ms, imp, segs in fronts[i]:
                if ms + plan.ms <= budget_ms + 1e-12:
                    options.append((ms + plan.ms, imp + gain, segs + ((i, j),)))
        options.sort(key=lambda o: (o[0], -o[1]))
        front: list[tuple[float, float, tuple[tuple[int, int], ...]]] = []
        for o in options:
            if not front or o[1] > front[-1][1]:
                front.append(o)
        fronts.append(front)
    if not fronts[n]:
        return None
    ms, imp, segs = max(fronts[n], key=lambda o: (o[1], -o[0]))
    groups = tuple(g for s in segs for g in plans[s].groups)
    return CompressionPlan(segs, groups, ms, imp)


def plan_compression(n: int, latency: Table, importance: Callable[[int, int], float], *,
                     budget_ms: float | None = None, speedup: float | None = None) -> CompressionPlan | None:
    """Both stages: the best activation-removal and merge plan under ``budget_ms`` or ``speedup``.

    ``speedup`` sets the budget to the unmerged chain's latency (the sum of the single layers' times)
    divided by it.

    Raises:
        ValueError: neither or both of ``budget_ms`` and ``speedup``, or a missing single-layer latency.
    """
    if (budget_ms is None) == (speedup is None):
        raise ValueError("give one of budget_ms and speedup")
    plans = stage1(n, latency)
    if speedup is not None:
        budget_ms = sum(latency[(k - 1, k)] for k in range(1, n + 1)) / speedup
    return stage2(n, plans, importance, budget_ms)


@dataclass(frozen=True)
class ChainPlan:
    """One chain's part of a network plan (chain coordinates, boundaries ``0..n``).

    Attributes:
        segments: The chain's segments ``(i, j)``; activations inside a segment are removed.
        groups: The merged groups ``(k, l)`` of those segments.
    """

    segments: tuple[tuple[int, int], ...]
    groups: tuple[tuple[int, int], ...]

    @property
    def removed_positions(self) -> list[int]:
        return [p for i, j in self.segments for p in range(i + 1, j)]


def plan_network(lengths: list[int], latency: Mapping[tuple[int, int, int], float | None],
                 importance: Callable[[int, int, int], float], budget_ms: float
                 ) -> tuple[list[ChainPlan], float, float] | None:
    """Both stages over several independent chains sharing one latency budget.

    The chains are laid end to end as one chain whose boundaries between chains can neither be crossed by
    a group nor by a segment, so one stage-2 pass spends the budget where it buys the most importance.

    Args:
        lengths: Layers per chain.
        latency: ``(chain, k, l) -> ms`` of the merged group ``k+1..l`` (None or absent: not mergeable);
            every single layer ``(c, k-1, k)`` must be given.
        importance: ``(chain, i, j) -> score`` of removing the activations inside segment ``(i, j)``.
        budget_ms: The summed latency allowed for all chains (ms).

    Returns:
        ``(per-chain plans, predicted ms, importance)``, or None when even the fastest plan is over budget.

    Raises:
        ValueError: a missing single-layer latency.
    """
    offsets, off = [], 0
    for n in lengths:
        offsets.append(off)
        off += n
    owner = {}
    table: dict[tuple[int, int], float | None] = {}
    for c, (o, n) in enumerate(zip(offsets, lengths)):
        for k in range(n):
            for l in range(k + 1, n + 1):
                table[(o + k, o + l)] = latency.get((c, k, l))
                owner[(o + k, o + l)] = c
    plans = {s: p for s, p in stage1(off, table).items() if s in owner and p is not None}

    def score(i: int, j: int) -> float:
        c = owner[(i, j)]
        return importance(c, i - offsets[c], j - offsets[c])

    best = stage2(off, plans, score, budget_ms)
    if best is None:
        return None
    out = []
    for c, (o, n) in enumerate(zip(offsets, lengths)):
        segs = tuple((i - o, j - o) for i, j in best.segments if o <= i < o + n)
        groups = tuple((k - o, l - o) for k, l in best.groups if o <= k < o + n)
        out.append(ChainPlan(segs, groups))
    return out, best.ms, best.importance
