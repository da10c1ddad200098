"""Predict a sweep's targets from its finished rungs into SWEEP_DIR/predictions/ (and W&B).

Intervals are calibrated on the rungs' own backtests (analysis.practice.calibrate), as
`ladder predict` does; the calibration is kept in predictions/calibration.json with its
leave-one-scenario-out coverage, and reused when the sweep predicts again from the same rungs."""

from __future__ import annotations

from pathlib import Path

from ladder.recipe import Recipe
from ladder.sweep.plan import SweepError
from ladder.sweep.sweepdir import Sweep


CALIBRATION_FILE = "calibration.json"


def predict_sweep(sweep: Sweep, *, n_boot: int = 200, plots: bool = True, echo=print,
                  calibrate: bool = True):
    """Fit on the rungs only (never on a target's run) and predict every target. Writes
    predictions/ and returns the predictions."""
    from analysis.predict import Target, predict_targets
    from analysis.checks import check_ladder, check_target, once
    from analysis.files import output_dir
    from analysis.practice.calibrate import ladder_calibration, save_calibration
    from analysis.report import REPORT_FILES, write_report
    from analysis.runlog import read_run
    from analysis.twostep import TwoStepConfig

    plan = sweep.plan
    if not plan.targets:
        raise SweepError(f"{sweep.recipe.source}: the recipe has no 'targets' to predict")
    missing = [r.name for r in plan.rungs if not (sweep.run_dir(r) / "metrics.jsonl").exists()]
    if missing:
        raise SweepError(f"cannot predict: rungs without logs: {', '.join(missing)}")
    runs = [read_run(sweep.run_dir(r)) for r in plan.rungs]
    targets = [Target(t.name, t.n, t.d) for t in plan.targets]
    actuals = {t.name: read_run(sweep.run_dir(t.run)) for t in plan.targets
               if t.run is not None and (sweep.run_dir(t.run) / "metrics.jsonl").exists()}
    tasks = prediction_tasks(sweep.recipe)
    warn = once(lambda m: echo(f"warning: {m}"))
    ladder_doubts = check_ladder(runs)  # said once, and recorded with every prediction
    doubts = {t.name: ladder_doubts + check_target(runs, t.n, t.d, t.name) for t in targets}
    for m in (m for ms in doubts.values() for m in ms):
        warn(m)
    out = sweep.predictions_dir
    cached = out / CALIBRATION_FILE
    cal = (ladder_calibration(runs, tasks, TwoStepConfig(), n_boot, cached, say=echo)
           if calibrate else None)
    preds = predict_targets(runs, targets, tasks, actuals=actuals, n_boot=n_boot,
                            keep_samples=plots, warn=warn, calibration=cal)
    for p in preds:
        p.warnings = doubts[p.target] + p.warnings
    with output_dir(out, (*REPORT_FILES, CALIBRATION_FILE)) as tmp:  # replaces the old set whole
        files = write_report(preds, tmp, f"{sweep.recipe.name}: predictions", plots=plots)
        if cal is not None:  # the calibration used goes into the set it made, never in place
            save_calibration(cal, tmp / CALIBRATION_FILE)
    files = {k: out / f.name for k, f in files.items()}
    _log_to_wandb(sweep, preds, files, echo)
    return preds, files


def prediction_tasks(recipe: Recipe) -> str:
    """The tasks to predict: the sweep's `predict_tasks`, else the tasks evaluated in the loop."""
    tasks = recipe.sweep.predict_tasks or recipe.evaluation.tasks
    if not tasks:
        raise SweepError(f"{recipe.source}: nothing to predict: set 'evaluation.tasks' (evaluated "
                         f"at every checkpoint) or 'sweep.predict_tasks'")
    return tasks


def _log_to_wandb(sweep: Sweep, preds, files: dict[str, Path], echo) -> None:
    t = sweep.recipe.tracking
    if not t.wandb or t.mode == "disabled":
        return
    try:
        from ladder.wandb.report import log_predictions
    except ImportError:
        return
    pngs = [p for k, p in files.items() if str(p).endswith(".png")]
    group = t.group or sweep.recipe.name
    # online failing: offline, as the rungs do, to `wandb sync` later
    for mode in (t.mode, "offline") if t.mode == "online" else (t.mode,):
        try:
            log_predictions([p.to_json() for p in preds], pngs, project=t.project,
                            entity=t.entity, group=group, mode=mode, run_dir=str(sweep.dir))
        except Exception as e:  # the predictions are on disk already; tracking must not lose them
            why = " ".join(f"{type(e).__name__}: {e}".split())
            if mode == "online":
                echo(f"warning: W&B online failed ({why}); logging the predictions offline")
                continue
            echo(f"warning: could not log predictions to W&B ({why}); they are in "
                 f"{sweep.predictions_dir}")
            return
        sync = f": `wandb sync {sweep.dir}/wandb/offline-run-*` uploads it" if mode != t.mode else ""
        echo(f"logged predictions to W&B ({mode}) in group {group}{sync}")
        return
