"""Calibrate a ladder's intervals on its own backtests (never on a target).

Scenarios: every "hold out the j largest sizes and/or the i largest token multipliers"
(j, i <= 2) that leaves at least 5 runs of 2 sizes: the directions real targets extrapolate in,
at several distances. Each scenario's held-out runs are predicted with raw bootstrap intervals;
:func:`analysis.calibration.fit_calibration` turns those records into a calibration and
:func:`analysis.calibration.loso_coverage` measures it honestly (leave one scenario out).

A calibration carries a fingerprint of the content it came from (every run's N and the values of
the columns the tasks read, the task declarations, the method, the bootstrap size and the code),
and is kept in a content-addressed cache (:func:`cache_dir`), written atomically, so any later
call on the same ladder reuses it wherever its output goes; commands copy the calibration they
used into their own output set, never into an output directory in place.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.calibration import Calibration, Record, fit_calibration, loso_coverage
from analysis.files import atomic_write_text
from analysis.metrics import TaskSpec, resolve_tasks
from analysis.practice.backtest import (BacktestResult, backtest, mults_by_value, sizes_by_n,
                                        split_holdout)
from analysis.runlog import RunLog
from analysis.twostep import TwoStepConfig
from analysis.twostep.series import resolve_feature

MIN_FIT_RUNS = 5
CACHE_ENV = "LADDER_CALIBRATION_CACHE"  # the cache directory itself, before $LADDER_CACHE/calibrations


def extrapolation_scenarios(runs: list[RunLog], depth: int = 2) -> list[list[str]]:
    """Hold out the top j sizes and/or top i multipliers (0 <= j, i <= depth, not both 0),
    where at least MIN_FIT_RUNS runs of 2+ sizes remain to fit."""
    sizes, mults = sizes_by_n(runs), mults_by_value(runs)
    out = []
    for i, j in itertools.product(range(depth + 1), range(depth + 1)):
        if i == j == 0 or j >= len(sizes) or (i and i >= len(mults)):
            continue
        h = sizes[len(sizes) - j:] + mults[len(mults) - i:] if j else mults[len(mults) - i:]
        train, test = split_holdout(runs, h)
        if test and len(train) >= MIN_FIT_RUNS and len({float(r.n) for r in train}) >= 2:
            out.append(h)
    return out


def backtest_records(results: list[BacktestResult]) -> list[Record]:
    """Calibration records from backtests run with intervals."""
    out = []
    for r in results:
        for p in r.predictions:
            if p.interval_info.get("unavailable"):  # refused, or no interval: nothing to score
                continue
            if p.raw_low is None or p.actual_acc is None:
                raise ValueError("backtest predictions carry no interval; run with intervals")
            out.append(Record("+".join(r.holdout), p.task, p.target, p.pred_acc, p.raw_low,
                              p.raw_high, p.actual_acc, p.dn, p.dt))
    return out


def _code_digest() -> str:
    """The analysis code a calibration was made with: a change to it makes a new calibration."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parents[1]
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def fingerprint(runs: list[RunLog], tasks, config: TwoStepConfig, n_boot: int) -> str:
    """What a calibration depends on, by content: each run's name, N, size, multiplier, tokens
    and the values of every column the tasks read (accuracy and feature), the task declarations,
    the method, the bootstrap size and the code."""
    specs = resolve_tasks(tasks) if isinstance(tasks, str) else (
        tasks if isinstance(tasks, dict) else {t.name: t for t in tasks})
    cols = {c for t in specs.values() for c, _ in t.columns("acc")}
    for t in specs.values():
        if config.mode != "direct":
            try:
                cols |= {c for c, _ in resolve_feature(config.feature, t, runs).columns}
            except (KeyError, ValueError):  # reported where the fit reads it
                pass
    h = hashlib.sha256(json.dumps({"tasks": {k: t.to_json() for k, t in sorted(specs.items())},
                                   "config": config.to_json(), "n_boot": n_boot,
                                   "code": _code_digest()}, sort_keys=True).encode())
    for r in sorted(runs, key=lambda r: r.name):
        h.update(json.dumps([r.name, float(r.n), r.meta.size, r.meta.multiplier]).encode())
        for c in ["tokens", *sorted(cols)]:
            if r.has(c):
                h.update(c.encode())
                h.update(np.ascontiguousarray(r.column(c), dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    """Where calibrations are kept: $LADDER_CALIBRATION_CACHE, else $LADDER_CACHE/calibrations,
    else $XDG_CACHE_HOME/ladder/calibrations (~/.cache/ladder/calibrations)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if os.environ.get("LADDER_CACHE"):
        return Path(os.environ["LADDER_CACHE"]) / "calibrations"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg) / "ladder" / "calibrations"


class NoRecords(ValueError):
    """No backtest prediction to calibrate on."""


@dataclass
class LadderCalibration:
    calibration: Calibration
    results: list[BacktestResult]
    coverage: dict[str, dict]  # per scenario, leave-one-scenario-out


def calibrate_ladder(runs: list[RunLog], tasks: str | dict[str, TaskSpec] = "paper",
                     config: TwoStepConfig = TwoStepConfig(), *, scenarios=None,
                     n_boot: int = 200, warn=None, level: float = 0.9) -> LadderCalibration:
    """Backtest every scenario (default: :func:`extrapolation_scenarios`) with raw intervals,
    fit the calibration on all of them and measure its leave-one-scenario-out coverage."""
    scenarios = scenarios or extrapolation_scenarios(runs)
    if not scenarios:
        raise ValueError(f"{len(runs)} runs leave no backtest scenario with >= {MIN_FIT_RUNS} runs "
                         f"of 2 sizes to fit: intervals cannot be calibrated on this ladder")
    results = [backtest(runs, h, tasks, config, intervals=True, n_boot=n_boot,
                        warn=warn or (lambda m: None)) for h in scenarios]
    records = backtest_records(results)
    if not records:
        raise NoRecords("every backtest prediction was refused or had no interval: nothing to "
                        "calibrate on")
    cal = fit_calibration(records, level)
    cal.fingerprint = fingerprint(runs, tasks, config, n_boot)
    cal.loso_coverage = loso_coverage(records, level)
    return LadderCalibration(cal, results, cal.loso_coverage)


def ladder_calibration(runs: list[RunLog], tasks, config: TwoStepConfig, n_boot: int,
                       reuse=None, say=lambda m: None) -> Calibration | None:
    """The ladder's calibration: ``reuse`` (a calibration file, e.g. an earlier output set's,
    only read) or the cached one when made from this content, else made by backtesting
    (minutes) and kept in :func:`cache_dir`. None where the ladder leaves no backtest scenario
    (too few runs), or every task was refused: intervals then stay raw, labelled."""
    key = fingerprint(runs, tasks, config, n_boot)
    cached = cache_dir() / f"{key}.json"
    for path in (p for p in (reuse, cached) if p is not None and Path(p).exists()):
        try:
            cal = load_calibration(path)
        except ValueError:
            continue
        if cal.fingerprint == key and cal.dn_max is not None:  # older files lack the backtests' reach
            say(f"calibration: reusing {path}")
            return cal
    if not extrapolation_scenarios(runs):
        say(f"calibration: {len(runs)} runs leave no backtest scenario with >= {MIN_FIT_RUNS} runs "
            f"of 2 sizes to fit; the intervals are the raw run bootstrap, labelled uncalibrated")
        return None
    say(f"calibration: backtesting the ladder to calibrate the intervals (once per ladder; kept in "
        f"{cached})")
    try:
        lc = calibrate_ladder(runs, tasks, config, n_boot=n_boot)
    except NoRecords as e:
        say(f"calibration: {e}; the intervals are the raw run bootstrap, labelled uncalibrated")
        return None
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_calibration(lc, cached)
    except OSError as e:  # a read-only or full cache costs a recalibration next time, nothing else
        say(f"calibration: could not keep it in {cached} ({e.strerror or e}); it will be made again")
    return lc.calibration


def save_calibration(lc: LadderCalibration | Calibration, path) -> Path:
    """A calibration file (atomic), with its leave-one-scenario-out coverage."""
    cal = lc.calibration if isinstance(lc, LadderCalibration) else lc
    if isinstance(lc, LadderCalibration):
        cal.loso_coverage = lc.coverage
    atomic_write_text(path, json.dumps(cal.to_json(), indent=2) + "\n")
    return Path(path)


def load_calibration(path) -> Calibration:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: cannot read calibration ({e})") from e
    return Calibration.from_json(doc, str(p))
