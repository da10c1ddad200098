"""Observational scaling laws (Ruan, Maddison & Hashimoto, 2024) across public models.

Instead of training a ladder, use the hundreds of public models that are already
evaluated: their standard-benchmark scores live in a low-dimensional *capability space*
(in the paper, the first few principal components explain >95% of the variance), each model family maps
log-compute linearly into that space with its own efficiency, and a downstream metric is a
sigmoid of a linear function of the capabilities. Fitting on the smaller (cheaper) models
and predicting the larger ones is the backtest.

The pipeline, module by module, all fitted on training models only:

  data.py        benchmark table, joined metrics, train/test splits
  imputation.py  low-rank imputation of missing scores
  pca.py         the capability space
  link.py        sigmoid link ``y = b + (1 - b) * sigmoid(w . PC + w0)``
  estimator.py   ObservationalScalingLaw: the three stages as one estimator, bootstrap intervals
  selection.py   the variant chosen by validation on the training models only (or the paper's)
  compute.py     per-family maps log-FLOPs -> PCs, the "equivalent FLOPs" axis of a family
  plots.py       figures of a backtest's result
  run.py         run_observational: one backtest, its metrics and predictions (``ladder observe``)

Modules import only modules listed above them (``errors.py`` holds the shared error).
"""

from analysis.observational.data import (load_benchmark_table, split_by_cutoff, split_by_family,
                                         split_from_file, split_random)
from analysis.observational.errors import ObservationalError
from analysis.observational.estimator import ObservationalScalingLaw
from analysis.observational.run import ObservationalResult, run_observational

__all__ = ["ObservationalError", "ObservationalResult", "ObservationalScalingLaw",
           "load_benchmark_table", "run_observational", "split_by_cutoff", "split_by_family",
           "split_from_file", "split_random"]
