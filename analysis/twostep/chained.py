"""Fit both steps of one task and chain them: (N, D) -> feature -> accuracy."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.annealed import points_used
from analysis.fit import single_threaded_blas
from analysis.laws import Law, SigmoidLink
from analysis.laws.registry import direct_law, link_law, step1_law
from analysis.metrics import TaskSpec
from analysis.runlog import RunLog
from analysis.twostep.config import TwoStepConfig
from analysis.twostep.direct import final_points
from analysis.twostep.series import Feature, RunSeries, resolve_feature, run_series
from analysis.twostep.signal import Signal, check_values, ladder_signal
from analysis.twostep.single import SingleStepLaw
from analysis.twostep.step1 import StepData, step1_data
from analysis.twostep.step2 import step2_data


@dataclass
class TaskModel:
    """Fitted step 1 and step 2 (or a single law) for one task. ``refused`` says why the task
    was not fitted at all (the ladder shows nothing to extrapolate, ``signal``); the direct
    method fits steps 1 and 2 only where the runs have the feature (for its noise term)."""

    task: TaskSpec
    config: TwoStepConfig
    series: list[RunSeries]
    feature: Feature | None = None
    signal: Signal | None = None
    step1: Law | None = None
    step2: SigmoidLink | None = None
    data1: StepData | None = None
    data2: StepData | None = None
    single: Law | None = None  # single-step or direct law: (N, D) -> accuracy in one fit
    warnings: list[str] = field(default_factory=list)

    @property
    def refused(self) -> str | None:
        return self.signal.refused if self.signal is not None else None

    def predict_loss(self, n, d) -> np.ndarray:
        if self.step1 is None:
            return np.full(np.broadcast(np.atleast_1d(n), np.atleast_1d(d)).shape, np.nan)
        return self.step1.predict(*self.step1.inputs(n, d))

    def predict_acc(self, n, d) -> np.ndarray:
        if self.single is not None:
            return self.single.predict(*self.single.inputs(n, d))
        if self.step2 is None:  # refused
            return np.full(np.broadcast(np.atleast_1d(n), np.atleast_1d(d)).shape, np.nan)
        return self.step2.predict(self.predict_loss(n, d))

    @property
    def laws(self) -> list[Law]:
        return [law for law in (self.step1, self.step2, self.single) if law is not None]

    @property
    def converged(self) -> bool:
        return all(law.converged_ for law in self.laws)

    def diagnostics(self) -> dict:
        out = {}
        used = points_used([s.annealing for s in self.series],
                           *(int(d.y.size) if d is not None else 0 for d in (self.data1, self.data2)),
                           self.config)
        for key, law, data in (("step1", self.step1, self.data1), ("step2", self.step2, self.data2)):
            if law is not None:
                out[key] = {"law": type(law).__name__, "params": law.params_,
                            **law.result_.to_json(), "n_points": int(data.y.size),
                            "points": used[key]}  # which rows of which runs (analysis/annealed.py)
        if self.single is not None:
            key = "direct" if self.config.mode == "direct" else "single_step"
            out[key] = {"law": type(self.single).__name__, "params": self.single.params_,
                        **self.single.result_.to_json()}
        if self.refused:
            out["refused"] = self.refused
        return out


def _fit_quiet(law: Law, *X, y, weights=None) -> Law:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return law.fit(*X, y=y, weights=weights)


def fit_task(runs: list[RunLog], task: TaskSpec, config: TwoStepConfig = TwoStepConfig()) -> TaskModel:
    """Fit both steps of one task on ladder runs. Non-converged fits are recorded in
    ``TaskModel.warnings`` (and ``converged``), never hidden; a task whose ladder shows nothing
    to extrapolate is not fitted (``refused``)."""
    with single_threaded_blas():
        return _fit_task(runs, task, config)


def _fit_task(runs, task, config) -> TaskModel:
    cfg = config  # checked on construction
    if len(runs) < 2:
        raise ValueError(f"need at least 2 ladder runs to fit, got {len(runs)}")
    feature = _feature(cfg, task, runs)
    series = [run_series(r, task, feature, cfg.min_evals) for r in runs]
    check_values(series, task, feature)
    floor = None
    if cfg.link_floor == "chance":
        if task.chance is None:
            raise ValueError(f"--link-floor chance: task '{task.name}' declares no chance accuracy "
                             f"(declare `chance:` in its --task-spec)")
        floor = task.chance
    model = TaskModel(task, cfg, series, feature, ladder_signal(series, task.chance, cfg.last))
    if model.refused:
        return model
    if feature is not None:
        _fit_two_steps(model, floor)
    if cfg.mode == "direct":
        law = direct_law(cfg.direct_exponents)
        fin_n, fin_d, fin_acc = final_points(series, cfg.last)
        model.single = _fit_quiet(law, *law.inputs(fin_n, fin_d), y=fin_acc)
    for label, law in (("step 1", model.step1), ("step 2", model.step2),
                       (cfg.mode + " law", model.single)):
        if law is not None and not law.converged_:
            model.warnings.append(f"{task.name}: {label} ({type(law).__name__}) did not "
                                  f"converge: {law.result_.summary()}")
    return model


def _feature(cfg: TwoStepConfig, task: TaskSpec, runs) -> Feature | None:
    """The ladder's feature. The direct method needs none: where the runs have it, its two-step
    fit still gives the evaluation-noise term of the interval (as it always did), and where they
    do not (accuracies only) it is fitted without it."""
    if cfg.mode != "direct":
        return resolve_feature(cfg.feature, task, runs)
    try:
        f = resolve_feature(cfg.feature, task, runs)
    except (KeyError, ValueError):
        return None
    return f if all(r.has(c) for r in runs for c, _ in f.columns) else None


def _fit_two_steps(model: TaskModel, floor: float | None) -> None:
    cfg, series, task = model.config, model.series, model.task
    d1 = step1_data(series, cfg)
    d2 = step2_data(series, cfg)
    law = step1_law(cfg, np.unique(d1.n).size)
    if d1.y.size < len(law.param_names):
        raise ValueError(f"task {task.name}: {d1.y.size} step-1 points cannot determine the "
                         f"{len(law.param_names)} parameters of {type(law).__name__}; give more runs")
    # Each run counts once in step 1 whatever its number of checkpoints.
    w1 = 1.0 / np.bincount(d1.run)[d1.run]
    step1 = _fit_quiet(law, *law.inputs(d1.n, d1.d), y=d1.y, weights=w1)
    step2 = _fit_quiet(link_law(cfg.link, floor=floor, pin_ceiling=cfg.link_ceiling == "one"),
                       d2.x, y=d2.y)
    model.step1, model.step2, model.data1, model.data2 = step1, step2, d1, d2
    if cfg.mode == "single":
        fin_n = np.array([s.n for s in series]); fin_d = np.array([s.d for s in series])
        fin_acc = np.array([np.mean(s.acc[s.tail(cfg.last)]) for s in series])
        single = SingleStepLaw(step1, step2)
        model.single = _fit_quiet(single, *single.inputs(fin_n, fin_d), y=fin_acc)
