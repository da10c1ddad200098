"""When a run has diverged: a non-finite loss, or a loss far above the run's own recent trend.

NaN/inf alone misses the usual failure: a damaged optimizer state or a too-high learning rate
sends the loss to 1e3 or 1e35 while every number stays finite, and the run would end
"completed" with a log no fit should read. The rule compares each step's loss with the median
of the previous :data:`WINDOW` steps' losses and stops when it exceeds :data:`SPIKE_FACTOR`
times that median (and by at least :data:`MIN_RISE` nats). The median ignores the spikes it is judging; the window follows the
falling trend of a healthy run, so the rule holds for runs of any length and loss scale; no
decision is made before :data:`MIN_HISTORY` steps have been seen (after a start or a resume).
The factor is far above the spikes a healthy run recovers from (tests/test_train_integrity.py
checks the tiny recipes stay well under it) and far below what a damaged state gives.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from pathlib import Path

SPIKE_FACTOR = 3.0  # loss > 3 x the median of the recent losses: diverged...
MIN_RISE = 1.0  # ...and over it by at least 1 nat (a memorising run's 0.01 -> 0.04 is noise)
WINDOW = 50  # steps in the running median
MIN_HISTORY = 20  # steps seen before the spike rule decides


class LossDiverged(RuntimeError):
    """The run diverged at ``step``; ``last_checkpoint`` is the newest good one (or None)."""

    def __init__(self, step: int, value: float, last_checkpoint: Path | None, reference: float | None = None):
        self.step, self.value, self.last_checkpoint, self.reference = step, value, last_checkpoint, reference
        where = f"last good checkpoint: {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
        what = (f"training loss is {value}" if reference is None else
                f"training loss is {value:.4g}, over {SPIKE_FACTOR:g}x the median of the previous "
                f"{WINDOW} steps ({reference:.4g})")
        super().__init__(f"{what} at step {step}; stopped ({where}). Lower train.lr, check the data, "
                         "or resume from the checkpoint with changes.")

    def at(self, last_checkpoint: Path | None) -> "LossDiverged":
        return LossDiverged(self.step, self.value, last_checkpoint, self.reference)


class DivergenceMonitor:
    """Fed every step's loss (in step order); raises :class:`LossDiverged` at the first bad one."""

    def __init__(self, factor: float = SPIKE_FACTOR, window: int = WINDOW, min_history: int = MIN_HISTORY):
        self.factor, self.min_history = factor, min_history
        self.recent: deque[float] = deque(maxlen=window)

    def check(self, step: int, value: float) -> None:
        if not math.isfinite(value):
            raise LossDiverged(step, value, None)
        if len(self.recent) >= self.min_history:
            median = statistics.median(self.recent)
            if value > self.factor * median and value > median + MIN_RISE:
                raise LossDiverged(step, value, None, median)
        self.recent.append(value)

    def ratio(self, value: float) -> float | None:
        """``value`` over the current median (None before the rule decides): for tests and logs."""
        return value / statistics.median(self.recent) if len(self.recent) >= self.min_history else None
