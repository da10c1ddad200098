"""``ladder train RECIPE``: train (or resume) one rung of a recipe."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe YAML file (e.g. recipes/tiny-cpu.yaml)")
    parser.add_argument("--size", help="model size (default: the recipe's first/smallest size)")
    parser.add_argument("--multiplier", type=float,
                        help="token multiplier: D = multiplier x 20 x N (default: the recipe's smallest)")
    parser.add_argument("--seed", type=int, help="seed (default: the recipe's first seed)")
    parser.add_argument("--out", help="run directory (default: runs/<recipe name>/<size>-<multiplier>xC)")
    parser.add_argument("--cache", help="cache directory for tokenizers and token files "
                                        "(default: $LADDER_CACHE or ~/.cache/ladder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--force-new", action="store_true",
                        help="if --out holds another run, move it aside (<dir>.replaced-<time>) and start over")
    parser.add_argument("--stable", action="store_true",
                        help="train.schedule wsd: the size's stable run (peak LR to the last branch point; "
                             "a checkpoint kept at every branch point)")
    parser.add_argument("--branch-from", metavar="STABLE_RUN_DIR",
                        help="train.schedule wsd: a decay branch of --multiplier, started from this "
                             "stable run's checkpoint at its branch point")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="recipe overrides with dotted keys, e.g. train.lr=3e-3 evaluation.count=30")
    # KEY=VALUE overrides may come before or after the options.
    parser.parse_args = parser.parse_intermixed_args  # type: ignore[method-assign]
    parser.epilog = ("exit codes: 0 done, 1 error, 2 bad input or a full/read-only disk, 3 diverged (loss "
                     "NaN/inf or far above its recent median; last good checkpoint kept), 75 preempted by "
                     "SIGTERM/SIGUSR1/SIGHUP/Ctrl-C (checkpoint saved; rerun to resume), 130 a second Ctrl-C")


def run(args: argparse.Namespace) -> int:
    """Train; a stop signal or Ctrl-C from the first line on (imports of torch take seconds) is
    one line and exit 75 or 130, never a traceback or a death by signal (143)."""
    import signal

    from ladder.exit_codes import EXIT_INTERRUPTED, EXIT_PREEMPTED, PREEMPTED
    from ladder.train.status import Preempted

    def starting(signum, frame):
        raise Preempted(signum)

    old = {s: signal.signal(s, starting) for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)}
    try:
        return _run(args)
    except Preempted as e:  # before the first step (status.json says so once the run dir is ours)
        print(f"ladder train: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, the last checkpoint is intact
        print("ladder train: interrupted; rerun the same command to resume from the last checkpoint",
              file=sys.stderr)
        _outcome(args, PREEMPTED, "interrupted (Ctrl-C) before a checkpoint was saved")
        return EXIT_INTERRUPTED
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _run(args: argparse.Namespace) -> int:
    from ladder.data.errors import DataError
    from ladder.exit_codes import (BAD_INPUT, CRASHED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_PREEMPTED,
                                   PARENT_FAILED, WAITING)
    from ladder.integrity import storage_error
    from ladder.recipe import RecipeError, load_recipe
    from ladder.train.branch import ParentFailed, ParentNotReady
    from ladder.train.loop import NonFiniteLossError, train

    from ladder.lock import LockHeld
    from ladder.train.binding import RunBindingError

    try:
        _check_arguments(args)
        recipe = load_recipe(args.recipe, args.overrides)
        result = train(recipe, size=args.size, multiplier=args.multiplier, seed=args.seed,
                       out=args.out, cache=args.cache, progress=not args.no_progress,
                       force_new=getattr(args, "force_new", False), stable=getattr(args, "stable", False),
                       branch_from=getattr(args, "branch_from", None))
    except (LockHeld, RunBindingError) as e:  # the directory is another run's: write nothing there
        print(f"ladder train: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ParentNotReady as e:  # a decay branch started before its parent's branch point
        print(f"ladder train: {e} (exit {EXIT_PREEMPTED})", file=sys.stderr)
        _outcome(args, WAITING, e)
        return EXIT_PREEMPTED
    except ParentFailed as e:
        print(f"ladder train: error: {e}", file=sys.stderr)
        _outcome(args, PARENT_FAILED, e)
        return EXIT_BAD_INPUT
    except (RecipeError, DataError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"ladder train: error: {msg}", file=sys.stderr)
        _outcome(args, BAD_INPUT, msg)
        return EXIT_BAD_INPUT
    except OSError as e:  # a read-only or full run directory: say which file, no traceback
        return _storage_failure(args, storage_error(e, args.out or ".") or e)
    except NonFiniteLossError as e:  # status.json already says diverged
        print(f"ladder train: error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except Exception as e:
        err = storage_error(e, args.out or ".")  # torch.save and DCP raise RuntimeError
        if err is not None:
            return _storage_failure(args, err)
        _outcome(args, CRASHED, f"{type(e).__name__}: {e}")
        raise
    if result.status == "already-complete":
        print(f"{result.run_dir}: already complete ({result.step}/{result.total_steps} steps)")
    elif result.status == "completed":
        print(f"{result.run_dir}: done ({result.step} steps)")
    return result.exit_code


def _check_arguments(args: argparse.Namespace) -> None:
    """Flags bypass the recipe's validation: check them here (one line, exit 2)."""
    import math
    from pathlib import Path

    if args.multiplier is not None and not (math.isfinite(args.multiplier) and args.multiplier > 0):
        raise ValueError(f"--multiplier must be a positive number, got {args.multiplier}")
    if getattr(args, "stable", False) and (args.branch_from or args.multiplier is not None):
        raise ValueError("--stable trains a size's stable run: it takes no --multiplier or --branch-from")
    if getattr(args, "branch_from", None) and Path(args.branch_from).exists() \
            and not Path(args.branch_from).is_dir():
        raise ValueError(f"--branch-from {args.branch_from}: not a directory (the stable run's)")
    from ladder.recipe import MAX_SEED

    if args.seed is not None and not 0 <= args.seed < MAX_SEED:
        raise ValueError(f"--seed must be in [0, 2^63), got {args.seed}")
    for flag, path in (("--out", args.out), ("--cache", args.cache)):
        if path and Path(path).exists() and not Path(path).is_dir():
            raise ValueError(f"{flag} {path}: exists and is not a directory")


def _storage_failure(args: argparse.Namespace, e: OSError) -> int:
    """A write refused by the file system: one line naming the file and the cause, status failed."""
    from ladder.exit_codes import BAD_INPUT, EXIT_BAD_INPUT
    from ladder.integrity import StorageError

    e = e if isinstance(e, StorageError) else StorageError(e.errno, e.strerror or str(e), e.filename or args.out)
    print(f"ladder train: error: {e}", file=sys.stderr)
    _outcome(args, BAD_INPUT, e.status_message())
    return EXIT_BAD_INPUT


def _outcome(args: argparse.Namespace, outcome: str, message: object) -> None:
    """Say in the run directory why the run stopped, so a scheduler does not retry bad input."""
    from ladder.train.status import is_main_process, write_status

    if args.out and is_main_process():
        try:
            write_status(args.out, outcome, message=str(message))
        except OSError:
            pass  # the run directory itself may be the bad input
