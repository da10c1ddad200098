"""Does the ladder show anything to extrapolate? Checked per task before any fit.

Every fit converges on nonsense: a constant task loss, a loss that rises with compute, or
accuracies that never leave chance give a law whose parameters are whatever the optimiser ends
at, and a prediction that looks like any other. So, on the runs' final values:
  * values outside physical ranges (an accuracy outside [0, 1], a loss that is not positive or
    is beyond any language model's) are bad input: one line naming the file, column and step;
  * a feature that does not fall with compute (Kendall's tau between 6ND and the final feature
    >= 0) leaves nothing to fit: the task is refused, with the reason;
  * accuracies that never leave chance (the best run within a small margin of it) carry no
    trend: the task is refused rather than extrapolated up an unseen sigmoid;
  * weaker signs (a feature that falls only weakly with compute, accuracies that do not rise
    with it) are doubts: the task is graded unreliable and says why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.columns import show
from analysis.runlog import RunLogError
from analysis.twostep.series import RunSeries

MAX_LOSS = 100.0  # nats or bits per token/byte: beyond a uniform guess over 2^100 outcomes
LEAVE_CHANCE = 0.05  # the best run must close this share of the way from chance to 1 ...
LEAVE_CHANCE_SCATTERS = 3.0  # ... and sit this many evaluation scatters above chance
WEAK_TREND = -0.5  # a feature whose tau with compute is above this falls only weakly
TAIL = 0.2  # scatter: the last 20% of evaluations of the largest runs (at least 5)
MIN_SCATTER_POINTS = 4  # a detrended SD needs at least this many distinct evaluations
COPIES = 1e-9  # a scatter below this share of the level is float rounding of repeated rows


def _first_bad(s: RunSeries, values: np.ndarray, bad: np.ndarray, what: str, col: str) -> RunLogError:
    i = int(np.flatnonzero(bad)[0])
    return RunLogError(f"{s.source}: {col} has {values[i]:g} at tokens {show(s.tokens[i])}; {what}")


def check_values(series: list[RunSeries], task, feature) -> None:
    """Physical ranges: accuracies are fractions, a loss is positive and below MAX_LOSS."""
    acc_col = task.columns("acc")[0][0] if len(task.columns("acc")) == 1 else f"task {task.name}'s accuracy"
    for s in series:
        bad = (s.acc < 0) | (s.acc > 1)
        if bad.any():
            raise _first_bad(s, s.acc, bad, "accuracies must be fractions in [0, 1]", acc_col)
        if s.feature is not None:
            bad = (s.feature <= 0) | (s.feature > MAX_LOSS)
            if bad.any():
                raise _first_bad(s, s.feature, bad, f"a loss must be positive and below {MAX_LOSS:g} "
                                 f"(bits or nats; give the log of a perplexity)", feature.label)


def kendall_tau(x, y) -> float:
    """Kendall's tau-a (ties count as neither concordant nor discordant); 0 for < 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return 0.0
    i, j = np.triu_indices(x.size, 1)
    return float(np.mean(np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])))


def _detrended_sd(x: np.ndarray, y: np.ndarray) -> float:
    if np.unique(x).size < MIN_SCATTER_POINTS:
        return float("nan")
    c = np.polyfit(x, y, 1)
    return float(np.std(y - np.polyval(c, x), ddof=2))


def end_scatter(series: list[RunSeries], values, relative: bool = False) -> float:
    """Detrended SD (against log tokens) of ``values(s)`` over the last TAIL of the largest runs'
    evaluations (``relative``: divided by their mean): one evaluation's scatter. NaN where it
    cannot be measured (final evaluations only, or repeated rows: a zero scatter is a copy, not
    a measurement)."""
    nmax = max(s.n for s in series)
    sds = []
    for s in (s for s in series if s.n == nmax):
        # a WSD run: its stable phase, where the trend in log tokens is smooth (not the decay's drop)
        end = s.annealing.decay_from if s.annealing is not None else s.tokens.size
        k = min(end, max(5, int(round(TAIL * end))))
        y = np.asarray(values(s), float)[:end][-k:]
        sd = _detrended_sd(np.log(s.tokens[:end][-k:]), y)
        level = abs(float(np.mean(y)))
        if not sd > COPIES * level:  # rounding noise of repeated rows: not a measurement
            sd = float("nan")
        sds.append(sd / level if relative else sd)
    sds = [v for v in sds if np.isfinite(v)]
    return float(np.mean(sds)) if sds else float("nan")


@dataclass
class Signal:
    """What the ladder shows of one task: final accuracies, their scatter, the feature's trend,
    and whether a prediction can rest on it (``refused``: why not; ``doubts``: why it is weak)."""

    finals: np.ndarray
    chance: float | None
    scatter: float  # one evaluation's accuracy scatter (NaN: not measurable)
    feature_tau: float | None  # Kendall's tau of the final feature with compute
    refused: str | None = None
    doubts: list[str] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # what could not be measured, and so was not checked

    @property
    def best(self) -> float:
        return float(np.max(self.finals))

    @property
    def span(self) -> float:
        return float(np.max(self.finals) - np.min(self.finals))


def ladder_signal(series: list[RunSeries], chance: float | None, last: int = 5) -> Signal:
    """The task's signal on the ladder (see the module's docstring)."""
    compute = np.array([6.0 * s.n * s.d for s in series])
    finals = np.array([float(np.mean(s.acc[s.tail(last)])) for s in series])  # WSD: decayed ends
    tau = None
    if series[0].feature is not None:
        tau = kendall_tau(compute, [float(np.mean(s.feature[s.tail(last)])) for s in series])
    sig = Signal(finals, chance, end_scatter(series, lambda s: s.acc), tau)
    if tau is not None and tau >= 0:
        sig.refused = (f"the feature does not fall with compute (Kendall's tau {tau:+.2f} between "
                       f"6ND and the runs' final values): there is no scaling law to extrapolate")
    elif chance is not None and not leaves_chance(sig.best, chance, sig.scatter):
        sig.refused = (f"the ladder's accuracies never leave chance (best run {100 * sig.best:.2f} "
                       f"points, chance {100 * chance:.2f}): there is no trend to extrapolate, and "
                       f"a sigmoid fitted to its floor would run to its ceiling")
    if tau is not None and 0 > tau > WEAK_TREND:
        sig.doubts.append(f"the feature falls only weakly with compute (Kendall's tau {tau:+.2f})")
    if chance is None:
        sig.unchecked.append("the task declares no chance accuracy, so whether the ladder leaves "
                             "chance was not checked")
    acc_tau = kendall_tau(compute, finals)
    if sig.refused is None and acc_tau <= 0:
        sig.doubts.append(f"accuracy does not rise with compute across the ladder (Kendall's tau "
                          f"{acc_tau:+.2f})")
    return sig


def leaves_chance(best: float, chance: float, scatter: float) -> bool:
    """The best run is above chance by LEAVE_CHANCE of the way to 1 and, where one evaluation's
    scatter is known, by LEAVE_CHANCE_SCATTERS of it."""
    margin = LEAVE_CHANCE * (1 - chance)
    if np.isfinite(scatter):
        margin = max(margin, LEAVE_CHANCE_SCATTERS * scatter)
    return best - chance > margin
