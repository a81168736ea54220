"""Tuning batches are sized to the budget left (``BatchPace``): no batch starts that would not fit."""

from edgec.backends.tvm.pace import BatchPace


def test_a_trials_budget_caps_every_batch():
    pace = BatchPace(per_iter=16, deadline=None)
    assert pace.next_batch(3, None, 0.0) == (3, 16)
    assert pace.next_batch(3, 20, 0.0) == (2, 10)  # 2 kernels x 10 = 20, not 3 x 16
    assert pace.next_batch(3, 5, 0.0) == (1, 5)
    assert pace.next_batch(1, 1, 0.0) == (1, 1)


def test_a_time_budget_learns_the_pace_on_a_small_first_batch():
    pace = BatchPace(per_iter=16, deadline=100.0)
    assert pace.next_batch(3, None, 0.0) == (1, BatchPace.FIRST_TRIALS)
    pace.measured(seconds=16.0, trials=8)  # 2 s per candidate
    # 60 s left fit 60 / (2 x 1.15) = 26 candidates: one full kernel batch and part of another
    n, per_task = pace.next_batch(3, None, 40.0)
    assert n * per_task <= 26 and n * per_task >= 16
    assert not pace.spent


def test_no_batch_starts_when_it_would_not_fit():
    pace = BatchPace(per_iter=16, deadline=100.0)
    pace.measured(seconds=40.0, trials=8)  # 5 s per candidate
    assert pace.next_batch(3, None, 92.0) is None  # 8 s left: one candidate at most
    assert pace.spent
    late = BatchPace(per_iter=16, deadline=10.0)
    assert late.next_batch(3, None, 11.0) is None and late.spent


def test_the_pace_follows_a_machine_that_gets_slower():
    pace = BatchPace(per_iter=16, deadline=1000.0)
    pace.measured(seconds=8.0, trials=8)  # 1 s per candidate
    pace.measured(seconds=48.0, trials=16)  # 3 s: the machine got busy
    assert 1.0 < pace.seconds_per_trial <= 3.0
    n, per_task = pace.next_batch(3, None, 960.0)  # 40 s left
    assert n * per_task * pace.seconds_per_trial * BatchPace.MARGIN <= 40.0
    pace.measured(seconds=5.0, trials=0)  # a batch that measured nothing teaches nothing
    assert 1.0 < pace.seconds_per_trial <= 3.0
