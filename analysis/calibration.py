"""Calibrated prediction intervals: the run bootstrap, widened by what the ladder's own backtests
show it misses.

The run bootstrap samples which runs the ladder happened to have. It does not sample the error of
the law itself when it is carried beyond the fitted runs, and in-ladder backtests show that error
grows with the distance extrapolated, most in tokens per parameter (docs/analysis.md). So each
prediction's bootstrap interval (low, high around pred) is widened per side to

    k_task * sqrt(h_side^2 + (z * hypot(c_t * dT, c_n * dN))^2),
    dN = max(0, ln N / N_fit_max),  dT = max(0, ln (D/N) / (D/N)_fit_max),

z the normal quantile of the level. (c_t, c_n) come from a small grid (the narrowest median width
on the calibration records), k from split-conformal quantiles of the normalised scores
|error| / half-width: the largest per-scenario quantile, so that the level holds in every
extrapolation regime seen, not only on average, and never below 1; k_task >= k is the task's
own quantile where its backtests miss more than the others'. Honest coverage of a scenario uses a calibration fitted
without it (:func:`loso_coverage`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

LEVEL = 0.9
# the extrapolation axes, as predictions.json names them, and as a reader does
AXES = {"log_n_beyond_ladder": "N", "log_tokens_per_param_beyond_ladder": "tokens per parameter"}
GRID = (0.0, 0.005, 0.01, 0.015, 0.02, 0.03)  # accuracy per unit of log extrapolation


@dataclass
class Record:
    """One backtest prediction: the held-out run's actual and the raw bootstrap interval."""

    scenario: str
    task: str
    target: str
    pred: float
    low: float
    high: float
    actual: float
    dn: float
    dt: float


def extrapolation(fit_n, fit_d, n: float, d: float) -> tuple[float, float]:
    """(dN, dT): log distance of a target beyond the largest N and tokens per parameter fitted."""
    fit_n, fit_d = np.asarray(fit_n, float), np.asarray(fit_d, float)
    dn = max(0.0, math.log(n / fit_n.max()))
    dt = max(0.0, math.log((d / n) / (fit_d / fit_n).max()))
    return dn, dt


def _z(level: float) -> float:
    """The two-sided normal quantile (1.645 for 0.9); the standard library's, as exact as
    scipy's and without importing scipy to predict."""
    return NormalDist().inv_cdf(0.5 + level / 2)


FORMAT = "ladder-calibration/1"


def _halfwidths(pred, low, high, dn, dt, c_t: float, c_n: float, z: float):
    """(lower, upper) half-widths: each bootstrap side combined with the extrapolation term."""
    ex = z * np.hypot(c_t * np.asarray(dt, float), c_n * np.asarray(dn, float))
    return np.hypot(np.asarray(pred) - low, ex), np.hypot(np.asarray(high) - pred, ex)


def _scores(a: dict, c_t: float, c_n: float, z: float) -> np.ndarray:
    """|error| / the half-width on the error's side."""
    lo, hi = _halfwidths(a["pred"], a["low"], a["high"], a["dn"], a["dt"], c_t, c_n, z)
    e = a["actual"] - a["pred"]
    return np.where(e > 0, e / np.maximum(hi, 1e-12), -e / np.maximum(lo, 1e-12))


def _arrays(records: list[Record]) -> dict:
    a = {k: np.array([getattr(r, k) for r in records], float)
         for k in ("pred", "low", "high", "actual", "dn", "dt")}
    a["scenario"] = np.array([str(r.scenario) for r in records], dtype=object)
    a["task"] = np.array([str(r.task) for r in records], dtype=object)
    return a


def conformal_quantile(scores, level: float) -> float:
    """The ceil((n+1) level)-th smallest score (split conformal); the largest if n is small."""
    s = np.sort(np.asarray(scores, float))
    i = int(math.ceil((s.size + 1) * level)) - 1
    return float(s[min(i, s.size - 1)])


