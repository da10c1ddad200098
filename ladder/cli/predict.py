"""`ladder predict`: fit two-step task scaling laws on ladder run logs and predict targets.

    ladder predict RUN_FILES... --target NAME:N:D [--target NAME:N:D ...] [--targets FILE]
                   [--actual [NAME=]FILE] [--tasks auto] [--task-spec FILE] [--runs-table FILE]
                   --out DIR

One fit and one calibration for every target. Writes DIR/predictions.json, DIR/report.md, PNG
plots and the calibration used. Imports no torch.
"""

from __future__ import annotations

import math
import sys
import time

from ladder.exit_codes import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_OK


def parse_number(text: str) -> float:
    """Accept 6887575552, 6.887e9, 6_887_575_552."""
    try:
        v = float(text.replace("_", "").replace(",", ""))
    except ValueError:
        import argparse
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
    if not (v > 0 and math.isfinite(v)):
        import argparse
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return v


def add_config_arguments(p) -> None:
    """Method options shared with `ladder backtest` (defaults = TwoStepConfig's, choices from
    its registry of laws: analysis/laws/registry.py)."""
    from analysis.twostep.config import FEATURES, TwoStepConfig, choices  # no fitting code here
    c, ch = TwoStepConfig(), choices()
    g = p.add_argument_group("method (defaults chosen by backtests, see docs/analysis.md)")
    g.add_argument("--feature", default=c.feature, metavar="|".join(FEATURES) + "|COLUMN",
                   help="intermediate feature: the task's own loss (bpb), the runs' validation loss "
                        "(val_ce), task CE, or any loss column every run has")
    g.add_argument("--step1", choices=ch["step1"], default=c.step1,
                   help="step-1 law: of (N, D) (chinchilla), of C = 6ND (compute), ...")
    g.add_argument("--step1-points", choices=ch["step1_points"], default=c.step1_points,
                   help="fit step 1 on each run's final value or on its later checkpoints too")
    g.add_argument("--step1-exponents", choices=ch["step1_exponents"], default=c.step1_exponents,
                   help="Chinchilla exponents: alpha = beta (tied), free, or tied below 3 sizes")
    g.add_argument("--link", choices=ch["link"], default=c.link)
    g.add_argument("--link-floor", choices=ch["link_floor"], default=c.link_floor)
    g.add_argument("--link-ceiling", choices=ch["link_ceiling"], default=c.link_ceiling,
                   help="upper accuracy asymptote: fitted (<= 1) or pinned to 1")
    g.add_argument("--mode", choices=ch["mode"], default=c.mode,
                   help="two-step chained prediction, the single-step baseline, or the direct "
                        "method (-log accuracy as a law of N and D, arXiv 2512.08894)")
    g.add_argument("--direct-exponents", choices=ch["direct_exponents"], default=c.direct_exponents,
                   help="direct method: alpha = beta (default), or the paper's free pair")
    g.add_argument("--wsd-step2", choices=ch["wsd_step2"], default=c.wsd_step2,
                   help="WSD runs in step 2: rows from their decay's start, or the stable phase's too")
    g.add_argument("--n-boot", type=int, default=200, help="bootstrap replicates for intervals")
    g.add_argument("--seed", type=int, default=0)


def config_from_args(args):
    from analysis.twostep.config import TwoStepConfig, choices
    return TwoStepConfig(feature=args.feature, **{k: getattr(args, k) for k in choices()})


RUN_FILES_HELP = ("ladder runs: run directories, OLMo-ladder W&B CSV exports, one table of the "
                  "whole ladder (CSV or parquet, with a 'run' column), or lm-evaluation-harness "
                  "output directories (see docs/analysis.md, 'Bring your own ladder')")
TASKS_HELP = ("'auto' (default: the --task-spec tasks, else the paper's 8 where the runs have "
              "them, else the tasks inferred from the columns, printed), 'paper', 'all', a declared "
              "set, or a comma-separated task list")


