"""A training job's time budget: stop between epochs, state saved, before the partition's limit kills it.

A job that stops this way exits with :data:`EXIT_CODE` after one line saying so; Snakemake counts
the job as failed and (with ``retries`` from the bill, ``python -m pathologies.cost``) submits it
again, and the next attempt resumes after the last finished epoch. The outputs appear only when
the last epoch is done, so a stopped job never looks finished.
"""

from __future__ import annotations

import time

EXIT_CODE = 75  # EX_TEMPFAIL: "try again later"


class BudgetReached(Exception):
    """Raised after the state of ``epoch`` is saved when the next epoch would overrun the budget."""

    def __init__(self, epoch: int, epochs: int, seconds: float, state: str):
        super().__init__(f"time budget reached: stopped after epoch {epoch} of {epochs} with {seconds:.0f} s of "
                         f"the budget used and the state saved in {state}; exiting with code {EXIT_CODE} so that "
                         f"Snakemake resubmits the job, which resumes at epoch {epoch + 1}")


class TimeBudget:
    """Seconds one job may train; ``None`` = no limit. Started when the job starts."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.began = time.monotonic()
        self.longest = 0.0

    def used(self) -> float:
        return time.monotonic() - self.began

    def lap(self, epoch_seconds: float) -> None:
        """Record one epoch's duration (training, evaluation and saving its state)."""
        self.longest = max(self.longest, epoch_seconds)

    def exhausted(self) -> bool:
        """Whether another epoch as long as the longest so far would end after the budget."""
        return self.seconds is not None and self.used() + self.longest > self.seconds
