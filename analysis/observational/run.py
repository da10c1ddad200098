"""One observational backtest: fit on the training models of a benchmark table, predict the
others, and collect metrics, family maps and the equivalent-compute axis (``ladder observe``)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.files import atomic_write_text, json_safe
from analysis.observational.compute import EquivalentCompute, equivalent_axis, fit_family_maps
from analysis.observational.data import (FAMILY_COL, FLOPS_COL, MODEL_COL, benchmark_columns,
                                         joined_columns)
from analysis.observational.errors import ObservationalError
from analysis.observational.estimator import ObservationalScalingLaw
from analysis.observational.plots import plot_observational
from analysis.observational.selection import select_method

METHODS = ("select", "paper")


@dataclass
class ObservationalResult:
    model: ObservationalScalingLaw
    predictions: pd.DataFrame
    metrics: dict
    equivalent: EquivalentCompute | None
    target: str
    table: pd.DataFrame = field(repr=False, default=None)

    def table_rows(self, models) -> pd.DataFrame:
        """Predictor columns of the given models, in the fitted column order."""
        t = self.table.set_index(MODEL_COL)
        return t.loc[list(models), self.model.feature_names_in_]

    def write(self, out_dir: str | Path, plots: bool = True) -> list[Path]:
        """Every file atomically, ``metrics.json`` last: a directory with it is complete."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "predictions.csv", self.predictions.to_csv(index=False))
        written = [out / "predictions.csv"] + (plot_observational(self, out) if plots else [])
        atomic_write_text(out / "metrics.json", json.dumps(json_safe(self.metrics), indent=2) + "\n")
        return [out / "metrics.json"] + written


@dataclass
class _Rows:
    """Boolean masks over the table's rows (``use`` = has predictors and is in the split)."""

    train: np.ndarray
    test: np.ndarray
    pred_only: np.ndarray
    use: np.ndarray

    def labels(self) -> np.ndarray:
        return np.where(self.train, "train", np.where(self.test, "test",
                                                      np.where(self.pred_only, "predict", "")))


def run_observational(
    table: pd.DataFrame,
    target: str,
    split: np.ndarray,
    predictors: Sequence[str] | None = None,
    n_components: int = 3,
    ref_family: str | None = None,
    level: float = 0.9,
    n_boot: int = 200,
    seed: int = 0,
    method: str = "paper",
    chance: float = 0.0,
    validation: str = "auto",
    **estimator_kwargs,
) -> ObservationalResult:
    """Fit on the ``split == "train"`` models with a known target, predict every other
    model with predictors (test models are scored; models without the target are predicted
    only, split "predict"), and collect metrics, family maps and the equivalent-compute axis.

    ``method="select"`` picks the variant by validation on the training models only
    (``analysis.observational.selection``; ``chance`` is the metric's chance level for the
    fixed-floor candidates, ``validation`` the scheme); ``method="paper"`` is the authors'
    method, optionally modified by ``estimator_kwargs`` (only allowed with "paper")."""
    if method not in METHODS:
        raise ObservationalError(f"method must be 'select' or 'paper', got {method!r}")
    if method == "select" and estimator_kwargs:
        raise ObservationalError(
            f"estimator options {sorted(estimator_kwargs)} are only allowed with method='paper'")
    y = _target_values(table, target)
    predictors = _predictor_columns(table, target, predictors, n_components)
    X = table[predictors].to_numpy(dtype=float)
    rows = _rows(split, X, y, target)
    flops = table[FLOPS_COL].to_numpy(dtype=float)
    params, method_info = _method(method, X[rows.train], y[rows.train], flops[rows.train],
                                  n_components, chance, validation, seed, estimator_kwargs)
    est = ObservationalScalingLaw(n_components=n_components, **params)
    est.fit(pd.DataFrame(X[rows.train], columns=predictors), y[rows.train])
    fitted = _predict(est, X, rows.use, level, n_boot, seed)
    families = table[FAMILY_COL].astype(str).to_numpy(dtype=object)
    models = table[MODEL_COL].astype(str).to_numpy(dtype=object)
    with np.errstate(divide="ignore", invalid="ignore"):
        logf = np.where(flops > 0, np.log(flops), np.nan)
    maps, skipped = fit_family_maps(families[rows.train], logf[rows.train],
                                    fitted["caps"][rows.train], models[rows.train])
    use = rows.use
    aggregate = np.full(len(table), np.nan)
    aggregate[use] = est.link_.linear(fitted["caps"][use])
    equivalent = equivalent_axis(ref_family, families[use], logf[use], aggregate[use], models[use])
    preds = _predictions_frame(models, families, flops, y, fitted, rows, equivalent, aggregate)
    metrics = _metrics(est, target, predictors, X, y, rows, fitted, level, n_boot, seed)
    metrics.update({
        "family_maps": {f: asdict(m) for f, m in maps.items()},
        "family_maps_skipped": skipped,
        "equivalent_compute": asdict(equivalent) if equivalent is not None else None,
        "fit_seconds": est.fit_seconds_,
        "method": method_info,
        "estimator": est.get_params(),
    })
    return ObservationalResult(est, preds, metrics, equivalent, target, table)


