"""Step 2 data: (feature, accuracy) over every run's later checkpoints, smoothed, for the link."""

from __future__ import annotations

import numpy as np

from analysis.twostep.config import TwoStepConfig
from analysis.twostep.series import RunSeries, moving_average
from analysis.twostep.step1 import StepData


def step2_data(series: list[RunSeries], cfg: TwoStepConfig) -> StepData:
    x, y, n, d, r = [], [], [], [], []
    for i, s in enumerate(series):
        skip = int(np.floor(cfg.step2_skip * len(s.tokens)))
        if s.annealing is None:
            fx = moving_average(s.feature, cfg.smooth)[skip:]
            fy = moving_average(s.acc, cfg.smooth)[skip:]
        else:  # WSD: averaged inside the stable phase only; the decay's steep rows as they are
            cut = s.annealing.decay_from
            skip = max(skip, cut) if cfg.wsd_step2 == "decay" else skip
            fx, fy = (np.concatenate([moving_average(v[:cut], cfg.smooth), v[cut:]])[skip:]
                      for v in (s.feature, s.acc))
        x.append(fx); y.append(fy); n.append(np.full(fx.size, s.n)); d.append(s.tokens[skip:])
        r.append(np.full(fx.size, i))
    return StepData(np.concatenate(n), np.concatenate(d), np.concatenate(y),
                    np.concatenate(r).astype(int), np.concatenate(x))
