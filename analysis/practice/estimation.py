"""Estimation practice for loss laws (Choshen, Zhang & Andreas 2025, "A Hitchhiker's Guide to
Scaling Law Estimation"), on the shared two-step fitter.

What the guide tests, and what this module lets a ladder test on its own runs:
  * fit on intermediate checkpoints with the start of each run dropped (by a fraction of the
    run or by a token count), versus one final point per run;
  * ARE, the absolute relative error |pred - actual| / actual of the predicted loss;
  * fit a target from its own partial training (its first 10-30%) together with the ladder;
  * borrow the exponents alpha, beta from another ladder/family and fit only E, A, B;
  * "no scaling law" baselines from the target's partial run: its last observed loss, its
    best loss so far, and a power law in D fitted on the partial run alone.

    est = LossLawEstimator(task="hellaswag", drop_frac=0.1).fit(ladder_runs)
    est.params_, est.predict(n, d)
    LossLawEstimator(task="hellaswag", fixed_exponents=est.exponents_).fit(other_ladder)
    LossLawEstimator(task="hellaswag").fit(ladder_runs, partial=[(target_run, 0.3, target_d)])

Every comparison is scored on held-out runs by :func:`practice_backtest` (never on a real
target); :func:`compare_configs` compares whole two-step configurations (loss ARE and chained
accuracy) through :func:`analysis.practice.backtest.backtest`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from analysis.practice.backtest import BacktestResult, backtest, split_holdout
from analysis.files import finite_or_none
from analysis.fit import single_threaded_blas
from analysis.laws import ChinchillaLaw, ComputeLaw, Law, TiedChinchillaLaw, power_law_starts
from analysis.predict import _as_tasks, actual_values
from analysis.runlog import RunLog
from analysis.metrics import TaskSpec
from analysis.twostep import RunSeries, TwoStepConfig, fit_task, moving_average, run_series
from analysis.twostep.step1 import checkpoint_indices


def are(pred, actual) -> np.ndarray:
    """Absolute relative error |pred - actual| / |actual| (the guide's ARE)."""
    pred, actual = np.asarray(pred, float), np.asarray(actual, float)
    return np.abs(pred - actual) / np.abs(actual)


# ------------------------------------------------------------------------------ laws


class FixedExponentLaw(ChinchillaLaw):
    """L(N, D) = E + A/N^alpha + B/D^beta with alpha, beta given (borrowed from another
    ladder or family): only E, A, B are fitted. The guide finds borrowed exponents let a
    small or cheap ladder predict as well as a larger one would when the exponents transfer."""

    param_names = ("E", "A", "B", "alpha", "beta")

    def __init__(self, alpha: float, beta: float, delta: float = 1e-3):
        super().__init__(delta=delta)
        self.alpha_fixed, self.beta_fixed = alpha, beta

    def check_params(self) -> None:
        super().check_params()
        a, b = self.alpha_fixed, self.beta_fixed
        if not (np.isfinite(a) and np.isfinite(b) and a > 0 and b > 0):
            raise ValueError(f"FixedExponentLaw: exponents must be positive, got alpha={a}, beta={b}")

    def _full(self, theta):
        n = theta.shape[0]
        ex = np.tile([self.alpha_fixed, self.beta_fixed], (n, 1))
        return np.concatenate([theta, ex], axis=1)

    def model(self, theta, F):
        pred, J = super().model(self._full(theta), F)
        return pred, J[..., :3]

    def starts(self, F, z, w):
        return power_law_starts(z, self.center_, np.arange(0.0, 30.0, 2.5),
                                fixed_exponents=(self.alpha_fixed, self.beta_fixed))

    def bounds(self, F, z):
        return super().bounds(F, z)[:3]

    def named(self, t):
        return super().named(np.concatenate([t, [self.alpha_fixed, self.beta_fixed]]))


class PowerLawInD(ComputeLaw):
    """L(D) = E + B/D^beta for one model (N fixed): the target-only extrapolation of its own
    partial run, the guide's single-model baseline. Same fitter as :class:`ComputeLaw`."""

    param_names = ("E", "B", "beta")

    def named(self, t):
        d = super().named(t)
        return {"E": d["E"], "B": d["A"], "beta": d["alpha"]}


# ------------------------------------------------------------------------------ estimator


@dataclass
class PartialRun:
    """A target's partial training: its run log cut at ``frac`` of ``planned_d`` tokens."""

    run: RunLog
    frac: float
    planned_d: float

    def __post_init__(self):
        if not 0 < self.frac < 1:
            raise ValueError(f"partial run {self.run.name}: fraction {self.frac} must be in (0, 1)")


def partial_series(s: RunSeries, frac: float, planned_d: float) -> RunSeries:
    """The checkpoints a partially trained target would have: tokens <= frac x planned D."""
    keep = s.tokens <= frac * planned_d * (1 + 1e-9)
    if keep.sum() < 2:
        raise ValueError(f"partial run {s.name}: only {int(keep.sum())} evaluation(s) within the "
                         f"first {frac:.0%} of {planned_d:.3g} tokens; need at least 2")
    return RunSeries(s.name, s.n, s.tokens[keep], s.feature[keep], s.acc[keep], s.source)


class LossLawEstimator:
    """Step 1 (N, D) -> task loss, with the guide's estimation choices as parameters.

    points: "final" (mean of each run's last ``last`` evaluations) or "intermediate" (each run's
    checkpoints with D >= max(drop_frac x run's D, drop_tokens), moving average of ``smooth``,
    thinned to ``per_run`` evenly spaced, the last included; every run weighs the same).
    exponents: "tied" (alpha = beta), "free", or ``fixed_exponents=(alpha, beta)``.
    ``fit(runs, partial=[PartialRun...])`` adds targets' partial runs as extra runs (their
    checkpoints from ``drop_frac`` x planned D up to where they stop).

    Fitted: ``law_`` (the :mod:`analysis.laws` estimator), ``params_``, ``exponents_``,
    ``converged_``, ``n_points_``."""

    def __init__(self, task: TaskSpec, *, feature: str = "bpb", points: str = "intermediate",
                 drop_frac: float = 0.1, drop_tokens: float = 0.0, per_run: int = 8,
                 smooth: int = 5, last: int = 5, exponents: str = "tied",
                 fixed_exponents: tuple[float, float] | None = None, min_evals: int = 5):
        if points not in ("final", "intermediate"):
            raise ValueError(f"points={points!r}; expected 'final' or 'intermediate'")
        if exponents not in ("tied", "free"):
            raise ValueError(f"exponents={exponents!r}; expected 'tied' or 'free'")
        if not 0 <= drop_frac < 1 or drop_tokens < 0:
            raise ValueError(f"need 0 <= drop_frac < 1 and drop_tokens >= 0 (got {drop_frac}, "
                             f"{drop_tokens})")
        self.task, self.feature, self.points = task, feature, points
        self.drop_frac, self.drop_tokens, self.per_run = drop_frac, drop_tokens, per_run
        self.smooth, self.last, self.exponents = smooth, last, exponents
        self.fixed_exponents, self.min_evals = fixed_exponents, min_evals
        self.law_: Law | None = None

    def _points(self, s: RunSeries, planned_d: float | None = None):
        if self.points == "final" and planned_d is None:
            return np.array([s.d]), np.array([float(np.mean(s.feature[-self.last:]))])
        full_d = planned_d if planned_d is not None else s.d
        idx = checkpoint_indices(s.tokens, max(self.drop_frac * full_d, self.drop_tokens), self.per_run)
        return s.tokens[idx], moving_average(s.feature, self.smooth)[idx]

    def fit(self, runs: list[RunLog], partial: list[PartialRun] = ()) -> "LossLawEstimator":
        series = [run_series(r, self.task, self.feature, self.min_evals) for r in runs]
        parts = [(partial_series(run_series(p.run, self.task, self.feature, 1), p.frac,
                                 p.planned_d), p.planned_d) for p in partial]
        n, d, y, w = [], [], [], []
        for s, planned in [(s, None) for s in series] + parts:
            dd, yy = self._points(s, planned)
            n.append(np.full(dd.size, s.n)); d.append(dd); y.append(yy)
            w.append(np.full(dd.size, 1.0 / dd.size))  # each run counts once
        n, d, y, w = map(np.concatenate, (n, d, y, w))
        if self.fixed_exponents is not None:
            law = FixedExponentLaw(*self.fixed_exponents)
        else:
            law = TiedChinchillaLaw() if self.exponents == "tied" else ChinchillaLaw()
        need = len(law.param_names) - (2 if self.fixed_exponents is not None else
                                       1 if self.exponents == "tied" else 0)
        if y.size < need:
            raise ValueError(f"task {self.task.name}: {y.size} loss points cannot determine "
                             f"{need} parameters; give more runs")
        if np.unique(n).size < 2 and self.fixed_exponents is None:
            raise ValueError(f"task {self.task.name}: all runs have the same N; the N term is not "
                             f"identified (need 2+ model sizes, or fixed_exponents)")
        with single_threaded_blas(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            self.law_ = law.fit(n, d, y=y, weights=w)
        self.n_points_ = int(y.size)
        return self

    def _check(self):
        if self.law_ is None:
            raise RuntimeError("LossLawEstimator is not fitted; call fit() first")

    @property
    def params_(self) -> dict[str, float]:
        self._check()
        return self.law_.params_

    @property
    def exponents_(self) -> tuple[float, float]:
        p = self.params_
        return p["alpha"], p["beta"]

    @property
    def converged_(self) -> bool:
        self._check()
        return self.law_.converged_

    def predict(self, n, d) -> np.ndarray:
        self._check()
        return self.law_.predict(np.atleast_1d(np.asarray(n, float)),
                                 np.atleast_1d(np.asarray(d, float)))

    def __repr__(self):
        return f"LossLawEstimator({self.task.name}, points={self.points}, law={self.law_!r})"


# ------------------------------------------------------------------------------ baselines


def partial_baselines(run: RunLog, task: TaskSpec, frac: float, planned_d: float, *,
                      feature: str = "bpb", smooth: int = 5, drop_frac: float = 0.1) -> dict:
    """"No scaling law" predictions of a target's final loss from its first ``frac`` of
    ``planned_d`` tokens: the last observed loss and the best so far (moving average of
    ``smooth``), and a power law in D fitted on the partial run's own checkpoints after
    ``drop_frac`` of planned D (unsmoothed: a trailing average lags a falling curve)."""
    s = partial_series(run_series(run, task, feature, 1), frac, planned_d)
    sm = moving_average(s.feature, smooth)
    out = {"last_observed": float(sm[-1]), "best_so_far": float(np.min(sm))}
    keep = s.tokens >= drop_frac * planned_d
    if keep.sum() >= 4:
        with single_threaded_blas(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            law = PowerLawInD().fit(s.tokens[keep], y=s.feature[keep])  # raw: a trailing average lags
        out["power_law_in_d"] = float(law.predict(np.array([planned_d]))[0]) if law.converged_ \
            else float("nan")
    else:
        out["power_law_in_d"] = float("nan")
    return out


# ------------------------------------------------------------------------------ backtests


@dataclass
class PracticeRow:
    method: str
    task: str
    target: str
    pred_loss: float
    actual_loss: float
    pred_acc: float | None
    actual_acc: float
    converged: bool = True

    @property
    def loss_are(self) -> float:
        return float(are(self.pred_loss, self.actual_loss))

    @property
    def acc_error(self) -> float | None:
        return None if self.pred_acc is None else float(self.pred_acc - self.actual_acc)

    def to_json(self) -> dict:
        return {"method": self.method, "task": self.task, "target": self.target,
                "pred_loss": finite_or_none(self.pred_loss), "actual_loss": self.actual_loss,
                "loss_are": finite_or_none(self.loss_are), "pred_acc": finite_or_none(self.pred_acc),
                "actual_acc": self.actual_acc, "acc_error": finite_or_none(self.acc_error),
                "converged": self.converged}


@dataclass
class PracticeResult:
    holdout: list[str]
    rows: list[PracticeRow] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        return list(dict.fromkeys(r.method for r in self.rows))

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(r.task for r in self.rows))

    def _select(self, method, task=None):
        return [r for r in self.rows if r.method == method and (task is None or r.task == task)]

    def loss_are(self, method: str, task: str | None = None) -> float:
        v = [r.loss_are for r in self._select(method, task) if np.isfinite(r.loss_are)]
        return float(np.mean(v)) if v else float("nan")

    def acc_mae(self, method: str, task: str | None = None) -> float:
        v = [abs(r.acc_error) for r in self._select(method, task)
             if r.acc_error is not None and np.isfinite(r.acc_error)]
        return float(np.mean(v)) if v else float("nan")

    def table(self) -> str:
        """Markdown: per task, loss ARE (%) and accuracy MAE (points) of every method."""
        ms = self.methods
        head = "| task | " + " | ".join(f"{m}: ARE % | {m}: acc" for m in ms) + " |\n"
        out = [head, "|---|" + "---|---|" * len(ms) + "\n"]
        for t in self.tasks + [None]:
            cells = []
            for m in ms:
                a, e = 100 * self.loss_are(m, t), 100 * self.acc_mae(m, t)
                cells += [f"{a:.2f}", "—" if not np.isfinite(e) else f"{e:.2f}"]
            out.append(f"| {t or '**mean**'} | " + " | ".join(cells) + " |\n")
        return "".join(out)

    def to_json(self) -> dict:
        return {"holdout": self.holdout,
                "summary": {m: {"loss_are": finite_or_none(self.loss_are(m)),
                                "acc_mae": finite_or_none(self.acc_mae(m)),
                                "per_task_loss_are": {t: finite_or_none(self.loss_are(m, t)) for t in self.tasks},
                                "per_task_acc_mae": {t: finite_or_none(self.acc_mae(m, t)) for t in self.tasks}}
                            for m in self.methods},
                "rows": [r.to_json() for r in self.rows]}


def _rows_from_backtest(method: str, r: BacktestResult) -> list[PracticeRow]:
    return [PracticeRow(method, p.task, p.target, p.pred_loss, p.actual_loss, p.pred_acc,
                        p.actual_acc, p.converged) for p in r.predictions]


def compare_configs(runs: list[RunLog], holdout: list[str], configs: dict[str, TwoStepConfig],
                    tasks="paper") -> PracticeResult:
    """Backtest whole two-step configurations on the same held-out runs: per task, the
    step-1 loss ARE and the chained accuracy error of each (e.g. step 1 on intermediate
    checkpoints vs final points)."""
    res = PracticeResult(list(holdout))
    for name, cfg in configs.items():
        res.rows += _rows_from_backtest(name, backtest(runs, holdout, tasks, cfg,
                                                       warn=lambda m: None))
    return res


def step1_points_configs(drop_frac: float = 0.1, base: TwoStepConfig = TwoStepConfig()):
    """The must-show comparison: final points only vs intermediate checkpoints with the first
    ``drop_frac`` of each run dropped (and the current default, for reference)."""
    from dataclasses import replace
    out = {"final": replace(base, step1_points="final"),
           f"intermediate, first {drop_frac:.0%} dropped": replace(
               base, step1_points="intermediate", step1_min_frac=drop_frac)}
    if not (base.step1_points == "intermediate" and base.step1_min_frac == drop_frac):
        out[f"current default ({base.step1_points}, first {base.step1_min_frac:.0%} dropped)"] = base
    return out


def practice_backtest(runs: list[RunLog], holdout: list[str],
                      estimators: dict[str, dict], tasks="paper", *,
                      partial_fracs: tuple[float, ...] = (), baselines: bool = True,
                      config: TwoStepConfig = TwoStepConfig()) -> PracticeResult:
    """Hold out the runs whose size/multiplier is in ``holdout``; predict each one's final task
    loss with every estimator (``{name: LossLawEstimator kwargs}``, fitted on the rest), and
    for each fraction in ``partial_fracs`` also with the ladder plus the target's own first
    ``frac`` of training (``"<name> + partial 30%"``) and the partial-run baselines. Accuracy
    is chained through step 2 fitted on the training runs with ``config``."""
    train, test = split_holdout(runs, holdout)
    if len(train) < 3 or not test:
        raise ValueError(f"holding out {', '.join(holdout)} leaves {len(train)} runs to fit and "
                         f"{len(test)} to predict")
    res = PracticeResult(list(holdout))
    for name, task in _as_tasks(tasks).items():
        step2 = fit_task(train, task, config).step2
        actual = {r.name: actual_values(r, task, config.feature, config.last) for r in test}
        chain = lambda loss: float(step2.predict(np.array([loss]))[0]) if np.isfinite(loss) else None  # noqa: E731
        for mname, kw in estimators.items():
            est = LossLawEstimator(task, feature=config.feature, **kw).fit(train)
            for r in test:
                loss = float(est.predict(r.n, r.d)[0])
                acc, act_loss = actual[r.name]
                res.rows.append(PracticeRow(mname, name, r.name, loss, act_loss, chain(loss), acc,
                                            est.converged_))
            for frac in partial_fracs:
                for r in test:
                    e2 = LossLawEstimator(task, feature=config.feature, **kw).fit(
                        train, partial=[PartialRun(r, frac, r.d)])
                    loss = float(e2.predict(r.n, r.d)[0])
                    acc, act_loss = actual[r.name]
                    res.rows.append(PracticeRow(f"{mname} + partial {frac:.0%}", name, r.name, loss,
                                                act_loss, chain(loss), acc, e2.converged_))
        if baselines:
            for frac in partial_fracs:
                for r in test:
                    b = partial_baselines(r, task, frac, r.d, feature=config.feature,
                                          smooth=config.smooth)
                    acc, act_loss = actual[r.name]
                    for k, loss in b.items():
                        res.rows.append(PracticeRow(f"baseline {k.replace('_', ' ')} {frac:.0%}",
                                                    name, r.name, loss, act_loss, chain(loss), acc,
                                                    bool(np.isfinite(loss))))
    return res


def borrowed_exponents(runs: list[RunLog], task: TaskSpec, **kw) -> tuple[float, float]:
    """(alpha, beta) of a loss law fitted on ``runs`` (another ladder or family), to pass as
    ``fixed_exponents`` to an estimator on a different ladder."""
    est = LossLawEstimator(task, **kw).fit(runs)
    if not est.converged_:
        raise ValueError(f"task {task.name}: the fit to borrow exponents from did not converge")
    return est.exponents_


__all__ = ["FixedExponentLaw", "LossLawEstimator", "PartialRun", "PowerLawInD", "PracticeResult",
           "PracticeRow", "are", "borrowed_exponents", "compare_configs", "partial_baselines",
           "partial_series", "practice_backtest", "step1_points_configs"]
