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
  * signal: whether the ladder leaves chance and its feature falls with compute
    (analysis.twostep.signal), and how far the prediction climbs above the ladder's accuracies.
An input that cannot be measured (no checkpoint scatter in a ladder of final evaluations) is said
to be unmeasured, and the checks that need it are skipped, never divided by zero.
Grades: ``unreliable`` (its backtests miss beyond the calibrated interval, or a fit failed),
``noisy`` (scatter large against the signal: predictions move with evaluation luck), else
``reliable``. The thresholds are set from the backtests in docs/analysis.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from analysis.runlog import RunLog
from analysis.metrics import TaskSpec
from analysis.twostep.series import resolve_feature, run_series
from analysis.twostep.signal import end_scatter

# Thresholds (docs/analysis.md, "Trust grades"): a task is unreliable when its own backtests need
# intervals MISS_RATIO x wider than the ladder's typical task, or when half of its backtest errors
# exceed MEDIAN_SCORE_MAX x the interval before the k scaling (a calibrated 90% interval has a
# median score near 0.4), or when the largest rung, predicted from the smaller ones, is off by
# TREND_Z x one evaluation's scatter, or when the prediction climbs above the ladder's best run by
# more than GAIN_MAX x the range of the ladder's accuracies; noisy when the ladder's accuracy range
# is under SNR_MIN x one evaluation's scatter or that scatter is over NOISE_MAX.
MISS_RATIO = 1.5
MEDIAN_SCORE_MAX = 1.0
TREND_Z = 5.0  # largest rung off the smaller ones' trend by this many evaluation scatters
GAIN_MAX = 3.0
SNR_MIN = 10.0
NOISE_MAX = 0.015
UNMEASURED_SCATTER = ("one evaluation's scatter could not be measured (the runs have too few "
                      "evaluations, or repeated ones): the noise and trend-break checks were skipped")


@dataclass
class TaskNoise:
    acc_sd: float  # detrended SD of single-evaluation accuracy (fraction); NaN: not measurable
    feature_rel_sd: float  # detrended SD of the feature relative to its level; NaN: not measurable
    span: float  # max - min of the runs' final accuracies (the signal the fit sees)
    best: float = float("nan")  # the best run's final accuracy

    @property
    def measured(self) -> bool:
        return math.isfinite(self.acc_sd) and self.acc_sd > 0

    @property
    def snr(self) -> float:
        return self.span / self.acc_sd if self.measured else float("nan")


def series_noise(series, last: int = 5) -> TaskNoise:
    """Scatter of a task's metrics near the end of the largest runs (by N), from its series."""
    acc_sd = end_scatter(series, lambda s: s.acc)
    f_sd = float("nan")
    if series[0].feature is not None:
        f_sd = end_scatter(series, lambda s: s.feature, relative=True)
    finals = [float(np.mean(s.acc[s.tail(last)])) for s in series]  # a WSD run's: its decayed end
    return TaskNoise(acc_sd, f_sd, float(max(finals) - min(finals)), float(max(finals)))


def task_noise(runs: list[RunLog], task: TaskSpec, feature: str = "bpb", last: int = 5) -> TaskNoise:
    """:func:`series_noise` of a task read from the runs."""
    f = resolve_feature(feature, task, runs)
    return series_noise([run_series(r, task, f) for r in runs], last)


@dataclass
class Grade:
    grade: str  # reliable | noisy | unreliable
    reasons: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def grade_task(task: str, noise: TaskNoise, *, calibration=None, converged: bool = True,
               dropped_frac: float = 0.0, signal=None, pred_acc: float | None = None,
               no_interval: str | None = None, knee: float | None = None) -> Grade:
    """The grade and every reason for it (a reliable task lists what was checked, and what
    could not be measured). ``signal``: the task's :class:`analysis.twostep.signal.Signal`;
    ``pred_acc``: the prediction, for how far it climbs above the ladder; ``knee``: the
    accuracy at the fitted link's inflection, to say when the ladder never reached it."""
    m = {"acc_noise_sd": noise.acc_sd, "feature_noise_rel_sd": noise.feature_rel_sd,
         "ladder_span": noise.span, "ladder_best": noise.best, "snr": noise.snr,
         "bootstrap_dropped": dropped_frac, "scatter_measured": noise.measured}
    bad, noisy, unmeasured = [], [], []
    if signal is not None:
        m["feature_compute_tau"] = signal.feature_tau
        if signal.refused:
            return Grade("unreliable", [f"no prediction: {signal.refused}"], m)
        bad += signal.doubts
        unmeasured += signal.unchecked
    if not converged:
        bad.append("a fit did not converge")
    if dropped_frac > 0.1:
        bad.append(f"{dropped_frac:.0%} of bootstrap refits did not converge")
    if no_interval:
        bad.append(no_interval)
    bad += _gain(noise, pred_acc, m, knee)
    if calibration is not None:
        bad += _backtests(task, noise, calibration, m)
    if not noise.measured:
        unmeasured.append(UNMEASURED_SCATTER)
    else:
        if noise.acc_sd > NOISE_MAX:
            noisy.append(f"one evaluation scatters by {100 * noise.acc_sd:.2f} points (> "
                         f"{100 * NOISE_MAX:.1f})")
        if noise.snr < SNR_MIN:
            noisy.append(f"the ladder spans only {noise.snr:.1f}x that scatter (< {SNR_MIN:g})")
    if bad:
        return Grade("unreliable", bad + noisy + unmeasured, m)
    if noisy:
        return Grade("noisy", noisy + unmeasured, m)
    checked = []
    if noise.measured:
        checked.append(f"scatter {100 * noise.acc_sd:.2f} points, {noise.snr:.0f}x below the "
                       f"ladder's span")
    if "backtest_miss_ratio" in m:
        checked.append(f"backtests within {m['backtest_miss_ratio']:.1f}x of the ladder's typical "
                       f"task (mean error {100 * m['backtest_mae']:.2f} points)")
    return Grade("reliable", checked + unmeasured, m)


def _gain(noise: TaskNoise, pred_acc: float | None, m: dict, knee: float | None) -> list[str]:
    """A prediction far above everything the ladder reached rests on the link's assumed shape."""
    if pred_acc is None or not math.isfinite(pred_acc) or not noise.span > 0:
        return []
    ratio = (pred_acc - noise.best) / noise.span
    m["gain_over_span"] = ratio
    if ratio <= GAIN_MAX:
        return []
    past = ""
    if knee is not None and noise.best < knee < pred_acc:
        m["past_unreached_knee"] = knee
        past = (f", past the sigmoid's knee ({100 * knee:.1f}) that the ladder never reached: its "
                f"upper half is the lower half's mirror image, not a fit")
    return [f"the prediction is {100 * (pred_acc - noise.best):.1f} points above the ladder's best "
            f"run, {ratio:.1f}x the range the ladder's accuracies span (> {GAIN_MAX:g}): that far up "
            f"the sigmoid's shape is assumed, not seen{past}"]


def _backtests(task: str, noise: TaskNoise, calibration, m: dict) -> list[str]:
    if task not in calibration.task_k:
        return ["no in-ladder backtest of this task"]
    bad = []
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
    if bias is not None and noise.measured:
        z = abs(bias) / noise.acc_sd
        m.update(last_rung_bias=bias, last_rung_z=z)
        if z > TREND_Z:
            bad.append(f"the largest rung, predicted from the smaller ones, is off by "
                       f"{100 * bias:+.2f} points ({z:.0f}x one evaluation's scatter): "
                       f"the trend breaks at the top of the ladder")
    return bad
