"""Tuning batches sized to the time left: ``edgec tune --minutes`` keeps its budget on a busy machine."""

from __future__ import annotations


class BatchPace:
    """Sizes tuning batches to the time left (the ``--minutes`` budget).

    The cost of a candidate (search, build and run, s) is learnt from the batches measured so
    far (a running mean that weighs the latest batch half); a batch is cut to the candidates that
    fit the time left with a 15% margin, and none starts when fewer than :attr:`MIN_TRIALS` fit.

    Args:
        per_iter: Candidates per kernel in a full batch.
        deadline: ``time.perf_counter()`` value of the budget's end, or None (no time budget).
    """

    MIN_TRIALS = 2
    FIRST_TRIALS = 8
    MARGIN = 1.15

    def __init__(self, per_iter: int, deadline: float | None) -> None:
        self.per_iter = per_iter
        self.deadline = deadline
        self.seconds_per_trial: float | None = None
        self.spent = False

    def next_batch(self, kernels: int, trials_left: int | None, now: float) -> tuple[int, int] | None:
        """``(kernels, candidates per kernel)`` of the next batch, or None when the budget is spent.

        Args:
            kernels: Kernels waiting (at most a batch's worth).
            trials_left: The ``--trials`` budget left, or None.
            now: ``time.perf_counter()``.
        """
        per_task = self.per_iter
        if trials_left is not None:
            kernels = max(1, min(kernels, -(-trials_left // per_task)))
            per_task = max(1, min(per_task, trials_left // kernels))
        if self.deadline is None:
            return kernels, per_task
        left_s = self.deadline - now
        if left_s <= 0:
            self.spent = True
            return None
        if self.seconds_per_trial is None:  # learn the pace on a small batch first
            return 1, max(1, min(per_task, self.FIRST_TRIALS))
        fit = int(left_s / (self.seconds_per_trial * self.MARGIN))
        if fit < self.MIN_TRIALS:
            self.spent = True
            return None
        if fit < kernels * per_task:
            kernels = max(1, min(kernels, fit // per_task))
            per_task = max(self.MIN_TRIALS, min(per_task, fit // kernels))
        return kernels, per_task

    def measured(self, seconds: float, trials: int) -> None:
        """Record a finished batch: its wall time (s) and the candidates it asked for (the search costs
        the same when a small kernel's space runs out of new candidates before that)."""
        if trials <= 0:
            return
        sample = seconds / trials
        self.seconds_per_trial = sample if self.seconds_per_trial is None else \
            0.5 * self.seconds_per_trial + 0.5 * sample
