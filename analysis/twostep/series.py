"""One run's per-evaluation series for one task: tokens, intermediate feature, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.annealed import Annealing, annealing, tail_rows
from analysis.metrics import TaskSpec
from analysis.runlog import TOKENS, RunLog, RunLogError
from analysis.twostep.config import FEATURES, VAL_CE


@dataclass
class RunSeries:
    """One run's series for one task: tokens, feature and accuracy per evaluation."""

    name: str
    n: float
    tokens: np.ndarray
    feature: np.ndarray
    acc: np.ndarray
    source: str = ""
    annealing: Annealing | None = None  # a WSD run: which evaluations are final points

    @property
    def d(self) -> float:
        return float(self.tokens[-1])

    def tail(self, last: int) -> np.ndarray:
        """Rows of the run's final value (analysis/annealed.py)."""
        return tail_rows(self.tokens.size, last, self.annealing)


def _weighted(run: RunLog, cols: list[tuple[str, float]]) -> np.ndarray:
    total = sum(w for _, w in cols)
    return sum(run.column(c) * (w / total) for c, w in cols)


def feature_columns(task: TaskSpec, feature: str) -> list[tuple[str, float]]:
    if feature == "bpb":
        return task.columns("bpb")
    if feature == "task_ce":
        return task.columns("soft_log")
    if feature == "val_ce":
        return [(VAL_CE, 1.0)]
    raise ValueError(f"unknown feature '{feature}' (expected {', '.join(FEATURES)})")


def task_feature(run: RunLog, task: TaskSpec, feature: str) -> np.ndarray:
    x = _weighted(run, feature_columns(task, feature))
    return -x if feature == "task_ce" else x  # soft_log is a log-probability; CE is its negative


def task_accuracy(run: RunLog, task: TaskSpec) -> np.ndarray:
    return _weighted(run, task.columns("acc"))


def run_series(run: RunLog, task: TaskSpec, feature: str, min_evals: int = 5) -> RunSeries:
    if run.n_evals < min_evals:
        raise RunLogError(f"{run.source}: only {run.n_evals} evaluation row(s) in column "
                          f"'{TOKENS}'; a ladder run needs at least {min_evals}")
    return RunSeries(run.name, float(run.n), run.column(TOKENS), task_feature(run, task, feature),
                     task_accuracy(run, task), run.source, annealing(run))


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first window-1 points average what exists so far)."""
    if window <= 1:
        return np.asarray(x, dtype=float)
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)
