"""Fit both steps of one task and chain them: (N, D) -> feature -> accuracy."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.annealed import points_used
from analysis.fit import single_threaded_blas
from analysis.laws import LAWS, ChinchillaLaw, ComputeLaw, Law, SigmoidLink, TiedChinchillaLaw
from analysis.metrics import CHANCE_ACCURACY, TaskSpec
from analysis.runlog import RunLog
from analysis.twostep.config import TwoStepConfig
from analysis.twostep.direct import DirectLaw, FreeDirectLaw, final_points
from analysis.twostep.series import RunSeries, run_series
from analysis.twostep.single import SingleStepLaw
from analysis.twostep.step1 import StepData, step1_data
from analysis.twostep.step2 import step2_data


@dataclass
class TaskModel:
    """Fitted step 1 and step 2 (or single-step) for one task."""

    task: TaskSpec
    config: TwoStepConfig
    series: list[RunSeries]
    step1: Law
    step2: SigmoidLink
    data1: StepData
    data2: StepData
    single: Law | None = None  # single-step or direct law: (N, D) -> accuracy in one fit
    warnings: list[str] = field(default_factory=list)

    def _step1_input(self, n, d):
        n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
        return (6.0 * n * d,) if self.config.step1 == "compute" else (n, d)

    def _single_input(self, n, d):
        """The direct law is always of (N, D); the single-step law takes step 1's inputs."""
        if self.config.mode == "direct":
            return np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
        return self._step1_input(n, d)

    def predict_loss(self, n, d) -> np.ndarray:
        return self.step1.predict(*self._step1_input(n, d))

    def predict_acc(self, n, d) -> np.ndarray:
        if self.single is not None:
            return self.single.predict(*self._single_input(n, d))
        return self.step2.predict(self.predict_loss(n, d))

    @property
    def converged(self) -> bool:
        laws = [self.step1, self.step2] + ([self.single] if self.single is not None else [])
        return all(l.converged_ for l in laws)

    def diagnostics(self) -> dict:
        used = points_used([s.annealing for s in self.series], int(self.data1.y.size),
                           int(self.data2.y.size), self.config)
        out = {"step1": {"law": type(self.step1).__name__, "params": self.step1.params_,
                         **self.step1.result_.to_json(), "n_points": int(self.data1.y.size),
                         "points": used["step1"]},
               "step2": {"law": type(self.step2).__name__, "params": self.step2.params_,
                         **self.step2.result_.to_json(), "n_points": int(self.data2.y.size),
                         "points": used["step2"]}}
        if self.single is not None:
            key = "direct" if self.config.mode == "direct" else "single_step"
            out[key] = {"law": type(self.single).__name__, "params": self.single.params_,
                        **self.single.result_.to_json()}
        return out


def _fit_quiet(law: Law, *X, y, weights=None) -> Law:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return law.fit(*X, y=y, weights=weights)


def fit_task(runs: list[RunLog], task: TaskSpec, config: TwoStepConfig = TwoStepConfig()) -> TaskModel:
    """Fit both steps of one task on ladder runs. Non-converged fits are recorded in
    ``TaskModel.warnings`` (and ``converged``), never hidden."""
    with single_threaded_blas():
        return _fit_task(runs, task, config)


def _fit_task(runs, task, config) -> TaskModel:
    cfg = config.validate()
    if len(runs) < 2:
        raise ValueError(f"need at least 2 ladder runs to fit, got {len(runs)}")
    series = [run_series(r, task, cfg.feature, cfg.min_evals) for r in runs]
    d1 = step1_data(series, cfg)
    d2 = step2_data(series, cfg)
    if d1.y.size < 5 and cfg.step1 == "chinchilla":
        raise ValueError(f"task {task.name}: {d1.y.size} step-1 points cannot determine the 5 "
                         f"parameters of the Chinchilla law; give more runs")
    # Each run counts once in step 1 whatever its number of checkpoints.
    w1 = 1.0 / np.bincount(d1.run)[d1.run]
    if cfg.step1 == "compute":
        step1 = _fit_quiet(ComputeLaw(), 6.0 * d1.n * d1.d, y=d1.y, weights=w1)
    else:
        tied = cfg.step1_exponents == "tied" or (cfg.step1_exponents == "auto"
                                                  and np.unique(d1.n).size < 3)
        law = TiedChinchillaLaw() if tied else ChinchillaLaw()
        step1 = _fit_quiet(law, d1.n, d1.d, y=d1.y, weights=w1)
    floor = CHANCE_ACCURACY.get(task.name) if cfg.link_floor == "chance" else None
    step2 = _fit_quiet(LAWS[cfg.link](floor=floor, pin_ceiling=cfg.link_ceiling == "one"),
                       d2.x, y=d2.y)
    model = TaskModel(task, cfg, series, step1, step2, d1, d2)
    if cfg.mode == "single":
        fin_n = np.array([s.n for s in series]); fin_d = np.array([s.d for s in series])
        fin_acc = np.array([np.mean(s.acc[s.tail(cfg.last)]) for s in series])
        model.single = _fit_quiet(SingleStepLaw(step1, step2), *model._step1_input(fin_n, fin_d),
                                  y=fin_acc)
    elif cfg.mode == "direct":
        law = DirectLaw() if cfg.direct_exponents == "tied" else FreeDirectLaw()
        fin_n, fin_d, fin_acc = final_points(series, cfg.last)
        model.single = _fit_quiet(law, fin_n, fin_d, y=fin_acc)
    for label, law in (("step 1", step1), ("step 2", step2), (cfg.mode + " law", model.single)):
        if law is not None and not law.converged_:
            model.warnings.append(f"{task.name}: {label} ({type(law).__name__}) did not "
                                  f"converge: {law.result_.summary()}")
    return model