def add_tokens_argument(p) -> None:
    """How to read a lab's inputs: tokens, N per run, task declarations."""
    p.add_argument("--tokens-per-step", type=parse_number, metavar="N",
                   help="for runs logged by step without a tokens column: tokens per optimizer "
                        "step (tokens = step x N); the target's --actual needs none")
    p.add_argument("--runs-table", metavar="FILE",
                   help="CSV or parquet of the runs' N: columns run, n, and tokens_per_step or d "
                        "(final tokens) where the inputs lack them")
    p.add_argument("--task-spec", metavar="FILE",
                   help="YAML declaring tasks: accuracy column(s) and weights, loss column(s), "
                        "chance (docs/analysis.md)")


def add_arguments(p) -> None:
    p.add_argument("run_files", nargs="+", metavar="RUN_FILES", help=RUN_FILES_HELP)
    p.add_argument("--target", action="append", type=parse_target, metavar="NAME:N:D",
                   help="a target model (repeatable: one fit and one calibration for all)")
    p.add_argument("--targets", metavar="FILE",
                   help="targets as YAML (a list of {name, n, d[, actual]}) or CSV (name,n,d)")
    p.add_argument("--target-name", help="one target: its name (with --target-n, --target-d)")
    p.add_argument("--target-n", type=parse_number, help="one target: parameter count N")
    p.add_argument("--target-d", type=parse_number, help="one target: training tokens D")
    p.add_argument("--actual", action="append", metavar="[NAME=]FILE",
                   help="a target's own log (CSV or run dir): actual = mean of its last 5 evals; "
                        "NAME= says which target when there are several (repeatable)")
    p.add_argument("--tasks", default="auto", help=TASKS_HELP)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_tokens_argument(p)
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--calibration", default="auto", metavar="FILE|auto|none",
                   help="interval calibration: a calibration.json from `ladder backtest "
                        "--intervals`; 'auto' (default) reuses the calibration made from the same "
                        "ladder content, tasks and method (kept in $LADDER_CACHE/calibrations, or "
                        "OUT/calibration.json), else backtests the ladder to make it (minutes), or "
                        "keeps the raw intervals, labelled, where the ladder is too small to "
                        "backtest; 'none': raw bootstrap intervals, labelled uncalibrated")
    add_config_arguments(p)


CALIBRATION_CACHE = "calibration.json"  # kept in OUT by --calibration auto
# A 90% interval reads its 5% tails from at least 20 converged bootstrap refits, and on some
# tasks of the calibration backtests far fewer than all refits converge (docs/reliability.md):
# 20 replicates were accepted here and then failed the calibration. 40 leaves that margin.
MIN_BOOT = 40


def check_n_boot(n_boot: int) -> None:
    if n_boot < MIN_BOOT:
        raise ValueError(f"--n-boot must be at least {MIN_BOOT}: a 90% interval needs 20 bootstrap "
                         f"refits that converge, and not all do (docs/reliability.md); got {n_boot}")


def check_seed(seed: int) -> None:
    from ladder.recipe import MAX_SEED
    if not 0 <= seed < MAX_SEED:
        raise ValueError(f"--seed must be in [0, 2^63), got {seed}")


def os_error(e: OSError, out) -> str:
    """An OSError as one line naming its file. A full disk fails a write() that carries no file
    name: the output directory being written stands in for it."""
    if e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return f"cannot write the outputs in {out}: {e.strerror or e}"


def fail(msg: str) -> int:
    print(f"ladder: error: {msg}", file=sys.stderr)
    return EXIT_BAD_INPUT


def parse_target(text: str) -> tuple[str, float, float]:
    """NAME:N:D -> (name, N, D), N and D as --target-n/--target-d accept them (no analysis
    import at parse time)."""
    import argparse

    parts = text.rsplit(":", 2)
    if len(parts) != 3 or not parts[0].strip():
        raise argparse.ArgumentTypeError(f"expected NAME:N:D, got {text!r}")
    return parts[0].strip(), parse_number(parts[1]), parse_number(parts[2])


