"""The two-stage DP of depth compression against brute force on chains of up to 8 layers."""

import itertools

import numpy as np
import pytest

from edgec.passes.depth_dp import plan_compression, stage1, stage2


def _random_tables(n, rng, missing=0.2):
    latency = {}
    for i in range(n):
        for j in range(i + 1, n + 1):
            if j == i + 1:
                latency[(i, j)] = float(rng.uniform(0.5, 2.0))
            else:  # merged groups: sometimes faster than their layers, sometimes slower, sometimes impossible
                latency[(i, j)] = None if rng.random() < missing else float(rng.uniform(0.3, 1.5) * (j - i))
    importance = {(i, j): 0.0 if j == i + 1 else -float(rng.uniform(0, 1) * (j - i - 1))
                  for i in range(n) for j in range(i + 1, n + 1)}
    return latency, importance


def _brute_segment(i, j, latency):
    best = None
    inner = list(range(i + 1, j))
    for r in range(len(inner) + 1):
        for cuts in itertools.combinations(inner, r):
            edges = [i, *cuts, j]
            parts = [latency.get((a, b)) for a, b in zip(edges, edges[1:])]
            if any(p is None for p in parts):
                continue
            best = sum(parts) if best is None else min(best, sum(parts))
    return best


def _brute(n, latency, importance, budget):
    best = None
    for r in range(n):
        for kept in itertools.combinations(range(1, n), r):
            edges = [0, *kept, n]
            segs = list(zip(edges, edges[1:]))
            ms = sum(_brute_segment(a, b, latency) for a, b in segs)
            imp = sum(importance[s] for s in segs)
            if ms <= budget + 1e-12 and (best is None or (imp, -ms) > (best[0], -best[1])):
                best = (imp, ms)
    return best


@pytest.mark.parametrize("seed", range(40))
def test_stage1_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 9))
    latency, _ = _random_tables(n, rng)
    plans = stage1(n, latency)
    for (i, j), plan in plans.items():
        assert plan.ms == pytest.approx(_brute_segment(i, j, latency))
        assert plan.groups[0][0] == i and plan.groups[-1][1] == j
        assert sum(latency[g] for g in plan.groups) == pytest.approx(plan.ms)


@pytest.mark.parametrize("seed", range(60))
def test_both_stages_match_brute_force_under_a_budget(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 9))
    latency, importance = _random_tables(n, rng)
    base = sum(latency[(k - 1, k)] for k in range(1, n + 1))
    budget = base * float(rng.uniform(0.4, 1.1))
    plan = stage2(n, stage1(n, latency), lambda i, j: importance[(i, j)], budget)
    expected = _brute(n, latency, importance, budget)
    if expected is None:
        assert plan is None
    else:
        assert plan is not None
        assert plan.importance == pytest.approx(expected[0])
        assert plan.ms == pytest.approx(expected[1])
        assert plan.ms <= budget + 1e-9


def test_speedup_sets_the_budget_and_removes_activations():
    n = 3
    latency = {(0, 1): 1.0, (1, 2): 1.0, (2, 3): 1.0, (0, 2): 1.2, (1, 3): 1.2, (0, 3): 1.5}
    importance = {(0, 1): 0, (1, 2): 0, (2, 3): 0, (0, 2): -0.1, (1, 3): -0.2, (0, 3): -0.5}
    plan = plan_compression(n, latency, lambda i, j: importance[(i, j)], speedup=1.3)  # budget 2.31 ms
    assert plan.segments == ((0, 2), (2, 3)) and plan.removed_activations == [1]
    assert plan.ms == pytest.approx(2.2)
    assert plan_compression(n, latency, lambda i, j: importance[(i, j)], budget_ms=1.0) is None
    with pytest.raises(ValueError):
        plan_compression(n, latency, lambda i, j: 0.0)
    with pytest.raises(ValueError, match="missing"):
        stage1(2, {(0, 1): 1.0})


def _brute_network(lengths, tables, budget):
    """Best (importance, ms) over every combination of per-chain segmentations."""
    options = []
    for n, (latency, importance) in zip(lengths, tables):
        per = []
        for r in range(n):
            for kept in itertools.combinations(range(1, n), r):
                edges = [0, *kept, n]
                segs = list(zip(edges, edges[1:]))
                per.append((sum(importance[s] for s in segs), sum(_brute_segment(a, b, latency) for a, b in segs)))
        options.append(per)
    best = None
    for combo in itertools.product(*options):
        imp, ms = sum(c[0] for c in combo), sum(c[1] for c in combo)
        if ms <= budget + 1e-12 and (best is None or (imp, -ms) > (best[0], -best[1])):
            best = (imp, ms)
    return best


@pytest.mark.parametrize("seed", range(30))
def test_plan_network_shares_one_budget_over_chains_as_brute_force(seed):
    from edgec.passes.depth_dp import plan_network

    rng = np.random.default_rng(100 + seed)
    lengths = [int(rng.integers(1, 5)) for _ in range(int(rng.integers(1, 4)))]
    tables = [_random_tables(n, rng) for n in lengths]
    latency = {(c, i, j): t for c, (lat, _imp) in enumerate(tables) for (i, j), t in lat.items()}
    full = sum(t[0][(k - 1, k)] for n, t in zip(lengths, tables) for k in range(1, n + 1))
    budget = float(rng.uniform(0.5, 1.0) * full)
    got = plan_network(lengths, latency, lambda c, i, j: tables[c][1][(i, j)], budget)
    want = _brute_network(lengths, tables, budget)
    if want is None:
        assert got is None
        return
    plans, ms, imp = got
    assert imp == pytest.approx(want[0]) and ms <= budget + 1e-9
    assert [p.segments[0][0] if p.segments else 0 for p in plans] == [0] * len(lengths)
    assert all(p.segments[-1][1] == n for p, n in zip(plans, lengths))