def _method(method, X, y, flops, n_components, chance, validation, seed, estimator_kwargs):
    """The estimator's settings and how they were chosen (``metrics["method"]``)."""
    if method == "select":
        selection = select_method(X, y, flops, n_components=n_components, chance=chance,
                                  validation=validation, seed=seed)
        return dict(selection.selected.params), {"requested": "select", **selection.to_dict()}
    params = dict(estimator_kwargs)
    return params, {"requested": "paper", "selected": "paper" + (" (modified)" if params else ""),
                    "params": params}


def _target_values(table: pd.DataFrame, target: str) -> np.ndarray:
    if target not in table.columns:
        raise ObservationalError(
            f"target column {target!r} not found; available metric columns: {benchmark_columns(table)}")
    if not pd.api.types.is_numeric_dtype(table[target]):
        raise ObservationalError(f"target column {target!r} is not numeric")
    y = table[target].to_numpy(dtype=float)
    if np.isnan(y).all():
        raise ObservationalError(f"target column {target!r} has no values (all missing)")
    ok = y[~np.isnan(y)]
    if ok.min() < 0 or ok.max() > 1:
        raise ObservationalError(
            f"target {target!r} ranges over [{ok.min():.4g}, {ok.max():.4g}]; the sigmoid link "
            "predicts fractions in [0, 1] (rescale the column, e.g. divide a 0-100 score by 100)")
    return y


def _predictor_columns(table: pd.DataFrame, target: str, predictors, n_components: int) -> list[str]:
    """The given predictors, checked, or by default every benchmark column of the main table
    other than the target."""
    if predictors is None:
        joined = joined_columns(table)
        predictors = [c for c in benchmark_columns(table) if c != target and c not in joined]
    predictors = list(predictors)
    missing = [c for c in predictors if c not in table.columns]
    if missing:
        raise ObservationalError(f"predictor column(s) {missing} not found in the table")
    if target in predictors:
        raise ObservationalError(f"target {target!r} is also a predictor; remove it from --predictors")
    if not predictors:
        raise ObservationalError("no predictor benchmark columns")
    nonnum = [c for c in predictors if not pd.api.types.is_numeric_dtype(table[c])]
    if nonnum:
        raise ObservationalError(f"predictor column(s) {nonnum} are not numeric")
    if n_components > len(predictors):
        raise ObservationalError(
            f"{n_components} PCs requested but only {len(predictors)} predictor benchmark(s)")
    return predictors


