"""Calibrate a ladder's intervals on its own backtests (never on a target).

Scenarios: every "hold out the j largest sizes and/or the i largest token multipliers"
(j, i <= 2) that leaves at least 5 runs of 2 sizes: the directions real targets extrapolate in,
at several distances. Each scenario's held-out runs are predicted with raw bootstrap intervals;
:func:`analysis.calibration.fit_calibration` turns those records into a calibration and
:func:`analysis.calibration.loso_coverage` measures it honestly (leave one scenario out).

A calibration file carries a fingerprint of the runs, tasks and method it came from, so a later
`ladder predict` can reuse it only for the same ladder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from analysis.calibration import Calibration, Record, fit_calibration, loso_coverage
from analysis.files import atomic_write_text
from analysis.metrics import TaskSpec
from analysis.practice.backtest import (BacktestResult, backtest, mults_by_value, sizes_by_n,
                                        split_holdout)
from analysis.runlog import RunLog
from analysis.twostep import TwoStepConfig

MIN_FIT_RUNS = 5


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
            if p.raw_low is None or p.actual_acc is None:
                raise ValueError("backtest predictions carry no interval; run with intervals")
            out.append(Record("+".join(r.holdout), p.task, p.target, p.pred_acc, p.raw_low,
                              p.raw_high, p.actual_acc, p.dn, p.dt))
    return out


def fingerprint(runs: list[RunLog], tasks, config: TwoStepConfig, n_boot: int) -> str:
    """What a calibration depends on: each run's name, N, final D and evaluation count, the
    tasks, the method and the bootstrap size."""
    names = sorted(tasks) if isinstance(tasks, dict) else tasks
    key = {"runs": sorted((r.name, float(r.n), float(r.d), r.n_evals) for r in runs),
           "tasks": names if isinstance(names, (str, list)) else sorted(t.name for t in names),
           "config": config.to_json(), "n_boot": n_boot}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


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
    cal = fit_calibration(records, level)
    cal.fingerprint = fingerprint(runs, tasks, config, n_boot)
    return LadderCalibration(cal, results, loso_coverage(records, level))


def ladder_calibration(runs: list[RunLog], tasks, config: TwoStepConfig, n_boot: int, cache,
                       say=lambda m: None) -> Calibration | None:
    """The ladder's calibration: the one in ``cache`` when it was made from these runs, tasks,
    method and bootstrap size, else made by backtesting (minutes) and saved there. None where
    the ladder leaves no backtest scenario (too few runs): intervals then stay raw, labelled."""
    cache = Path(cache)
    if cache.exists():
        try:
            cal = load_calibration(cache)
        except ValueError:
            cal = None
        if (cal is not None and cal.fingerprint == fingerprint(runs, tasks, config, n_boot)
                and cal.dn_max is not None):  # older files lack the backtests' reach
            say(f"calibration: reusing {cache}")
            return cal
    if not extrapolation_scenarios(runs):
        say(f"calibration: {len(runs)} runs leave no backtest scenario with >= {MIN_FIT_RUNS} runs "
            f"of 2 sizes to fit; the intervals are the raw run bootstrap, labelled uncalibrated")
        return None
    say("calibration: backtesting the ladder to calibrate the intervals (once per ladder; "
        f"reused from {cache})")
    lc = calibrate_ladder(runs, tasks, config, n_boot=n_boot)
    cache.parent.mkdir(parents=True, exist_ok=True)
    save_calibration(lc, cache)
    return lc.calibration


def save_calibration(lc: LadderCalibration, path) -> Path:
    doc = {**lc.calibration.to_json(), "loso_coverage": lc.coverage}
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return Path(path)


def load_calibration(path) -> Calibration:
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: cannot read calibration ({e})") from e
    if isinstance(doc, dict):
        doc.pop("loso_coverage", None)
    return Calibration.from_json(doc, str(p))
