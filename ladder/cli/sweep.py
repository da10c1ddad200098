"""`ladder sweep RECIPE --backend local|slurm`: train every rung, then predict the targets.

Rerunning the same command skips finished rungs and resumes interrupted ones."""

from __future__ import annotations

import sys
import time

from ladder.exit_codes import EXIT_BAD_INPUT


def add_arguments(p) -> None:
    p.add_argument("recipe", metavar="RECIPE", help="recipe YAML")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides")
    p.add_argument("--backend", choices=("local", "slurm"), default="local")
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
    from ladder.sweep.launcher import JobSpecError
    from ladder.recipe import RecipeError, load_recipe
    from ladder.sweep.slurm import SlurmError
    from ladder.sweep.plan import SweepError
    from ladder.sweep.sweepdir import open_sweep

    from ladder.sweep.lock import DirLock, LockHeld

    t0 = time.time()
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        if not args.no_predict:  # before the training, not after it
            from ladder.cli.predict import check_n_boot
            check_n_boot(args.n_boot)
        if args.dry_run:
            return _dry_run(recipe, args)
        if not args.predict_only and not _checks_pass(recipe, args):
            return EXIT_BAD_INPUT
        out = args.out or f"runs/{recipe.name}"
        with DirLock(out):  # one sweep process per sweep directory; released however it ends
            sweep = open_sweep(recipe, out)
            if args.predict_only:
                return _predict(sweep, args, t0)
            if args.backend == "slurm":
                return _submit_slurm(sweep, args)
            return _local(sweep, args, t0)
    except (RecipeError, SweepError, RunLogError, JobSpecError, SlurmError, OSError,
            ValueError, KeyError, LockHeld) as e:
        print(f"ladder sweep: error: {e.args[0] if isinstance(e, KeyError) else e}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return 130


def _local(sweep, args, t0) -> int:
    from ladder.sweep.rundir import run_state
    from ladder.sweep.local import run_local

    knobs = sweep.recipe.sweep
    jobs = sweep.jobs()
    todo = [j for j in jobs if not run_state(j.run_dir).done]
    print(f"sweep {sweep.recipe.name}: {len(jobs)} runs in {sweep.dir} "
          f"({len(jobs) - len(todo)} already done)", flush=True)
    outcomes = run_local(todo, sweep.dir / "logs",
                         parallel=args.parallel or knobs.parallel,
                         max_retries=(args.max_retries if args.max_retries is not None
                                      else knobs.max_retries),
                         echo=lambda m: print(m, flush=True))
    failed = [o for o in outcomes if not o.ok]
    if failed:
        print(f"{len(failed)} run(s) failed: " + ", ".join(f"{o.name} (log {o.log})" for o in failed),
              file=sys.stderr)
        return 1
    print(f"all runs done in {time.time() - t0:.0f}s", flush=True)
    if args.no_predict:
        return 0
    return _predict(sweep, args, t0)


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


def _submit_slurm(sweep, args) -> int:
    from ladder.sweep.slurm import SlurmConfig, SlurmSweep

    cfg = SlurmConfig.from_dict(sweep.recipe.slurm, f"{sweep.recipe.source}: slurm",
                                known_sizes=[r.size for _, r in sweep.plan.all_runs()])
    if args.max_retries is not None:
        cfg.max_retries = args.max_retries
    final = None if args.no_predict else sweep.predict_job(cfg.defaults)
    ss = SlurmSweep.from_config(sweep.dir, sweep.jobs(cfg.resources), final, cfg,
                                job_prefix=sweep.recipe.name)
    record = ss.submit()
    arrays = ", ".join(a["job_id"] for a in record.get("arrays", []))
    print(f"submitted {sweep.recipe.name}: arrays {arrays or '-'}"
          + (f", prediction job {record['final']['job_id']}" if record.get("final") else ""))
    print(f"follow it with: ladder status {sweep.dir}")
    return 0


def _slurm_config(recipe, plan):
    from ladder.sweep.slurm import SlurmConfig

    return SlurmConfig.from_dict(recipe.slurm, f"{recipe.source}: slurm",
                                 known_sizes=[r.size for _, r in plan.all_runs()])


def _checks_pass(recipe, args, plan=None, echo=lambda m: print(m, file=sys.stderr)) -> bool:
    """The pre-submit checks; any failure stops the sweep before anything runs or is queued."""
    from ladder.sweep.checks import presubmit_checks
    from ladder.sweep.plan import plan_sweep

    plan = plan or plan_sweep(recipe)
    cfg = _slurm_config(recipe, plan) if args.backend == "slurm" else None
    checks = presubmit_checks(plan, predict=not args.no_predict, slurm_cfg=cfg)
    failed = [c for c in checks if not c.ok]
    if failed or args.dry_run:
        echo("pre-submit checks:\n" + "\n".join(c.line() for c in checks))
    if failed:
        echo(f"ladder sweep: error: {len(failed)} pre-submit check(s) failed; nothing was submitted: "
             + "; ".join(f"{c.name}: {c.detail}" for c in failed))
    return not failed


def _dry_run(recipe, args) -> int:
    from pathlib import Path

    from ladder.sweep.checks import eval_report, size_report
    from ladder.sweep.plan import plan_sweep, plan_table
    from ladder.sweep.slurm import SlurmSweep
    from ladder.sweep.sweepdir import Sweep

    plan = plan_sweep(recipe)
    cfg = _slurm_config(recipe, plan) if args.backend == "slurm" else None
    print(plan_table(plan))
    print("\nper size (memory per process: estimate, see ladder/sweep/estimate.py):")
    print(size_report(plan, cfg))
    print()
    print(eval_report(plan))
    if cfg is not None:
        sweep = Sweep(Path(args.out or f"runs/{recipe.name}").resolve(), plan)
        final = None if args.no_predict else sweep.predict_job(cfg.defaults)
        ss = SlurmSweep.from_config(sweep.dir, sweep.jobs(cfg.resources), final, cfg,
                                    job_prefix=recipe.name)
        for g in ss.groups:
            text = ss.render_array(g)
            print(f"\n{g.script_name} ({len(g.rungs)} rungs: {', '.join(j.name for j in g.rungs)}):")
            print("\n".join("  " + ln for ln in text.splitlines()
                            if ln.startswith("#SBATCH") or ln.lstrip().startswith("srun")))
        if final is not None:
            print("\nfinal.sbatch: the prediction, after every array succeeded (afterok)")
    ok = _checks_pass(recipe, args, plan, echo=print)
    print(f"\ndry run: nothing written or submitted; checks {'passed' if ok else 'FAILED'}")
    return 0 if ok else EXIT_BAD_INPUT
