"""`ladder sweep RECIPE --backend NAME`: train every rung, then predict the targets.

Rerunning the same command skips finished rungs and resumes interrupted ones. The backend (local,
SLURM, or any registered one: ladder/sweep/backend.py) runs or submits the rungs."""

from __future__ import annotations

import sys
import time

from ladder.exit_codes import EXIT_BAD_INPUT


def add_arguments(p) -> None:
    from ladder.sweep.backend import backend_names

    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--backend", choices=backend_names(), default="local")
    p.add_argument("--out", metavar="SWEEP_DIR", help="sweep directory (default: runs/<recipe name>)")
    p.add_argument("--parallel", type=int, default=None,
                   help="local: rungs run at once (default: the recipe's sweep.parallel, else 1)")
    p.add_argument("--max-retries", type=int, default=None,
                   help="restarts of a failed rung (default: sweep.max_retries, else 2)")
    p.add_argument("--predict-only", action="store_true",
                   help="only fit and predict from the finished rungs (the SLURM final job)")
    p.add_argument("--no-predict", action="store_true", help="train the rungs only")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates for intervals")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--dry-run", action="store_true",
                   help="render the jobs, print resources, memory and evaluation share per rung, run "
                        "every pre-submit check; submit and write nothing")


def run(args) -> int:
    from analysis.runlog import RunLogError
    from ladder.recipe import RecipeError, load_recipe
    from ladder.sweep.backend import BackendError, LaunchOptions, backend_class
    from ladder.sweep.launcher import JobSpecError
    from ladder.sweep.local import LocalSweepFailed
    from ladder.sweep.lock import DirLock, LockHeld
    from ladder.sweep.plan import SweepError, plan_sweep
    from ladder.sweep.slurm import SlurmError
    from ladder.sweep.sweepdir import open_sweep

    t0 = time.time()
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if not args.no_predict:  # before the training, not after it
            from ladder.cli.predict import check_n_boot
            check_n_boot(args.n_boot)
        plan = plan_sweep(recipe)
        backend = backend_class(args.backend).from_plan(plan)
        options = LaunchOptions(args.parallel, args.max_retries, predict=not args.no_predict)
        if args.dry_run:
            return _dry_run(plan, backend, options, args)
        if not args.predict_only and not _checks_pass(plan, backend, args):
            return EXIT_BAD_INPUT
        out = args.out or f"runs/{recipe.name}"
        with DirLock(out):  # one sweep process per sweep directory; released however it ends
            if args.predict_only:
                return _predict(open_sweep(recipe, out), args, t0)
            sweep = open_sweep(recipe, out, backend=backend.name)
            if not backend.launch(sweep, options, echo=lambda m: print(m, flush=True)):
                return 0  # submitted: the rungs and the prediction run elsewhere
            print(f"all runs done in {time.time() - t0:.0f}s", flush=True)
            return 0 if args.no_predict else _predict(sweep, args, t0)
    except LocalSweepFailed as e:
        print(e, file=sys.stderr)
        return 1
    except (RecipeError, SweepError, RunLogError, JobSpecError, SlurmError, BackendError, OSError,
            ValueError, KeyError, LockHeld) as e:
        print(f"ladder sweep: error: {e.args[0] if isinstance(e, KeyError) else e}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130


def _predict(sweep, args, t0) -> int:
    from analysis.predict import mean_abs_error
    from analysis.report import markdown_table
    from ladder.sweep.predict import predict_sweep

    preds, files = predict_sweep(sweep, n_boot=args.n_boot, plots=not args.no_plots,
                                 echo=lambda m: print(m, file=sys.stderr))
    print()
    print(markdown_table(preds))
    for target in dict.fromkeys(p.target for p in preds):
        mae = mean_abs_error([p for p in preds if p.target == target])
        if mae is not None:
            print(f"{target}: mean absolute error {100 * mae:.2f} points")
    print(f"\npredictions: {files['json']}\nreport: {files['markdown']}")
    pngs = [str(f) for f in files.values() if str(f).endswith(".png")]
    if pngs:
        print("plots: " + ", ".join(pngs))
    print(f"total {time.time() - t0:.0f}s")
    return 1 if any(not p.converged for p in preds) else 0


def _checks_pass(plan, backend, args, echo=lambda m: print(m, file=sys.stderr)) -> bool:
    """The pre-submit checks; any failure stops the sweep before anything runs or is queued."""
    from ladder.sweep.checks import presubmit_checks

    checks = presubmit_checks(plan, predict=not args.no_predict, backend=backend)
    failed = [c for c in checks if not c.ok]
    if failed or args.dry_run:
        echo("pre-submit checks:\n" + "\n".join(c.line() for c in checks))
    if failed:
        echo(f"ladder sweep: error: {len(failed)} pre-submit check(s) failed; nothing was submitted: "
             + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return not failed


def _dry_run(plan, backend, options, args) -> int:
    from pathlib import Path

    from ladder.sweep.checks import eval_report, size_report
    from ladder.sweep.plan import plan_table
    from ladder.sweep.sweepdir import Sweep

    print(plan_table(plan))
    print("\nper size (memory per process: estimate, see ladder/sweep/estimate.py):")
    print(size_report(plan, backend))
    print()
    print(eval_report(plan))
    sweep = Sweep(Path(args.out or f"runs/{plan.recipe.name}").resolve(), plan)
    print()
    print(backend.render(sweep, options))
    ok = _checks_pass(plan, backend, args, echo=print)
    print(f"\ndry run: nothing written or submitted; checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else EXIT_BAD_INPUT
