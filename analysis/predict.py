"""Fit every task on a ladder and predict a target: the Python API behind `ladder predict`.

    from analysis import read_runs, predict_target, Target
    preds = predict_target(read_runs(files), Target("7B-4T", 6.89e9, 3.95e12), tasks="paper")
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from analysis.annealed import fit_runs, run_tail
from analysis.files import json_safe
from analysis.fit import single_threaded_blas
from analysis.parallel import default_workers, parallel_map
from analysis.runlog import RunLog
from analysis.metrics import TaskSpec, resolve_tasks
from analysis.twostep import TaskModel, TwoStepConfig, fit_task, task_accuracy
from analysis.twostep.series import Feature, resolve_feature
from analysis.calibration import Calibration, extrapolation
from analysis.trust import grade_task, series_noise
from analysis.uncertainty import bootstrap_samples_many, interval_from


@dataclass(frozen=True)
class Target:
    name: str
    n: float
    d: float


@dataclass
class Prediction:
    """One task's prediction for one target (accuracies as fractions in [0, 1])."""

    task: str
    target: str
    pred_acc: float
    pred_acc_low: float
    pred_acc_high: float
    pred_loss: float
    pred_loss_low: float | None = None
    pred_loss_high: float | None = None
    actual_acc: float | None = None
    actual_loss: float | None = None
    loss_metric: str = ""  # what pred_loss / actual_loss measure (the step-1 feature)
    target_n: float | None = None
    target_d: float | None = None
    converged: bool = True
    warnings: list[str] = field(default_factory=list)
    fits: dict = field(default_factory=dict)
    model: TaskModel | None = None  # not serialised
    samples: np.ndarray | None = None  # interval samples (for plots), not serialised
    interval: object | None = None  # analysis.uncertainty.Interval, not serialised
    calibration: Calibration | None = None  # what widened the interval (for plots), not serialised
    raw_low: float | None = None  # the run bootstrap's interval before calibration
    raw_high: float | None = None
    dn: float = 0.0  # ln(N / largest N fitted), 0 inside the ladder
    dt: float = 0.0  # ln(tokens per parameter / largest fitted), 0 inside the ladder
    interval_info: dict = field(default_factory=dict)  # level, how it was calibrated
    grade: object | None = None  # analysis.trust.Grade

    @property
    def grade_name(self) -> str:
        return self.grade.grade if self.grade is not None else "—"

    def to_json(self, details: bool = True) -> dict:
        out = {"task": self.task, "target": self.target, "pred_acc": self.pred_acc,
               "pred_acc_low": self.pred_acc_low, "pred_acc_high": self.pred_acc_high,
               "pred_loss": self.pred_loss}
        if self.actual_acc is not None or self.actual_loss is not None:
            out["actual_acc"] = self.actual_acc
            out["actual_loss"] = self.actual_loss
        if self.grade is not None:
            out["grade"] = self.grade.grade
        if details:
            out.update({"interval": self.interval_info,
                        "extrapolation": {"log_n_beyond_ladder": self.dn,
                                          "log_tokens_per_param_beyond_ladder": self.dt},
                        "trust": self.grade.to_json() if self.grade is not None else None})
            out.update({"loss_metric": self.loss_metric, "target_n": self.target_n, "target_d": self.target_d,
                        "pred_loss_low": self.pred_loss_low, "pred_loss_high": self.pred_loss_high,
                        "converged": self.converged, "warnings": self.warnings, "fits": self.fits})
        return json_safe(out)


def actual_values(run: RunLog, task: TaskSpec, feature: Feature | str | None = "bpb", last: int = 5):
    """The target's actual accuracy and feature: mean of its last ``last`` evaluations (a WSD
    run's: its decayed end, analysis/annealed.py; the feature None where the method reads none
    or the target's log lacks its columns)."""
    rows = run_tail(run, last)
    acc = float(np.mean(task_accuracy(run, task)[rows]))
    if isinstance(feature, str):
        feature = resolve_feature(feature, task, [run])
    if feature is None or not all(run.has(c) for c, _ in feature.columns):
        return acc, None
    return acc, float(np.mean(feature.values(run)[rows]))


def as_tasks(tasks) -> dict[str, TaskSpec]:
    if isinstance(tasks, str):
        return resolve_tasks(tasks)
    if isinstance(tasks, dict):
        return tasks
    return {t.name: t for t in tasks}


