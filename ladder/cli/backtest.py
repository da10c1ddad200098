"""`ladder backtest`: hold out the largest rung(s) of a ladder and predict them from the rest.

    ladder backtest RUN_FILES... [--holdout 1B [--holdout 760M,1B]] [--tasks paper] --out DIR

Without --holdout: the largest size from all others, and the two largest from the rest.
Writes DIR/backtest.json and DIR/backtest.md (error per task and held-out run).
"""

from __future__ import annotations

import json
import sys
import time

from ladder.cli.predict import (RUN_FILES_HELP, TASKS_HELP, add_config_arguments, add_tokens_argument,
                                config_from_args, fail, os_error)
from ladder.exit_codes import EXIT_ERROR, EXIT_OK


def add_arguments(p) -> None:
    p.add_argument("run_files", nargs="+", metavar="RUN_FILES", help=RUN_FILES_HELP)
    p.add_argument("--holdout", action="append", metavar="SIZES",
                   help="comma-separated model sizes to hold out (repeatable: one scenario each)")
    p.add_argument("--tasks", default="auto", help=TASKS_HELP)
    p.add_argument("--out", required=True, metavar="DIR")
    add_tokens_argument(p)
    p.add_argument("--intervals", action="store_true",
                   help="also calibrate the 90%% intervals (adds the standard extrapolation "
                        "scenarios) and report each scenario's coverage from a calibration fitted "
                        "without it; writes OUT/calibration.json for `ladder predict --calibration`")
    add_config_arguments(p)
    g = p.add_argument_group("estimation practice (docs/estimation-practice.md)")
    g.add_argument("--step1-min-frac", type=float, metavar="F",
                   help="intermediate step-1 points: drop each run's checkpoints before F x its "
                        "final tokens (default 0.5)")
    g.add_argument("--step1-min-tokens", type=float, metavar="TOKENS",
                   help="intermediate step-1 points: also drop checkpoints before TOKENS tokens")


def run(args) -> int:
    t0 = time.perf_counter()
    from analysis.fit import FitError
    from analysis.runlog import RunLogError
    from analysis.files import atomic_write_text, json_safe
    try:
        from pathlib import Path

        from analysis.practice.backtest import backtest, default_scenarios
        from analysis.report import backtest_markdown
        from ladder.cli.predict import load_inputs
        config = config_from_args(args)
        from dataclasses import replace
        if args.step1_min_frac is not None:
            config = replace(config, step1_min_frac=args.step1_min_frac)  # checked by replace
        if args.step1_min_tokens is not None:
            config = replace(config, step1_min_tokens=args.step1_min_tokens)
        from analysis.checks import once
        from analysis.files import check_output_dir, output_dir
        from ladder.cli.predict import check_n_boot
        if args.intervals:
            check_n_boot(args.n_boot)
        check_output_dir(args.out)
        args.actual = None
        runs, tasks, _ = load_inputs(args)
        scenarios = ([[s.strip() for s in h.split(",") if s.strip()] for h in args.holdout]
                     if args.holdout else default_scenarios(runs))
        warn = once()  # the same warning from every held-out run is said once
        coverage, lc = {}, None
        if args.intervals:  # calibrated coverage needs the other scenarios: add the standard ones
            from analysis.practice.calibrate import calibrate_ladder, extrapolation_scenarios
            scenarios += [h for h in extrapolation_scenarios(runs) if h not in scenarios]
            lc = calibrate_ladder(runs, tasks, config, scenarios=scenarios, n_boot=args.n_boot, warn=warn)
            results, coverage = lc.results, lc.coverage
        else:
            results = [backtest(runs, h, tasks, config, n_boot=args.n_boot, warn=warn) for h in scenarios]
        out = Path(args.out)
        doc = {"config": config.to_json(),
               "scenarios": [r.to_json(coverage.get("+".join(r.holdout))) for r in results]}
        with output_dir(out, "ladder backtest") as tmp:  # the files replace the old set together
            if lc is not None:
                from analysis.practice.calibrate import save_calibration
                doc["calibration"] = lc.calibration.to_json()
                save_calibration(lc, tmp / "calibration.json")
            atomic_write_text(tmp / "backtest.json", json.dumps(json_safe(doc), indent=2) + "\n")
            atomic_write_text(tmp / "backtest.md", backtest_markdown(results, coverage=coverage))
    except OSError as e:
        return fail(os_error(e, args.out))
    except (RunLogError, KeyError, ValueError, FitError, RuntimeError) as e:
        return fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    for r in results:
        c = coverage.get("+".join(r.holdout))
        print(f"holdout {'+'.join(r.holdout)}: MAE {100 * r.mae():.2f} points, loss ARE "
              f"{100 * r.loss_are():.2f}% over {len(r.predictions)} predictions"
              + (f"; 90% calibrated coverage {c['coverage']:.2f} (median width "
                 f"{100 * c['median_width']:.2f} points; raw bootstrap {c['coverage_raw']:.2f}, "
                 f"{100 * c['median_width_raw']:.2f})" if c and c.get("coverage") is not None else "")
              + "; " + ", ".join(f"{t} {100 * v:.2f}" for t, v in r.per_task().items()))
    print(f"wrote {out / 'backtest.json'}, {out / 'backtest.md'} in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    bad = sum(not p.converged for r in results for p in r.predictions)
    if bad:
        print(f"warning: {bad} prediction(s) rest on non-converged fits (see backtest.md)",
              file=sys.stderr)
    return EXIT_ERROR if bad else EXIT_OK
