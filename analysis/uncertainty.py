"""90% prediction intervals for chained predictions.

Sources of error, and how each is sampled:
  * which runs the ladder happened to have: a run-level bootstrap (resample the runs with
    replacement; a run's checkpoints go with it, in both steps, so step 1 and step 2 see the
    same resampled ladder). Resampling within each size (``stratify=True``) gave intervals
    that covered less than 90% in the in-ladder backtests (docs/analysis.md), so it is off. Each replicate refits both steps, warm-started at the point
    estimate, all replicates in one stacked optimisation (no Python loop over replicates);
  * evaluation noise of the target's own accuracy: the spread of single checkpoints around
    the step-2 curve (unsmoothed residuals), added as Gaussian noise per replicate.
Replicates whose refit did not converge are dropped and counted (never silently used).
The interval is the (5%, 95%) quantile of the replicate predictions: the *raw* interval, which
in-ladder backtests show under-covers when extrapolating; analysis.calibration widens it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.laws.stacked import bootstrap_many
from analysis.twostep import TaskModel, moving_average
from analysis.twostep.signal import end_scatter


@dataclass
class Interval:
    low: float
    high: float
    loss_low: float
    loss_high: float
    n_boot: int
    n_used: int  # replicates whose refits converged
    noise_sd: float  # checkpoint-level accuracy noise added
    samples: np.ndarray | None = None  # accuracy samples (for plots)
    thetas: tuple | None = None  # converged replicate params (step1, step2) or (single,)
    noise_draws: np.ndarray | None = None
    unavailable: str | None = None  # why there is no interval (too few refits converged)

    def band(self, model: TaskModel, n, d, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the chained accuracy along a curve of (n, d) points."""
        if model.single is not None:
            acc = model.single.predict_theta(self.thetas[0], *model.single.inputs(n, d))
        else:
            loss = model.step1.predict_theta(self.thetas[0], *model.step1.inputs(n, d))  # (B, m)
            acc = np.stack([model.step2.predict_theta(self.thetas[1][b:b + 1], loss[b])[0]
                            for b in range(len(loss))])
        acc = acc + self.noise_draws[:, None]
        q = [(1 - level) / 2, (1 + level) / 2]
        return tuple(np.clip(np.quantile(acc, q, axis=0), 0, 1))


def run_bootstrap_weights(n_runs: int, n_boot: int, rng: np.random.Generator,
                          strata: np.ndarray | None = None) -> np.ndarray:
    """(B, n_runs) counts: each row a resampled ladder. With ``strata`` (e.g. the model size
    of each run) runs are resampled within their stratum: a ladder's sizes are design points,
    not random draws, so no replicate loses a whole size."""
    if strata is None:
        strata = np.zeros(n_runs, int)
    W = np.zeros((n_boot, n_runs))
    for g in np.unique(strata):
        members = np.flatnonzero(strata == g)
        idx = members[rng.integers(0, members.size, size=(n_boot, members.size))]
        for b in range(n_boot):
            W[b] += np.bincount(idx[b], minlength=n_runs)
    return W


def checkpoint_noise_sd(model: TaskModel) -> float:
    """SD of single-checkpoint accuracies around the fitted step-2 curve, on the low-loss
    half of the step-2 points (where the target lies), i.e. the noise of one evaluation. The
    direct method has no step 2: one evaluation's scatter at the end of the largest runs, or,
    where that cannot be measured (final evaluations only), the final accuracies' scatter
    around the law, which bounds it from above."""
    if model.step2 is None:
        sd = end_scatter(model.series, lambda s: s.acc)
        if np.isfinite(sd):
            return sd
        n, d = np.array([s.n for s in model.series]), np.array([s.d for s in model.series])
        fin = np.array([np.mean(s.acc[-model.config.last:]) for s in model.series])
        r = fin - model.predict_acc(n, d)
        return float(np.sqrt(np.sum(r ** 2) / max(r.size - len(model.single.theta_), 1)))
    xs, ys = [], []
    for s in model.series:
        skip = int(np.floor(model.config.step2_skip * len(s.tokens)))
        xs.append(moving_average(s.feature, model.config.smooth)[skip:])
        ys.append(s.acc[skip:])
    x, y = np.concatenate(xs), np.concatenate(ys)
    r = y - model.step2.predict(x)
    near = x <= np.median(x)
    return float(np.std(r[near], ddof=1)) if near.sum() > 2 else float(np.std(r, ddof=1))