def _rows(split, X: np.ndarray, y: np.ndarray, target: str) -> _Rows:
    split = np.asarray(split, dtype=object).copy()
    split[np.isnan(X).all(axis=1) & (split != "")] = ""  # nothing to predict from
    has_y = ~np.isnan(y)
    rows = _Rows(train=(split == "train") & has_y, test=(split == "test") & has_y,
                 pred_only=(split != "") & ~has_y, use=split != "")
    if not rows.train.any():
        raise ObservationalError(f"no training models with a value for {target!r}")
    if not rows.test.any():
        raise ObservationalError(
            f"the split leaves no test models with a value for {target!r} "
            f"({int(rows.train.sum())} training models); choose a lower cutoff or another split")
    return rows


def _predict(est: ObservationalScalingLaw, X: np.ndarray, use: np.ndarray, level: float,
             n_boot: int, seed: int) -> dict[str, np.ndarray | float | int]:
    """Capabilities, predictions and bootstrap intervals of the ``use`` rows (NaN elsewhere)."""
    n = len(X)
    caps = np.full((n, est.n_components), np.nan)
    pred, low, high = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
    caps[use] = est.transform(X[use])
    pred[use] = est.link_.predict(caps[use])
    t0 = time.perf_counter()
    low[use], high[use], n_failed = est.predict_interval(X[use], level=level, n_boot=n_boot, seed=seed)
    return {"caps": caps, "pred": pred, "low": low, "high": high, "n_failed": n_failed,
            "seconds": time.perf_counter() - t0}


def _predictions_frame(models, families, flops, y, fitted, rows: _Rows,
                       equivalent: EquivalentCompute | None, aggregate) -> pd.DataFrame:
    labels = rows.labels()
    keep = labels != ""
    preds = pd.DataFrame({
        "model": models, "family": families, "flops": flops, "split": labels,
        "actual": y, "predicted": fitted["pred"], "low": fitted["low"], "high": fitted["high"],
    })[keep].reset_index(drop=True)
    if equivalent is not None:
        # In the table's FLOPs unit (1e21), like the flops column.
        preds["equivalent_flops"] = np.exp(equivalent.log_flops(aggregate[keep]))
    return preds


def _metrics(est, target, predictors, X, y, rows: _Rows, fitted, level, n_boot, seed) -> dict:
    pred, low, high = fitted["pred"], fitted["low"], fitted["high"]

    def err(m):
        e = pred[m] - y[m]
        return float(np.mean(e**2)), float(np.mean(np.abs(e)))

    mse_tr, mae_tr = err(rows.train)
    mse_te, mae_te = err(rows.test)
    test = rows.test
    cover = float(np.mean((y[test] >= low[test]) & (y[test] <= high[test])))
    evr = est.pca_.explained_variance_ratio_
    return {
        "target": target, "predictors": predictors, "n_components": est.n_components,
        "n_train": int(rows.train.sum()), "n_test": int(test.sum()),
        "n_predict_only": int(rows.pred_only.sum()),
        "mse_train": mse_tr, "mae_train": mae_tr, "mse_test": mse_te, "mae_test": mae_te,
        "explained_variance": [float(v) for v in evr],
        "explained_variance_cumulative": float(evr.sum()),
        "loadings": {f"PC-{i + 1}": dict(zip(predictors, map(float, row)))
                     for i, row in enumerate(est.pca_.components_)},
        "link": {"form": "y = floor + (1 - floor) * sigmoid(intercept + weights . PC)",
                 **est.link_.to_dict()},
        "imputation": {"rank": est.imputer_.rank, "n_iter": est.imputer_.n_iter_,
                       "converged": est.imputer_.converged_,
                       "n_missing_train": int(np.isnan(X[rows.train]).sum()),
                       "n_missing_other": int(np.isnan(X[rows.use & ~rows.train]).sum())},
        "interval": {"method": "bootstrap over training models (whole pipeline refit) + resampled residual",
                     "level": level, "n_boot": n_boot, "n_failed": fitted["n_failed"], "seed": seed,
                     "coverage_test": cover, "seconds": fitted["seconds"]},
    }
