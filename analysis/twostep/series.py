"""One run's per-evaluation series for one task: tokens, intermediate feature, accuracy; and the
feature itself, resolved once per ladder (the task's loss, the runs' own validation loss, or any
loss column every run has)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analysis.annealed import Annealing, annealing, tail_rows
from analysis.metrics import Columns, TaskSpec
from analysis.runlog import TOKENS, RunLog, RunLogError
from analysis.twostep.config import FEATURES, VAL_CE

# the validation loss Ladder's trainer and OLMo write: eval/<set>-validation/CrossEntropyLoss
_OLMO_VAL = re.compile(r"^eval/(.+)-validation/CrossEntropyLoss$")
# other harnesses' names for it: val_loss, validation/loss, eval/val_ce ...
_OTHER_VAL = re.compile(r"(?i)^(?:.*[/_-])?val(?:id(?:ation)?)?[/_-]?(?:loss|ce|cross_?entropy(?:loss)?)$")


@dataclass(frozen=True)
class Feature:
    """Step 1's feature for one task on one ladder: weighted columns and a sign (-1 where the
    column is a log-probability, so that the feature is a loss). ``name`` is as asked."""

    name: str
    columns: Columns
    sign: float = 1.0

    @property
    def label(self) -> str:
        """The column(s) the feature measures, as predictions.json names them."""
        s = "-" if self.sign < 0 else ""
        if len(self.columns) == 1:
            return s + self.columns[0][0]
        return s + " + ".join(f"{w:g}*{c}" for c, w in self.columns)

    def values(self, run: RunLog) -> np.ndarray:
        return self.sign * weighted(run, self.columns)


def weighted(run: RunLog, cols: Columns) -> np.ndarray:
    total = sum(w for _, w in cols)
    return sum(run.column(c) * (w / total) for c, w in cols)


def validation_column(runs: Sequence[RunLog]) -> str:
    """The validation loss column every run has: C4's where present (the OLMo ladder logs
    several sets), else the one set the runs were validated on (Ladder writes
    eval/<data.name>-validation/...), else a column named like a validation loss."""
    if not runs:
        return VAL_CE
    common = set(runs[0].columns).intersection(*(r.columns for r in runs[1:]))
    if VAL_CE in common:
        return VAL_CE
    for pattern in (_OLMO_VAL, _OTHER_VAL):
        found = sorted(c for c in common if pattern.match(str(c)))
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(f"--feature val_ce: the runs have {len(found)} validation losses "
                             f"({', '.join(found[:6])}); choose one with --feature COLUMN")
    raise ValueError(f"--feature val_ce: no validation loss column (eval/<set>-validation/"
                     f"CrossEntropyLoss, val_loss, ...) in every run ({runs[0].source} has none "
                     f"shared by all); give --feature COLUMN")


def resolve_feature(feature: str, task: TaskSpec, runs: Sequence[RunLog] = ()) -> Feature:
    """'bpb' (the task's own loss), 'task_ce' (-soft_log), 'val_ce' (the runs' validation loss),
    or the name of any loss column present in every run."""
    if feature == "bpb":
        return Feature(feature, task.columns("bpb"))
    if feature == "task_ce":
        return Feature(feature, task.columns("soft_log"), -1.0)  # a log-probability; CE is its negative
    if feature == "val_ce":
        return Feature(feature, ((validation_column(runs), 1.0),))
    missing = [r for r in runs if not r.has(feature)]
    if missing:
        raise RunLogError(f"{missing[0].source}: --feature {feature}: no such column (expected "
                          f"{', '.join(FEATURES)}, or a loss column present in every run)")
    return Feature(feature, ((feature, 1.0),))


@dataclass
class RunSeries:
    """One run's series for one task: tokens, feature (None where the method needs none) and
    accuracy per evaluation."""

    name: str
    n: float
    tokens: np.ndarray
    feature: np.ndarray | None
    acc: np.ndarray
    source: str = ""
    annealing: Annealing | None = None  # a WSD run: which evaluations are final points

    @property
    def d(self) -> float:
        return float(self.tokens[-1])

    def tail(self, last: int) -> np.ndarray:
        """Rows of the run's final value (analysis/annealed.py)."""
        return tail_rows(self.tokens.size, last, self.annealing)


def task_accuracy(run: RunLog, task: TaskSpec) -> np.ndarray:
    return weighted(run, task.columns("acc"))


def run_series(run: RunLog, task: TaskSpec, feature: Feature | str | None,
               min_evals: int = 1) -> RunSeries:
    """``feature``: resolved for the ladder (:func:`resolve_feature`), a name resolved on this
    run alone, or None where the method reads no feature (the direct method)."""
    if isinstance(feature, str):
        feature = resolve_feature(feature, task, [run])
    if run.n_evals < min_evals:
        raise RunLogError(f"{run.source}: only {run.n_evals} evaluation row(s) in column "
                          f"'{TOKENS}'; a ladder run needs at least {min_evals}")
    return RunSeries(run.name, float(run.n), run.column(TOKENS),
                     None if feature is None else feature.values(run), task_accuracy(run, task),
                     run.source, annealing(run))


def moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (the first window-1 points average what exists so far)."""
    if window <= 1:
        return np.asarray(x, dtype=float)
    c = np.cumsum(np.insert(np.asarray(x, dtype=float), 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)
