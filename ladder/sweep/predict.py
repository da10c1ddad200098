"""Predict a sweep's targets: at its end from every rung into SWEEP_DIR/predictions/, and while
it trains from the rungs finished so far into SWEEP_DIR/predictions-partial/ (and W&B).

The two are separate output sets, each replaced whole by its own writer, so watching a sweep
(`ladder status --predict`, as often as one likes) can never stand in the way of its final
prediction. Intervals are calibrated on the rungs' own backtests (analysis.practice.calibrate),
as `ladder predict` does; the final set keeps its calibration.json (with its
leave-one-scenario-out coverage) inside it, reused when the sweep predicts again from the same
rungs."""

from __future__ import annotations

from pathlib import Path

from ladder.recipe import Recipe
from ladder.sweep.plan import SweepError
from ladder.sweep.sweepdir import Sweep


CALIBRATION_FILE = "calibration.json"
PROGRESS_FILE = "progress.json"  # in predictions-partial/: the rungs it used and their state


def predict_sweep(sweep: Sweep, *, n_boot: int = 200, plots: bool = True, echo=print,
                  calibrate: bool = True):
    """Fit on the rungs only (never on a target's run) and predict every target. Writes
    predictions/ and returns the predictions."""
    from analysis.predict import Target, predict_targets
    from analysis.checks import check_ladder, check_target, once
    from analysis.files import output_dir
    from analysis.practice.calibrate import save_calibration
    from analysis.report import write_report
    from analysis.runlog import read_run
    from ladder.sweep.rundir import run_state

    plan = sweep.plan
    if not plan.targets:
        raise SweepError(f"{sweep.recipe.source}: the recipe has no 'targets' to predict")
    unfinished = [r.name for r in plan.rungs if not run_state(sweep.run_dir(r)).done]
    if unfinished:  # a half-trained rung is not what a run of its length reaches
        raise SweepError(f"cannot make the final predictions: rungs not finished: "
                         f"{', '.join(unfinished)} (`ladder status {sweep.dir} --predict` predicts "
                         f"from the finished ones)")
    runs = [read_run(sweep.run_dir(r)) for r in plan.rungs]
    targets = [Target(t.name, t.n, t.d) for t in plan.targets]
    actuals = {t.name: read_run(sweep.run_dir(t.run)) for t in plan.targets
               if t.run is not None and run_state(sweep.run_dir(t.run)).done}
    tasks = prediction_tasks(sweep.recipe)
    warn = once(lambda m: echo(f"warning: {m}"))
    ladder_doubts = check_ladder(runs)  # said once, and recorded with every prediction
    doubts = {t.name: ladder_doubts + check_target(runs, t.n, t.d, t.name) for t in targets}
    for m in (m for ms in doubts.values() for m in ms):
        warn(m)
    out = sweep.predictions_dir
    with output_dir(out, "ladder sweep") as tmp:  # the whole set, calibration included, at once
        cal = _calibration(sweep, runs, tasks, n_boot, echo) if calibrate else None
        preds = predict_targets(runs, targets, tasks, actuals=actuals, n_boot=n_boot,
                                keep_samples=plots, warn=warn, calibration=cal)
        for p in preds:
            p.warnings = doubts[p.target] + p.warnings
        files = write_report(preds, tmp, f"{sweep.recipe.name}: predictions", plots=plots)
        if cal is not None:  # the calibration used goes into the set it made, never in place
            save_calibration(cal, tmp / CALIBRATION_FILE)
    files = {k: out / f.name for k, f in files.items()}
    log_sweep_predictions(sweep, preds, files, echo, [r.name for r in plan.rungs])
    return preds, files