def predict_target(runs: list[RunLog], target: Target, tasks="paper",
                   config: TwoStepConfig = TwoStepConfig(), *, actual: RunLog | None = None,
                   **kw) -> list[Prediction]:
    """Fit each task on ``runs`` and predict ``target`` (see :func:`predict_targets`)."""
    return predict_targets(runs, [target], tasks, config,
                           actuals={target.name: actual} if actual is not None else None, **kw)


def predict_targets(runs: list[RunLog], targets: list[Target], tasks="paper",
                    config: TwoStepConfig = TwoStepConfig(), *,
                    actuals: dict[str, RunLog] | None = None, intervals: bool = True,
                    n_boot: int = 200, seed: int = 0, keep_samples: bool = False,
                    warn=None, workers: int | None = None,
                    calibration: Calibration | None = None, grades: bool = True) -> list[Prediction]:
    """Fit each task once on ``runs`` and predict every target. Intervals: one run bootstrap
    per task for all targets, widened by ``calibration`` when given (else the raw bootstrap,
    labelled uncalibrated). Non-converged fits are reported in ``Prediction.warnings``/
    ``converged`` and through ``warn`` (default: stderr)."""
    warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
    actuals = actuals or {}
    runs = fit_runs(runs)  # a WSD stable run has no final point (analysis/annealed.py)
    items = list(as_tasks(tasks).items())
    fit_n = [float(r.n) for r in runs]
    fit_d = [float(r.d) for r in runs]

    def one_chunk(chunk):
        with single_threaded_blas():  # entered once per worker, not per fit
            return _chunk(chunk)

    def _chunk(chunk):
        """Fit a share of the tasks; their bootstraps run stacked (one refit, not one per task)."""
        models = [fit_task(runs, task, config) for _, task in chunk]
        out = [[_point(m, name, task, t, actuals.get(t.name), fit_n, fit_d) for t in targets]
               for m, (name, task) in zip(models, chunk)]
        if intervals:
            # the noise term assumes each actual averages `last` evaluations (fewer if short)
            n_eval = [run_tail(a, config.last).size if (a := actuals.get(t.name)) is not None
                      else config.last for t in targets]
            fitted = [i for i, m in enumerate(models) if not m.refused]
            bss = bootstrap_samples_many([models[i] for i in fitted], [t.n for t in targets],
                                         [t.d for t in targets], n_boot=n_boot, seed=seed,
                                         n_actual_evals=n_eval)
            for i, bs in zip(fitted, bss):
                _add_intervals(out[i], bs, keep_samples, calibration)
        if grades:
            for m, (name, task), preds in zip(models, chunk, out):
                noise = series_noise(m.series, config.last)
                for p in preds:
                    p.grade = grade_task(name, noise, calibration=calibration,
                                         converged=m.converged, signal=m.signal,
                                         dropped_frac=p.interval_info.get("dropped_frac", 0.0),
                                         pred_acc=p.pred_acc, knee=_knee(m),
                                         no_interval=p.interval_info.get("unavailable"))
                    _unconstrained_upper_half(p, m)
        return out

    # each worker takes every w-th task, as parallel_map would hand them out one by one
    w = max(1, min(default_workers() if workers is None else workers, len(items)))
    chunks = [items[i::w] for i in range(w)]
    by_task = {}
    for chunk, res in zip(chunks, parallel_map(one_chunk, chunks, w)):
        by_task.update(zip((name for name, _ in chunk), res))
    out = []
    for name, _ in items:
        preds = by_task[name]
        for p in preds:
            for m in p.warnings:
                warn(m)
        out += preds
    return out


def _unconstrained_upper_half(p: Prediction, model: TaskModel) -> None:
    """A prediction far above a ladder that never reached the link's knee reads the sigmoid's
    upper half, which no rung constrains: its interval then spans the knee to the link's
    ceiling, so no number near the asymptote is given as if it were measured."""
    knee = p.grade.metrics.get("past_unreached_knee") if p.grade is not None else None
    if knee is None or p.pred_acc_low is None or not p.interval_info or p.interval_info.get("unavailable"):
        return
    ceiling = model.step2.params_["hi"]
    p.pred_acc_low, p.pred_acc_high = min(p.pred_acc_low, knee), max(p.pred_acc_high, ceiling)
    p.interval_info["unconstrained"] = (
        f"past the link's knee ({100 * knee:.1f}), which the ladder never reached: the interval "
        f"spans the knee to the link's ceiling ({100 * ceiling:.1f}), which no rung constrains")


