"""Log a sweep's predictions to W&B: one "predict" run in the sweep's group, holding the
predictions as a Table, the plots as Images and the errors against actuals as summary values.

The sweep calls :func:`log_predictions` after writing ``predictions/`` on disk; disk stays the
record (W&B is a view), so a W&B failure here never loses a prediction. With ``mode="offline"``
the run is written under ``run_dir/wandb/offline-run-*`` and uploaded later by ``wandb sync``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from analysis.calibration import beyond_factors
from analysis.files import finite_or_none, json_safe

TABLE_COLUMNS = ("task", "target", "grade", "pred_acc", "pred_acc_low", "pred_acc_high",
                 "interval_calibrated", "interval_beyond_backtests", "pred_loss", "actual_acc",
                 "actual_loss", "rungs_used")
REQUIRED = ("task", "target", "pred_acc")  # pred_acc may be null: a refused task (its grade says why)


@dataclass
class LoggedRun:
    id: str
    name: str
    dir: Path  # the local W&B run directory (what `wandb sync` uploads when offline)
    url: str | None  # None offline


def _as_dicts(predictions: Iterable[Any]) -> list[dict[str, Any]]:
    out = []
    for i, p in enumerate(predictions):
        d = p.to_json(details=False) if hasattr(p, "to_json") else p
        if not isinstance(d, dict):
            raise TypeError(f"predictions[{i}]: expected a dict (predictions.json entry), "
                            f"got {type(p).__name__}")
        missing = [k for k in REQUIRED if k not in d or (d[k] is None and k != "pred_acc")]
        if missing:
            raise ValueError(f"predictions[{i}]: missing field(s) {', '.join(missing)} "
                             f"(expected the entries of predictions.json)")
        out.append(d)
    if not out:
        raise ValueError("no predictions to log")
    return out


def table_row(p: dict[str, Any]) -> dict[str, Any]:
    """A predictions.json entry as a table row: its fields, plus whether its interval was
    calibrated (a reader must not mistake a raw bootstrap interval for a calibrated one) and
    where the target lies farther beyond the ladder than the calibrating backtests reached
    (e.g. "N 5.4x > 3.4x": its widening is extrapolated too)."""
    iv = p.get("interval") or {}
    beyond = iv.get("beyond_calibration") or {}
    far = ", ".join(f"{axis} {f:.1f}x > {top:.1f}x"
                    for axis, f, top in beyond_factors(beyond)) or None
    return {**p, "interval_calibrated": iv.get("calibrated"), "interval_beyond_backtests": far}


def table_columns(predictions: list[dict[str, Any]]) -> list[str]:
    """TABLE_COLUMNS that at least one prediction carries (actuals only when known)."""
    rows = [table_row(p) for p in predictions]
    return [c for c in TABLE_COLUMNS if any(r.get(c) is not None for r in rows)]


def summary_values(predictions: list[dict[str, Any]]) -> dict[str, float]:
    """Per target and task, the predicted accuracy; per target with actuals, mean absolute
    error (accuracy and loss) and how many actuals fall inside the predicted interval."""
    out: dict[str, float] = {}
    predictions = [p for p in predictions if finite_or_none(p.get("pred_acc")) is not None]
    for p in predictions:
        out[f"pred_acc/{p['target']}/{p['task']}"] = float(p["pred_acc"])
    for target in dict.fromkeys(p["target"] for p in predictions):
        rows = [p for p in predictions if p["target"] == target]
        acc = [(p["pred_acc"], p["actual_acc"]) for p in rows if finite_or_none(p.get("actual_acc")) is not None]
        loss = [(p["pred_loss"], p["actual_loss"]) for p in rows
                if finite_or_none(p.get("actual_loss")) is not None and finite_or_none(p.get("pred_loss")) is not None]
        if acc:
            out[f"abs_error_acc/{target}/mean"] = sum(abs(a - b) for a, b in acc) / len(acc)
            for p in rows:
                if finite_or_none(p.get("actual_acc")) is not None:
                    out[f"abs_error_acc/{target}/{p['task']}"] = abs(p["pred_acc"] - p["actual_acc"])
            inside = [p for p in rows if finite_or_none(p.get("actual_acc")) is not None
                      and p.get("pred_acc_low") is not None and p.get("pred_acc_high") is not None]
            if inside:
                out[f"interval_coverage/{target}"] = sum(
                    p["pred_acc_low"] <= p["actual_acc"] <= p["pred_acc_high"] for p in inside) / len(inside)
        if loss:
            out[f"abs_error_loss/{target}/mean"] = sum(abs(a - b) for a, b in loss) / len(loss)
    return out


def log_predictions(predictions: list[dict[str, Any]], plot_paths: list[Path], *, project: str,
                    entity: str | None = None, group: str, name: str = "predictions",
                    mode: str = "online", run_dir: str | os.PathLike,
                    config: dict[str, Any] | None = None, rungs_used: list[str] | None = None,
                    rungs_planned: int | None = None) -> LoggedRun | None:
    """Create one W&B run (job_type "predict") named ``name`` in ``group`` and log the
    predictions table (under the same key),
    each plot and the summary values. Returns the run's id and local directory; None when
    ``mode`` is "disabled". Inputs are checked before any run is created. ``rungs_used`` (the
    fitted runs' names, of ``rungs_planned``) goes into the config and a table column, so a
    mid-sweep table and the final one say which rungs each was fitted on."""
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"mode: expected online, offline or disabled, got {mode!r}")
    preds = _as_dicts(predictions)
    if rungs_used is not None:
        used = (f"{len(rungs_used)} of {rungs_planned}" if rungs_planned else str(len(rungs_used)))
        preds = [{**p, "rungs_used": f"{used}: {', '.join(rungs_used)}"} for p in preds]
        config = {**(config or {}), "rungs_used": list(rungs_used), "rungs_planned": rungs_planned}
    plots = [Path(p) for p in plot_paths]
    missing = [str(p) for p in plots if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"plot file(s) not found: {', '.join(missing)}")
    if mode == "disabled":
        return None
    import wandb

    columns = table_columns(preds)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(project=project, entity=entity, group=group, job_type="predict", name=name,
                     mode=mode, dir=str(run_dir), reinit="create_new",
                     config={"targets": sorted({p["target"] for p in preds}),
                             "tasks": sorted({p["task"] for p in preds}), **(config or {})},
                     settings=wandb.Settings(console="off", silent=True))
    try:
        table = wandb.Table(columns=columns,
                            data=[[json_safe(table_row(p).get(c)) for c in columns] for p in preds])
        payload: dict[str, Any] = {name: table}
        for path in plots:
            payload[f"plots/{path.stem}"] = wandb.Image(str(path), caption=path.stem)
        run.log(payload)
        for key, value in summary_values(preds).items():
            run.summary[key] = value
        logged = LoggedRun(id=run.id, name=name, dir=Path(run.settings.sync_dir),
                           url=None if mode == "offline" else run.url)
    except BaseException:
        run.finish(exit_code=1)
        raise
    run.finish()
    return logged
