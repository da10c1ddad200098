"""Which evaluations of a run are final points: what a run of that length reaches.

A cosine run anneals as it goes; the two-step fit reads its later evaluations as the paper does
(step 1: checkpoints with D at least half the final one, or the mean of its last ones). A
warmup-stable-decay (WSD) run holds its peak learning rate until its decay starts, and its loss
drops sharply in the decay: a stable-phase evaluation is not what a run of that length would
reach. So for a WSD run only its decayed end is a final point: the one step 1 fits and the one
a held-out WSD run's actual is read from. Step 2 (feature -> accuracy) holds along the whole
trajectory; whether a WSD run's stable-phase rows help it is a choice the backtests make
(``TwoStepConfig.wsd_step2``, docs/analysis.md).

A stable run (the phase a WSD ladder's decay branches share) has no final point: it is not
fitted, and its rows reach step 2 through its branches (each branch's log begins with its
parent's rows up to the branch point, so a branch reads as a WSD run trained from scratch).

run.json says what a run is: ``schedule`` (cosine | wsd), ``role`` (run | stable | branch),
``decay_start_step``, ``total_steps``. Imported runs (OLMo CSV, W&B) say nothing: cosine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.runlog import STEP, RunLog


@dataclass(frozen=True)
class Annealing:
    """Where a WSD run's rows stand: ``final`` (row indices of its decayed end) and
    ``decay_from`` (index of the first row inside the decay; rows before it are stable)."""

    final: np.ndarray
    decay_from: int


def annealing(run: RunLog) -> Annealing | None:
    """None for a run whose schedule anneals as it goes (cosine, imported runs)."""
    extra = run.meta.extra
    if extra.get("schedule") != "wsd":
        return None
    steps = np.asarray(run.columns.get(STEP, []), dtype=float)
    if extra.get("role") == "stable":
        return Annealing(np.array([], dtype=int), len(steps))
    total, start = extra.get("total_steps"), extra.get("decay_start_step")
    final = (np.flatnonzero(steps >= float(total)) if total is not None
             else np.arange(len(steps))[-1:])
    decay_from = (int(np.searchsorted(steps, float(start), side="right")) if start is not None
                  else max(len(steps) - 1, 0))
    return Annealing(final.astype(int), decay_from)


def tail_rows(n_rows: int, last: int, ann: Annealing | None) -> np.ndarray:
    """The rows a run's final value is the mean of: its decayed end (WSD), else its last
    ``last`` evaluations (the paper's reading of a cosine run's end)."""
    if ann is not None:
        return ann.final
    return np.arange(max(0, n_rows - last), n_rows)


def run_tail(run: RunLog, last: int) -> np.ndarray:
    return tail_rows(run.n_evals, last, annealing(run))


def fit_runs(runs: list[RunLog], say: Callable[[str], None] | None = None) -> list[RunLog]:
    """The runs a ladder fit reads: a WSD stable run, or a WSD run not decayed yet, has no final
    point and is left out (``say`` is told which and why)."""
    out = []
    for r in runs:
        ann = annealing(r)
        if ann is None or ann.final.size:
            out.append(r)
        elif say is not None:
            why = ("the stable phase of WSD decay branches (constant learning rate): its "
                   "checkpoints are not final points of runs of their length; its rows reach "
                   "step 2 through its branches" if r.meta.extra.get("role") == "stable"
                   else "a WSD run whose decay has not ended: no final point yet")
            say(f"{r.name}: not fitted: {why}")
    return out


def points_used(anns: list[Annealing | None], n1: int, n2: int, cfg) -> dict[str, str]:
    """What the fit read, for the report: which rows of which runs fed each step."""
    wsd = sum(a is not None for a in anns)
    cosine = len(anns) - wsd
    parts1, parts2 = [], []
    if cosine:
        parts1.append(f"{cosine} cosine run(s): " + (
            f"the mean of their last {cfg.last} evaluations" if cfg.step1_points == "final" else
            f"checkpoints with D >= {cfg.step1_min_frac:g} x final (at most {cfg.step1_per_run} each)"))
        parts2.append(f"{cosine} cosine run(s): every evaluation after the first "
                      f"{100 * cfg.step2_skip:g}%")
    if wsd:
        parts1.append(f"{wsd} WSD run(s): their decayed ends only (stable-phase checkpoints are "
                      f"not final points)")
        parts2.append(f"{wsd} WSD run(s): " + (
            "evaluations from the start of their decay" if cfg.wsd_step2 == "decay" else
            f"every evaluation after the first {100 * cfg.step2_skip:g}%, stable phase included"))
    return {"step1": f"{n1} points from " + "; ".join(parts1),
            "step2": f"{n2} points from " + "; ".join(parts2)}
