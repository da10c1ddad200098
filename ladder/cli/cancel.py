"""`ladder cancel SWEEP_DIR`: stop a sweep's rungs through the backend that runs them (SLURM:
scancel its jobs; local: the sweep process stops its rungs in order). Rungs keep their
checkpoints: rerunning `ladder sweep` resumes them."""

from __future__ import annotations

import sys

from ladder.exit_codes import EXIT_BAD_INPUT


def add_arguments(p) -> None:
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")


def run(args) -> int:
    from ladder.recipe import RecipeError
    from ladder.sweep.backend import BackendError, backend_class, backend_of
    from ladder.sweep.plan import SweepError
    from ladder.sweep.slurm import SlurmError
    from ladder.sweep.sweepdir import load_sweep

    try:
        sweep = load_sweep(args.sweep_dir)
        backend = backend_class(backend_of(sweep.dir)).from_plan(sweep.plan)
        stopped = backend.cancel(sweep)
    except (SweepError, SlurmError, RecipeError, BackendError, OSError, ValueError) as e:
        print(f"ladder cancel: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{backend.name}: " + (f"stopped {', '.join(stopped)}" if stopped else "nothing running"))
    return 0