def read_targets(path) -> list[tuple[object, str | None]]:
    """(Target, actual file or None) from a YAML list of {name, n, d[, actual]} or a CSV."""
    from pathlib import Path

    from analysis.predict import Target
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"--targets {p}: cannot read ({getattr(e, 'strerror', None) or e})") from None
    if p.suffix.lower() == ".csv":
        import csv
        rows = list(csv.DictReader(text.splitlines()))
    else:
        import yaml
        try:
            rows = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"--targets {p}: not valid YAML ({' '.join(str(e).split())[:120]})") from None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"--targets {p}: expected a list of targets with name, n and d")
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not {"name", "n", "d"} <= set(row) or not str(row["name"]).strip():
            raise ValueError(f"--targets {p}: target {i + 1} needs 'name', 'n' and 'd', got {row!r}")
        try:
            n, d = parse_number(str(row["n"])), parse_number(str(row["d"]))
        except Exception as e:
            raise ValueError(f"--targets {p}: target '{row['name']}': {e}") from None
        out.append((Target(str(row["name"]).strip(), n, d), row.get("actual") or None))
    return out


def targets_from_args(args) -> tuple[list, dict[str, str]]:
    """Every target asked for, and the actual file of each target that has one."""
    from analysis.predict import Target
    pairs = []
    one = (args.target_name, args.target_n, args.target_d)
    if any(v is not None for v in one):
        if any(v is None for v in one):
            raise ValueError("--target-name, --target-n and --target-d go together (or use "
                             "--target NAME:N:D)")
        pairs.append((Target(*one), None))
    pairs += [(Target(*t), None) for t in args.target or []]
    if args.targets:
        pairs += read_targets(args.targets)
    if not pairs:
        raise ValueError("no target: give --target NAME:N:D (repeatable), --targets FILE, or "
                         "--target-name/--target-n/--target-d")
    names = [t.name for t, _ in pairs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"target '{dup[0]}' is given twice")
    actual_files = {t.name: a for t, a in pairs if a}
    for item in args.actual or []:
        name, sep, path = item.partition("=")
        if sep and name in names:
            actual_files[name] = path
        elif len(names) == 1:
            actual_files[names[0]] = item
        else:
            raise ValueError(f"--actual {item}: with several targets, say which: --actual NAME=FILE "
                             f"(targets: {', '.join(names)})")
    return [t for t, _ in pairs], actual_files


def load_inputs(args, warn=None):
    """Runs and tasks, or a clean error (file and column named) instead of a traceback. The
    readers say what they took from where (stderr). A run without an evaluation yet (a rung
    that has just started, when predicting mid-sweep) is skipped with a warning (``warn``,
    default: said once on stderr), as long as others remain."""
    from analysis.checks import once
    from analysis.runlog import RunLogError, read_run
    from analysis.sources import read_ladder
    from analysis.taskspec import ladder_tasks
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    runs = read_ladder(args.run_files, runs_table=getattr(args, "runs_table", None),
                       tokens_per_step=getattr(args, "tokens_per_step", None), say=say)
    empty = [r for r in runs if not r.n_evals]
    if len(empty) == len(runs):
        raise RunLogError(f"{runs[0].source}: no evaluations yet" + (
            f", nor in the other {len(runs) - 1} run(s) given" if len(runs) > 1 else "")
            + "; nothing to fit")
    warn = warn or once()
    for r in empty:
        warn(f"{r.source}: no evaluations yet (a run that has just started?); skipped")
    runs = [r for r in runs if r.n_evals]
    from analysis.annealed import fit_runs
    runs = fit_runs(runs, warn)  # a WSD stable run (or one not decayed yet) has no final point
    tasks = ladder_tasks(args.tasks, runs, getattr(args, "task_spec", None), say)
    actual = read_run(args.actual) if isinstance(getattr(args, "actual", None), str) else None
    if actual is not None and not actual.n_evals:
        raise RunLogError(f"--actual {actual.source}: no evaluations; the target's log is empty")
    return runs, tasks, actual