def predict_so_far(sweep: Sweep, *, n_boot: int = 200, echo=print):
    """Predict every target from the rungs finished so far into predictions-partial/ (a set of
    its own) and log it to W&B. Returns (summary, files, fresh): when no rung has finished
    since the set there was written, that set is kept (and not logged again): ``fresh`` False."""
    import json

    from analysis.files import atomic_write_text, json_safe, output_dir
    from analysis.predict import Target
    from analysis.progress import PlannedRung, predict_progress
    from analysis.report import write_report
    from analysis.runlog import read_run
    from ladder.sweep.rundir import run_state

    plan = sweep.plan
    if not plan.targets:
        raise SweepError(f"{sweep.recipe.source}: the recipe has no 'targets' to predict")
    rungs, finished = [], []
    for r in plan.rungs:
        st = run_state(sweep.run_dir(r))
        rungs.append(PlannedRung(r.name, float(r.n_params), float(r.target_tokens), st.state,
                                 st.tokens))
        if st.state == "done":
            finished.append(r)
    out = sweep.partial_predictions_dir
    key = {"rungs": [_log_identity(sweep.run_dir(r)) for r in finished], "n_boot": n_boot,
           "tasks": prediction_tasks(sweep.recipe)}
    kept = _kept_summary(out, key)
    if kept is not None:
        return kept, {"json": out / "predictions.json", "markdown": out / "report.md"}, False
    runs = [read_run(sweep.run_dir(r)) for r in finished]
    targets = [Target(t.name, t.n, t.d) for t in plan.targets]
    progress = predict_progress(runs, rungs, targets, prediction_tasks(sweep.recipe), n_boot=n_boot)
    with output_dir(out, "ladder status --predict") as tmp:
        files = write_report(progress.predictions, tmp, f"{sweep.recipe.name}: predictions from "
                             f"{len(runs)} of {len(rungs)} rungs", plots=False,
                             extra=progress.summary() + "\n")
        doc = {**progress.to_json(), "summary": progress.summary(), "inputs": key}
        atomic_write_text(tmp / PROGRESS_FILE, json.dumps(json_safe(doc), indent=2) + "\n")
    files = {k: out / f.name for k, f in files.items()}
    log_sweep_predictions(sweep, progress.predictions, files, echo, [r.name for r in finished],
                          partial=True)
    return progress.summary(), files, True


def _log_identity(run_dir: Path) -> list:
    """A finished rung's log as it stands (name, size, mtime): a new or rewritten log differs."""
    st = (run_dir / "metrics.jsonl").stat()
    return [run_dir.name, st.st_size, st.st_mtime_ns]


def _kept_summary(out: Path, key: dict) -> str | None:
    """The summary of the mid-sweep set in ``out`` when it was made from exactly ``key``."""
    import json

    try:
        doc = json.loads((out / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("inputs") != json.loads(json.dumps(key)):
        return None
    return str(doc.get("summary", ""))


def _calibration(sweep: Sweep, runs, tasks, n_boot: int, echo):
    """The ladder's calibration: the previous set's (only read) or the cached one when made
    from this content, else made by backtesting the rungs."""
    from analysis.practice.calibrate import ladder_calibration
    from analysis.twostep import TwoStepConfig

    return ladder_calibration(runs, tasks, TwoStepConfig(), n_boot,
                              reuse=sweep.predictions_dir / CALIBRATION_FILE, say=echo)


def prediction_tasks(recipe: Recipe) -> str:
    """The tasks to predict: the sweep's `predict_tasks`, else the tasks evaluated in the loop."""
    tasks = recipe.sweep.predict_tasks or recipe.evaluation.tasks
    if not tasks:
        raise SweepError(f"{recipe.source}: nothing to predict: set 'evaluation.tasks' (evaluated "
                         f"at every checkpoint) or 'sweep.predict_tasks'")
    return tasks


def log_sweep_predictions(sweep: Sweep, preds, files: dict[str, Path], echo, rungs_used: list[str],
                          *, partial: bool = False) -> None:
    """Log a prediction set to the sweep's W&B group (when the recipe tracks): the final set as
    run "predictions", a mid-sweep one as "predictions-partial"; each says which rungs it used."""
    t = sweep.recipe.tracking
    if not t.wandb or t.mode == "disabled":
        return
    try:
        from ladder.wandb.report import log_predictions
    except ImportError:
        return
    pngs = [p for k, p in files.items() if str(p).endswith(".png")]
    group = t.group or sweep.recipe.name
    name = "predictions-partial" if partial else "predictions"
    where = files["json"].parent
    # online failing: offline, as the rungs do, to `wandb sync` later
    for mode in (t.mode, "offline") if t.mode == "online" else (t.mode,):
        try:
            log_predictions([p.to_json() for p in preds], pngs, project=t.project,
                            entity=t.entity, group=group, name=name, mode=mode,
                            run_dir=str(sweep.dir), rungs_used=rungs_used,
                            rungs_planned=len(sweep.plan.rungs))
        except Exception as e:  # the predictions are on disk already; tracking must not lose them
            why = " ".join(f"{type(e).__name__}: {e}".split())
            if mode == "online":
                echo(f"warning: W&B online failed ({why}); logging the predictions offline")
                continue
            echo(f"warning: could not log predictions to W&B ({why}); they are in {where}")
            return
        sync = f": `wandb sync {sweep.dir}/wandb/offline-run-*` uploads it" if mode != t.mode else ""
        echo(f"logged {name} to W&B ({mode}) in group {group}{sync}")
        return