def _knee(model: TaskModel) -> float | None:
    """The accuracy at the chained link's inflection (halfway between its asymptotes)."""
    if model.single is not None or model.step2 is None:
        return None
    par = model.step2.params_
    return 0.5 * (par["lo"] + par["hi"])


def _point(model, name, task, target, actual, fit_n, fit_d) -> Prediction:
    config = model.config
    acc = float(model.predict_acc(target.n, target.d)[0])
    loss = float(model.predict_loss(target.n, target.d)[0]) if model.single is None else float("nan")
    p = Prediction(name, target.name, acc, acc, acc, loss, target_n=float(target.n),
                   target_d=float(target.d), converged=model.converged,
                   loss_metric=model.feature.label if model.feature is not None else "",
                   warnings=list(model.warnings), fits=model.diagnostics(), model=model)
    p.dn, p.dt = extrapolation(fit_n, fit_d, float(target.n), float(target.d))
    if model.refused:
        p.interval_info = {"level": 0.9, "calibrated": False, "unavailable": model.refused}
        p.warnings.append(f"{name}: no prediction: {model.refused}")
    if actual is not None:
        p.actual_acc, p.actual_loss = actual_values(actual, task, model.feature, config.last)
    return p


def _add_intervals(preds, bs, keep_samples, calibration):
    """Raw bootstrap interval of every target from one bootstrap, then the calibration."""
    for j, p in enumerate(preds):
        iv = interval_from(bs, j, keep_samples=keep_samples)
        if iv.unavailable:
            _no_interval(p, iv)
            continue
        acc = p.pred_acc
        p.raw_low, p.raw_high = min(iv.low, acc), max(iv.high, acc)
        p.pred_loss_low, p.pred_loss_high = iv.loss_low, iv.loss_high
        info = {"level": 0.9, "raw_low": p.raw_low, "raw_high": p.raw_high,
                "dropped_frac": 1 - iv.n_used / iv.n_boot}
        if calibration is not None:
            lo, hi = calibration.widen(p.task, acc, p.raw_low, p.raw_high, p.dn, p.dt)
            p.pred_acc_low, p.pred_acc_high = max(lo, 0.0), min(hi, 1.0)
            info.update(level=calibration.level, calibrated=True, method=calibration.describe(),
                        k_task=calibration.task_k.get(p.task, calibration.k))
            beyond = calibration.beyond(p.dn, p.dt)
            if beyond:
                info["beyond_calibration"] = beyond
        else:
            p.pred_acc_low, p.pred_acc_high = p.raw_low, p.raw_high
            info.update(calibrated=False, method="run bootstrap only, NOT calibrated: in-ladder "
                        "backtests show it under-covers when extrapolating (docs/analysis.md)")
        p.interval_info = info
        p.fits["interval"] = {"n_boot": iv.n_boot, "n_converged": iv.n_used,
                              "checkpoint_noise_sd": iv.noise_sd}
        if iv.n_used < iv.n_boot:
            p.warnings.append(f"{p.task}: {iv.n_boot - iv.n_used}/{iv.n_boot} bootstrap refits did "
                              f"not converge and were dropped from the interval")
        p.samples = iv.samples
        p.interval = iv
        p.calibration = calibration


def _no_interval(p: Prediction, iv) -> None:
    """Too few bootstrap refits converged: the point prediction stands, the interval is NaN
    (null in JSON) and says why."""
    p.pred_acc_low = p.pred_acc_high = p.raw_low = p.raw_high = float("nan")
    p.interval_info = {"level": 0.9, "calibrated": False, "unavailable": iv.unavailable,
                       "dropped_frac": 1 - iv.n_used / iv.n_boot}
    p.fits["interval"] = {"n_boot": iv.n_boot, "n_converged": iv.n_used,
                          "checkpoint_noise_sd": iv.noise_sd}
    p.warnings.append(f"{p.task}: {iv.unavailable}")
    p.interval = iv


def mean_abs_error(preds: list[Prediction]) -> float | None:
    errs = [abs(p.pred_acc - p.actual_acc) for p in preds
            if p.actual_acc is not None and np.isfinite(p.pred_acc)]
    return float(np.mean(errs)) if errs else None
