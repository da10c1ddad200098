"""Fit every task on a ladder and predict a target: the Python API behind `ladder predict`.

    from analysis import read_runs, predict_target, Target
    preds = predict_target(read_runs(files), Target("7B-4T", 6.89e9, 3.95e12), tasks="paper")
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from analysis.parallel import parallel_map
from analysis.runlog import RunLog
from analysis.metrics import TaskSpec, resolve_tasks
from analysis.twostep import (TaskModel, TwoStepConfig, feature_columns, fit_task, task_accuracy,
                              task_feature)
from analysis.uncertainty import bootstrap_interval


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

    def to_json(self, details: bool = True) -> dict:
        out = {"task": self.task, "target": self.target, "pred_acc": self.pred_acc,
               "pred_acc_low": self.pred_acc_low, "pred_acc_high": self.pred_acc_high,
               "pred_loss": self.pred_loss}
        if self.actual_acc is not None or self.actual_loss is not None:
            out["actual_acc"] = self.actual_acc
            out["actual_loss"] = self.actual_loss
        if details:
            out.update({"loss_metric": self.loss_metric, "target_n": self.target_n, "target_d": self.target_d,
                        "pred_loss_low": self.pred_loss_low, "pred_loss_high": self.pred_loss_high,
                        "converged": self.converged, "warnings": self.warnings, "fits": self.fits})
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in out.items()}


def loss_metric_name(task: TaskSpec, feature: str) -> str:
    cols = feature_columns(task, feature)
    if len(cols) == 1:
        return ("-" if feature == "task_ce" else "") + cols[0][0]
    return ("-" if feature == "task_ce" else "") + " + ".join(f"{w:g}*{c}" for c, w in cols)


def actual_values(run: RunLog, task: TaskSpec, feature: str = "bpb", last: int = 5):
    """The target's actual accuracy and feature: mean of its last ``last`` evaluations."""
    acc = float(np.mean(task_accuracy(run, task)[-last:]))
    loss = float(np.mean(task_feature(run, task, feature)[-last:]))
    return acc, loss


def _as_tasks(tasks) -> dict[str, TaskSpec]:
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
                    warn=None, workers: int | None = None) -> list[Prediction]:
    """Fit each task once on ``runs`` and predict every target. Non-converged fits are
    reported in ``Prediction.warnings``/``converged`` and through ``warn`` (default: stderr)."""
    warn = warn or (lambda m: print(f"warning: {m}", file=sys.stderr))
    actuals = actuals or {}
    items = list(_as_tasks(tasks).items())

    def one_task(item):
        name, task = item
        model = fit_task(runs, task, config)
        return [_predict_one(model, name, task, target, actuals.get(target.name), intervals,
                             n_boot, seed, keep_samples, lambda m: None) for target in targets]

    out = []
    for preds in parallel_map(one_task, items, workers):
        for p in preds:
            for m in p.warnings:
                warn(m)
        out += preds
    return out


def _predict_one(model, name, task, target, actual, intervals, n_boot, seed, keep_samples, warn):
    config = model.config
    acc = float(model.predict_acc(target.n, target.d)[0])
    loss = float(model.predict_loss(target.n, target.d)[0]) if model.single is None else float("nan")
    p = Prediction(name, target.name, acc, acc, acc, loss, target_n=float(target.n),
                   target_d=float(target.d), converged=model.converged,
                   loss_metric=loss_metric_name(task, config.feature),
                   warnings=list(model.warnings), fits=model.diagnostics(), model=model)
    if actual is not None:
        p.actual_acc, p.actual_loss = actual_values(actual, task, config.feature, config.last)
    if intervals:
        n_eval = min(config.last, len(actual.evals)) if actual is not None else config.last
        iv = bootstrap_interval(model, target.n, target.d, n_boot=n_boot, seed=seed,
                                n_actual_evals=n_eval, keep_samples=keep_samples)
        p.pred_acc_low, p.pred_acc_high = min(iv.low, acc), max(iv.high, acc)
        p.pred_loss_low, p.pred_loss_high = iv.loss_low, iv.loss_high
        p.fits["interval"] = {"n_boot": iv.n_boot, "n_converged": iv.n_used,
                              "checkpoint_noise_sd": iv.noise_sd}
        if iv.n_used < iv.n_boot:
            m = (f"{name}: {iv.n_boot - iv.n_used}/{iv.n_boot} bootstrap refits did not "
                 f"converge and were dropped from the interval")
            p.warnings.append(m)
            warn(m)
        p.samples = iv.samples
        p.interval = iv
    return p


def mean_abs_error(preds: list[Prediction]) -> float | None:
    errs = [abs(p.pred_acc - p.actual_acc) for p in preds if p.actual_acc is not None]
    return float(np.mean(errs)) if errs else None
