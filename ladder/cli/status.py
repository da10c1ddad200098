"""`ladder status SWEEP_DIR [--predict]`: per-rung state (queued/running/done/failed, tokens,
last loss) from SLURM and the run logs; with --predict, the targets' predictions from the rungs
finished so far (analysis.progress), written to SWEEP_DIR/predictions/partial/."""

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
    from pathlib import Path

    from ladder.recipe import RecipeError
    from ladder.sweep.slurm import JOBS_JSON, SLURM_SUBDIR, SlurmError
    from ladder.sweep.slurm_status import status
    from ladder.sweep.local import local_status
    from ladder.sweep.plan import SweepError
    from ladder.sweep.sweepdir import load_sweep

    try:
        sweep = load_sweep(args.sweep_dir)
        if (Path(args.sweep_dir) / SLURM_SUBDIR / JOBS_JSON).exists():
            st = status(args.sweep_dir)
            print(json.dumps(st.to_json(), indent=2) if args.json else st.table())
        else:
            rows = local_status(sweep)
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                for r in rows:
                    tok = f"{r['tokens']:.4g}/{r['target_tokens']:.4g}" if r["tokens"] else "-"
                    loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
                    print(f"{r['name']:<24} {r['role']:<7} {r['state']:<8} tokens {tok:<20} "
                          f"loss {loss}  evals {r['evals']}")
        pred = sweep.predictions_dir / "predictions.json"
        print(f"predictions: {pred if pred.exists() else 'not yet'}")
        return _predict_partial(sweep, args.n_boot) if args.predict else 0
    except (SweepError, SlurmError, RecipeError, OSError, ValueError) as e:
        print(f"ladder status: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _predict_partial(sweep, n_boot: int) -> int:
    """Fit the finished rungs, predict every target, write predictions/partial/ and log them to
    the sweep's W&B group (when the recipe tracks)."""
    from analysis.fit import FitError
    from analysis.predict import Target
    from analysis.progress import PlannedRung, predict_progress
    from analysis.report import write_report
    from analysis.runlog import RunLogError, read_run
    from ladder.sweep.predict import _log_to_wandb, prediction_tasks
    from ladder.sweep.rundir import run_state

    plan = sweep.plan
    rungs, finished = [], []
    for r in plan.rungs:
        st = run_state(sweep.run_dir(r))
        rungs.append(PlannedRung(r.name, float(r.n_params), float(r.target_tokens), st.state,
                                 st.tokens))
        if st.state == "done":
            finished.append(read_run(sweep.run_dir(r)))
    try:
        if not plan.targets:
            raise ValueError(f"{sweep.recipe.source}: the recipe has no 'targets' to predict")
        targets = [Target(t.name, t.n, t.d) for t in plan.targets]
        progress = predict_progress(finished, rungs, targets, prediction_tasks(sweep.recipe),
                                    n_boot=n_boot)
        out = sweep.predictions_dir / "partial"
        files = write_report(progress.predictions, out, f"{sweep.recipe.name}: predictions from "
                             f"{len(finished)} of {len(rungs)} rungs", plots=False,
                             extra=progress.summary() + "\n")
    except (RunLogError, ValueError, FitError, RuntimeError) as e:
        print(f"ladder status --predict: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(progress.summary())
    print(f"partial predictions: {files['json']}")
    _log_to_wandb(sweep, progress.predictions, files, lambda m: print(m, file=sys.stderr))
    return 0
