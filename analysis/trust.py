"""A trust grade per task, from the ladder alone: can this task's prediction be acted on?

Downstream accuracy often does not follow a scaling law (Lourie et al. 2025, arXiv 2507.00885),
and the ladder paper ranks tasks by the noise of their metrics before trusting them. Three things
the ladder itself shows, each with its own failure:
  * noise: checkpoint-to-checkpoint scatter of the accuracy (and of the step-1 feature) near the end
    of the largest runs, after removing the trend in log tokens; against the accuracy range the
    ladder spans (its signal);
  * backtests: how far the task's own in-ladder backtests missed, in units of the calibrated
    interval (the calibration's per-task quantile against the ladder-wide one), and in points;
  * fits: non-converged laws, bootstrap refits dropped.
Grades: ``unreliable`` (its backtests miss beyond the calibrated interval, or a fit failed),
``noisy`` (scatter large against the signal: predictions move with evaluation luck), else
``reliable``. The thresholds are set from the backtests in docs/analysis.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.annealed import annealing, run_tail
from analysis.runlog import TOKENS, RunLog
from analysis.metrics import TaskSpec
from analysis.twostep import task_accuracy, task_feature

# Thresholds (docs/analysis.md, "Trust grades"): a task is unreliable when its own backtests need
# intervals MISS_RATIO x wider than the ladder's typical task, or when half of its backtest errors
# exceed MEDIAN_SCORE_MAX x the interval before the k scaling (a calibrated 90% interval has a
# median score near 0.4), or when the largest rung, predicted from the smaller ones, is off by
# TREND_Z x one evaluation's scatter; noisy when the ladder's accuracy range is under SNR_MIN x one
# evaluation's scatter or that scatter is over NOISE_MAX.
MISS_RATIO = 1.5
MEDIAN_SCORE_MAX = 1.0
TREND_Z = 5.0  # largest rung off the smaller ones' trend by this many evaluation scatters
SNR_MIN = 10.0
NOISE_MAX = 0.015
TAIL = 0.2  # the last 20% of evaluations of the largest runs (at least 5)


@dataclass
class TaskNoise:
    acc_sd: float  # detrended SD of single-evaluation accuracy (fraction)
    feature_rel_sd: float  # detrended SD of the feature relative to its level
    span: float  # max - min of the runs' final accuracies (the signal the fit sees)

    @property
    def snr(self) -> float:
        return self.span / self.acc_sd if self.acc_sd > 0 else float("inf")


def _detrended_sd(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 4:
        return float("nan")
    c = np.polyfit(x, y, 1)
    return float(np.std(y - np.polyval(c, x), ddof=2))


def task_noise(runs: list[RunLog], task: TaskSpec, feature: str = "bpb", last: int = 5) -> TaskNoise:
    """Scatter of the task's metrics near the end of the largest runs (by N)."""
    nmax = max(float(r.n) for r in runs)
    acc_sd, f_sd = [], []
    for r in (r for r in runs if float(r.n) == nmax):
        ann = annealing(r)  # a WSD run: its stable phase, where the trend in log tokens is smooth
        end = ann.decay_from if ann is not None else r.n_evals
        tok = r.column(TOKENS)[:end]
        k = min(tok.size, max(5, int(round(TAIL * tok.size))))
        x = np.log(tok[-k:])
        acc = task_accuracy(r, task)[:end][-k:]
        f = task_feature(r, task, feature)[:end][-k:]
        acc_sd.append(_detrended_sd(x, acc))
        f_sd.append(_detrended_sd(x, f) / abs(float(np.mean(f))))
    finals = [float(np.mean(task_accuracy(r, task)[run_tail(r, last)])) for r in runs]
    return TaskNoise(float(np.nanmean(acc_sd)), float(np.nanmean(f_sd)),
                     float(max(finals) - min(finals)))


@dataclass
class Grade:
    grade: str  # reliable | noisy | unreliable
    reasons: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def grade_task(task: str, noise: TaskNoise, *, calibration=None, converged: bool = True,
               dropped_frac: float = 0.0) -> Grade:
    """The grade and every reason for it (a reliable task lists what was checked)."""
    m = {"acc_noise_sd": noise.acc_sd, "feature_noise_rel_sd": noise.feature_rel_sd,
         "ladder_span": noise.span, "snr": noise.snr, "bootstrap_dropped": dropped_frac}
    bad, noisy = [], []
    if not converged:
        bad.append("a fit did not converge")
    if dropped_frac > 0.1:
        bad.append(f"{dropped_frac:.0%} of bootstrap refits did not converge")
    if calibration is not None and task in calibration.task_k:
        ratio = calibration.task_k[task] / calibration.k
        m.update(backtest_miss_ratio=ratio, backtest_mae=calibration.task_mae.get(task))
        med = calibration.task_median_score.get(task, 0.0)
        m["backtest_median_score"] = med
        if ratio > MISS_RATIO or med > MEDIAN_SCORE_MAX:
            bad.append(f"its in-ladder backtests missed by {ratio:.1f}x more than the ladder's "
                       f"typical task, half of them by over {med:.1f}x the interval (mean error "
                       f"{100 * calibration.task_mae[task]:.2f} points): the largest rungs do not "
                       f"follow the trend of the smaller ones")
        bias = calibration.task_last_rung_bias.get(task)
        if bias is not None and noise.acc_sd > 0:
            z = abs(bias) / noise.acc_sd
            m.update(last_rung_bias=bias, last_rung_z=z)
            if z > TREND_Z:
                bad.append(f"the largest rung, predicted from the smaller ones, is off by "
                           f"{100 * bias:+.2f} points ({z:.0f}x one evaluation's scatter): "
                           f"the trend breaks at the top of the ladder")
    elif calibration is not None:
        bad.append("no in-ladder backtest of this task")
    if noise.acc_sd > NOISE_MAX:
        noisy.append(f"one evaluation scatters by {100 * noise.acc_sd:.2f} points (> "
                     f"{100 * NOISE_MAX:.1f})")
    if noise.snr < SNR_MIN:
        noisy.append(f"the ladder spans only {noise.snr:.1f}x that scatter (< {SNR_MIN:g})")
    if bad:
        return Grade("unreliable", bad + noisy, m)
    if noisy:
        return Grade("noisy", noisy, m)
    checked = [f"scatter {100 * noise.acc_sd:.2f} points, {noise.snr:.0f}x below the ladder's span"]
    if "backtest_miss_ratio" in m:
        checked.append(f"backtests within {m['backtest_miss_ratio']:.1f}x of the ladder's typical "
                       f"task (mean error {100 * m['backtest_mae']:.2f} points)")
    return Grade("reliable", checked, m)