@dataclass
class Calibration:
    level: float
    k: float
    c_t: float
    c_n: float
    task_k: dict[str, float] = field(default_factory=dict)
    task_mae: dict[str, float] = field(default_factory=dict)
    task_median_score: dict[str, float] = field(default_factory=dict)  # before the k scaling
    task_last_rung_bias: dict[str, float] = field(default_factory=dict)  # see last_rung_bias
    scenarios: list[str] = field(default_factory=list)
    n_records: int = 0
    fingerprint: str = ""
    # the farthest the backtests extrapolated (dN, dT): beyond, the widening is extrapolated too
    dn_max: float | None = None
    dt_max: float | None = None
    # per scenario, the coverage of a calibration fitted without it (calibrate_ladder's)
    loso_coverage: dict[str, dict] = field(default_factory=dict)

    def beyond(self, dn: float, dt: float) -> dict[str, list[float]]:
        """The axes on which a prediction extrapolates farther than any backtest that calibrated
        this interval: {axis: [the prediction's distance, the backtests' largest]}."""
        out = {}
        for axis, d, top in zip(AXES, (dn, dt), (self.dn_max, self.dt_max)):
            if top is not None and d > top + 1e-9:
                out[axis] = [float(d), float(top)]
        return out

    def widen(self, task: str, pred: float, low: float, high: float, dn: float, dt: float):
        """Calibrated (low, high) of a prediction whose raw bootstrap interval is (low, high)."""
        lo, hi = _halfwidths(pred, low, high, dn, dt, self.c_t, self.c_n, _z(self.level))
        k = self.task_k.get(task, self.k)
        return float(pred - k * lo), float(pred + k * hi)

    def widen_many(self, task: str, pred, low, high, dn, dt) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`widen` for arrays of predictions (a band along a curve)."""
        lo, hi = _halfwidths(pred, low, high, dn, dt, self.c_t, self.c_n, _z(self.level))
        k = self.task_k.get(task, self.k)
        return np.asarray(pred) - k * lo, np.asarray(pred) + k * hi

    def describe(self) -> str:
        return (f"{self.level:.0%} interval: run bootstrap widened by the extrapolation term "
                f"(c_t={self.c_t:g}, c_n={self.c_n:g}) and scaled by k={self.k:.2f}, calibrated on "
                f"{self.n_records} backtest predictions of {len(self.scenarios)} in-ladder scenarios "
                f"({', '.join(self.scenarios)})")

    def to_json(self) -> dict:
        return {"format": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, d: dict, source: str = "calibration") -> "Calibration":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"{source}: not a calibration file (expected \"format\": \"{FORMAT}\", "
                             f"as `ladder backtest --intervals` writes)")
        d = {k: v for k, v in d.items() if k != "format"}
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("level", "k", "c_t", "c_n") if k not in d]
        if missing or set(d) - known:
            raise ValueError(f"{source}: fields {', '.join(missing or sorted(set(d) - known))} "
                             f"missing or unknown")
        return cls(**d)


def beyond_factors(beyond: dict[str, list[float]]) -> list[tuple[str, float, float]]:
    """(axis as a reader names it, the target's factor beyond the ladder, the backtests'
    largest) for each axis of :meth:`Calibration.beyond`."""
    return [(AXES.get(k, k), math.exp(d), math.exp(top)) for k, (d, top) in beyond.items()]


def fit_calibration(records: list[Record], level: float = LEVEL, grid=GRID,
                    grid_n=None) -> Calibration:
    """(c_t, c_n) from ``grid`` (c_n from ``grid_n`` when given) for the narrowest median
    calibrated width; k = the largest per-scenario conformal quantile of the scores; per task,
    k_task = max(k, its own quantile)."""
    if not records:
        raise ValueError("no backtest predictions to calibrate on")
    a, z = _arrays(records), _z(level)
    scen = list(dict.fromkeys(a["scenario"]))
    best = None
    for c_t, c_n in itertools.product(grid, grid if grid_n is None else grid_n):
        sc = _scores(a, c_t, c_n, z)
        k = max(conformal_quantile(sc[a["scenario"] == s], level) for s in scen)
        k = max(k, 1.0)  # only ever widen: a few lucky backtests must not shrink the bootstrap
        lo, hi = _halfwidths(a["pred"], a["low"], a["high"], a["dn"], a["dt"], c_t, c_n, z)
        width = float(np.median(k * (lo + hi)))
        if best is None or width < best[0] - 1e-12:
            best = (width, c_t, c_n, k, sc)
    _, c_t, c_n, k, sc = best
    task_k, task_mae, task_med = {}, {}, {}
    for t in dict.fromkeys(a["task"]):
        m = a["task"] == t
        task_k[t] = max(k, conformal_quantile(sc[m], level))
        task_mae[t] = float(np.mean(np.abs(a["actual"][m] - a["pred"][m])))
        task_med[t] = float(np.median(sc[m]))
    return Calibration(level, float(k), float(c_t), float(c_n), task_k, task_mae, task_med,
                       last_rung_bias(records), scen, len(records),
                       dn_max=float(a["dn"].max()), dt_max=float(a["dt"].max()))


def last_rung_bias(records: list[Record]) -> dict[str, float]:
    """Per task, the mean signed error (actual - predicted) of the nearest extrapolation in N
    alone (the largest size held out, no tokens-per-parameter extrapolation): how far the
    largest rung sits off the trend of the smaller ones."""
    near = [r for r in records if r.dt == 0 and r.dn > 0]
    if not near:
        return {}
    dn0 = min(r.dn for r in near)
    out: dict[str, list[float]] = {}
    for r in near:
        if abs(r.dn - dn0) < 1e-9:
            out.setdefault(str(r.task), []).append(r.actual - r.pred)
    return {t: float(np.mean(v)) for t, v in out.items()}


def loso_coverage(records: list[Record], level: float = LEVEL) -> dict[str, dict]:
    """Per scenario: coverage and median width of the intervals calibrated on all *other*
    scenarios (leave one scenario out), next to the raw bootstrap's. This is the honest
    coverage: no scenario's own errors set the width it is judged by."""
    out = {}
    for s in dict.fromkeys(r.scenario for r in records):
        rest = [r for r in records if r.scenario != s]
        mine = [r for r in records if r.scenario == s]
        row = {"n": len(mine),
               "coverage_raw": float(np.mean([r.low <= r.actual <= r.high for r in mine])),
               "median_width_raw": float(np.median([r.high - r.low for r in mine]))}
        if not rest:
            out[s] = {**row, "coverage": None, "median_width": None,
                      "note": "no other scenario to calibrate on"}
            continue
        cal = fit_calibration(rest, level)
        iv = [cal.widen(r.task, r.pred, r.low, r.high, r.dn, r.dt) for r in mine]
        out[s] = {**row, "coverage": float(np.mean([lo <= r.actual <= hi for r, (lo, hi) in zip(mine, iv)])),
                  "median_width": float(np.median([hi - lo for lo, hi in iv])),
                  "calibrated_on": cal.scenarios, "k": cal.k, "c_t": cal.c_t, "c_n": cal.c_n}
    return out