def resolve_calibration(spec: str, runs, tasks, config, n_boot: int, out):
    """The calibration to use (see --calibration); never written into OUT in place: the caller
    copies it into the output set."""
    from pathlib import Path

    from analysis.practice.calibrate import ladder_calibration, load_calibration
    if spec == "none":
        return None
    if spec != "auto":
        return load_calibration(spec)
    return ladder_calibration(runs, tasks, config, n_boot, Path(out) / CALIBRATION_CACHE,
                              say=lambda m: print(m, file=sys.stderr))


def run(args) -> int:
    from pathlib import Path

    t0 = time.perf_counter()
    from analysis.fit import FitError
    from analysis.runlog import RunLogError
    try:
        from analysis.predict import predict_targets
        from analysis.files import check_output_dir
        config = config_from_args(args)
        check_n_boot(args.n_boot)
        check_seed(args.seed)
        check_output_dir(args.out)  # before the work, not after it
        targets, actual_files = targets_from_args(args)
        args.actual = None
        skipped: list[str] = []  # said with the other doubts, and kept with the predictions
        runs, tasks, _ = load_inputs(args, skipped.append)
        actuals, doubts, warn = _checked(runs, targets, actual_files, skipped)
        calibration = resolve_calibration(args.calibration, runs, tasks, config, args.n_boot,
                                          args.out)
        preds = predict_targets(runs, targets, tasks, config, actuals=actuals, n_boot=args.n_boot,
                                seed=args.seed, keep_samples=not args.no_plots, warn=warn,
                                calibration=calibration)
        for p in preds:
            p.warnings = doubts[p.target] + p.warnings
        files = _write(preds, targets, config, calibration, args.out, not args.no_plots)
    except OSError as e:
        return fail(os_error(e, args.out))
    except (RunLogError, KeyError, ValueError, FitError, RuntimeError) as e:
        return fail(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e))
    print(open(files["markdown"]).read().split("\n## ")[0].split("\n", 2)[2].rstrip())
    bad = [p.task for p in preds if not p.converged]
    if bad:
        print(f"warning: non-converged fits for {', '.join(dict.fromkeys(bad))} (see report.md)",
              file=sys.stderr)
    refused = list(dict.fromkeys(p.task for p in preds if p.model is not None and p.model.refused))
    if refused:
        print(f"warning: no prediction for {', '.join(refused)}: the ladder shows nothing to "
              f"extrapolate (see report.md)", file=sys.stderr)
    print(f"wrote {', '.join(str(f) for f in files.values())} in {time.perf_counter() - t0:.1f}s",
          file=sys.stderr)
    return EXIT_ERROR if bad or refused else EXIT_OK


def _checked(runs, targets, actual_files, skipped=()):
    """Every target's actual run and the doubts said once and kept with its predictions."""
    from analysis.checks import check_actual, check_ladder, check_target, once
    from analysis.runlog import read_run
    warn = once()
    ladder_doubts = list(skipped) + check_ladder(runs)
    doubts = {t.name: ladder_doubts + check_target(runs, t.n, t.d, t.name) for t in targets}
    actuals = {name: read_run(path) for name, path in actual_files.items()}
    for t in targets:
        if t.name in actuals:
            check_actual(actuals[t.name], t.n, t.name)
    for m in (m for ms in doubts.values() for m in ms):
        warn(m)
    return actuals, doubts, warn


def _write(preds, targets, config, calibration, out, plots):
    """The output set, replaced as a whole, with the calibration used copied into it."""
    from pathlib import Path

    from analysis.files import output_dir
    from analysis.practice.calibrate import save_calibration
    from analysis.report import write_report
    with output_dir(out, "ladder predict") as tmp:
        files = write_report(preds, tmp, f"Predictions for {', '.join(t.name for t in targets)}",
                             config, plots=plots)
        if calibration is not None:
            files["calibration"] = save_calibration(calibration, tmp / CALIBRATION_CACHE)
    return {k: Path(out) / f.name for k, f in files.items()}