@dataclass
class BootstrapSamples:
    """Replicate predictions of one fitted task model at m targets: ``acc`` (B, m) with the
    target's evaluation noise added, ``loss`` (B, m; NaN for one-fit laws), converged rows only."""

    acc: np.ndarray
    loss: np.ndarray
    n_boot: int
    n_used: int
    noise_sd: np.ndarray  # per target (its actual may average fewer evaluations)
    thetas: tuple
    noise_draws: np.ndarray  # (B, m)
    unavailable: str | None = None  # too few refits converged: no interval, and why


def bootstrap_samples(model: TaskModel, n, d, *, n_boot: int = 200, seed: int = 0,
                      n_actual_evals=1, stratify: bool = False) -> BootstrapSamples:
    """One run-level bootstrap of ``model``, evaluated at every target (n, d) (arrays): a
    backtest with several held-out runs refits the replicates once, not once per run."""
    return bootstrap_samples_many([model], n, d, n_boot=n_boot, seed=seed,
                                  n_actual_evals=n_actual_evals, stratify=stratify)[0]


def bootstrap_samples_many(models: list[TaskModel], n, d, *, n_boot: int = 200, seed: int = 0,
                           n_actual_evals=1, stratify: bool = False) -> list[BootstrapSamples]:
    """:func:`bootstrap_samples` of several task models (each with its own generator seeded
    with ``seed``, as if alone), their refits stacked where they share inputs
    (:func:`analysis.laws.stacked.bootstrap_many`): same replicates, less per-iteration cost.
    ``n_actual_evals``: per target (or one for all), the evaluations its actual averages."""
    n, d = np.atleast_1d(np.asarray(n, float)), np.atleast_1d(np.asarray(d, float))
    rngs, Ws = [], []
    for model in models:
        rng = np.random.default_rng(seed)
        strata = np.unique([s.n for s in model.series], return_inverse=True)[1] if stratify else None
        Ws.append(run_bootstrap_weights(len(model.series), n_boot, rng, strata))
        rngs.append(rng)
    one = [i for i, m in enumerate(models) if m.single is not None]
    two = [i for i, m in enumerate(models) if m.single is None]
    fits: dict[int, tuple] = {}
    for i, res in zip(one, bootstrap_many([models[i].single for i in one], [Ws[i] for i in one])):
        fits[i] = (res,)
    w1 = [Ws[i][:, models[i].data1.run] / np.bincount(models[i].data1.run)[models[i].data1.run]
          for i in two]
    step1 = bootstrap_many([models[i].step1 for i in two], w1)
    step2 = bootstrap_many([models[i].step2 for i in two], [Ws[i][:, models[i].data2.run] for i in two])
    for i, r1, r2 in zip(two, step1, step2):
        fits[i] = (r1, r2)
    return [_samples(m, n, d, fits[i], rngs[i], n_boot, n_actual_evals) for i, m in enumerate(models)]


