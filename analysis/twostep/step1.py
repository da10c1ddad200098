"""Step 1 data: the points (N, D, feature) a loss law of (N, D) is fitted on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.twostep.config import TwoStepConfig
from analysis.twostep.series import RunSeries, moving_average


@dataclass
class StepData:
    """Arrays a fit sees, with the run index of each point (for run-level bootstrap)."""

    n: np.ndarray
    d: np.ndarray
    y: np.ndarray
    run: np.ndarray  # index into the run list
    x: np.ndarray | None = None  # step 2 input (feature)


def checkpoint_indices(tokens: np.ndarray, min_tokens: float, per_run: int) -> np.ndarray:
    """The checkpoints of one run that step 1 uses: those with D >= ``min_tokens``, thinned to
    ``per_run`` evenly spaced ones, the last included. Smoothed neighbours are nearly duplicates:
    a few per run carry the information and keep the Huber fit and its bootstrap cheap."""
    idx = np.flatnonzero(tokens >= min_tokens)
    if idx.size == 0:  # an absolute cut past the run's end keeps its last checkpoint
        idx = np.array([tokens.size - 1])
    if idx.size > per_run:
        idx = idx[np.unique(np.round(np.linspace(0, idx.size - 1, per_run)).astype(int))]
    return idx


def step1_data(series: list[RunSeries], cfg: TwoStepConfig) -> StepData:
    n, d, y, r = [], [], [], []
    for i, s in enumerate(series):
        if s.annealing is not None:  # WSD: its decayed end only, unsmoothed (analysis/annealed.py)
            idx = s.annealing.final
            n.append(np.full(idx.size, s.n)); d.append(s.tokens[idx]); y.append(s.feature[idx])
            r.append(np.full(idx.size, i))
        elif cfg.step1_points == "final":
            n.append([s.n]); d.append([s.d]); y.append([float(np.mean(s.feature[-cfg.last:]))])
            r.append([i])
        else:
            idx = checkpoint_indices(s.tokens, max(cfg.step1_min_frac * s.d, cfg.step1_min_tokens),
                                     cfg.step1_per_run)
            f = moving_average(s.feature, cfg.smooth)[idx]
            n.append(np.full(f.size, s.n)); d.append(s.tokens[idx]); y.append(f)
            r.append(np.full(f.size, i))
    return StepData(np.concatenate(n), np.concatenate(d), np.concatenate(y),
                    np.concatenate(r).astype(int))
