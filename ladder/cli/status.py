"""`ladder status SWEEP_DIR [--predict]`: per-rung state (queued/running/done/failed, tokens,
last loss) from SLURM and the run logs, and where the sweep's predictions are; with --predict,
the targets' predictions from the rungs finished so far (analysis.progress), written as a set of
their own to SWEEP_DIR/predictions-partial/, safe to run at any time and as often as wanted."""

from __future__ import annotations

import json
import sys

from ladder.exit_codes import EXIT_BAD_INPUT


def add_arguments(p) -> None:
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--json", action="store_true")
    p.add_argument("--predict", action="store_true",
                   help="predict the targets from the rungs finished so far, with intervals "
                        "calibrated on those rungs' own backtests")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates (--predict)")


def run(args) -> int:
    from ladder.recipe import RecipeError
    from ladder.sweep.backend import BackendError, backend_class, backend_of
    from ladder.sweep.plan import SweepError
    from ladder.sweep.slurm import SlurmError
    from ladder.sweep.sweepdir import load_sweep

    try:
        sweep = load_sweep(args.sweep_dir)
        st = backend_class(backend_of(sweep.dir)).from_plan(sweep.plan).status(sweep)
        print(json.dumps(st.to_json(), indent=2) if args.json else st.table())
        print(_predictions_line("predictions", sweep.predictions_dir))
        if args.predict:
            return _predict_so_far(sweep, args.n_boot)
        if sweep.partial_predictions_dir.exists():
            print(_predictions_line("partial predictions", sweep.partial_predictions_dir))
        return 0
    except (SweepError, SlurmError, RecipeError, BackendError, OSError, ValueError) as e:
        print(f"ladder status: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _predictions_line(what: str, d) -> str:
    import time

    f = d / "predictions.json"
    if not f.exists():
        return f"{what}: not yet"
    return f"{what}: {f} (written {time.strftime('%Y-%m-%d %H:%M', time.localtime(f.stat().st_mtime))})"


def _predict_so_far(sweep, n_boot: int) -> int:
    """Predict from the finished rungs into predictions-partial/ (logged to the sweep's W&B
    group when the recipe tracks); kept as it is while no further rung has finished."""
    from analysis.fit import FitError
    from analysis.runlog import RunLogError
    from ladder.cli.predict import check_n_boot
    from ladder.sweep.predict import predict_so_far

    try:
        check_n_boot(n_boot)
        summary, files, fresh = predict_so_far(sweep, n_boot=n_boot,
                                               echo=lambda m: print(m, file=sys.stderr))
    except (RunLogError, ValueError, FitError, RuntimeError) as e:
        print(f"ladder status --predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(summary)
    print(f"partial predictions: {files['json']}"
          + ("" if fresh else " (no rung has finished since they were made)"))
    return 0
