"""`ladder plan-ladder`: prediction error vs ladder compute, by backtesting sub-grids.

    ladder plan-ladder RUN_FILES... [--holdout 1B] [--drop 760M --drop 5xC,10xC]
                       [--budget-error 1.0] [--target-n N --target-d D] [--tasks paper] --out DIR

Holds out --holdout (default: the largest size), fits the two-step law on the full remaining
grid and on each reduced grid (each size dropped, each multiplier dropped, the largest
multipliers dropped, only the smallest sizes kept, plus every --drop list), predicts the
held-out runs, and writes DIR/plan.json, DIR/plan.md and DIR/plan.png (error vs compute).
--budget-error (accuracy MAE in points) picks the cheapest grid within it.
"""

from __future__ import annotations

import json
import sys
import time

from ladder.exit_codes import EXIT_OK
from ladder.cli.predict import parse_number, add_config_arguments, config_from_args, fail, os_error


def add_arguments(p) -> None:
    p.add_argument("run_files", nargs="+", metavar="RUN_FILES",
                   help="ladder runs: OLMo-ladder W&B CSV exports or run directories")
    p.add_argument("--holdout", metavar="SIZES",
                   help="comma-separated sizes/multipliers to predict (default: the largest size)")
    p.add_argument("--drop", action="append", default=[], metavar="SIZES",
                   help="also evaluate the grid without these sizes/multipliers (repeatable)")
    p.add_argument("--only-drops", action="store_true",
                   help="evaluate only the full grid and the --drop lists (faster)")
    p.add_argument("--budget-error", type=float, metavar="POINTS",
                   help="accuracy MAE budget in points; recommends the cheapest grid within it")
    p.add_argument("--target-name", default="target", help="name of the real target (reports)")
    p.add_argument("--target-n", type=parse_number, help="real target N: report compute as a share of its")
    p.add_argument("--target-d", type=parse_number, help="real target D (with --target-n)")
    p.add_argument("--tasks", default="paper")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--no-plots", action="store_true")
    add_config_arguments(p)


def _split(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def run(args) -> int:
    t0 = time.perf_counter()
    from analysis.fit import FitError
    from analysis.runlog import RunLogError
    from analysis.files import atomic_write_text
    try:
        from pathlib import Path

        from analysis.practice.planner import plan_ladder, plot_plan
        from ladder.cli.predict import load_inputs
        if (args.target_n is None) != (args.target_d is None):
            raise ValueError("--target-n and --target-d go together")
        if args.budget_error is not None and not args.budget_error > 0:
            raise ValueError(f"--budget-error {args.budget_error}: expected a positive number of points")
        config = config_from_args(args)
        from analysis.files import check_output_dir, output_dir
        check_output_dir(args.out)
        args.actual = None
        runs, tasks, _ = load_inputs(args)
        target_c = 6.0 * args.target_n * args.target_d if args.target_n else None
        plan = plan_ladder(runs, _split(args.holdout) if args.holdout else None, tasks, config,
                           drops=[_split(d) for d in args.drop],
                           budget_error=None if args.budget_error is None else args.budget_error / 100,
                           target_compute=target_c, include_systematic=not args.only_drops)
    except OSError as e:
        return fail(os_error(e, args.out))
    except (RunLogError, KeyError, ValueError, FitError, RuntimeError) as e:
        return fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    out = Path(args.out)
    doc = {"config": config.to_json(), "target_name": args.target_name, **plan.to_json()}
    rec = plan.recommended
    lines = [f"# Ladder plan: predicting {', '.join(plan.holdout)} ({len(plan.targets)} runs)\n\n",
             "Accuracy MAE in points over tasks x held-out runs; loss ARE = mean |pred - actual| / "
             "actual of the task loss (step 1).\n\n", plan.table(), "\n"]
    if plan.budget_error is not None:
        lines.append(f"Budget {100 * plan.budget_error:.2f} points: " + (
            f"cheapest grid within it is **{rec.name}** ({len(rec.runs)} runs, "
            f"{rec.compute / plan.full.compute:.0%} of the full grid's compute, "
            f"MAE {100 * rec.mae:.2f})." if rec else "no grid is within the budget.") + "\n")
    md = "".join(lines)
    try:
        with output_dir(out, "ladder plan-ladder") as tmp:  # written as one set
            atomic_write_text(tmp / "plan.json", json.dumps(doc, indent=2) + "\n")
            atomic_write_text(tmp / "plan.md", md)
            if not args.no_plots:
                plot_plan(plan, tmp / "plan.png")
    except OSError as e:  # a full disk: one line naming the directory, the old set kept
        return fail(os_error(e, out))
    print(md.split("\n", 2)[2].rstrip())
    print(f"wrote {out / 'plan.json'}, {out / 'plan.md'}"
          + ("" if args.no_plots else f", {out / 'plan.png'}")
          + f" in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    bad = [c.name for c in plan.candidates if c.feasible and not c.converged]
    if bad:
        print(f"warning: non-converged fits in grid(s) {', '.join(bad)} (marked n.c.)",
              file=sys.stderr)
    return EXIT_OK