def _samples(model: TaskModel, n, d, fits, rng, n_boot: int, n_actual_evals: int) -> BootstrapSamples:
    """Replicate predictions at the targets from the refits, plus the evaluation noise."""
    if model.single is not None:  # single step / direct: one point per run
        th, ok = fits[0]
        acc = model.single.predict_theta(th, *model.single.inputs(n, d))
        loss = np.full_like(acc, np.nan)
        thetas = (th,)
    else:
        (th1, ok1), (th2, ok2) = fits
        ok = ok1 & ok2
        loss = model.step1.predict_theta(th1, *model.step1.inputs(n, d))  # (B, m)
        # step 2 of replicate b at step 1's predictions of replicate b
        acc = sigmoid_rows(model.step2, th2, loss)
        thetas = (th1, th2)
    evals = np.broadcast_to(np.asarray(n_actual_evals, float), (acc.shape[1],))
    noise = checkpoint_noise_sd(model) / np.sqrt(np.maximum(evals, 1))
    # one standard draw per replicate, shared by the targets, each scaled by its own noise: a
    # target's samples are the same whichever other targets are predicted with it
    draws = rng.standard_normal(n_boot)[:, None] * noise[None, :]
    acc = acc + draws
    keep = ok & np.all(np.isfinite(acc), axis=1)
    unavailable = None
    if keep.sum() < max(20, n_boot // 4):
        unavailable = (f"only {keep.sum()}/{n_boot} bootstrap refits converged: too few for a "
                       f"90% interval, so none is given (the point prediction stands)")
    return BootstrapSamples(acc[keep], loss[keep], n_boot, int(keep.sum()), noise,
                            tuple(t[keep] for t in thetas), draws[keep], unavailable)


def sigmoid_rows(link, theta: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Link of parameter row b evaluated at inputs x[b] (B, m) -> (B, m)."""
    F = link.features(x.reshape(-1))  # (1, B*m)
    B, m = x.shape
    out = np.empty((B, m))
    for j in range(m):  # m targets is small; the B replicates are vectorised
        cols = F[:, j::m]
        pred, _ = link.model(theta, cols)  # (B, B): row b at every replicate's input
        out[:, j] = np.diag(pred)
    return link.from_target_space(out)


def bootstrap_interval(model: TaskModel, n: float, d: float, *, n_boot: int = 200,
                       level: float = 0.9, seed: int = 0, n_actual_evals: int = 1,
                       keep_samples: bool = False, stratify: bool = False) -> Interval:
    """Interval for the prediction at (n, d). ``n_actual_evals`` is how many evaluations the
    actual will be averaged over (the noise term shrinks by its sqrt)."""
    bs = bootstrap_samples(model, n, d, n_boot=n_boot, seed=seed, n_actual_evals=n_actual_evals,
                           stratify=stratify)
    return interval_from(bs, 0, level, keep_samples)


def interval_from(bs: BootstrapSamples, j: int, level: float = 0.9,
                  keep_samples: bool = False) -> Interval:
    """The (1-level)/2, (1+level)/2 quantiles of target j's replicate predictions."""
    q = [(1 - level) / 2, (1 + level) / 2]
    if bs.unavailable:
        nan = float("nan")
        return Interval(nan, nan, nan, nan, bs.n_boot, bs.n_used, float(bs.noise_sd[j]),
                        unavailable=bs.unavailable)
    acc, loss = bs.acc[:, j], bs.loss[:, j]
    lo, hi = np.quantile(acc, q)
    llo, lhi = np.quantile(loss, q) if np.isfinite(loss).all() else (np.nan, np.nan)
    return Interval(float(np.clip(lo, 0, 1)), float(np.clip(hi, 0, 1)), float(llo), float(lhi),
                    bs.n_boot, bs.n_used, float(bs.noise_sd[j]), acc if keep_samples else None,
                    bs.thetas if keep_samples else None,
                    bs.noise_draws[:, j] if keep_samples else None)


def coverage(rows: list[dict]) -> dict:
    """Empirical coverage of intervals where actuals are known: rows with pred_acc_low/high
    and actual_acc."""
    have = [r for r in rows if r.get("actual_acc") is not None]
    inside = [r["pred_acc_low"] <= r["actual_acc"] <= r["pred_acc_high"] for r in have]
    widths = [r["pred_acc_high"] - r["pred_acc_low"] for r in rows]
    return {"n": len(have), "covered": int(sum(inside)),
            "coverage": float(np.mean(inside)) if have else None,
            "median_width": float(np.median(widths)) if widths else None}
