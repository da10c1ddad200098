"""Exit codes of every `ladder` command, defined once. Schedulers and the sweep backends act on
them: requeue on EXIT_PREEMPTED, never retry EXIT_BAD_INPUT or EXIT_DIVERGED."""

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected failure, or results written with warnings (e.g. a fit did not converge)
EXIT_BAD_INPUT = 2  # bad recipe, arguments or data, a full/read-only disk, a failed parent: retrying cannot help
EXIT_DIVERGED = 3  # loss NaN/inf or far above its recent median (train/divergence.py); last good checkpoint kept
EXIT_PREEMPTED = 75  # SIGTERM/SIGUSR1/SIGHUP/Ctrl-C: checkpoint saved, rerun the same command (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # a second Ctrl-C, or Ctrl-C on an interactive command (128 + SIGINT)

# A run's outcome, written by the trainer to <run>/status.json (ladder.train.status) so that a
# scheduler decides from what happened, not from an exit code a launcher may have rewritten
# (`accelerate launch` turns a worker's 75 into 1).
RUNNING = "running"  # started; still this after a hard kill (OOM killer, lost node): a crash
COMPLETED = "completed"
PREEMPTED = "preempted"  # checkpoint saved on a signal: requeue, it resumes
DIVERGED = "diverged"  # never retried: the same data and LR diverge again
BAD_INPUT = "bad_input"  # never retried: deterministic (also a disk that refused a write: message "failed: ...")
CRASHED = "crashed"  # retried a bounded number of times, resuming from the last checkpoint
# WSD decay branches (ladder/train/branch.py): the parent has not saved the branch point yet
# (requeue: start again later), or stopped for good before it (never retried)
WAITING = "waiting"
PARENT_FAILED = "parent_failed"
OUTCOME_EXIT = {COMPLETED: EXIT_OK, PREEMPTED: EXIT_PREEMPTED, DIVERGED: EXIT_DIVERGED,
                BAD_INPUT: EXIT_BAD_INPUT, CRASHED: EXIT_ERROR, WAITING: EXIT_PREEMPTED,
                PARENT_FAILED: EXIT_BAD_INPUT}

# What a backend does next: finish, requeue without counting a failure, retry (bounded), give up.
DONE, REQUEUE, RETRY, GIVE_UP = "done", "requeue", "retry", "give up"


def next_action(outcome: str | None, returncode: int) -> str:
    """The one retry policy of both backends (the SLURM wrapper's bash mirrors it, and a test
    runs both over every case). ``outcome`` None: this attempt wrote no status file (a command
    that does not write one, or a trainer that died before it started): the exit code decides."""
    if outcome == COMPLETED and returncode == EXIT_OK:
        return DONE
    if outcome is None and returncode == EXIT_OK:
        return DONE
    if outcome in (PREEMPTED, WAITING):
        return REQUEUE
    if outcome in (BAD_INPUT, DIVERGED, PARENT_FAILED):
        return GIVE_UP
    if outcome is None and returncode in (EXIT_BAD_INPUT, EXIT_DIVERGED):
        return GIVE_UP
    if outcome is None and returncode == EXIT_PREEMPTED:
        return REQUEUE
    return RETRY  # crashed, killed (status still 'running'), or completed with a failing exit
