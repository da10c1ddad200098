"""Predictions while the ladder trains: the targets from the rungs finished so far.

Only finished rungs are fitted: a checkpoint in the middle of a run's learning-rate schedule is
not what a run of that length would reach, so a half-trained rung would bias step 1. The
intervals are calibrated on backtests of the finished rungs themselves, so they are as wide as
this smaller ladder's own errors: fewer runs widen the bootstrap, and the largest size or
tokens-per-parameter ratio not yet finished puts the target further beyond the fitted runs, which
the calibration's extrapolation term widens (analysis.calibration). Where too few rungs are
finished for any backtest, the interval is the raw bootstrap, labelled uncalibrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.calibration import Calibration, extrapolation
from analysis.practice.calibrate import calibrate_ladder, extrapolation_scenarios
from analysis.predict import Prediction, Target, predict_targets
from analysis.runlog import RunLog
from analysis.twostep import TwoStepConfig


@dataclass
class PlannedRung:
    name: str
    n: float
    d: float  # planned tokens
    state: str  # done | partial | new | failed ...
    tokens: float | None = None  # reached so far


@dataclass
class LadderProgress:
    rungs: list[PlannedRung]
    predictions: list[Prediction]
    calibration: Calibration | None
    full_width: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def compute_done(self) -> float:
        """Share of the ladder's planned compute (sum of 6ND) in finished rungs."""
        total = sum(r.n * r.d for r in self.rungs)
        return sum(r.n * r.d for r in self.rungs if r.state == "done") / total if total else 0.0

    def summary(self) -> str:
        done = sum(r.state == "done" for r in self.rungs)
        lines = [f"partial-ladder predictions from {done} of {len(self.rungs)} rungs finished "
                 f"({self.compute_done:.0%} of the ladder's compute):"]
        for p in self.predictions:
            if not np.isfinite(p.pred_acc_high - p.pred_acc_low):
                lines.append(f"  {p.target} {p.task}: no prediction ({p.grade_name}: "
                             f"{p.interval_info.get('unavailable', '')})")
                continue
            w = p.pred_acc_high - p.pred_acc_low
            full = self.full_width.get((p.task, p.target))
            near = (f"; with every rung the extrapolation alone would leave ~{100 * full:.1f}"
                    if full is not None else "")
            lines.append(f"  {p.target} {p.task}: {100 * p.pred_acc:.2f} "
                         f"[{100 * p.pred_acc_low:.2f}, {100 * p.pred_acc_high:.2f}] "
                         f"(width {100 * w:.1f} points{near}; {p.grade_name})")
        lines.append("  intervals: " + (self.predictions[0].interval_info.get("method", "")
                                        if self.predictions else "none"))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {"rungs": [vars(r) for r in self.rungs], "compute_done": self.compute_done,
                "predictions": [p.to_json() | {"full_ladder_width": self.full_width.get(
                    (p.task, p.target))} for p in self.predictions]}


def predict_progress(finished: list[RunLog], rungs: list[PlannedRung], targets: list[Target],
                     tasks="paper", config: TwoStepConfig = TwoStepConfig(), *,
                     n_boot: int = 200, warn=None) -> LadderProgress:
    """Predict ``targets`` from the ``finished`` rungs (of the planned ``rungs``)."""
    sizes = {float(r.n) for r in finished}
    if len(finished) < 3 or len(sizes) < 2:
        raise ValueError(f"{len(finished)} of {len(rungs)} rungs finished ({len(sizes)} size(s)); "
                         f"a prediction needs at least 3 finished rungs of 2 sizes")
    cal = None
    if extrapolation_scenarios(finished):
        cal = calibrate_ladder(finished, tasks, config, n_boot=n_boot).calibration
    preds = predict_targets(finished, targets, tasks, config, n_boot=n_boot, calibration=cal,
                            warn=warn or (lambda m: None))
    full = {}
    if cal is not None:
        plan_n, plan_d = [r.n for r in rungs], [r.d for r in rungs]
        for p in (p for p in preds if p.raw_low is not None and np.isfinite(p.raw_low)):
            dn, dt = extrapolation(plan_n, plan_d, p.target_n, p.target_d)
            lo, hi = cal.widen(p.task, p.pred_acc, p.raw_low, p.raw_high, dn, dt)
            full[(p.task, p.target)] = float(np.clip(hi, 0, 1) - np.clip(lo, 0, 1))
    return LadderProgress(rungs, preds, cal, full)
