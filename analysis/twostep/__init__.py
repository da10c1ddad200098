"""Two-step task scaling laws (Bhagia et al. 2024): (N, D) -> task loss -> accuracy.

Step 1 fits the intermediate feature (default: task bits-per-byte of the correct answer) as
a Chinchilla law of (N, D) on one point per run (the mean of its last 5 evaluations), or,
as an option, on its intermediate checkpoints too. Step 2 fits accuracy as a sigmoid of the
feature on every run's intermediate checkpoints, after skipping each run's first 10% and a
moving average of 5 (accuracy of a single checkpoint is noisy; the feature is smooth).
The chained prediction evaluates step 2 at step 1's prediction for the target.

Variants (all selectable in :class:`TwoStepConfig`, compared by backtests in docs/analysis.md):
feature = task bpb / validation loss / task CE (-soft_log) / any loss column; step 1 on final or intermediate
checkpoints; FLOPs-based step 1 (C = 6 N D); sigmoid or log-sigmoid link; single-step
(accuracy as a sigmoid of the Chinchilla law, all parameters fitted jointly).
"""


from analysis.lazy import attach

# loaded on first use: the config alone imports no scipy
__getattr__, __dir__, __all__ = attach(__name__, {
    "analysis.twostep.chained": ("TaskModel", "fit_task"),
    "analysis.twostep.config": ("FEATURES", "VAL_CE", "TwoStepConfig"),
    "analysis.twostep.series": ("Feature", "RunSeries", "moving_average", "resolve_feature",
                                "run_series", "task_accuracy", "validation_column"),
})
