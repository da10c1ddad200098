"""Backtests inside the ladder: hold out the largest rung(s), predict them from the rest.

This is how design options are chosen (never by a real target's error): each held-out run
is a target with known N, D and actual accuracy (mean of its last 5 evaluations).
Default scenarios: the largest size from all the others, and the two largest sizes from
the remaining smaller ones (a longer extrapolation, with as few as 8 runs to fit).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.predict import Prediction, Target, predict_targets
from analysis.runlog import RunLog
from analysis.twostep import TwoStepConfig


def run_size(run: RunLog) -> str:
    return run.meta.size or f"{run.n / 1e6:.0f}M"


def sizes_by_n(runs: list[RunLog]) -> list[str]:
    """Model sizes present, smallest N first."""
    seen: dict[str, float] = {}
    for r in runs:
        seen.setdefault(run_size(r), float(r.n))
    return sorted(seen, key=seen.get)


def run_mult(run: RunLog) -> str | None:
    m = run.meta.multiplier
    return None if m is None else f"{m:g}xC"


def mults_by_value(runs: list[RunLog]) -> list[str]:
    vals = sorted({r.meta.multiplier for r in runs if r.meta.multiplier is not None})
    return [f"{v:g}xC" for v in vals]


def default_scenarios(runs: list[RunLog]) -> list[list[str]]:
    """Largest size; two largest sizes; largest size and largest token multiplier together
    (the target is extrapolated in N *and* in tokens per parameter, so the backtest is too)."""
    sizes, mults = sizes_by_n(runs), mults_by_value(runs)
    out = [sizes[-1:]]
    if len(sizes) >= 4:
        out.append(sizes[-2:])
    if len(sizes) >= 3 and len(mults) >= 3:
        out.append([sizes[-1], mults[-1]])
    return out


def _held_out(run: RunLog, holdout: list[str]) -> bool:
    return run_size(run) in holdout or (run_mult(run) in holdout)


@dataclass
class BacktestResult:
    """``predictions``: every held-out prediction; the errors are over those with a number (a
    task the training part of the ladder refused has none), counted in ``refused``."""

    holdout: list[str]
    predictions: list[Prediction]

    @property
    def scored(self) -> list[Prediction]:
        return [p for p in self.predictions if np.isfinite(p.pred_acc)]

    @property
    def refused(self) -> int:
        return len(self.predictions) - len(self.scored)

    @property
    def errors(self) -> np.ndarray:
        return np.array([p.pred_acc - p.actual_acc for p in self.scored])

    def mae(self) -> float:
        return float(np.mean(np.abs(self.errors))) if self.scored else float("nan")

    def per_task(self) -> dict[str, float]:
        tasks = sorted({p.task for p in self.scored})
        return {t: float(np.mean([abs(p.pred_acc - p.actual_acc) for p in self.scored
                                  if p.task == t])) for t in tasks}

    def loss_mae(self) -> float:
        e = [abs(p.pred_loss - p.actual_loss) for p in self.scored
             if p.actual_loss is not None and np.isfinite(p.pred_loss)]
        return float(np.mean(e)) if e else float("nan")

    def loss_are(self) -> float:
        """Mean absolute relative error of the step-1 prediction (the Hitchhiker's ARE)."""
        e = [abs(p.pred_loss - p.actual_loss) / abs(p.actual_loss) for p in self.scored
             if p.actual_loss is not None and np.isfinite(p.pred_loss)]
        return float(np.mean(e)) if e else float("nan")

    def per_task_loss_are(self) -> dict[str, float]:
        out = {}
        for t in sorted({p.task for p in self.scored}):
            e = [abs(p.pred_loss - p.actual_loss) / abs(p.actual_loss) for p in self.scored
                 if p.task == t and p.actual_loss is not None and np.isfinite(p.pred_loss)]
            out[t] = float(np.mean(e)) if e else float("nan")
        return out

    def coverage(self) -> float:
        """Share of actuals inside the intervals these predictions carry (raw bootstrap in a
        backtest; the honest calibrated coverage is analysis.calibration.loso_coverage)."""
        have = [p for p in self.scored if np.isfinite(p.pred_acc_low)]
        return float(np.mean([p.pred_acc_low <= p.actual_acc <= p.pred_acc_high for p in have]))

    def to_json(self, coverage: dict | None = None) -> dict:
        """``coverage``: this scenario's leave-one-scenario-out calibrated coverage, if measured."""
        out = {"holdout": self.holdout, "mae": self.mae(), "loss_mae": self.loss_mae(),
               "loss_are": self.loss_are(), "per_task_mae": self.per_task(),
               "per_task_loss_are": self.per_task_loss_are()}
        if coverage is not None:
            out.update(coverage=coverage.get("coverage"), median_width=coverage.get("median_width"),
                       coverage_raw=coverage.get("coverage_raw"),
                       median_width_raw=coverage.get("median_width_raw"),
                       calibrated_on=coverage.get("calibrated_on"))
        out["predictions"] = [p.to_json(details=False) | {"converged": p.converged}
                              for p in self.predictions]
        return out


def split_holdout(runs: list[RunLog], holdout: list[str]) -> tuple[list[RunLog], list[RunLog]]:
    """(runs to fit, held-out runs). Each holdout entry must name a size ('1B') or a token
    multiplier ('10xC') present among the runs."""
    known = sizes_by_n(runs) + mults_by_value(runs)
    unknown = [h for h in holdout if h not in known]
    if unknown:
        raise ValueError(f"--holdout {', '.join(unknown)}: no such model size or token multiplier "
                         f"among the runs (have: {', '.join(known)})")
    return ([r for r in runs if not _held_out(r, holdout)],
            [r for r in runs if _held_out(r, holdout)])


def backtest(runs: list[RunLog], holdout: list[str], tasks="paper",
             config: TwoStepConfig = TwoStepConfig(), *, intervals: bool = False,
             n_boot: int = 200, warn=None) -> BacktestResult:
    """Fit on the runs whose size (e.g. '1B') or token multiplier (e.g. '10xC') is not in
    ``holdout``; predict each held-out run."""
    train, test = split_holdout(runs, holdout)
    if len(train) < 5:
        raise ValueError(f"holding out {', '.join(holdout)} leaves {len(train)} runs to fit; "
                         f"need at least 5")
    targets = [Target(r.name, float(r.n), r.d) for r in test]
    preds = predict_targets(train, targets, tasks, config, actuals={r.name: r for r in test},
                            intervals=intervals, n_boot=n_boot, warn=warn, grades=False)
    return BacktestResult(list(holdout), preds)
